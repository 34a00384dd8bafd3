"""The driver's own CPU per input, for `benchmarks/scaling.py`: one run of the shared
pipeline driver (`stc.pipelines.driver.run_pipeline`) over N synthetic inputs on an existing
Ray cluster, with a worker that costs almost nothing and returns curate-shaped rows (three
clip rows per input), so that what is measured is the driver's side only.

    PYTHONPATH=TREE python benchmarks/driver_harness.py --address HOST:PORT --inputs 600 \
        --out DIR

runs whichever `stc` PYTHONPATH names (the baseline of a `git worktree`, or this tree):
the same declaration works on both. Ray is joined before the clock starts (both versions
pay the same for it) and the workers get the same PYTHONPATH, so each side runs its own
worker code. Prints one JSON object: driver CPU seconds (process time of this process from
`run_pipeline`'s start to its return: scheduling, results, part writes or commits,
compaction) per input, wall seconds, and the manifest read back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


class TinyWorker:
    """Three kept clip rows per input, as curate makes them, at almost no cost."""

    def __init__(self, **_):
        pass

    def __call__(self, item):
        sid = item["source_id"]
        return {"rows": [{"clip_id": f"{sid}_s000_t00_{k:02d}", "source_id": sid,
                          "source_path": item["source_path"], "source": "bench",
                          "status": "kept", "reason": "kept", "message": "",
                          "clip_path": f"clips/{sid}_{k}.mp4", "shot_index": 0,
                          "track_index": k, "start_frame": 50 * k, "end_frame": 50 * k + 48,
                          "clip_size": 512, "clip_num_frames": 48, "clip_fps": 25.0}
                         for k in range(3)], "timings": {"decode": 0.0}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--inputs", type=int, default=600)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    # A cluster on 127.0.0.1: join it there, as stc.core.runtime.init_ray does (Ray would
    # otherwise rewrite the address to the machine's public one).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    from stc.manifests.clips import CLIP_SCHEMA
    from stc.pipelines.driver import Pipeline, run_pipeline

    out = os.path.abspath(args.out)
    items = [{"source_id": f"v{i:06d}", "source_path": f"/raw/v{i:06d}.mp4"}
             for i in range(args.inputs)]
    p = Pipeline(name="bench", unit="video", out=out, worker=TinyWorker, worker_kwargs={},
                 key="source_id", to_rows=lambda item, payload: payload["rows"],
                 error_rows=lambda item, msg: [], manifest=os.path.join(out, "manifest.parquet"),
                 schema=CLIP_SCHEMA)
    c0, t0 = time.process_time(), time.perf_counter()
    report = run_pipeline(p, items, {}, progress=False, log=lambda m: None)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    import stc.pipelines.driver as drv

    print(json.dumps({"stc": os.path.dirname(os.path.dirname(drv.__file__)),
                      "inputs": args.inputs, "rows": report.rows,
                      "nodes": len(report.nodes), "driver_cpu_seconds": round(cpu, 3),
                      "driver_cpu_ms_per_input": round(1000 * cpu / args.inputs, 3),
                      "wall_seconds": round(wall, 2)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
