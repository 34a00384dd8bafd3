"""Steady crops: one square box per frame of a face track, smoothed over time.

A detector's box jitters by a few pixels from frame to frame, and boxes interpolated between
sampled detections bend at every detection; a crop that follows them raw makes the restored
face shake against the head. Each track's face centre and size go through a 5-frame running
median (a single wild detection is dropped) and a Savitzky-Golay filter (a local
least-squares polynomial: noise goes, a moving or turning head is still followed without the
lag of a plain average). The crop is then the face box expanded by curation's rule (side x
`expand`, square, at most the frame's shorter side) and moved inside the frame, as the
training crops were.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=256)
def savgol_weights(window: int, order: int, at: int) -> np.ndarray:
    """Weights w with sum(w * x[0:window]) = the least-squares polynomial of `order` through
    x[0:window] evaluated at position `at`."""
    pos = np.arange(window, dtype=np.float64) - at
    vander = np.vander(pos, order + 1, increasing=True)          # [window, order + 1]
    return np.linalg.pinv(vander)[0]                             # the constant term's row


def savgol(x: np.ndarray, window: int, order: int) -> np.ndarray:
    """Savitzky-Golay smoothing of a 1-D series; the ends are fitted by the first and last
    full window (no padding that would pull them towards a made-up value)."""
    n = len(x)
    window = min(window, n)
    if window % 2 == 0:
        window -= 1
    order = min(order, window - 1)
    if window < 3 or order < 0:
        return x.astype(np.float64)
    h = window // 2
    out = np.empty(n, np.float64)
    mid = savgol_weights(window, order, h)
    if n > 2 * h:
        out[h:n - h] = np.convolve(x, mid[::-1], mode="valid")
    for i in range(min(h, n)):
        out[i] = savgol_weights(window, order, i) @ x[:window]
    for i in range(max(h, n - h), n):
        out[i] = savgol_weights(window, order, window - (n - i)) @ x[n - window:]
    return out


def running_median(x: np.ndarray, width: int = 5) -> np.ndarray:
    if len(x) < 3 or width < 3:
        return x.astype(np.float64)
    h = min(width, len(x) if len(x) % 2 else len(x) - 1) // 2
    pad = np.pad(x.astype(np.float64), h, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(pad, 2 * h + 1), axis=1)


def smooth_series(x: np.ndarray, window: int, order: int) -> np.ndarray:
    return savgol(running_median(x), window, order)


def smooth_window(fps: float, seconds: float) -> int:
    """Odd window in frames for `seconds` at `fps` (1: no smoothing)."""
    w = int(round(seconds * (fps if fps > 0 else 25.0)))
    return max(1, w | 1)


def steady_crops(faces: np.ndarray, width: int, height: int, expand: float, window: int,
                 order: int) -> tuple[np.ndarray, np.ndarray]:
    """(crop boxes [n, 3] as (x0, y0, side), smoothed face boxes [n, 4]) for one track's
    face boxes [n, 4] (x0, y0, x1, y1) on consecutive frames. Floats: the crop is cut with
    sub-pixel accuracy, so rounding adds no jitter either."""
    cx = smooth_series((faces[:, 0] + faces[:, 2]) / 2, window, order)
    cy = smooth_series((faces[:, 1] + faces[:, 3]) / 2, window, order)
    fw = smooth_series(faces[:, 2] - faces[:, 0], window, order)
    fh = smooth_series(faces[:, 3] - faces[:, 1], window, order)
    side = np.minimum(np.maximum(fw, fh) * expand, min(width, height))
    side = np.maximum(side, 1.0)
    x0 = np.clip(cx - side / 2, 0, width - side)
    y0 = np.clip(cy - side / 2, 0, height - side)
    smoothed = np.stack([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2], 1)
    return np.stack([x0, y0, side], 1), smoothed
