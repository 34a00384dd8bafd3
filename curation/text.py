"""Burnt-in text detection with PaddleOCR's PP-OCR text detector (DB).

The default runtime is the PP-OCR detection ONNX model that ships inside `rapidocr`, run
by onnxruntime: it needs no download. The `paddleocr` package is an optional backend for
users who have it and give a local detection model folder. Only detection runs: whether
there is text matters, not what it says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stc.curation.config import TextConfig


@dataclass
class TextDetection:
    scores: list[float]
    area_fraction: float      # union-free sum of box areas over the image area, capped at 1


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


class _RapidOCRDetector:
    def __init__(self, cfg: TextConfig, threads: int):
        from rapidocr import RapidOCR

        self._ocr = RapidOCR(params={
            "Global.log_level": "error",
            "Det.limit_side_len": cfg.limit_side_len,
            "Det.box_thresh": cfg.box_thresh,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    def __call__(self, rgb: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        # rapidocr reads OpenCV's BGR order; flags are passed on every call because
        # rapidocr otherwise falls back to its config's full det+cls+rec pipeline.
        out = self._ocr(np.ascontiguousarray(rgb[:, :, ::-1]), use_det=True, use_cls=False,
                        use_rec=False)
        if out.boxes is None:
            return [], []
        return [np.asarray(b, dtype=np.float64) for b in out.boxes], [float(s) for s in out.scores]


class _PaddleOCRDetector:
    def __init__(self, cfg: TextConfig, threads: int):
        if not cfg.paddle_det_model_dir:
            raise ValueError(
                "text.backend 'paddleocr' needs text.paddle_det_model_dir: a local PP-OCR "
                "detection model folder (paddleocr cannot download models here)"
            )
        try:
            from paddleocr import TextDetection as PaddleTextDetection
        except ImportError as exc:
            raise ValueError("text.backend 'paddleocr' needs `pip install paddleocr paddlepaddle`") from exc
        self._det = PaddleTextDetection(model_dir=cfg.paddle_det_model_dir,
                                        limit_side_len=cfg.limit_side_len, box_thresh=cfg.box_thresh)

    def __call__(self, rgb: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        res = self._det.predict(np.ascontiguousarray(rgb[:, :, ::-1]))[0]
        return ([np.asarray(p, dtype=np.float64) for p in res["dt_polys"]],
                [float(s) for s in res["dt_scores"]])


class TextDetector:
    """PP-OCR text detection on RGB frames; boxes below `min_score` are ignored."""

    def __init__(self, cfg: TextConfig, threads: int = 1):
        self.cfg = cfg
        backend = {"rapidocr": _RapidOCRDetector, "paddleocr": _PaddleOCRDetector}[cfg.backend]
        self._detect = backend(cfg, threads)

    def is_text_line(self, poly: np.ndarray, score: float, image_height: int) -> bool:
        # PP-OCR boxes run clockwise from the top-left corner of the line.
        width = float(np.linalg.norm(poly[1] - poly[0]))
        height = float(np.linalg.norm(poly[3] - poly[0]))
        return (score >= self.cfg.min_score and height > 0
                and width / height >= self.cfg.min_aspect
                and height <= self.cfg.max_height_fraction * image_height)

    def __call__(self, rgb: np.ndarray) -> TextDetection:
        polys, scores = self._detect(rgb)
        keep = [i for i, s in enumerate(scores) if self.is_text_line(polys[i], s, rgb.shape[0])]
        area = sum(_polygon_area(polys[i]) for i in keep) / float(rgb.shape[0] * rgb.shape[1])
        return TextDetection([scores[i] for i in keep], min(1.0, area))


@dataclass
class TextStats:
    frames: int
    has_text: bool
    max_score: float
    boxes: int
    area_fraction: float


def summarise(dets: list[TextDetection], cfg: TextConfig) -> TextStats:
    frames_with_text = sum(1 for d in dets if d.scores)
    return TextStats(
        frames=len(dets),
        has_text=frames_with_text >= cfg.min_text_frames,
        max_score=max((max(d.scores) for d in dets if d.scores), default=0.0),
        boxes=sum(len(d.scores) for d in dets),
        area_fraction=max((d.area_fraction for d in dets), default=0.0),
    )
