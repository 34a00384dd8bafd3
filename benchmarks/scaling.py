"""How `stc curate` and `stc degrade` scale: 1 and 2 workers on a local Ray, and 1 and 2
nodes of a real local Ray cluster (two raylets on 127.0.0.1, one CPU each, joined with
`--address`), on the same inputs.

Every run is the `stc` command line in its own process, as a user runs it; times are the
pipeline's own `wall_seconds` (run_stats.json: from the first actor's start to the last row,
model loading included, Ray's start excluded). Efficiency is speedup / workers, so 1.0 is
linear. Settings alternate and repeat (--repeat, median kept) so that load from other work
hits both sides alike. CPU seconds per item (workers' and their ffmpeg children's, from the
run stats) do not depend on that load: they are the costs docs/scale.md sizes clusters
with, and their ratio (`cpu_efficiency`) says whether the work itself gets dearer when two
workers share the machine. The per-step seconds per video of the 1-worker run are what docs/scale.md builds its
cluster sizes from. Rows of the 1- and 2-node runs are compared: they must be identical.

    .venv/bin/python benchmarks/scaling.py [VIDEOS_DIR] [--config default] [--limit N]
        [--out benchmarks/results/scaling.json]

Prints one JSON object (and writes it to --out). The load average before and after is
recorded: on a machine shared with other work the 2-worker numbers are lower bounds.

`driver`: the driver's own CPU seconds per input on the 2-node cluster, today's driver
against the one before issue 27 (commit 4630147, the last before workers wrote their own
parts), in the same run: `benchmarks/driver_harness.py` runs the same pipeline declaration
(a near-free worker returning three curate-shaped rows per input) once with each tree on
PYTHONPATH (the baseline from a `git worktree` of that commit, mapped into the `stc`
namespace the way pyproject.toml maps this tree), alternating, median kept.
`--driver-only` runs just that part.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
STC = [sys.executable, "-m", "stc.pipelines.cli"]


def stc(*args: str) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    run = subprocess.run([*STC, *args, "--json"], capture_output=True, text=True, env=env,
                         cwd=ROOT)
    if run.returncode not in (0, 1):
        raise RuntimeError(f"stc {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout)


def _common(s: dict, items: int, load: float) -> dict:
    wall = s["wall_seconds"]
    return {"wall_seconds": wall, "worker_seconds_per_item": round(s["item_seconds"] / max(1, items), 3),
            "cpu_seconds_per_item": round(s["item_cpu_seconds"] / max(1, items), 3),
            "nodes": len(s["nodes"]), "items_per_node": sorted(s["nodes"].values()),
            "load_avg_1m": round(load, 2)}


def curate(inputs: str, out: Path, config: str, limit: int | None, ray: list[str]) -> dict:
    extra = ["--limit", str(limit)] if limit else []
    load = os.getloadavg()[0]
    s = stc("curate", inputs, "--out", str(out), "--config", config, *extra, *ray)
    frames = s.get("input_frames") or 0
    return {"videos": s["processed"], "input_frames": frames,
            "cpu_seconds_per_1000_frames": round(s["item_cpu_seconds"] / frames * 1000, 3)
            if frames else None,
            "stage_cpu_seconds_per_1000_frames": stage_cpu(s, frames),
            "videos_per_s": round(s["processed"] / s["wall_seconds"], 4),
            "input_frames_per_s": round(frames / s["wall_seconds"], 2),
            **_common(s, s["processed"], load),
            "steps": {k: v["seconds_per_item"] for k, v in s["steps"].items()}}


def degrade(cur: Path, out: Path, window: int, size: int, windows: int, ray: list[str]) -> dict:
    load = os.getloadavg()[0]
    s = stc("degrade", str(cur), "--out", str(out), "--recipe", "bfvr", "--seed", "0",
            "--window", str(window), "--size", str(size), "--max-windows", str(windows), *ray)
    pairs = s["new_pairs"]
    return {"clips": s["processed_clips"], "pairs": pairs, "frames": s["new_frames"],
            "cpu_seconds_per_1000_frames": round(s["item_cpu_seconds"] / s["new_frames"] * 1000, 3)
            if s["new_frames"] else None,
            "pairs_per_s": round(pairs / s["wall_seconds"], 4),
            "frames_per_s": round(s["new_frames"] / s["wall_seconds"], 2),
            "bytes_per_pair": s["bytes_per_pair"], **_common(s, pairs, load)}


def stage_cpu(s: dict, frames: int) -> dict[str, float]:
    """Each curate stage's CPU seconds (the worker thread's, the write's ffmpeg included:
    the `cpu.<stage>` timings) per 1,000 input frames, over the whole run."""
    if not frames:
        return {}
    return {k[len("cpu."):]: round(v["seconds"] / frames * 1000, 3)
            for k, v in s["steps"].items() if k.startswith("cpu.")}


def measured_at() -> dict:
    """The commit the figures were measured at, and whether the tree differed from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True,
                              text=True).stdout
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_paths": changed}


