"""What shot detection costs per pass, for this tree and (optionally) a baseline tree and a
full TransNetV2 run, on the same inputs in one run.

Each variant curates the same inputs with `ClipCurator` (one worker, the default config but
128 px ultrafast clips: the clip size and preset do not touch shot detection) in a
subprocess of its own, and reports worker-seconds per 1,000 input frames of the `shots`
pass (thumbnails to the detector, TransNetV2 on the blocks its gate opens, the fade and
wipe checks, and the faces of the frames the jump-cut check asks for) beside the `faces`
pass, the TransNetV2 blocks run, and the transitions found.

    git worktree add /tmp/stc_base HEAD      # the tree before the change
    .venv/bin/python benchmarks/shot_detection.py --baseline /tmp/stc_base

Inputs (built in a temp folder from the shared clips, as the tests build them): the
edit with every transition kind (tests/transitions_footage.py), four letterboxed clips
joined by hard cuts and a 12 s single shot (tests/raw_footage.py), and the shared clips
themselves (face-filling single shots). Prints one JSON object (`--save FILE` writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
PACKAGES = ("core", "manifests", "curation", "degrade", "model", "audit", "pipelines")

RUNNER = r"""
import json, sys, time
from dataclasses import replace
from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig
files, out, gate = sys.argv[1:-2], sys.argv[-2], sys.argv[-1] == "gate"
cfg = CurateConfig.load(None)
cfg = replace(cfg, crop=replace(cfg.crop, size=128, min_crop_side=96),
              encode=replace(cfg.encode, preset="ultrafast"),
              shots=replace(cfg.shots, gate=gate))
cur = ClipCurator(cfg, out)
cur.detector, cur.landmarks, cur.embedder        # models loaded before the clock runs
from stc.curation.shots import load_transnetv2
load_transnetv2()
totals, frames, per = {}, 0, {}
for f in files:
    rows, timings = cur(f)
    n = max(int(r.get("num_frames") or 0) for r in rows)
    frames += n
    for k, v in timings.items():
        totals[k] = totals.get(k, 0.0) + v
    sid = rows[0]["source_id"]
    doc = json.load(open(f"{out}/shots/{sid}.json"))
    per[f.rsplit("/", 1)[-1]] = {"frames": n, "transitions": doc.get("transitions") or
                                 [s[:2] for s in doc["shots"][1:]],
                                 "stats": doc.get("detector_stats")}
print(json.dumps({"frames": frames, "per_1000_frames": {k: round(1000 * v / frames, 2)
                  for k, v in totals.items()}, "inputs": per}))
"""


def _pythonpath(tree: Path, tmp: Path) -> str:
    """A folder where `stc.<pkg>` is `tree/<pkg>`, as pyproject's package-dir maps it."""
    ns = tmp / f"ns-{abs(hash(str(tree)))}" / "stc"
    ns.mkdir(parents=True, exist_ok=True)
    for p in PACKAGES:
        if (tree / p).exists() and not (ns / p).exists():
            (ns / p).symlink_to(tree / p)
    return f"{ns.parent}{os.pathsep}{tree}"


def _run(tree: Path, files: list[str], tmp: Path, gate: bool, name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": _pythonpath(tree, tmp), "OMP_NUM_THREADS": "1"}
    out = tmp / f"out-{name}"
    proc = subprocess.run([sys.executable, "-c", RUNNER, *files, str(out), "gate" if gate else "full"],
                          env=env, capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    ap.add_argument("--baseline", type=Path, help="a tree of an earlier commit (git worktree)")
    ap.add_argument("--no-full", action="store_true", help="skip the ungated TransNetV2 run")
    ap.add_argument("--save", type=Path)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests import raw_footage, transitions_footage

    with tempfile.TemporaryDirectory(prefix="stc-shots-bench-") as t:
        tmp = Path(t)
        v = args.videos
        files = [str(transitions_footage.every_transition(v, tmp / "every.mp4").path),
                 str(raw_footage.joined(v, tmp / "cuts.mp4", [
                     ("hdtf_1.mp4", 60, 1.0), ("talkshow_1.mp4", 50, 1.4),
                     ("hdtf_3.mp4", 70, 1.3), ("talkshow_3.mp4", 40, 1.0)]).path),
                 str(raw_footage.ping_pong(v, tmp / "long.mp4", "hdtf_5.mp4", 100, 300, 1.2).path)]
        files += [str(v / f"{n}.mp4") for n in ("hdtf_2", "hdtf_4", "hdtf_6", "talkshow_2")]
        result = {"inputs": [Path(f).name for f in files], "note": "worker-seconds per 1,000 "
                  "input frames, one worker; measured under load from parallel jobs"}
        variants = [("this_tree_gated", ROOT, True)]
        if not args.no_full:
            variants.append(("this_tree_transnetv2_on_every_block", ROOT, False))
        if args.baseline:
            variants.insert(0, ("baseline", args.baseline.resolve(), True))
        for name, tree, gate in variants:
            result[name] = _run(tree, files, tmp, gate, name)
    text = json.dumps(result, indent=1)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
