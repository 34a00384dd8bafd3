"""Face-aware `stc enhance` on full frames: which detector finds the faces, where the time
goes, and a before/after picture.

Detectors (`--detectors hog,cnn`): the first pass of `stc enhance` (shots, detection on the
detector's sampled frames, tracking, the plan of which frames get restored) on
- every shared clip of ../shared/data/videos letterboxed into 1280x720 (scaled to the height,
  black bars; first `--frames` frames each), and
- talkshow_2 as it is (362x512, mostly three-quarter views, all frames).
Recall is the share of frames (all have a face, by construction) on which a face is
restored; `detector_hit_rate` is the share of the frames the detector ran on where it found
one (tracking fills the rest). Speed is first-pass seconds per frame.

Timing (default): one clip placed on a 1280x720 background, restored as `stc enhance` does
it, the passes timed apart. Runtime does not depend on the weights, so a random tiny Stage
II model is timed unless --checkpoint names a trained run. `--picture` saves a before/after
PNG of the middle frame, the after made with `--draw-box`.

    .venv/bin/python benchmarks/enhance_faces.py --detectors hog,cnn [--frames 100]
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
sys.path.insert(0, str(ROOT))
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


def picture(src: Path, dst: Path, boxes, out: Path, frame: int,
            label: str = "stc enhance --draw-box") -> Path:
    """Before | after of one frame, with the restored crop enlarged under each."""
    import cv2

    from stc.core.video import read_frames

    a, b = read_frames(src, frame, 1)[0], read_frames(dst, frame, 1)[0]
    row = boxes[(boxes["frame"] == frame) & (boxes["restored"] == "yes")].iloc[0]
    x0, y0, x1, y1 = (int(round(row[k])) for k in ("x0", "y0", "x1", "y1"))
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
    for text, x in ((f"input {w}x{h}", 8), (label, 640 + pad + 8)):
        cv2.putText(img, text, (x, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2,
                    cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return out


def letterbox(frame: np.ndarray, width: int = 1280, height: int = 720, fill: float = 1.0
              ) -> np.ndarray:
    """The frame scaled to `fill` x the height that fits width x height, on black (as
    tests.raw_footage); below 1, off-centre, as a guest in a wide shot."""
    from tests import raw_footage

    canvas = np.zeros((height, width, 3), np.uint8)
    h, w = frame.shape[:2]
    s = min(width / w, height / h) * fill
    cx = width // 2 if fill >= 1 else int(width * 0.3)
    raw_footage.place(frame, s, canvas, cx, height // 2)
    return canvas


def first_pass(frames: np.ndarray, fps: float, restorer) -> dict:
    """Recall and speed of `stc enhance`'s first pass on frames that all hold a face."""
    from stc.model.restore.engine import restored_frames

    h, w = frames.shape[1:3]
    t0 = time.perf_counter()
    found = restorer.finder.find(enumerate(frames), fps, w, h)
    seconds = time.perf_counter() - t0
    plans = restorer.plan(found.tracks, w, h, fps)
    restored = restored_frames(plans, found.frames)
    hits = sum(bool(t.detected.any()) for t in found.tracks)
    ran = found.detections
    detected = np.zeros(found.frames, bool)
    for t in found.tracks:
        detected[t.start:t.end] |= t.detected
    return {"frames": found.frames, "restored": int(restored.sum()),
            "detections": ran, "hits": int(detected.sum()), "tracks": len(found.tracks),
            "tracks_with_detection": hits, "seconds": seconds,
            "detect_seconds": found.seconds.get("detect", 0.0)}