def median_run(runs: list[dict], rate: str) -> dict:
    """The run with the median rate (of two: the faster), its own numbers, not a mix of runs."""
    ordered = sorted(runs, key=lambda r: r[rate])
    return {**ordered[len(ordered) // 2], "repeats": [r[rate] for r in runs]}


def efficiency(one: dict, two: dict, rate: str) -> float:
    """End to end: the wall-clock rate of two over the rate of one, divided by 2."""
    return round(two[rate] / one[rate] / 2, 3)


def cpu_efficiency(one: dict, two: dict) -> float:
    """CPU seconds per item alone / beside a second worker: 1.0 when the work itself does
    not get dearer in parallel (memory bandwidth, caches), whatever the machine's load."""
    return round(one["cpu_seconds_per_item"] / two["cpu_seconds_per_item"], 3)


def same_rows(a: Path, b: Path, kind: str) -> bool:
    from stc.manifests.clips import CLIP_SCHEMA
    from stc.manifests.io import read_manifest
    from stc.manifests.pairs import PAIRS_SCHEMA

    if kind == "clips":
        return read_manifest(a / "manifest.parquet", CLIP_SCHEMA).equals(
            read_manifest(b / "manifest.parquet", CLIP_SCHEMA))
    drop = "lq_path_or_shard"          # shard file names carry a time stamp
    return read_manifest(a / "pairs.parquet", PAIRS_SCHEMA).drop(columns=drop).equals(
        read_manifest(b / "pairs.parquet", PAIRS_SCHEMA).drop(columns=drop))


BASE_COMMIT = "4630147"
HARNESS = ROOT / "benchmarks" / "driver_harness.py"
PACKAGES = ("core", "manifests", "curation", "degrade", "model", "audit", "pipelines")


def baseline_tree(where: Path) -> Path:
    """A PYTHONPATH entry whose `stc.*` packages are those of BASE_COMMIT."""
    tree, ns = where / "tree", where / "ns"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree),
                        BASE_COMMIT], check=True, capture_output=True)
    (ns / "stc").mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        link = ns / "stc" / pkg
        if not link.exists():
            link.symlink_to(tree / pkg)
    return ns


