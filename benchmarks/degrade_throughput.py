"""Pairs/s and frames/s of `stc degrade` with a recipe (bfvr by default) against, in the
same run, a bare libx264 encode+decode of the same frames.

Both start from the curated clips on disk and cut the same T-frame windows at the same
size, with the same parallelism (`--workers` processes / Ray actors). The bare job per
window is one libx264 encode (the BFVR compression's preset, CRF in the middle of its
range, one thread as the pipeline uses) of the full-size window plus its decode: what a
loader that "just compresses each clip" pays at least. The pipeline additionally stores
an HQ re-encode, blurs, resizes, adds noise and codes the low-resolution window, and
writes shards. Ray is started before the clock runs, but starting the actor pool is
timed: it is part of every run. `in_process_one_clip` times the same work for one clip
in this process without Ray, to tell the degradation's own cost from Ray's. Run it on a
quiet machine: the ratios are what matter, and both halves share whatever else runs.

    .venv/bin/python benchmarks/degrade_throughput.py CURATED_DIR [--clips 3] \
        [--max-windows 8] [--window 24] [--size 512] [--workers 2] [--recipe bfvr]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from stc.core.config import to_dict
from stc.core.runtime import init_ray
from stc.core.video import resize_frames
from stc.degrade.codec import decode_h264, encode_h264
from stc.degrade.recipe import load_recipe
from stc.degrade.windows import WindowOptions, degrade_clip, iter_windows
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestWriter, read_table
from stc.pipelines.degrade import resolve_manifest, run_degrade

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL = 0.5


def bare_encode_decode(job: tuple[str, dict, int, str]) -> tuple[int, int, int]:
    """Decode the clip's windows, then libx264 encode + decode each: (pairs, frames, bytes)."""

    path, opts, crf, preset = job
    opts = WindowOptions(**opts)
    pairs = frames = size = 0
    for _, _, x in iter_windows(Path(path), opts):
        x = resize_frames(x, opts.size, opts.size, opts.resize_interp)
        stream = encode_h264(x, 25.0, crf, preset)
        frames += len(decode_h264(stream))
        pairs += 1
        size += len(stream)
    return pairs, frames, size


def subset_manifest(curated: Path, clips: int, names: list[str], out: Path) -> list[dict]:
    """The first `clips` kept rows (or those whose id starts with one of `names`) as a
    manifest of their own, clip paths made absolute."""

    mpath, root = resolve_manifest(curated)
    rows = [r for r in read_table(mpath, CLIP_SCHEMA).to_pylist() if r["status"] == "kept"
            and (not names or any(r["clip_id"].startswith(n) for n in names))][:clips]
    if not rows:
        sys.exit(f"no kept clips in {mpath}{' matching ' + str(names) if names else ''}")
    for r in rows:
        r["clip_path"] = str((root / r["clip_path"]).resolve())
    with ManifestWriter(out / "manifest.parquet", CLIP_SCHEMA) as w:
        for r in rows:
            w.add(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("curated", help="curated output folder (stc curate --out) or its manifest.parquet")
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--names", nargs="*", default=["hdtf"],
                    help="clip id prefixes to pick (default: hdtf); give none for any")
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--window", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--recipe", default="bfvr")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    opts = WindowOptions(window=args.window, max_windows=args.max_windows, size=args.size)
    bfvr = next(s.bfvr for s in load_recipe("bfvr").steps if s.kind == "bfvr")
    crf, preset = (bfvr.crf[0] + bfvr.crf[1]) // 2, bfvr.preset
    init_ray(num_cpus=args.workers)

    with tempfile.TemporaryDirectory(prefix="stc-degrade-bench-") as tmp:
        tmp = Path(tmp)
        rows = subset_manifest(Path(args.curated), args.clips, args.names, tmp / "curated")
        jobs = [(r["clip_path"], to_dict(opts), crf, preset) for r in rows]

        # Warm the process pool (imports) before timing, as Ray is warmed by init_ray.
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            list(pool.map(int, range(args.workers)))
            t0 = time.perf_counter()
            bare = list(pool.map(bare_encode_decode, jobs))
            bare_s = time.perf_counter() - t0

        # The same work in this process, one clip, no Ray: what the degradation itself costs.
        first = rows[0]
        t0 = time.perf_counter()
        serial_pairs = len(degrade_clip({"clip_id": first["clip_id"], "clip_fps": 25.0},
                                        Path(first["clip_path"]), load_recipe(args.recipe), 0, opts))
        serial_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bare_encode_decode(jobs[0])
        serial_bare_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        summary = run_degrade(tmp / "curated", tmp / "pairs", args.recipe, seed=0, opts=opts,
                              workers=args.workers, progress=False)
        pipe_s = time.perf_counter() - t0

    pairs, frames = summary["new_pairs"], summary["new_frames"]
    bare_pairs, bare_frames = sum(b[0] for b in bare), sum(b[1] for b in bare)
    if pairs != bare_pairs:
        sys.exit(f"the pipeline made {pairs} pairs but the bare run cut {bare_pairs} windows")
    result = {
        "benchmark": "degrade_throughput",
        "machine": {"cpus": os.cpu_count(), "workers": args.workers, "platform": platform.platform(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "clips": [r["clip_id"] for r in rows],
        "window": args.window, "size": args.size, "pairs": pairs, "frames": frames,
        args.recipe: {
            "seconds": round(pipe_s, 3),
            "pairs_per_s": round(pairs / pipe_s, 3),
            "frames_per_s": round(frames / pipe_s, 2),
            "bytes_per_pair": summary["bytes_per_pair"],
            "lq_bytes_per_pair": summary["lq_bytes_per_pair"],
            "hq_bytes_per_pair": summary["bytes_per_pair"] - summary["lq_bytes_per_pair"],
            "error_clips": summary["new_error_clips"],
        },
        "bare_x264_encode_decode": {
            "crf": crf, "preset": preset, "threads": 1,
            "seconds": round(bare_s, 3),
            "pairs_per_s": round(bare_pairs / bare_s, 3),
            "frames_per_s": round(bare_frames / bare_s, 2),
            "bytes_per_pair": round(sum(b[2] for b in bare) / bare_pairs),
        },
        "ratio_vs_bare": round(bare_s / pipe_s, 3),
        "in_process_one_clip": {
            "clip": first["clip_id"], "pairs": serial_pairs,
            f"{args.recipe}_seconds_per_pair": round(serial_s / serial_pairs, 3),
            "bare_seconds_per_pair": round(serial_bare_s / serial_pairs, 3),
            "ratio_vs_bare": round(serial_bare_s / serial_s, 3),
        },
        "goal_ratio": GOAL,
    }
    result["meets_goal"] = result["ratio_vs_bare"] >= GOAL
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
