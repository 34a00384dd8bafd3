"""`stc curate` against its floor, per pass, for this tree and (optionally) a baseline tree,
in one run.

The floor is what no curator can beat: decode each source once and encode one 512x512
x264 stream per kept clip (the clip's frames, cropped and scaled as stc crops them) at the
shipped preset and CRF, two sources at a time, in one ffmpeg per source (one decode, a
`split` to every clip's encoder). `floor_decode` is the decode alone. stc's figure is the
wall time of `stc curate` on the same inputs with the same workers (Ray started before the
clock runs: a cluster is started once per session, not once per dataset).

Each tree runs in a subprocess of its own, so a baseline tree (a `git worktree` of an
earlier commit) is measured beside this one under the same load:

    git worktree add /tmp/stc_base 4630147
    .venv/bin/python benchmarks/curate_throughput.py --cases shared,raw720p --baseline /tmp/stc_base

`--baseline` maps the `stc.*` namespace onto that tree as `pyproject.toml`'s `package-dir`
does (symlinks in a temp folder put first on PYTHONPATH). Cases: `shared` (the VIDEOS
folder, default ../shared/data/videos) and `raw720p` (1280x720 raw-style inputs built from
it as the tests build them, tests/raw_footage.py: six clips joined by hard cuts, two people
side by side, a 20 s single shot).

Per tree and case: wall seconds, CPU seconds of the workers and their ffmpeg children,
`floor_ratio` (stc wall / floor wall; `cpu_floor_ratio` the same in CPU seconds, the figure
a machine shared with other jobs distorts least), and `per_pass` in worker-seconds per
1,000 input frames (decode, shots, faces, tracks, side face, text, quality, motion, write,
whichever the tree times), `cpu_per_pass` the same in CPU seconds where the tree times them
(the write's includes its ffmpeg; wall seconds on a loaded machine count waiting), plus each tree's decisions and how many of them agree with the
first tree's. Prints one JSON object (`--save FILE` also writes it).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
sys.path.insert(0, str(ROOT))

from stc.core.video import ffmpeg_exe, x264_args  # noqa: E402
from stc.curation.config import CurateConfig  # noqa: E402
from stc.pipelines.inputs import gather_inputs  # noqa: E402

PACKAGES = ("core", "manifests", "curation", "degrade", "model", "audit", "pipelines")
DECISION_COLUMNS = ("clip_id", "status", "reason", "start_frame", "end_frame",
                    "crop_x0", "crop_y0", "crop_x1", "crop_y1")

# Runs inside the tree's own interpreter path: curate FILES into OUT, print the summary
# and the decisions as JSON on the last line.
RUNNER = r"""
import json, sys, time
from stc.core.runtime import init_ray
from stc.pipelines.curate import run_curate
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import read_manifest
args = json.loads(sys.argv[1])
init_ray(num_cpus=args["workers"])
t0 = time.perf_counter()
summary = run_curate(args["files"], args["out"], config=args["config"], workers=args["workers"],
                     progress=False)
seconds = time.perf_counter() - t0
m = read_manifest(args["out"] + "/manifest.parquet", CLIP_SCHEMA)
cols = [c for c in args["columns"] if c in m.columns]
m = m.sort_values("clip_id")
rows = [{c: (None if v != v else (v.item() if hasattr(v, "item") else v)) for c, v in zip(cols, r)}
        for r in m[cols].itertuples(index=False)]
kept = m[m["status"] == "kept"]
clips = [[r.source_path, int(r.start_frame), int(r.end_frame),
          [int(r.crop_x0), int(r.crop_y0), int(r.crop_x1), int(r.crop_y1)]]
         for r in kept.itertuples()]
print(json.dumps({"seconds": seconds, "summary": summary, "decisions": rows, "clips": clips},
                 default=str))
