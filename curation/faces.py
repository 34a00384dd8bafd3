"""Face detection on sampled frames with dlib (frontal HOG by default, MMOD CNN optional).

Frames are downscaled to `detect_max_side` first: HOG cost grows with pixels while its
smallest detectable face (~80 px) is plenty for crops meant to become 512x512.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stc.core.video import owned_array
from stc.curation.config import FaceConfig, SamplingConfig
from stc.curation.models import CNN_FACE_DETECTOR, FACE_EMBEDDER, LANDMARKS_5, dlib_model_path


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def scaled(self, s: float) -> "Box":
        return Box(self.x0 * s, self.y0 * s, self.x1 * s, self.y1 * s, self.score)


def sample_stride(fps: float, cfg: SamplingConfig) -> int:
    """Frames between two samples when sampling a whole source at `per_second`."""
    return max(1, int(round((fps if fps > 0 else 25.0) / cfg.per_second)))


def sample_indices(num_frames: int, fps: float, cfg: SamplingConfig, max_frames: int = 64) -> list[int]:
    """Frames to analyse in a short clip of known length: ~`per_second` per second, first
    and last always, at most `max_frames`, evenly spread."""
    if num_frames <= 0:
        return []
    seconds = num_frames / fps if fps > 0 else num_frames / 25.0
    n = int(round(seconds * cfg.per_second)) + 2
    n = max(2, min(n, max_frames, num_frames))
    if num_frames == 1:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, n)})


def downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The frame shrunk so its longer side is at most `max_side`, and the factor used."""
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return rgb, 1.0
    return cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), s


class FaceDetector:
    """dlib face detector; `detect` returns boxes in the given frame's pixels, largest first."""

    def __init__(self, cfg: FaceConfig):
        import dlib

        self.cfg = cfg
        if cfg.detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path(CNN_FACE_DETECTOR)))
            self._hog = None
        else:
            self._hog = dlib.get_frontal_face_detector()
            self._cnn = None

    def detect(self, rgb: np.ndarray) -> list[Box]:
        rgb = owned_array(rgb)     # dlib ignores strides: a padded view reads garbage
        if self._hog is not None:
            rects, scores, _ = self._hog.run(rgb, self.cfg.upsample, 0.0)
            boxes = [Box(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in zip(rects, scores)]
        else:
            boxes = [Box(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), d.confidence)
                     for d in self._cnn(rgb, self.cfg.upsample)]
        h, w = rgb.shape[:2]
        # dlib may return boxes reaching past the border; clip so areas are honest.
        boxes = [Box(max(0, b.x0), max(0, b.y0), min(w, b.x1), min(h, b.y1), b.score) for b in boxes]
        return sorted((b for b in boxes if b.area > 0), key=lambda b: -b.area)


class FaceEmbedder:
    """dlib's 128-d face descriptor (ResNet, `dlib_face_recognition_resnet_model_v1`): two
    faces of one person are closer than 0.6. ~75 ms a face on one core, so trackers call it
    only where box overlap cannot decide. Landmarks (68 points, as `LandmarkPredictor` gives
    them) align the face; without them dlib's 5-point predictor does."""

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(dlib_model_path(FACE_EMBEDDER)))
        self._shape5 = None

    def __call__(self, rgb: np.ndarray, box: Box, landmarks: np.ndarray | None = None) -> np.ndarray:
        dlib = self._dlib
        rgb = owned_array(rgb)
        rect = dlib.rectangle(int(box.x0), int(box.y0), int(box.x1), int(box.y1))
        if landmarks is None:
            if self._shape5 is None:
                self._shape5 = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_5)))
            shape = self._shape5(rgb, rect)
        else:
            shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y)))
                                                      for x, y in landmarks])
        return np.array(self._net.compute_face_descriptor(rgb, shape), np.float64)
