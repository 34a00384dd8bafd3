"""Curation settings, with the paper's thresholds as defaults (Sec. 4.1, 6.1, 6.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stc.core.config import load_config

BUILTIN_DIR = Path(__file__).parent / "configs"


@dataclass
class SamplingConfig:
    # Faces, landmarks and text are looked for on sampled frames, not every frame:
    # talking heads move slowly, and detection dominates the cost.
    per_second: float = 2.0
    max_frames: int = 64          # per clip, first and last frame always included


@dataclass
class FaceConfig:
    detector: Literal["hog", "cnn"] = "hog"   # dlib's frontal HOG detector, or its MMOD CNN
    detect_max_side: int = 640    # frames are downscaled to this for detection and landmarks
    upsample: int = 0             # dlib upsampling: 1 finds faces half as small, 4x slower
    min_face_frame_fraction: float = 0.5   # fewer sampled frames with a face: no_face
    min_face_size: float = 64.0   # median side of the main face box in input pixels
    multi_face: Literal["reject", "largest"] = "reject"
    multi_face_ratio: float = 0.5  # a second face counts if its area >= this x the main face
    max_multi_face_fraction: float = 0.2


@dataclass
class CropConfig:
    expand: float = 1.8           # each face box is scaled by this about its centre
    size: int = 512               # output clips are size x size
    min_crop_side: int = 256      # smaller crops would be upscaled > 2x into 'HQ': rejected


@dataclass
class SideFaceConfig:
    # Paper Sec. 6.1: alpha = |x36 - x30| / |x45 - x30|; frontal when 0.4 <= alpha <= 2.5
    # and the nose tip lies between the outer eye corners.
    alpha_min: float = 0.4
    alpha_max: float = 2.5
    max_side_fraction: float = 0.5  # the clip is side-face-dominated above this


@dataclass
class TextConfig:
    backend: Literal["rapidocr", "paddleocr"] = "rapidocr"
    frames: int = 5               # frames spread over the clip, not only the first
    limit_side_len: int = 512     # PP-OCR det input side; 512 halves the time of 736
    box_thresh: float = 0.5       # DB detector threshold for a box to be returned
    min_score: float = 0.6        # a box at or above this score is text
    # DB also fires on earrings, window frames and whole blurry frames; burnt-in text
    # comes as horizontal lines, so a box must be wider than tall and not span the frame.
    min_aspect: float = 1.5       # box width / height along its own orientation
    max_height_fraction: float = 0.25  # box height / image height
    min_text_frames: int = 1      # frames with text needed to reject the clip
    paddle_det_model_dir: str | None = None   # local PP-OCR det model for the paddleocr backend


@dataclass
class MotionConfig:
    # Paper Sec. 6.2: binarise |gray_t - gray_t-1| and count non-zero pixels. The
    # threshold keeps codec noise (a few grey levels) from counting as motion.
    threshold: int = 20


@dataclass
class EncodeConfig:
    crf: float = 10               # near-lossless: these clips are the HQ ground truth
    preset: str = "medium"
    pix_fmt: str = "yuv420p"
    threads: int = 0              # 0: x264 decides
    # Frames between keyframes (0: x264's default, 250). Training reads short windows from
    # anywhere in a clip; a reader seeks to the keyframe before the window and decodes on
    # from there, so this bounds the frames decoded for nothing (~2 s at 25 fps).
    keyint: int = 48


@dataclass
class CurateConfig:
    min_frames: int = 24          # shorter clips cannot fill one training window
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    side_face: SideFaceConfig = field(default_factory=SideFaceConfig)
    text: TextConfig = field(default_factory=TextConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)

    @classmethod
    def load(cls, name_or_file: str | Path | None = None) -> "CurateConfig":
        return load_config(cls, name_or_file, BUILTIN_DIR, kind="curate")
