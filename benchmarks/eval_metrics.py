"""Benchmark `stc eval`: real GT clips vs JPEG-compressed and blurred copies.

GT = the first --frames frames of hdtf_1 and hdtf_2 (512x512); pred "jpeg" = every frame
JPEG-encoded at quality 20, pred "blur" = Gaussian blur sigma 1.5. Three settings: the
paper's protocol as `stc eval` runs it by default (first 24 frames, face metrics on frames
sampled as curation samples them), every frame with face metrics on every frame, and every
frame without face metrics. Prints the metric table to stderr and JSON (means per
degradation, seconds per compared frame) on stdout.

    .venv/bin/python benchmarks/eval_metrics.py [--videos ../shared/data/videos] [--frames 48]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from stc.core.video import encode_frames, read_frames
from stc.model.metrics import EvalConfig
from stc.pipelines.evaluate import evaluate_dirs, format_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def jpeg(frame: np.ndarray, quality: int = 20) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", default=str(ROOT.parent / "shared" / "data" / "videos"))
    ap.add_argument("--frames", type=int, default=48)
    args = ap.parse_args()

    result = {"frames_per_video": args.frames, "videos": ["hdtf_1", "hdtf_2"], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in result["videos"]:
            gt = read_frames(Path(args.videos) / f"{name}.mp4", 0, args.frames)
            encode_frames(gt, tmp / "gt" / f"{name}.mp4", fps=25, crf=4, preset="ultrafast")
            encode_frames(np.stack([jpeg(f) for f in gt]), tmp / "jpeg" / f"{name}.mp4", fps=25, crf=4,
                          preset="ultrafast")
            encode_frames(np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in gt]), tmp / "blur" / f"{name}.mp4",
                          fps=25, crf=4, preset="ultrafast")
        for degradation in ("jpeg", "blur"):
            settings = (("paper_default", EvalConfig()),
                        ("all_frames", EvalConfig(max_frames=0, face_stride=1)),
                        ("all_frames_no_face", EvalConfig(max_frames=0, face_stride=0)))
            for label, cfg in settings:
                t0 = time.perf_counter()
                rows, summary = evaluate_dirs(tmp / degradation, tmp / "gt", cfg, progress=False)
                seconds = time.perf_counter() - t0
                frames = sum(r.get("frames") or 0 for r in rows)
                if label == "paper_default":
                    print(f"\n[{degradation}]\n" + format_table(rows, summary), file=sys.stderr)
                result["runs"][f"{degradation}/{label}"] = {
                    "mean": {k: (round(v, 4) if v is not None else None) for k, v in summary["mean"].items()},
                    "ok": summary["ok"],
                    "seconds": round(seconds, 2),
                    "frames_compared": frames,
                    "seconds_per_frame": round(seconds / max(1, frames), 4),
                }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
