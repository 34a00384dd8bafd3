"""Face metrics on dlib: AKD, IDS and Face-Cons (paper Sec. 4.1, "following KEEP [12]").

Per evaluated frame the face is detected on the GT frame only and that box is used for
both frames, so AKD measures how far the restored landmarks moved, not detector jitter,
and a pred with a destroyed face still gets landmarks (badly placed ones) instead of
silently dropping out. Frames whose GT has no face are skipped (`face_frames` counts the
rest). Every image handed to dlib is a C-contiguous array that owns its memory: dlib's
typed bindings (compute_face_descriptor) refuse views such as the row-padded frames a
390-pixel-wide video decodes to.

- AKD [paper]: mean Euclidean distance, in GT pixels, between dlib's 68 landmarks on pred
  and on GT, averaged over the points and then the frames.
- IDS [paper]: cosine similarity of dlib's 128-d face embeddings
  (dlib_face_recognition_resnet_model_v1) of pred and GT, each aligned with its own
  landmarks, averaged over frames.
- Face-Cons [paper Sec. 4.1]: "the average cosine similarity between the embedding of the
  first frame emb(x_1) and subsequent frame embeddings {emb(x_t)}, t = 2..T", on the
  restored video alone. x_1 is the first evaluated frame with a face (frame 0 unless its GT
  has none). `face_cons_gt` is the same on GT, the level a perfect restoration reaches.
- `face_cons_mean` [stc, extra]: stc's earlier variant, the mean cosine of every frame's
  embedding to the clip's mean embedding; it forgives a drifting first frame.

The identity network is dlib's: the paper does not name the one it used (KEEP uses ArcFace),
so absolute values are comparable only between runs of stc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stc.curation.config import FaceConfig
from stc.curation.faces import Box, FaceDetector, downscale
from stc.curation.models import FACE_EMBEDDER, dlib_model_path
from stc.curation.side_face import LandmarkPredictor


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def dlib_image(rgb: np.ndarray) -> np.ndarray:
    """`rgb` as a C-contiguous uint8 array owning its memory (what dlib's bindings accept),
    copied only when it is not one already."""
    if rgb.dtype == np.uint8 and rgb.flags.c_contiguous and rgb.flags.owndata:
        return rgb
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)


def first_frame_consistency(embeddings: list[np.ndarray]) -> float | None:
    """Face-Cons: mean over t = 2..T of cos(emb(x_1), emb(x_t)) (paper Sec. 4.1)."""
    if len(embeddings) < 2:
        return None
    return float(np.mean([cosine(embeddings[0], e) for e in embeddings[1:]]))


def consistency(embeddings: list[np.ndarray]) -> float | None:
    """Mean cosine similarity of each embedding to the normalised mean embedding (stc's
    earlier Face-Cons, kept as `face_cons_mean`)."""
    if len(embeddings) < 2:
        return None
    e = np.stack(embeddings)
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)
    mean = e.mean(axis=0)
    mean /= np.linalg.norm(mean) + 1e-12
    return float(np.mean(e @ mean))


@dataclass
class FaceScores:
    """Per-frame face measurements of one video, summarised by `result`."""
    akd: list[float] = field(default_factory=list)
    ids: list[float] = field(default_factory=list)
    pred_emb: list[np.ndarray] = field(default_factory=list)
    gt_emb: list[np.ndarray] = field(default_factory=list)
    frames: int = 0      # frames evaluated
    no_face: int = 0     # of those, GT frames without a face

    def result(self) -> dict[str, float | int | None]:
        return {
            "akd": float(np.mean(self.akd)) if self.akd else None,
            "ids": float(np.mean(self.ids)) if self.ids else None,
            "face_cons": first_frame_consistency(self.pred_emb),
            "face_cons_gt": first_frame_consistency(self.gt_emb),
            "face_cons_mean": consistency(self.pred_emb),
            "face_frames": len(self.akd),
        }


class FaceMetrics:
    """Loads the dlib detector, 68-point predictor and embedder once."""

    def __init__(self, cfg: FaceConfig = FaceConfig()):
        import dlib

        self._dlib = dlib
        self.cfg = cfg
        self.detector = FaceDetector(cfg)
        self.landmarks = LandmarkPredictor()
        self.embedder = dlib.face_recognition_model_v1(str(dlib_model_path(FACE_EMBEDDER)))

    def gt_box(self, gt: np.ndarray) -> Box | None:
        """The largest face of the GT frame, in its own pixels (detection runs downscaled)."""
        small, s = downscale(gt, self.cfg.detect_max_side)
        boxes = self.detector.detect(dlib_image(small))
        return boxes[0].scaled(1.0 / s) if boxes else None

    def embed(self, rgb: np.ndarray, box: Box, points: np.ndarray) -> np.ndarray:
        dlib = self._dlib
        rect = dlib.rectangle(int(box.x0), int(box.y0), int(box.x1), int(box.y1))
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in points])
        return np.asarray(self.embedder.compute_face_descriptor(rgb, shape), dtype=np.float64)

    def add(self, scores: FaceScores, pred: np.ndarray, gt: np.ndarray) -> None:
        """Measure one frame pair (RGB uint8, same size) into `scores`."""
        scores.frames += 1
        pred, gt = dlib_image(pred), dlib_image(gt)
        box = self.gt_box(gt)
        if box is None:
            scores.no_face += 1
            return
        p_pts, g_pts = self.landmarks(pred, box), self.landmarks(gt, box)
        scores.akd.append(float(np.linalg.norm(p_pts - g_pts, axis=1).mean()))
        pe, ge = self.embed(pred, box, p_pts), self.embed(gt, box, g_pts)
        scores.ids.append(cosine(pe, ge))
        scores.pred_emb.append(pe)
        scores.gt_emb.append(ge)
