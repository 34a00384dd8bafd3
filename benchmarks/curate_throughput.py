"""Input frames/s of `stc curate` against, in the same run, (a) a plain decode of the same
files and (b) a bare crop-and-encode with the same encoder settings as our clips.

All three use the same parallelism (one job per core, `--workers`), so the ratios say what
the analysis (faces, landmarks, OCR, motion) and Ray cost on top of the work the pipeline
cannot avoid. Ray is started before the clock runs: a cluster is started once per session,
not once per dataset.

    .venv/bin/python benchmarks/curate_throughput.py [VIDEOS...] [--config default] [--workers 2]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from stc.core.runtime import init_ray
from stc.core.video import ffmpeg_exe, iter_frames, x264_args
from stc.curation.config import CurateConfig
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import read_manifest
from stc.pipelines.curate import run_curate
from stc.pipelines.inputs import gather_inputs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def decode_frames(path: str) -> int:
    return sum(1 for _ in iter_frames(path))


def bare_crop_encode(job: tuple[str, tuple[int, int, int, int], int, dict, str]) -> None:
    """The transcode the pipeline rides on: decode, crop, scale, x264, nothing else."""

    src, (x0, y0, x1, y1), size, enc, dst = job
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", src,
           "-vf", f"crop={x1 - x0}:{y1 - y0}:{x0}:{y0},scale={size}:{size}:flags=lanczos,setsar=1",
           "-an", "-fps_mode", "passthrough",
           *x264_args(enc["crf"], enc["preset"], enc["pix_fmt"], enc["threads"], enc["keyint"]), dst]
    subprocess.run(cmd, check=True)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", default=[str(DEFAULT_VIDEOS)])
    ap.add_argument("--config", default="default")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    files = [p for p, _ in gather_inputs(args.videos)]
    if not files:
        sys.exit(f"no videos in {args.videos}: point the benchmark at a folder of face videos")
    cfg = CurateConfig.load(args.config)
    enc = {"crf": cfg.encode.crf, "preset": cfg.encode.preset, "pix_fmt": cfg.encode.pix_fmt,
           "threads": cfg.encode.threads, "keyint": cfg.encode.keyint}
    init_ray(num_cpus=args.workers)

    with tempfile.TemporaryDirectory(prefix="stc-bench-") as tmp:
        tmp = Path(tmp)
        # (a) plain decode, one process per core
        with ProcessPoolExecutor(args.workers) as pool:
            decode_s, counts = timed(lambda: list(pool.map(decode_frames, files)))
        frames = dict(zip(files, counts))
        total_frames = sum(counts)

        # the pipeline
        pipe_s, summary = timed(lambda: run_curate(files, tmp / "curated", config=args.config,
                                                  workers=args.workers, progress=False))
        manifest = read_manifest(tmp / "curated" / "manifest.parquet", CLIP_SCHEMA)

        # (b) bare crop+encode of what the pipeline wrote, same boxes, same encoder
        cropped = manifest[manifest["crop_x0"].notna()]
        jobs = [(r.source_path, (int(r.crop_x0), int(r.crop_y0), int(r.crop_x1), int(r.crop_y1)),
                 cfg.crop.size, enc, str(tmp / f"bare_{i}.mp4")) for i, r in enumerate(cropped.itertuples())]
        with ThreadPoolExecutor(args.workers) as pool:
            bare_s, _ = timed(lambda: list(pool.map(bare_crop_encode, jobs)))
        bare_frames = sum(frames[j[0]] for j in jobs)

    decode_fps = total_frames / decode_s
    pipe_fps = total_frames / pipe_s
    bare_fps = bare_frames / bare_s if bare_s else float("nan")
    steps = summary["steps"]
    print(json.dumps({
        "benchmark": "curate_throughput",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "ffmpeg": shutil.which("ffmpeg") or "imageio-ffmpeg"},
        "config": args.config, "workers": args.workers,
        "videos": len(files), "input_frames": total_frames,
        "cropped_videos": len(jobs), "cropped_input_frames": bare_frames,
        "status": summary["status"], "reasons": summary["reasons"],
        "plain_decode": {"seconds": round(decode_s, 2), "fps": round(decode_fps, 1)},
        "bare_crop_encode": {"seconds": round(bare_s, 2), "fps": round(bare_fps, 1)},
        "stc_curate": {"seconds": round(pipe_s, 2), "fps": round(pipe_fps, 1)},
        "ratio_vs_plain_decode": round(pipe_fps / decode_fps, 3),
        "ratio_vs_bare_crop_encode": round(pipe_fps / bare_fps, 3),
        "seconds_per_clip_by_step": {k: v["seconds_per_clip"] for k, v in steps.items()},
        "share_of_worker_time_by_step": {
            k: round(v["seconds"] / max(1e-9, sum(s["seconds"] for s in steps.values())), 3)
            for k, v in steps.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
