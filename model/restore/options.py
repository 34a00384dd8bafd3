"""How `stc enhance` finds, follows, crops and pastes back faces (its command-line flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stc.curation.config import CropConfig, TrackConfig

DETECTORS = ("hog", "cnn")
SHOT_DETECTORS = ("transnetv2", "scenedetect", "none")

# Per detector: (frames between detections at 25 fps, longer side of the detection frame).
# [stc: benchmarks/enhance_faces.py] HOG costs ~20 ms a 640 px frame, so it runs on every
# frame; dlib's MMOD CNN costs ~0.3-1.5 s a frame on a CPU core, so it runs on a 480 px frame
# 5 times a second and the boxes in between are interpolated along the track (the crop is
# smoothed over time anyway), which keeps it within ~4x of HOG's time.
DETECTOR_DEFAULTS = {"hog": (1, 640), "cnn": (5, 480)}


@dataclass
class FaceOptions:
    """Face restoration settings; every field has a command-line flag."""

    detector: Literal["hog", "cnn"] = "hog"
    detect_every: int | None = None   # None: the detector's default (DETECTOR_DEFAULTS), by fps
    detect_max_side: int | None = None  # frames are shrunk to this longer side for detection
    upsample: int = 0               # dlib upsampling: finds faces half as small, 4x slower
    shots: Literal["transnetv2", "scenedetect", "none"] = "transnetv2"  # as curation finds cuts
    expand: float = CropConfig().expand   # curation's crop rule: face box side x this
    # [stc: benchmarks/results/enhance_faces.json] Savitzky-Golay window and order over the
    # crop's centre and side. On the shared clips at 720p HOG's raw boxes give a centre
    # second difference of 5-8% of the crop side (p99 per track); a local linear fit over
    # 0.8 s brings it to <= 0.5% (quadratic: up to 1%), and the crop's margin (x1.8 the
    # face) absorbs the small lag of a linear fit on a head that turns.
    smooth_seconds: float = 0.8
    smooth_order: int = 1
    overlap: int | None = None      # frames shared by consecutive chunks (None: T // 4, >= 1)
    feather: float = 0.08           # mask edge blur (Gaussian sigma), x the face box side
    color_match: bool = True        # shift the restored face to the frame's colour at the seam
    iou_min: float = TrackConfig().min_iou        # a face's boxes on successive detections
    max_gap_seconds: float = TrackConfig().max_gap_seconds   # unseen longer: the track ends
    only_center_face: bool = False  # per frame, restore only the face nearest the centre
    upscale: int = 1                # output size = input size x this
    draw_box: bool = False          # draw each restored face's crop box and track number
    fps: float = 25.0               # frame rate of frame-folder inputs (videos carry their own)

    def __post_init__(self) -> None:
        checks = [
            (self.detector in DETECTORS, f"detector must be one of {DETECTORS}"),
            (self.shots in SHOT_DETECTORS, f"shots must be one of {SHOT_DETECTORS}"),
            (self.detect_every is None or self.detect_every >= 1, "detect_every must be >= 1"),
            (self.detect_max_side is None or self.detect_max_side >= 64,
             "detect_max_side must be >= 64"),
            (self.upscale >= 1, "upscale must be at least 1"),
            (0 <= self.feather <= 0.5, "feather must lie in [0, 0.5]"),
            (self.expand >= 1, "expand must be at least 1"),
            (self.overlap is None or self.overlap >= 0, "overlap must be 0 or more"),
            (self.smooth_seconds >= 0, "smooth_seconds must be 0 or more"),
            (0 <= self.smooth_order <= 4, "smooth_order must lie in [0, 4]"),
            (self.fps > 0, "fps must be positive"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def detection_stride(self, fps: float) -> int:
        if self.detect_every is not None:
            return self.detect_every
        every = DETECTOR_DEFAULTS[self.detector][0]
        return max(1, int(round(every * (fps if fps > 0 else 25.0) / 25.0)))

    def detection_side(self) -> int:
        return self.detect_max_side or DETECTOR_DEFAULTS[self.detector][1]
