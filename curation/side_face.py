"""Side-face rule of paper Sec. 6.1 on dlib's 68-point landmarks.

With x36, x45 the outer eye corners and x30 the nose tip, a frame is a side face when
the nose tip is outside the eyes, or alpha = |x36 - x30| / |x45 - x30| is below
`alpha_min` (0.4) or above `alpha_max` (2.5). Unlike the published script, which stops
at the first side frame, every analysed frame is judged and the clip is decided by the
fraction of side frames. By default x is measured along the eye line rather than the
image's x axis (`SideFaceConfig.axis`), so a tilted head is not taken for a turned one.

Turned runs. Inside a face track, a sampled frame where the face is present (the track
runs through it) but the frontal detector did not find it, or its landmarks are
degenerate, counts as turned too; where landmarks exist the eye-nose rule decides. A run
of turned samples may have begun just after the frontal sample before it and last until
the frontal sample after it, so that whole extent is its possible length; a run whose
extent reaches `max_turned_seconds` is cut out of the track (`frontal_segments`) instead of
being averaged into a clip's side fraction. Any turned stretch that no sample saw lies
between two frontal samples and is shorter than the sampling stride.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from stc.core.video import owned_array
from stc.curation.config import SideFaceConfig
from stc.curation.faces import Box
from stc.curation.models import LANDMARKS_68, dlib_model_path

LEFT_EYE_OUTER, RIGHT_EYE_OUTER, NOSE_TIP = 36, 45, 30


def eye_nose_ratio(x36: float, x45: float, x30: float) -> float:
    """alpha = |x36 - x30| / |x45 - x30| (inf when the nose tip sits on x45)."""
    d45 = abs(x45 - x30)
    return abs(x36 - x30) / d45 if d45 > 0 else math.inf


def is_side_face(x36: float, x45: float, x30: float, cfg: SideFaceConfig = SideFaceConfig()) -> bool:
    lo, hi = min(x36, x45), max(x36, x45)
    if x30 < lo or x30 > hi:
        return True
    alpha = eye_nose_ratio(x36, x45, x30)
    return alpha < cfg.alpha_min or alpha > cfg.alpha_max


def rule_coords(p: np.ndarray, cfg: SideFaceConfig = SideFaceConfig()) -> tuple[float, float, float]:
    """(x36, x45, x30) of a 68x2 landmark array as the rule reads them: image x, or the
    position along the eye line from 36 towards 45 (image x when the eyes coincide)."""
    p36, p45, p30 = p[LEFT_EYE_OUTER], p[RIGHT_EYE_OUTER], p[NOSE_TIP]
    eye = p45 - p36
    norm = float(np.hypot(*eye))
    if cfg.axis == "image_x" or norm == 0:
        return float(p36[0]), float(p45[0]), float(p30[0])
    u = eye / norm
    return 0.0, norm, float(np.dot(p30 - p36, u))


@dataclass
class SideFaceStats:
    frames: int
    side_fraction: float | None
    ratio_median: float | None
    ratio_min: float | None
    ratio_max: float | None
    # Per analysed frame: its index, alpha (None where infinite), the verdict and the
    # three landmarks the rule reads, so a reviewer can redraw every decision.
    evidence: dict = field(default_factory=dict)

    def evidence_json(self) -> str:
        return json.dumps(self.evidence, separators=(",", ":"))

    def is_side_dominated(self, cfg: SideFaceConfig) -> bool:
        return self.side_fraction is not None and self.side_fraction > cfg.max_side_fraction


def summarise(points: list[np.ndarray], cfg: SideFaceConfig,
              frames: list[int] | None = None) -> SideFaceStats:
    """Clip statistics from per-frame 68x2 landmark arrays; `frames` are their indices
    in the video (for the evidence), 0.. by default."""
    frames = list(range(len(points))) if frames is None else [int(i) for i in frames]
    if len(frames) != len(points):
        raise ValueError(f"{len(frames)} frame indices for {len(points)} landmark sets")
    if not points:
        return SideFaceStats(0, None, None, None, None, {"frames": [], "alpha": [], "side": [],
                                                         "points": []})
    coords = [rule_coords(p, cfg) for p in points]
    side = [is_side_face(*c, cfg) for c in coords]
    ratios = np.array([eye_nose_ratio(*c) for c in coords])
    finite = ratios[np.isfinite(ratios)]
    evidence = {
        "frames": frames,
        "alpha": [round(float(r), 4) if math.isfinite(r) else None for r in ratios],
        "side": [bool(v) for v in side],
        "points": [np.round(p[[NOSE_TIP, LEFT_EYE_OUTER, RIGHT_EYE_OUTER]], 1).ravel().tolist()
                   for p in points],   # x30, y30, x36, y36, x45, y45 in input pixels
    }
    return SideFaceStats(
        frames=len(points),
        side_fraction=float(np.mean(side)),
        ratio_median=float(np.median(ratios)),  # the median of a few infs stays finite
        ratio_min=float(finite.min()) if finite.size else None,
        ratio_max=float(finite.max()) if finite.size else None,
        evidence=evidence,
    )


class LandmarkPredictor:
    """dlib's 68-point shape predictor from the `face-recognition-models` package."""

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))

    def __call__(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        rect = self._dlib.rectangle(int(box.x0), int(box.y0), int(box.x1), int(box.y1))
        shape = self._predictor(owned_array(rgb), rect)   # dlib ignores strides
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


# Why a sampled frame of a track counts as turned.
SIDE, MISSED, NO_LANDMARKS = "side", "missed", "landmarks"


def landmarks_ok(points: np.ndarray, box: Box) -> bool:
    """Whether dlib's fit is usable: finite, the outer eye corners apart by at least a
    sixth of the box and the nose tip near the box (a failed fit collapses or drifts)."""
    if points is None or not np.all(np.isfinite(points)):
        return False
    w = max(box.x1 - box.x0, 1e-6)
    eyes = float(np.hypot(*(points[RIGHT_EYE_OUTER] - points[LEFT_EYE_OUTER])))
    x, y = points[NOSE_TIP]
    pad = 0.25 * w
    inside = box.x0 - pad <= x <= box.x1 + pad and box.y0 - pad <= y <= box.y1 + pad
    return eyes >= w / 6 and inside


def judge_frame(points: np.ndarray | None, box: Box | None, cfg: SideFaceConfig) -> str | None:
    """None for a frontal frame, else why it is turned (SIDE, MISSED, NO_LANDMARKS)."""
    if box is None:
        return MISSED
    if points is None or not landmarks_ok(points, box):
        return NO_LANDMARKS
    return SIDE if is_side_face(*rule_coords(points, cfg), cfg) else None


@dataclass
class TurnedRun:
    start: int                  # first frame it may cover (just after the frontal sample before)
    end: int                    # one past the last (the frontal sample after it)
    frames: list[int]           # its sampled frames, all judged turned
    why: list[str]              # per sampled frame: SIDE, MISSED or NO_LANDMARKS
    trimmed: bool = False       # cut out of the track: it may last max_turned_seconds or more

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "frames": self.frames, "why": self.why,
                "trimmed": self.trimmed}