"""


def tree_env(tree: Path | None, tmp: Path) -> dict[str, str]:
    """The environment that makes `stc.*` import from `tree` (None: this install)."""
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    if tree is None:
        return env
    ns = tmp / f"ns_{tree.name}" / "stc"
    ns.mkdir(parents=True, exist_ok=True)
    for p in PACKAGES:
        link = ns / p
        if not link.exists():
            link.symlink_to(tree.resolve() / p, target_is_directory=True)
    rest = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([str(ns.parent), str(tree.resolve()), *rest])
    return env


def run_tree(tree: Path | None, files: list[str], out: Path, config: str, workers: int,
             tmp: Path) -> dict:
    args = {"files": files, "out": str(out), "config": config, "workers": workers,
            "columns": list(DECISION_COLUMNS)}
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(args)], env=tree_env(tree, tmp),
                          capture_output=True, text=True, cwd=str(tree or ROOT))
    if proc.returncode != 0:
        sys.exit(f"curate in {tree or ROOT} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def floor_job(src: str, clips: list[tuple[int, int, list[int]]], size: int, enc: list[str],
              out: Path) -> None:
    """One decode of `src`, every clip trimmed, cropped, scaled and x264-encoded from it."""
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", src]
    if not clips:
        cmd += ["-map", "0:v", "-f", "null", "-"]
    else:
        parts = [f"[0:v]split={len(clips)}" + "".join(f"[i{k}]" for k in range(len(clips)))]
        for k, (a, b, (x0, y0, x1, y1)) in enumerate(clips):
            parts.append(f"[i{k}]trim=start_frame={a}:end_frame={b},setpts=PTS-STARTPTS,"
                         f"crop={x1 - x0}:{y1 - y0}:{x0}:{y0},"
                         f"scale={size}:{size}:flags=lanczos,setsar=1[o{k}]")
        cmd += ["-filter_complex", ";".join(parts)]
        for k in range(len(clips)):
            cmd += ["-map", f"[o{k}]", "-an", "-fps_mode", "passthrough", *enc,
                    str(out / f"floor_{os.getpid()}_{abs(hash(src))}_{k}.mp4")]
    subprocess.run(cmd, check=True)


def floor(files: list[str], clips: list, size: int, enc: list[str], workers: int,
          out: Path, decode_only: bool = False) -> dict:
    by_src: dict[str, list] = {f: [] for f in files}
    for src, a, b, box in clips:
        by_src.setdefault(src, []).append((a, b, box))
    out.mkdir(parents=True, exist_ok=True)
    cpu0, t0 = children_cpu(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda kv: floor_job(kv[0], [] if decode_only else kv[1], size, enc, out),
                      by_src.items()))
    return {"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(children_cpu() - cpu0, 2),
            "clips": 0 if decode_only else len(clips),
            "clip_frames": 0 if decode_only else sum(b - a for _, a, b, _ in clips)}


def raw_footage_inputs(videos: Path, folder: Path) -> list[str]:
    from tests import raw_footage

    folder.mkdir(parents=True, exist_ok=True)
    parts = [("hdtf_1.mp4", 100, 1.0), ("talkshow_1.mp4", 100, 1.4), ("hdtf_3.mp4", 100, 1.3),
             ("talkshow_4.mp4", 100, 1.2), ("hdtf_6.mp4", 100, 0.9), ("talkshow_3.mp4", 100, 1.0)]
    built = [raw_footage.joined(videos, folder / "cuts.mp4", parts),
             raw_footage.side_by_side(videos, folder / "two.mp4", "hdtf_2.mp4", "hdtf_4.mp4", 200),
             raw_footage.ping_pong(videos, folder / "long.mp4", "hdtf_5.mp4", 200, 500, 1.2)]
    return [str(b.path) for b in built]


def measure_case(name: str, files: list[str], trees: list[tuple[str, Path | None]], args,
                 tmp: Path) -> dict:
    cfg = CurateConfig.load(args.config)
    enc = x264_args(cfg.encode.crf, cfg.encode.preset, cfg.encode.pix_fmt, cfg.encode.threads,
                    cfg.encode.keyint)
    result: dict = {"videos": len(files)}
    result["floor_decode"] = floor(files, [], cfg.crop.size, enc, args.workers,
                                   tmp / f"{name}_fd", decode_only=True)
    reference = None
    for label, tree in trees:
        run = run_tree(tree, files, tmp / f"{name}_{label}", args.config, args.workers, tmp)
        summary = run["summary"]
        frames = int(summary.get("input_frames") or 0)
        steps = {k: v["seconds"] for k, v in summary["steps"].items()
                 if k != "cpu" and not k.startswith("cpu.")}
        # Trees that time CPU per step report it as "cpu.STEP"; older ones only in total.
        cpu_steps = {k[4:]: v["seconds"] for k, v in summary["steps"].items() if k.startswith("cpu.")}
        cpu = summary["steps"].get("cpu", {}).get("seconds", float("nan"))
        fl = floor(files, run["clips"], cfg.crop.size, enc, args.workers, tmp / f"{name}_floor_{label}")
        decisions = {d["clip_id"]: d for d in run["decisions"]}
        entry = {
            "input_frames": frames,
            "seconds": round(run["seconds"], 2), "cpu_seconds": round(cpu, 2),
            "floor": fl,
            "floor_ratio": round(run["seconds"] / fl["seconds"], 3),
            "cpu_floor_ratio": round(cpu / fl["cpu_seconds"], 3),
            "status": summary.get("status"), "reasons": summary.get("reasons"),
            "kept_clips": len(run["clips"]),
            "per_pass": {k: round(1000 * v / max(1, frames), 2) for k, v in sorted(steps.items())},
            "cpu_per_pass": {k: round(1000 * v / max(1, frames), 2) for k, v in sorted(cpu_steps.items())}
            or None,
            "worker_seconds_per_1000_frames": round(1000 * sum(steps.values()) / max(1, frames), 2),
            "cpu_seconds_per_1000_frames": round(1000 * cpu / max(1, frames), 2),
        }
        if reference is None:
            reference = decisions
        else:
            same = sum(1 for k, d in decisions.items() if reference.get(k) == d)
            entry["decisions_same_as_first"] = f"{same} of {len(decisions)} rows " \
                                               f"(first tree: {len(reference)})"
        entry["largest_pass"] = max(steps, key=steps.get) if steps else None
        if cpu_steps:
            entry["largest_pass_cpu"] = max(cpu_steps, key=cpu_steps.get)
        result[label] = entry
    if "baseline" in result:
        now, before = result["stc"], result["baseline"]
        result["summary"] = {
            "floor_ratio": {"stc": now["floor_ratio"], "baseline": before["floor_ratio"]},
            "cpu_floor_ratio": {"stc": now["cpu_floor_ratio"], "baseline": before["cpu_floor_ratio"]},
            "wall_speedup_vs_baseline": round(before["seconds"] / now["seconds"], 3),
            "cpu_speedup_vs_baseline": round(before["cpu_seconds"] / now["cpu_seconds"], 3),
            "per_pass_before_after": {k: [before["per_pass"].get(k), now["per_pass"].get(k)]
                                      for k in sorted(set(now["per_pass"]) | set(before["per_pass"]))},
            "cpu_per_pass_before_after": {
                k: [(before["cpu_per_pass"] or {}).get(k), (now["cpu_per_pass"] or {}).get(k)]
                for k in sorted(set(now["cpu_per_pass"] or {}) | set(before["cpu_per_pass"] or {}))},
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="?", default=str(DEFAULT_VIDEOS))
    ap.add_argument("--cases", default="shared,raw720p", help="comma list of shared, raw720p")
    ap.add_argument("--config", default="default")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tree", type=Path, default=None,
                    help="the stc tree to measure as `stc` (default: this install); a worktree "
                         "of a commit keeps others' uncommitted edits out of the figures")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another stc tree (a git worktree) to measure beside this one")
    ap.add_argument("--save", type=Path, default=None)
    args = ap.parse_args()

    videos = Path(args.videos)
    trees: list[tuple[str, Path | None]] = [("stc", args.tree)]
    if args.baseline is not None:
        trees.append(("baseline", args.baseline))
    out = {"benchmark": "curate_throughput",
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "ffmpeg": ffmpeg_exe()},
           "config": args.config, "workers": args.workers,
           "trees": {label: str(t or ROOT) for label, t in trees},
           "baseline_commit": _commit(args.baseline) if args.baseline else None,
           "commit": _commit(args.tree or ROOT), "load_average_at_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="stc-bench-") as tmp:
        tmp = Path(tmp)
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            if case == "shared":
                files = [p for p, _ in gather_inputs([str(videos)])]
            elif case == "raw720p":
                files = raw_footage_inputs(videos, tmp / "raw")
            else:
                sys.exit(f"unknown case {case!r}: use shared, raw720p")
            if not files:
                sys.exit(f"no videos in {videos}: point the benchmark at a folder of face videos")
            out[case] = measure_case(case, files, trees, args, tmp)
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(out, indent=2)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


def _commit(tree: Path) -> str | None:
    r = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return r.stdout.strip() or None


if __name__ == "__main__":
    main()
