"""Input frames/s of `stc curate`, with and without shot detection, against, in the same
run, (a) a plain decode of the same files and (b) a bare crop-and-encode of the clips it
wrote, with the same encoder settings.

Every run uses the same parallelism (one job per core, `--workers`), so the ratios say what
the analysis (shots, faces, landmarks, tracks, OCR, motion) and Ray cost on top of the work
the pipeline cannot avoid. `cpu_bound_fps` divides the frames by the CPU seconds the
workers and their ffmpeg children used (over `--workers` cores): the rate an otherwise
idle machine would reach, which a machine shared with other jobs cannot show in wall time. Ray is started before the clock runs: a cluster is started once
per session, not once per dataset. Runs, all on the same inputs:

- `stc_curate`: the given config (default: TransNetV2 shots, x264 veryfast);
- `without_shots`: the same with `shots.detector: none`;
- `scenedetect`: the same with `shots.detector: scenedetect`;
- `before_issue_12`: no shots and x264 `medium`, the settings curation had before shots,
  tracks and the preset change (`--no-baseline` skips it).

`per_pass` splits the worker time of `stc_curate` by step (seconds per 1000 input frames):
`decode` is the one decode of each source (with the thumbnails and sample frames swscale
makes from it), `shots` the shot detector, `faces` dlib detection and landmarks, `tracks`
linking (and face embeddings), `write` the clip transcodes (each decoding only its segment).

    .venv/bin/python benchmarks/curate_throughput.py [VIDEOS...] [--config default] [--workers 2]
    .venv/bin/python benchmarks/curate_throughput.py --raw-footage     # 1280x720 raw-style inputs

`--raw-footage` builds raw-style 1280x720 inputs from the shared clips first (as the tests
do, tests/raw_footage.py): six clips joined with hard cuts, two people side by side, and a
20 s single shot.

Prints one JSON object (results: benchmarks/results/curate_throughput.json).
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

import yaml

from stc.core.config import to_dict
from stc.core.runtime import init_ray
from stc.core.video import ffmpeg_exe, iter_frames, x264_args
from stc.curation.config import CurateConfig
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import read_manifest
from stc.pipelines.curate import run_curate
from stc.pipelines.inputs import gather_inputs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
sys.path.insert(0, str(ROOT))


def raw_footage_inputs(videos: Path, folder: Path) -> list[str]:
    from tests import raw_footage

    folder.mkdir(parents=True, exist_ok=True)
    parts = [("hdtf_1.mp4", 100, 1.0), ("talkshow_1.mp4", 100, 1.4), ("hdtf_3.mp4", 100, 1.3),
             ("talkshow_4.mp4", 100, 1.2), ("hdtf_6.mp4", 100, 0.9), ("talkshow_3.mp4", 100, 1.0)]
    built = [raw_footage.joined(videos, folder / "cuts.mp4", parts),
             raw_footage.side_by_side(videos, folder / "two.mp4", "hdtf_2.mp4", "hdtf_4.mp4", 200),
             raw_footage.ping_pong(videos, folder / "long.mp4", "hdtf_5.mp4", 200, 500, 1.2)]
    return [str(b.path) for b in built]


def decode_frames(path: str) -> int:
    return sum(1 for _ in iter_frames(path))


def bare_crop_encode(job: tuple[str, tuple[int, int, int, int], float, int, int, dict, str]) -> None:
    """The transcode the pipeline rides on: decode (from the keyframe before the clip),
    crop, scale, x264, nothing else."""
    src, (x0, y0, x1, y1), start_time, frames, size, enc, dst = job
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
           *(["-ss", f"{start_time:.6f}"] if start_time > 0 else []), "-i", src,
           "-vf", f"crop={x1 - x0}:{y1 - y0}:{x0}:{y0},scale={size}:{size}:flags=lanczos,setsar=1",
           "-an", "-fps_mode", "passthrough", "-frames:v", str(frames),
           *x264_args(enc["crf"], enc["preset"], enc["pix_fmt"], enc["threads"], enc["keyint"]), dst]
    subprocess.run(cmd, check=True)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def variant(base: dict, tmp: Path, name: str, **changes) -> str:
    """A config file: `base` with `section: {key: value}` changes."""
    cfg = json.loads(json.dumps(base))
    for section, values in changes.items():
        cfg[section].update(values)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def curate(files: list[str], out: Path, config: str, workers: int, frames: int) -> dict:
    seconds, summary = timed(lambda: run_curate(files, out, config=config, workers=workers,
                                                progress=False))
    steps = dict(summary["steps"])
    cpu = steps.pop("cpu", {}).get("seconds", float("nan"))
    return {"seconds": round(seconds, 2), "fps": round(frames / seconds, 1),
            "cpu_seconds": round(cpu, 2), "cpu_bound_fps": round(frames / (cpu / workers), 1),
            "status": summary["status"], "reasons": summary["reasons"],
            "sources": summary["sources"], "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", default=[str(DEFAULT_VIDEOS)])
    ap.add_argument("--config", default="default")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the before_issue_12 run")
    ap.add_argument("--raw-footage", action="store_true",
                    help="build 1280x720 raw-style inputs from the (first) VIDEOS folder and use them")
    args = ap.parse_args()

    raw_dir = None
    if args.raw_footage:
        raw_dir = tempfile.TemporaryDirectory(prefix="stc-raw-")
        files = raw_footage_inputs(Path(args.videos[0]), Path(raw_dir.name))
    else:
        files = [p for p, _ in gather_inputs(args.videos)]
    if not files:
        sys.exit(f"no videos in {args.videos}: point the benchmark at a folder of face videos")
    cfg = CurateConfig.load(args.config)
    base = to_dict(cfg)
    enc = {"crf": cfg.encode.crf, "preset": cfg.encode.preset, "pix_fmt": cfg.encode.pix_fmt,
           "threads": cfg.encode.threads, "keyint": cfg.encode.keyint}
    init_ray(num_cpus=args.workers)

    with tempfile.TemporaryDirectory(prefix="stc-bench-") as tmp:
        tmp = Path(tmp)
        # (a) plain decode, one process per core
        with ProcessPoolExecutor(args.workers) as pool:
            decode_s, counts = timed(lambda: list(pool.map(decode_frames, files)))
        total_frames = sum(counts)

        runs = {"stc_curate": variant(base, tmp, "given"),
                "without_shots": variant(base, tmp, "noshots", shots={"detector": "none"}),
                "scenedetect": variant(base, tmp, "scenedetect", shots={"detector": "scenedetect"})}
        if not args.no_baseline:
            runs["before_issue_12"] = variant(base, tmp, "before", shots={"detector": "none"},
                                              encode={"preset": "medium"})
        results = {name: curate(files, tmp / name, config, args.workers, total_frames)
                   for name, config in runs.items()}

        # (b) bare crop+encode of what the pipeline wrote: same boxes, frames and encoder
        manifest = read_manifest(tmp / "stc_curate" / "manifest.parquet", CLIP_SCHEMA)
        cropped = manifest[manifest["crop_x0"].notna()]
        jobs = [(r.source_path, (int(r.crop_x0), int(r.crop_y0), int(r.crop_x1), int(r.crop_y1)),
                 float(r.start_time), int(r.end_frame - r.start_frame), cfg.crop.size, enc,
                 str(tmp / f"bare_{i}.mp4"))
                for i, r in enumerate(cropped.itertuples())]
        with ThreadPoolExecutor(args.workers) as pool:
            bare_s, _ = timed(lambda: list(pool.map(bare_crop_encode, jobs)))
        bare_frames = sum(j[3] for j in jobs)

    decode_fps = total_frames / decode_s
    bare_fps = bare_frames / bare_s if bare_s else float("nan")
    main_run = results["stc_curate"]
    steps = main_run.pop("steps")
    for r in results.values():
        r.pop("steps", None)
    worker_seconds = sum(s["seconds"] for s in steps.values())
    out = {
        "benchmark": "curate_throughput",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "ffmpeg": shutil.which("ffmpeg") or "imageio-ffmpeg",
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "config": args.config, "shots": cfg.shots.detector, "preset": cfg.encode.preset,
        "inputs": "raw-style 1280x720 (tests/raw_footage.py)" if args.raw_footage else args.videos,
        "workers": args.workers, "videos": len(files), "input_frames": total_frames,
        "cropped_clips": len(jobs), "cropped_frames": bare_frames,
        "plain_decode": {"seconds": round(decode_s, 2), "fps": round(decode_fps, 1)},
        "bare_crop_encode": {"seconds": round(bare_s, 2), "fps": round(bare_fps, 1)},
        **results,
        "ratio_vs_plain_decode": round(main_run["fps"] / decode_fps, 3),
        "ratio_vs_bare_crop_encode": round(main_run["fps"] / bare_fps, 3),
        "ratio_without_shots_vs_bare_crop_encode": round(results["without_shots"]["fps"] / bare_fps, 3),
        "shots_cost": round(1 - main_run["fps"] / results["without_shots"]["fps"], 3),
        "per_pass_seconds_per_1000_frames": {
            k: round(1000 * v["seconds"] / total_frames, 3) for k, v in steps.items()},
        "per_pass_share_of_worker_time": {
            k: round(v["seconds"] / max(1e-9, worker_seconds), 3) for k, v in steps.items()},
    }
    if "before_issue_12" in results:
        before = results["before_issue_12"]
        out["speedup_vs_before_issue_12"] = round(main_run["fps"] / before["fps"], 2)
        out["cpu_speedup_vs_before_issue_12"] = round(main_run["cpu_bound_fps"] / before["cpu_bound_fps"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
