"""x264 presets for the curated clips: encode speed, file size and PSNR against the crop.

Each real clip's face crop (the centre square, which is what `stc curate` crops from these
face-filling clips) is scaled to 512x512 with the pipeline's lanczos filter and kept as raw
yuv420p, the exact input x264 gets inside `stc curate`. It is then encoded at the pipeline's
CRF and keyframe interval with each preset, on one thread, so the CPU seconds are the
encoder's alone and comparable on a busy machine; PSNR (all yuv420p planes, frame by frame)
compares each encode with that raw crop.

    .venv/bin/python benchmarks/x264_presets.py [VIDEOS...] [--crf 10] [--presets ...]

Prints one JSON object (results: benchmarks/results/x264_presets.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stc.core.video import ffmpeg_exe, probe, x264_args
from stc.curation.config import CurateConfig
from stc.pipelines.inputs import gather_inputs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stderr


def reference(src: str, size: int, dst: Path) -> int:
    """The centre-square crop of `src` scaled to size x size, as raw yuv420p; its frames."""
    info = probe(src)
    side = min(info.width, info.height) // 2 * 2
    x0, y0 = (info.width - side) // 2, (info.height - side) // 2
    run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", src,
         "-vf", f"crop={side}:{side}:{x0}:{y0},scale={size}:{size}:flags=lanczos,setsar=1,format=yuv420p",
         "-f", "rawvideo", str(dst)])
    return dst.stat().st_size // (size * size * 3 // 2)


def encode(ref: Path, size: int, fps: float, out: Path, crf: float, preset: str, keyint: int
           ) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one single-threaded x264 encode of the raw crop."""
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "yuv420p", "-s", f"{size}x{size}", "-r", f"{fps:g}", "-i", str(ref), "-an",
           *x264_args(crf, preset, "yuv420p", 1, keyint), str(out)]
    c0, t0 = children_cpu(), time.perf_counter()
    run(cmd)
    return time.perf_counter() - t0, children_cpu() - c0


def psnr(out: Path, ref: Path, size: int) -> float:
    """PSNR (dB) over all yuv420p planes and frames, frame i of the encode against frame i
    of the raw crop."""
    import av

    frame_bytes = size * size * 3 // 2
    raw = np.fromfile(ref, np.uint8).reshape(-1, frame_bytes)
    sq, n = 0.0, 0
    with av.open(str(out)) as c:
        for i, f in enumerate(c.decode(video=0)):
            got = f.to_ndarray(format="yuv420p").reshape(-1)
            sq += float(np.square(got.astype(np.float64) - raw[i]).sum())
            n += got.size
    if n != raw.size:
        sys.exit(f"{out}: {n // frame_bytes} frames decoded, {len(raw)} encoded")
    mse = sq / n
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main() -> None:
    cfg = CurateConfig.load("default")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", default=[str(DEFAULT_VIDEOS)])
    ap.add_argument("--crf", type=float, default=cfg.encode.crf)
    ap.add_argument("--size", type=int, default=cfg.crop.size)
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    args = ap.parse_args()
    files = [p for p, _ in gather_inputs(args.videos)]
    if not files:
        sys.exit(f"no videos in {args.videos}")

    totals = {p: {"frames": 0, "wall": 0.0, "cpu": 0.0, "bytes": 0, "psnr_weighted": 0.0,
                  "psnr_min": float("inf")} for p in args.presets}
    with tempfile.TemporaryDirectory(prefix="stc-x264-") as tmp:
        tmp = Path(tmp)
        for i, src in enumerate(files):
            ref = tmp / f"ref{i}.yuv"
            n = reference(src, args.size, ref)
            fps = probe(src).fps or 25.0
            for preset in args.presets:
                out = tmp / f"{i}_{preset}.mp4"
                wall, cpu = encode(ref, args.size, fps, out, args.crf, preset, cfg.encode.keyint)
                t = totals[preset]
                t["frames"] += n
                t["wall"] += wall
                t["cpu"] += cpu
                t["bytes"] += out.stat().st_size
                q = psnr(out, ref, args.size)
                t["psnr_weighted"] += q * n
                t["psnr_min"] = min(t["psnr_min"], q)
                out.unlink()
            ref.unlink()

    base = totals.get("medium")
    results = {}
    for preset, t in totals.items():
        results[preset] = {
            "cpu_fps": round(t["frames"] / t["cpu"], 1),
            "wall_fps": round(t["frames"] / t["wall"], 1),
            "kbytes_per_frame": round(t["bytes"] / t["frames"] / 1024, 2),
            "psnr_db_mean": round(t["psnr_weighted"] / t["frames"], 2),
            "psnr_db_min_clip": round(t["psnr_min"], 2),
        }
        if base:
            results[preset]["speed_vs_medium"] = round(base["cpu"] / t["cpu"], 2)
            results[preset]["size_vs_medium"] = round(t["bytes"] / base["bytes"], 3)
    print(json.dumps({
        "benchmark": "x264_presets",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "ffmpeg": ffmpeg_exe()},
        "videos": len(files), "frames": totals[args.presets[0]]["frames"],
        "crf": args.crf, "size": args.size, "keyint": cfg.encode.keyint, "threads": 1,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
