"""Face-aware `stc enhance` on a full 1280x720 frame: where the time goes, and a before/after
picture.

A real talking-head clip from ../shared/data/videos is placed on a 1280x720 background (the
face then covers ~4% of the frame, as in a talk show) and restored as `stc enhance` does it:
track the faces, restore each in overlapping T-frame chunks at the model's size, paste back,
encode. The two passes are timed apart (face tracking; restore + paste + encode) and the
model's own time is taken from the restorer. Runtime does not depend on the weights, so a
random tiny Stage II model is timed unless --checkpoint names a trained run.

    .venv/bin/python benchmarks/enhance_faces.py [--checkpoint RUN2] [--frames 48]
        [--picture benchmarks/results/enhance_before_after.png]

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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = Path(os.environ.get("STC_TEST_VIDEOS", ROOT.parent / "shared" / "data" / "videos"))


def composite(clip: Path, frames: int, out: Path, width: int = 1280, height: int = 720) -> Path:
    """`frames` frames of `clip` on a width x height gradient, drifting right 1 px a frame."""
    from stc.core.video import encode_frames, probe, read_frames

    face = read_frames(clip, 0, frames)
    h, w = face.shape[1:3]
    yy, xx = np.mgrid[0:height, 0:width]
    bg = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 90)],
                  -1).astype(np.uint8)
    x0, y0 = (width - w) // 2 - frames // 2, (height - h) // 2
    out_frames = []
    for i, f in enumerate(face):
        b = bg.copy()
        b[y0:y0 + h, x0 + i:x0 + i + w] = f
        out_frames.append(b)
    return encode_frames(np.stack(out_frames), out, fps=probe(clip).fps, crf=12, preset="veryfast")


def tiny_run(path: Path) -> Path:
    import torch

    from stc.model.stage1.config import load_stage1_config
    from stc.model.stage1.vqgan3d import VQGAN3D
    from stc.model.stage2.config import load_stage2_config
    from stc.model.stage2.model import Stage2Model
    from stc.model.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    s1 = load_stage1_config("stage1-tiny")
    cfg = load_stage2_config("stage2-tiny")
    cfg.vqgan = s1.model
    m = Stage2Model(cfg, VQGAN3D(s1.model))
    save_checkpoint(path, 1, {"model": m.state_dict()}, {}, m.cfg)
    return path


def picture(src: Path, dst: Path, boxes: list[dict], out: Path, frame: int,
            label: str = "stc enhance") -> Path:
    """Before | after of one frame, with the face region enlarged under each."""
    import cv2

    from stc.core.video import read_frames

    a, b = read_frames(src, frame, 1)[0], read_frames(dst, frame, 1)[0]
    box = next((x["box"] for x in boxes if x["start"] <= frame < x["end"]), boxes[0]["box"])
    x0, y0, x1, y1 = box
    zoom = lambda img: cv2.resize(img[y0:y1, x0:x1], (360, 360), interpolation=cv2.INTER_AREA)  # noqa: E731
    h, w = a.shape[:2]
    scale = 640 / w
    small = lambda img: cv2.resize(img, (640, round(h * scale)), interpolation=cv2.INTER_AREA)  # noqa: E731
    pad = 12
    top = np.concatenate([small(a), np.full((round(h * scale), pad, 3), 255, np.uint8), small(b)], 1)
    zrow = np.full((360, top.shape[1], 3), 255, np.uint8)
    zrow[:, 140:500] = zoom(a)
    zrow[:, 640 + pad + 140:640 + pad + 500] = zoom(b)
    img = np.concatenate([top, np.full((pad, top.shape[1], 3), 255, np.uint8), zrow], 0)
    for text, x in (("input 1280x720", 8), (label, 640 + pad + 8)):
        cv2.putText(img, text, (x, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2,
                    cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="a trained Stage II run (default: random tiny weights)")
    ap.add_argument("--clip", default=str(VIDEOS / "hdtf_1.mp4"), help="the talking-head clip")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--picture", help="also save a before/after PNG of the middle frame here")
    args = ap.parse_args()

    import torch

    from stc.pipelines.enhance import Enhancer
    from stc.model.restore.options import FaceOptions

    with tempfile.TemporaryDirectory(prefix="stc-bench-") as tmp:
        tmp = Path(tmp)
        src = composite(Path(args.clip), args.frames, tmp / "in.mp4")
        run = Path(args.checkpoint) if args.checkpoint else tiny_run(tmp / "run2")
        enh = Enhancer(run, "cpu", crf=18, preset="veryfast", faces=FaceOptions())
        t0 = time.perf_counter()
        stats = enh.enhance(src, tmp / "out.mp4", crops_dir=tmp / "crops")
        total_s = time.perf_counter() - t0
        boxes = json.loads((tmp / "crops" / "boxes.json").read_text())
        n, track_s = stats["frames"], stats["track_seconds"]
        result = {
            "benchmark": "enhance_faces",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
            "input": {"clip": Path(args.clip).name, "frames": n, "size": "1280x720"},
            "model": {"checkpoint": args.checkpoint or "random stage1-tiny + stage2-tiny",
                      "size": enh.size, "chunk_frames": enh.T, "overlap": enh.faces.overlap},
            "faces": stats["faces"], "frames_with_face": stats["frames_with_face"],
            "crops_restored": stats["crops"],
            "seconds": {"whole_enhance": round(total_s, 3),
                        "track_pass": round(track_s, 3),
                        "model": round(stats["model_seconds"], 3),
                        "crop_paste_decode_encode": round(total_s - track_s - stats["model_seconds"], 3)},
            "load_average_1min": round(os.getloadavg()[0], 1),
            "frames_per_second": round(n / total_s, 2),
            "max_frames_held": stats["max_buffered"],
        }
        if args.picture:
            label = f"stc enhance ({enh.size}x{enh.size} model)"
            result["picture"] = str(picture(src, tmp / "out.mp4", boxes, Path(args.picture),
                                            n // 2, label))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
