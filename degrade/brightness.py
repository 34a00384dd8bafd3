"""Brightness flicker: each frame independently, with probability `prob`, becomes
`cv2.convertScaleAbs(frame, alpha=a)` with a drawn from `alpha`; other frames are untouched.
The per-frame alphas are recorded (1.0 for untouched frames)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stc.degrade.video import Video


@dataclass
class BrightnessConfig:
    prob: float = 0.3
    alpha: tuple[float, float] = (0.5, 1.5)

    def __post_init__(self) -> None:
        if not 0 <= self.prob <= 1:
            raise ValueError(f"prob must lie in [0, 1], got {self.prob}")
        if self.alpha[0] > self.alpha[1] or self.alpha[0] < 0:
            raise ValueError(f"alpha range {list(self.alpha)} must be [low, high] with low >= 0")


@dataclass
class BrightnessParams:
    prob: float
    frames: list[int] = field(default_factory=list)     # indices of flickered frames
    alphas: list[float] = field(default_factory=list)   # one per frame, 1.0 = untouched


class BrightnessFlicker:
    name = "brightness"

    def __init__(self, config: BrightnessConfig | None = None):
        self.config = config or BrightnessConfig()

    def draw(self, rng: np.random.Generator, num_frames: int) -> BrightnessParams:
        c = self.config
        hit = rng.random(num_frames) < c.prob
        alpha = rng.uniform(c.alpha[0], c.alpha[1], num_frames)
        alphas = [float(a) if h else 1.0 for a, h in zip(alpha, hit)]
        return BrightnessParams(prob=c.prob, frames=[int(i) for i in np.flatnonzero(hit)],
                                alphas=alphas)

    def apply(self, video: Video, p: BrightnessParams, rng: np.random.Generator) -> Video:
        return Video.from_frames(flicker(video.frames, p.frames, p.alphas), video.fps)


def flicker(frames: np.ndarray, indices: list[int], alphas: list[float]) -> np.ndarray:
    """`frames` with frame i (for i in `indices`) scaled by alphas[i]; a pure function of
    its inputs, which is what lets shards store this LQ as its recorded parameters."""
    import cv2

    out = frames.copy()
    for i in indices:
        out[i] = cv2.convertScaleAbs(frames[i], alpha=alphas[i])
    return out
