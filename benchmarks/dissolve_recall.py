"""How many dissolves TransNetV2 finds between two faces framed alike, with and without the
many-hot run rule (`ShotConfig.many_hot_min_frames`), and what it finds in single shots.

Every ordered pair of the hdtf clips, letterboxed at scale 1.1 into 1280x720 as raw
interview footage is, joined by a dissolve of each `--lengths` (computed on the frames,
then made into the 48x27 thumbnails TransNetV2 reads). Per case: the single-frame head's
peak and the many-hot head's marked frames over the dissolve (full rate), and whether the
default detector (gate, coarse pass, run rule) and the same without the run rule find a
transition overlapping it. Single shots: the transitions found on each shared clip,
letterboxed alike. Reframed: each hdtf clip dissolving into its own later frames framed
closer and off-centre (one person, two camera set-ups: no identity check can help there).
Prints one JSON object.

    .venv/bin/python benchmarks/dissolve_recall.py --save benchmarks/results/dissolve_recall.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stc.core.video import read_frames  # noqa: E402
from stc.curation.config import ShotConfig  # noqa: E402
from stc.curation.shots import TRANSNET_SIZE, TransNetV2Shots  # noqa: E402
from tests import raw_footage  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("videos", nargs="?", default=str(ROOT.parent / "shared" / "data" / "videos"))
ap.add_argument("--lengths", default="15,30", help="dissolve lengths in frames")
ap.add_argument("--save", type=Path, default=None)


def boxed(frame: np.ndarray, scale: float = 1.1, dx: int = 0) -> np.ndarray:
    canvas = np.zeros((raw_footage.HEIGHT, raw_footage.WIDTH, 3), np.uint8)
    raw_footage.place(frame, scale, canvas, raw_footage.WIDTH // 2 + dx, raw_footage.HEIGHT // 2)
    return canvas


def dissolve(a: list[np.ndarray], b: list[np.ndarray], length: int) -> list[np.ndarray]:
    """50 frames of a, `length` cross-faded (a running on, b's first frames), the rest of b."""
    out = list(a[:50])
    for k in range(length):
        w = (k + 1) / (length + 1)
        out.append((a[50 + k] * (1 - w) + b[k] * w).round().astype(np.uint8))
    return out + list(b[length:])


def found(thumbs, cfg: ShotConfig, length: int) -> bool:
    return any(t.start < 50 + length and t.end > 50 for t in detect(thumbs, cfg).transitions)


def thumb(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, TRANSNET_SIZE, interpolation=cv2.INTER_AREA)


def detect(thumbs, cfg: ShotConfig) -> TransNetV2Shots:
    det = TransNetV2Shots(cfg)
    for t in thumbs:
        det.push(t)
    det.finish()
    return det


def main() -> None:
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    videos = Path(args.videos)
    hdtf = sorted(p.name for p in videos.glob("hdtf_*.mp4"))
    clips = {n: read_frames(videos / n, 0, 110) for n in hdtf}
    default, no_run = ShotConfig(), ShotConfig(many_hot_min_frames=0)
    full = ShotConfig(gate=False, coarse_stride=1)
    single = {p.stem: [list(t[:3]) for t in detect([thumb(boxed(f)) for f in read_frames(p)], default).transitions]
              for p in sorted(videos.glob("*.mp4"))}
    cases = []
    for length in (int(x) for x in args.lengths.split(",")):
        for a, b in itertools.permutations(hdtf, 2):
            A, B = clips[a], clips[b]
            thumbs = [thumb(f) for f in dissolve([boxed(f) for f in A[:50 + length]],
                                                 [boxed(f) for f in B[:length + 50]], length)]
            span = slice(50, 50 + length)
            d = detect(thumbs, full)
            hit = {name: found(thumbs, cfg, length)
                   for name, cfg in (("default", default), ("without_run_rule", no_run))}
            cases.append({"from": a, "to": b, "frames": length,
                          "single_peak": round(max(d.scores[span]), 3),
                          "many_hot_frames": int(sum(m > default.many_hot_threshold for m in d.many[span])),
                          **{f"found_{k}": v for k, v in hit.items()}})
    summary = {str(n): {k: sum(c[f"found_{k}"] for c in cases if c["frames"] == n)
                        for k in ("default", "without_run_rule")} | {"cases": sum(c["frames"] == n for c in cases)}
               for n in sorted({c["frames"] for c in cases})}
    reframed = {}
    for n in hdtf:
        frames = read_frames(videos / n, 0, 150)
        for length in (int(x) for x in args.lengths.split(",")):
            thumbs = [thumb(f) for f in dissolve([boxed(f, 0.9) for f in frames[:50 + length]],
                                                 [boxed(f, 1.35, 150) for f in frames[100 - length:150]],
                                                 length)]
            reframed[f"{Path(n).stem}/{length}"] = found(thumbs, default, length)
    out = {"benchmark": "dissolve_recall", "many_hot_min_frames": default.many_hot_min_frames,
           "found": summary, "single_shot_transitions": single,
           "reframed_found": sum(reframed.values()), "reframed": reframed, "cases": cases}
    text = json.dumps(out, indent=1)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
