"""Curating one video: a list of small steps, each timed, any of which may stop the clip.

    probe -> faces (one decode: detection + landmarks on sampled frames) -> face checks
    -> crop box -> side face -> text -> write clip (one ffmpeg decode: crop, scale,
    x264 encode, motion on the same frames)

Every outcome, including crashes inside a step, is a manifest row; nothing raises.
"""

from __future__ import annotations

import hashlib
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stc.core.names import CLIPS_DIR
from stc.core.video import VideoError, VideoInfo, crop_transcode, decode_sampled, probe
from stc.curation import crop as crop_mod
from stc.curation import side_face, text
from stc.curation.config import CurateConfig
from stc.curation.faces import Box, FaceDetector, count_other_faces, downscale, sample_indices
from stc.curation.motion import MotionMeter
from stc.manifests.clips import REASONS


def clip_id_for(path: str | Path) -> str:
    """Stable id: the file stem (made safe) and a hash of the absolute path, so two
    `clip.mp4` files in different folders never collide and reruns find their rows."""
    p = Path(path).expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.stem)[:80] or "video"
    return f"{stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:10]}"


class Stop(Exception):
    """A step's verdict that ends the clip: rejected or error, with a reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class SampledFrame:
    index: int
    scale: float                      # small = input * scale
    boxes: list[Box]                  # in input pixels, largest first
    landmarks: np.ndarray | None      # 68x2 of the main face, input pixels
    small: np.ndarray | None = None   # kept only for the frames text detection looks at


@dataclass
class ClipState:
    source_path: str
    row: dict[str, Any]
    info: VideoInfo | None = None
    frames: list[SampledFrame] = field(default_factory=list)
    num_frames: int = 0
    box: tuple[int, int, int, int] | None = None
    main_boxes: list[Box] = field(default_factory=list)


class ClipCurator:
    """Holds the loaded models; `__call__` curates one input and returns (row, timings)."""

    def __init__(self, cfg: CurateConfig, out_dir: str | Path, threads: int = 1):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.threads = threads
        self._detector = self._landmarks = self._text = None
        self.steps = [
            ("probe", self.probe),
            ("faces", self.analyse_faces),
            ("face_checks", self.check_faces),
            ("crop", self.choose_crop),
            ("side_face", self.check_side_face),
            ("text", self.check_text),
            ("write", self.write_clip),
        ]

    # Models load on first use so a worker that only sees unreadable files stays cheap.
    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.cfg.face)
        return self._detector

    @property
    def landmarks(self) -> side_face.LandmarkPredictor:
        if self._landmarks is None:
            self._landmarks = side_face.LandmarkPredictor()
        return self._landmarks

    @property
    def text_detector(self) -> text.TextDetector:
        if self._text is None:
            self._text = text.TextDetector(self.cfg.text, threads=self.threads)
        return self._text

    def __call__(self, source_path: str, clip_id: str | None = None, source: str = ""
                 ) -> tuple[dict[str, Any], dict[str, float]]:
        row = {"clip_id": clip_id or clip_id_for(source_path), "source_path": str(source_path),
               "source": source, "clip_path": None}
        state = ClipState(str(source_path), row)
        timings: dict[str, float] = {}
        try:
            for name, step in self.steps:
                t0 = time.perf_counter()
                try:
                    step(state)
                finally:
                    timings[name] = time.perf_counter() - t0
            row.update(status="kept", reason="kept", message="")
        except Stop as stop:
            row.update(status=REASONS[stop.reason][0], reason=stop.reason, message=stop.message)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one row, not the run
            tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            row.update(status="error", reason="internal_error",
                       message=f"{source_path}: unexpected {tail}; please report it with this file")
        return row, timings

    # --- steps -------------------------------------------------------------------
    def probe(self, s: ClipState) -> None:
        try:
            info = probe(s.source_path)
        except VideoError as exc:
            raise Stop("unreadable", str(exc)) from None
        s.info = info
        s.row.update(fps=info.fps, width=info.width, height=info.height, duration=info.duration,
                     codec=info.codec, rotation=info.rotation, num_frames=info.num_frames or None)

    def analyse_faces(self, s: ClipState) -> None:
        info, cfg = s.info, self.cfg
        estimate = info.num_frames or max(1, round(info.duration * info.fps))
        wanted = sample_indices(estimate, info.fps, cfg.sampling)
        picks = np.linspace(0, len(wanted) - 1, min(cfg.text.frames, len(wanted))).round()
        text_frames = {wanted[int(i)] for i in picks} | {max(wanted)}

        def on_frame(index: int, rgb: np.ndarray) -> None:
            small, scale = downscale(rgb, cfg.face.detect_max_side)
            boxes = self.detector.detect(small)
            points = self.landmarks(small, boxes[0]) / scale if boxes else None
            s.frames.append(SampledFrame(index, scale, [b.scaled(1 / scale) for b in boxes],
                                         points, small if index in text_frames else None))

        try:
            s.num_frames = decode_sampled(s.source_path, set(wanted), on_frame)
        except VideoError as exc:
            raise Stop("unreadable", str(exc)) from None
        s.row.update(num_frames=s.num_frames, sampled_frames=len(s.frames))
        if s.num_frames == 0:
            raise Stop("unreadable", f"{s.source_path}: no frame could be decoded; re-download or remove it")
        if s.num_frames < cfg.min_frames:
            raise Stop("too_short", f"{s.source_path}: {s.num_frames} frames, fewer than "
                                    f"min_frames={cfg.min_frames}")

    def check_faces(self, s: ClipState) -> None:
        cfg = self.cfg.face
        with_face = [f for f in s.frames if f.boxes]
        fraction = len(with_face) / len(s.frames) if s.frames else 0.0
        others = [count_other_faces(f.boxes, cfg.multi_face_ratio) for f in with_face]
        multi = float(np.mean([o > 0 for o in others])) if others else 0.0
        s.main_boxes = [f.boxes[0] for f in with_face]
        size = float(np.median([np.sqrt(b.area) for b in s.main_boxes])) if s.main_boxes else None
        s.row.update(face_frame_fraction=fraction, multi_face_fraction=multi,
                     max_faces=max((len(f.boxes) for f in s.frames), default=0),
                     face_size_median=size)
        if fraction < cfg.min_face_frame_fraction:
            raise Stop("no_face", f"{s.source_path}: a face in {len(with_face)} of {len(s.frames)} "
                                  f"sampled frames (min_face_frame_fraction={cfg.min_face_frame_fraction})")
        if size < cfg.min_face_size:
            raise Stop("face_too_small", f"{s.source_path}: main face {size:.0f}px, below "
                                         f"min_face_size={cfg.min_face_size:g}px")
        if cfg.multi_face == "reject" and multi > cfg.max_multi_face_fraction:
            raise Stop("multiple_faces", f"{s.source_path}: several faces in {multi:.0%} of face "
                                         f"frames (max_multi_face_fraction={cfg.max_multi_face_fraction})")

    def choose_crop(self, s: ClipState) -> None:
        cfg = self.cfg.crop
        s.box = crop_mod.crop_box(s.main_boxes, s.info.width, s.info.height, cfg.expand)
        x0, y0, x1, y1 = s.box
        s.row.update(crop_x0=x0, crop_y0=y0, crop_x1=x1, crop_y1=y1,
                     face_proportion=crop_mod.face_proportion(s.main_boxes, s.box))
        if x1 - x0 < cfg.min_crop_side:
            raise Stop("crop_too_small", f"{s.source_path}: crop side {x1 - x0}px below "
                                         f"min_crop_side={cfg.min_crop_side}")

    def check_side_face(self, s: ClipState) -> None:
        cfg = self.cfg.side_face
        marked = [f for f in s.frames if f.landmarks is not None]
        stats = side_face.summarise([f.landmarks for f in marked], cfg, [f.index for f in marked])
        s.row.update(landmark_frames=stats.frames, side_fraction=stats.side_fraction,
                     side_ratio_median=stats.ratio_median, side_ratio_min=stats.ratio_min,
                     side_ratio_max=stats.ratio_max, side_face_evidence=stats.evidence_json())
        if stats.is_side_dominated(cfg):
            raise Stop("side_face", f"{s.source_path}: side face in {stats.side_fraction:.0%} of "
                                    f"frames (max_side_fraction={cfg.max_side_fraction})")

    def check_text(self, s: ClipState) -> None:
        dets = []
        x0, y0, x1, y1 = s.box
        for f in s.frames:
            if f.small is None:
                continue
            c = [int(round(v * f.scale)) for v in (x0, y0, x1, y1)]
            region = np.ascontiguousarray(f.small[c[1]:c[3], c[0]:c[2]])
            # Evidence is kept in input pixels, the coordinates of the crop box.
            dets.append(self.text_detector.frame(f.index, region)
                        .mapped(f.scale, c[0] / f.scale, c[1] / f.scale))
            f.small = None
        stats = text.summarise(dets, self.cfg.text)
        s.row.update(ocr_frames=stats.frames, has_text=stats.has_text, text_score=stats.max_score,
                     text_boxes=stats.boxes, text_frames=stats.text_frames,
                     text_area_fraction=stats.area_fraction, text_evidence=stats.evidence_json())
        if stats.has_text:
            raise Stop("text", f"{s.source_path}: {stats.describe()}")

    def write_clip(self, s: ClipState) -> None:
        cfg = self.cfg
        rel = f"{CLIPS_DIR}/{s.row['clip_id']}.mp4"
        meter = MotionMeter(cfg.motion.threshold)
        try:
            for gray in crop_transcode(s.source_path, self.out_dir / rel, s.box, cfg.crop.size,
                                       crf=cfg.encode.crf, preset=cfg.encode.preset,
                                       pix_fmt=cfg.encode.pix_fmt, threads=cfg.encode.threads,
                                       keyint=cfg.encode.keyint):
                meter.add(gray)
        except VideoError as exc:
            raise Stop("encode_failed", f"{exc}; check disk space and that ffmpeg has libx264") from None
        s.row.update(clip_path=rel, clip_size=cfg.crop.size, clip_num_frames=meter.frames,
                     clip_fps=s.info.fps, motion_intensity=meter.intensity, motion_sum=meter.total)
