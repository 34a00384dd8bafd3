"""Motion intensity (paper Sec. 6.2): the count of non-zero pixels in the binarised
absolute difference of adjacent grayscale frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np


def changed_pixels(prev: np.ndarray, cur: np.ndarray, threshold: int) -> int:
    diff = cv2.absdiff(prev, cur)
    _, binary = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
    return int(cv2.countNonZero(binary))


@dataclass
class MotionMeter:
    """Streaming motion intensity over grayscale frames, fed one frame at a time."""

    threshold: int = 20
    frames: int = 0
    total: int = 0          # changed pixels summed over all adjacent pairs
    _fraction_sum: float = 0.0
    _prev: np.ndarray | None = field(default=None, repr=False)

    def add(self, gray: np.ndarray) -> None:
        if self._prev is not None:
            n = changed_pixels(self._prev, gray, self.threshold)
            self.total += n
            self._fraction_sum += n / gray.size
        self._prev = gray
        self.frames += 1

    @property
    def intensity(self) -> float | None:
        """Mean fraction of changed pixels per adjacent pair (comparable across sizes)."""
        return self._fraction_sum / (self.frames - 1) if self.frames > 1 else None


def motion_intensity(frames: Iterable[np.ndarray], threshold: int = 20) -> MotionMeter:
    meter = MotionMeter(threshold)
    for f in frames:
        meter.add(f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY))
    return meter