def detector_table(detectors: list[str], frames: int, small: int = 0) -> dict:
    from stc.core.video import probe, read_frames

    clips = sorted(VIDEOS.glob("*.mp4"))
    sets = {"letterboxed_720p": [(c.name, np.stack([letterbox(f) for f in read_frames(c, 0, frames)]),
                                  probe(c).fps) for c in clips],
            "talkshow_2": [("talkshow_2.mp4", read_frames(VIDEOS / "talkshow_2.mp4"),
                            probe(VIDEOS / "talkshow_2.mp4").fps)]}
    if small:
        # a wide shot: the clip 0.4 x the frame's height (faces ~100-130 px tall at 720p)
        sets["small_720p"] = [(c.name, np.stack([letterbox(f, fill=0.4) for f in
                                                 read_frames(c, 0, small)]), probe(c).fps)
                              for c in clips]
    from stc.model.restore.engine import FaceVideoRestorer
    from stc.model.restore.options import FaceOptions

    table = {}
    for det in detectors:
        kind, _, side = det.partition("@")
        opts = FaceOptions(detector=kind, detect_max_side=int(side) if side else None)
        restorer = FaceVideoRestorer(lambda c: (c, 0.0), 512, 4, opts)
        restorer.finder.find(enumerate(sets["talkshow_2"][0][1][:2]), 25.0, 362, 512)  # loads
        for name, items in sets.items():
            per = {}
            for clip, fr, fps in items:
                per[clip] = first_pass(fr, fps, restorer)
                print(f"{det} {name} {clip}: {per[clip]['restored']}/{per[clip]['frames']}",
                      file=sys.stderr, flush=True)
            n = sum(v["frames"] for v in per.values())
            table.setdefault(det, {})[name] = {
                "frames": n,
                "recall": round(sum(v["restored"] for v in per.values()) / n, 4),
                "worst_clip_recall": round(min(v["restored"] / v["frames"] for v in per.values()), 4),
                "detector_hit_rate": round(sum(v["hits"] for v in per.values())
                                           / max(1, sum(v["detections"] for v in per.values())), 4),
                "first_pass_ms_per_frame": round(1000 * sum(v["seconds"] for v in per.values()) / n, 1),
                "detect_ms_per_frame": round(1000 * sum(v["detect_seconds"] for v in per.values()) / n, 1),
                "detector_ms_per_frame_run": round(1000 * sum(v["detect_seconds"] for v in per.values())
                                                   / max(1, sum(v["detections"] for v in per.values())), 1),
                "per_clip": {k: {"recall": round(v["restored"] / v["frames"], 4),
                                 "tracks": v["tracks"]} for k, v in per.items()},
            }
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="a trained Stage II run (default: random tiny weights)")
    ap.add_argument("--clip", default=str(VIDEOS / "hdtf_1.mp4"), help="the talking-head clip")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--picture", help="also save a before/after PNG of the middle frame here")
    ap.add_argument("--detectors", help="comma-separated detectors (NAME or NAME@SIDE for "
                    "another detection size): print their recall table on the shared clips "
                    "instead of the timing run")
    ap.add_argument("--small", type=int, default=0, metavar="FRAMES",
                    help="with --detectors: also a wide-shot set, each clip at 0.4 x the "
                         "height, FRAMES frames each")
    args = ap.parse_args()

    import torch

    if args.detectors:
        result = {"benchmark": "enhance_faces.detectors",
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "torch": torch.__version__},
                  "frames_per_letterboxed_clip": args.frames,
                  "detectors": detector_table(args.detectors.split(","), args.frames, args.small),
                  "load_average_1min": round(os.getloadavg()[0], 1)}
        print(json.dumps(result, indent=2))
        return

    from stc.model.restore.crops import read_boxes
    from stc.model.restore.options import FaceOptions
    from stc.pipelines.enhance import Enhancer

    with tempfile.TemporaryDirectory(prefix="stc-bench-") as tmp:
        tmp = Path(tmp)
        src = composite(Path(args.clip), args.frames, tmp / "in.mp4")
        run = Path(args.checkpoint) if args.checkpoint else tiny_run(tmp / "run2")
        enh = Enhancer(run, "cpu", crf=18, preset="veryfast",
                       faces=FaceOptions(draw_box=bool(args.picture)))
        t0 = time.perf_counter()
        stats = enh.enhance(src, tmp / "out.mp4", crops_dir=tmp / "crops")
        total_s = time.perf_counter() - t0
        boxes = read_boxes(tmp / "crops")
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
            label = f"stc enhance --draw-box ({enh.size}x{enh.size} model)"
            result["picture"] = str(picture(src, tmp / "out.mp4", boxes, Path(args.picture),
                                            n // 2, label))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
