"""What identity-true tracks cost: the same sources curated with the tracker's identity
check on (`tracks.max_drift_distance` as configured) and off (0), alternating, in one run.

Both modes compute every clip's mean embedding (`identity.min_faces` faces; person_id needs
it); the check adds the embeddings of its once-per-`drift_check_seconds` looks, which the
clip means then reuse. Per-pass worker seconds come from the curator's own timings:
identity work is `tracks` (the check runs inside the tracker) plus `identity` (topping the
clip means up). Alternating off/on twice spreads the load of a shared machine over both.

    .venv/bin/python benchmarks/identity_cost.py [VIDEOS...] [--rounds 2]

Default inputs: hdtf_1-3 and talkshow_1 from the shared clips. Prints one JSON object
(results: benchmarks/results/identity_cost.json).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig

VIDEOS = Path(os.environ.get("STC_TEST_VIDEOS", Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"))


def curate(sources: list[str], drift: bool, out: Path) -> dict[str, float]:
    cfg = CurateConfig.load(None)
    if not drift:
        cfg.tracks.max_drift_distance = 0.0
    total: dict[str, float] = {"frames": 0.0}
    t0 = time.perf_counter()
    for p in sources:
        rows, timings = ClipCurator(cfg, out)(p)
        total["frames"] += rows[0].get("num_frames") or 0
        for k, v in timings.items():
            total[k] = total.get(k, 0.0) + v
    total["wall"] = time.perf_counter() - t0
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sources = args.videos or [str(VIDEOS / f"{n}.mp4") for n in ("hdtf_1", "hdtf_2", "hdtf_3", "talkshow_1")]
    runs = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in ("off", "on"):
                runs[mode].append(curate(sources, mode == "on", Path(tmp) / f"{mode}{r}"))
    result = {"sources": sources, "rounds": args.rounds, "per_round": runs}
    for mode, rs in runs.items():
        passes = {k: sum(r[k] for r in rs) for k in rs[0] if k not in ("frames", "wall", "cpu")}
        ident = passes.get("tracks", 0.0) + passes.get("identity", 0.0)
        result[mode] = {"pass_seconds": {k: round(v, 2) for k, v in passes.items()},
                        "identity_seconds": round(ident, 2),
                        "identity_share_of_passes": round(ident / sum(passes.values()), 4),
                        "identity_seconds_per_1000_frames": round(
                            1000 * ident / sum(r["frames"] for r in rs), 2)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