def driver_cost(address: str, inputs: int, repeat: int, tmp: Path, base: Path) -> dict:
    runs: dict[str, list[dict]] = {"before": [], "now": []}
    for rep in range(repeat):
        for name, path in (("before", str(base)), ("now", "")):
            env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": path}
            r = subprocess.run([sys.executable, str(HARNESS), "--address", address, "--inputs",
                                str(inputs), "--out", str(tmp / f"driver-{name}-{rep}")],
                               capture_output=True, text=True, env=env, cwd="/")
            if r.returncode != 0:
                raise RuntimeError(f"driver harness ({name}) failed:\n{r.stderr[-3000:]}")
            runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    pick = {k: sorted(v, key=lambda x: x["driver_cpu_seconds"])[len(v) // 2] for k, v in runs.items()}
    import pyarrow.parquet as pq

    from stc.manifests.io import committed_files

    def rows(folder: Path):
        # The columns both versions write (a newer schema may add some), in key order.
        t = pq.read_table(committed_files(folder / "manifest.parquet"))
        keep = [c for c in t.column_names if not c.startswith("prov_")]
        return t.select(keep).sort_by("clip_id")

    before, now = rows(tmp / "driver-before-0"), rows(tmp / "driver-now-0")
    common = [c for c in before.column_names if c in now.column_names]
    same = before.select(common).equals(now.select(common))
    return {"inputs": inputs, "before": pick["before"], "now": pick["now"],
            "repeats": {k: [x["driver_cpu_ms_per_input"] for x in v] for k, v in runs.items()},
            "driver_cpu_per_input_ratio": round(pick["before"]["driver_cpu_seconds"]
                                                / pick["now"]["driver_cpu_seconds"], 2),
            "same_manifest": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="?", default=str(DEFAULT_VIDEOS))
    ap.add_argument("--config", default="default")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--window", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each setting (median kept)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.json"))
    ap.add_argument("--driver-inputs", type=int, default=600)
    ap.add_argument("--driver-only", action="store_true")
    ap.add_argument("--stages-only", action="store_true",
                    help="one 1-worker curate and degrade: the per-stage CPU seconds per "
                         "1,000 frames docs/scale.md is built from (benchmarks/scale_doc.py)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="stc-scaling-"))
    if args.stages_only:
        ray = ["--num-cpus", "2", "--workers", "1"]
        c = curate(args.videos, tmp / "cur", args.config, args.limit, ray)
        d = degrade(tmp / "cur", tmp / "pairs", args.window, args.size, args.max_windows, ray)
        result = {"benchmark": "scaling (stages)", "measured_at": measured_at(),
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "load_avg_1m_before": round(load_before[0], 2),
                              "load_avg_1m_after": round(os.getloadavg()[0], 2)},
                  "inputs": {"videos": args.videos, "config": args.config, "limit": args.limit},
                  "degrade_settings": {"recipe": "bfvr", "window": args.window, "size": args.size,
                                       "max_windows": args.max_windows},
                  "curate": c, "degrade": d}
        shutil.rmtree(tmp, ignore_errors=True)
        text = json.dumps(result, indent=2)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(text)
        return
    base = baseline_tree(Path(tempfile.gettempdir()) / "stc-scaling-base")
    if args.driver_only:
        from ray.cluster_utils import Cluster

        node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 << 20}
        pair = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        try:
            pair.add_node(**node)
            pair.wait_for_nodes()
            result = {"benchmark": "scaling (driver only)", "measured_at": measured_at(),
                      "load_avg_1m_before": round(load_before[0], 2),
                      "driver": driver_cost(pair.address, args.driver_inputs, args.repeat, tmp, base)}
        finally:
            pair.shutdown()
        result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        result["meets_goal"] = result["driver"]["driver_cpu_per_input_ratio"] >= 5
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(result, indent=2))
        return
    raw: dict[str, dict[str, list[dict]]] = {"curate": {}, "degrade": {}}

    def both(name: str, ray: list[str], rep: int) -> None:
        t0 = time.perf_counter()
        where = tmp / f"{name}-{rep}"
        raw["curate"].setdefault(name, []).append(
            curate(args.videos, where / "cur", args.config, args.limit, ray))
        raw["degrade"].setdefault(name, []).append(
            degrade(where / "cur", where / "pairs", args.window, args.size, args.max_windows, ray))
        print(f"{name} #{rep}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    # Alternating runs, so that a change in the machine's load hits both sides alike.
    for rep in range(args.repeat):
        both("1_worker", ["--num-cpus", "2", "--workers", "1"], rep)
        both("2_workers", ["--num-cpus", "2", "--workers", "2"], rep)

    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 << 20}
    head = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    pair = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        pair.add_node(**node)
        pair.wait_for_nodes()
        for rep in range(args.repeat):
            both("1_node", ["--address", head.address], rep)
            both("2_nodes", ["--address", pair.address], rep)
        driver = driver_cost(pair.address, args.driver_inputs, args.repeat, tmp, base)
    finally:
        pair.shutdown()
        head.shutdown()
    load_after = os.getloadavg()

    c = {k: median_run(v, "videos_per_s") for k, v in raw["curate"].items()}
    d = {k: median_run(v, "pairs_per_s") for k, v in raw["degrade"].items()}
    result = {
        "benchmark": "scaling",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m_before": round(load_before[0], 2),
                    "load_avg_1m_after": round(load_after[0], 2),
                    "shared": load_before[0] > 1.5 or load_after[0] > 1.5},
        "inputs": {"videos": args.videos, "config": args.config, "limit": args.limit},
        "degrade_settings": {"recipe": "bfvr", "window": args.window, "size": args.size,
                             "max_windows": args.max_windows},
        "repeats": args.repeat,
        "curate": c,
        "degrade": d,
        "efficiency": {
            "curate_2_workers": efficiency(c["1_worker"], c["2_workers"], "videos_per_s"),
            "curate_2_nodes": efficiency(c["1_node"], c["2_nodes"], "videos_per_s"),
            "degrade_2_workers": efficiency(d["1_worker"], d["2_workers"], "pairs_per_s"),
            "degrade_2_nodes": efficiency(d["1_node"], d["2_nodes"], "pairs_per_s"),
        },
        "cpu_efficiency": {
            "curate_2_workers": cpu_efficiency(c["1_worker"], c["2_workers"]),
            "curate_2_nodes": cpu_efficiency(c["1_node"], c["2_nodes"]),
            "degrade_2_workers": cpu_efficiency(d["1_worker"], d["2_workers"]),
            "degrade_2_nodes": cpu_efficiency(d["1_node"], d["2_nodes"]),
        },
        "identical_rows_1_vs_2_nodes": {
            "curate": same_rows(tmp / "1_node-0" / "cur", tmp / "2_nodes-0" / "cur", "clips"),
            "degrade": same_rows(tmp / "1_node-0" / "pairs", tmp / "2_nodes-0" / "pairs", "pairs"),
        },
        "goal_efficiency": 0.8,
        "driver": driver,
    }
    result["meets_goal"] = all(v >= 0.8 for v in result["efficiency"].values())
    shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