def turned_runs(start: int, end: int, judged: list[tuple[int, str | None]],
                min_length: int) -> list[TurnedRun]:
    """Runs of consecutive turned samples of a track covering [start, end); `judged` is
    (frame, judge_frame's verdict) for its sampled frames in order. A run is marked
    `trimmed` when its possible extent is `min_length` frames or more."""
    runs: list[TurnedRun] = []
    last_frontal = None
    current: TurnedRun | None = None
    for frame, why in judged:
        if why is None:
            if current is not None:
                current.end = frame
                runs.append(current)
                current = None
            last_frontal = frame
            continue
        if current is None:
            current = TurnedRun(start if last_frontal is None else last_frontal + 1, end, [], [])
        current.frames.append(int(frame))
        current.why.append(why)
    if current is not None:
        runs.append(current)
    for r in runs:
        r.trimmed = r.end - r.start >= min_length
    return runs


def frontal_segments(start: int, end: int, runs: list[TurnedRun]) -> list[tuple[int, int]]:
    """[start, end) without the trimmed runs."""
    out, a = [], start
    for r in sorted((r for r in runs if r.trimmed), key=lambda r: r.start):
        if r.start > a:
            out.append((a, r.start))
        a = max(a, r.end)
    if end > a:
        out.append((a, end))
    return out
