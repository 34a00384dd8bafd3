"""The margin of TransNetV2's coarse pass (`ShotConfig.coarse_stride`, `coarse_threshold`).

The coarse pass scores every stride-th frame and the full-rate pass runs only near what it
flags, so it must score every transition the full-rate network finds above the threshold,
and single shots below it. This prints, in one JSON object:

- `single_shots`: the highest coarse score (either head) on each shared clip (real,
  single-shot, face-filling, moving heads: the clips a picture-change gate cannot skip);
- `transitions`: for hard cuts and dissolves of `--lengths` frames built from ordered pairs
  of the shared clips (the blend computed on the 48x27 thumbnails TransNetV2 reads), the
  full-rate single-frame score and the lowest coarse score over every phase of the stride,
  and the weakest of them among those the full-rate pass finds (score > 0.5);
- `margin`: weakest transition / highest single shot, and where the threshold sits.

    .venv/bin/python benchmarks/shot_gate.py --pairs 20 --save benchmarks/results/shot_gate.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stc.core.video import read_frames  # noqa: E402
from stc.curation.config import ShotConfig  # noqa: E402
from stc.curation.shots import CONTEXT, TRANSNET_SIZE, load_transnetv2  # noqa: E402


def scores(model, thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both heads on [T, 27, 48, 3], padded with the first and last frame as TransNetV2's
    own whole-video runs pad."""
    import torch

    x = torch.from_numpy(np.clip(np.round(thumbs), 0, 255).astype(np.uint8))[None]
    x = torch.cat([x[:, :1].repeat(1, CONTEXT, 1, 1, 1), x, x[:, -1:].repeat(1, CONTEXT, 1, 1, 1)], 1)
    with torch.inference_mode():
        s, m = model.predict_raw(x)
    n = len(thumbs)
    return s[0, CONTEXT:CONTEXT + n, 0].float().numpy(), m[0, CONTEXT:CONTEXT + n, 0].float().numpy()


def coarse(model, thumbs: np.ndarray, stride: int, phase: int) -> np.ndarray:
    """Per frame, the higher head at the sub-sampled frame at or before it."""
    s, m = scores(model, thumbs[phase::stride])
    v = np.repeat(np.maximum(s, m), stride)
    return np.concatenate([np.full(phase, v[0]), v])[:len(thumbs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="?", default=str(ROOT.parent / "shared" / "data" / "videos"))
    ap.add_argument("--pairs", type=int, default=20, help="ordered clip pairs sampled (seed 0)")
    ap.add_argument("--lengths", default="0,3,6,10,15,25,40", help="dissolve lengths; 0: a hard cut")
    ap.add_argument("--save", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cfg = ShotConfig()
    model = load_transnetv2(cfg.precision)
    thumbs = {p.stem: np.stack([cv2.resize(f, TRANSNET_SIZE, interpolation=cv2.INTER_AREA)
                                for f in read_frames(p)]).astype(np.float32)
              for p in sorted(Path(args.videos).glob("*.mp4"))}
    single = {n: round(float(max(coarse(model, t, cfg.coarse_stride, p).max()
                                 for p in range(cfg.coarse_stride))), 4) for n, t in thumbs.items()}
    names = [n for n in thumbs if not n.startswith("degraded")]
    pairs = random.Random(0).sample(list(itertools.permutations(names, 2)), min(args.pairs, len(names) * (len(names) - 1)))
    lengths = [int(x) for x in args.lengths.split(",")]
    rows = []
    for i, (a, b) in enumerate(pairs):
        length = lengths[i % len(lengths)]
        A, B = thumbs[a], thumbs[b]
        at = 40
        seq = [A[j] for j in range(at)]
        for j in range(length):
            w = (j + 1) / (length + 1)
            seq.append(A[min(at + j, len(A) - 1)] * (1 - w) + B[j] * w)
        seq += [B[j] for j in range(length, min(len(B), length + 40))]
        seq = np.stack(seq)
        lo, hi = at - 4, at + length + 4
        full = float(scores(model, seq)[0][lo:hi].max())
        low = min(float(coarse(model, seq, cfg.coarse_stride, p)[lo:hi].max()) for p in range(cfg.coarse_stride))
        rows.append({"from": a, "to": b, "frames": length, "full_rate": round(full, 4), "coarse_min": round(low, 4)})
    found = [r for r in rows if r["full_rate"] > cfg.threshold]
    weakest = min(found, key=lambda r: r["coarse_min"]) if found else None
    out = {"benchmark": "shot_gate", "coarse_stride": cfg.coarse_stride,
           "coarse_threshold": cfg.coarse_threshold, "precision": cfg.precision,
           "single_shots": single, "single_shot_max": max(single.values()),
           "transitions": rows, "found_at_full_rate": len(found),
           "missed_by_coarse": sum(r["coarse_min"] <= cfg.coarse_threshold for r in found),
           "weakest_transition": weakest,
           "margin": {"weakest_over_single_max": round(weakest["coarse_min"] / max(single.values()), 2) if weakest else None}}
    text = json.dumps(out, indent=1)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
