"""Sub-pixel square crops out of a frame and back into it.

Both directions are one axis-aligned scale-and-shift, X_dst = (X_src - src_origin) * scale +
dst_origin, in continuous pixel coordinates (pixel i covers [i, i + 1)). A crop box at a
fractional position is cut exactly there, so a smoothly moving box gives a smoothly moving
crop. Shrinking by more than 2x first area-averages (cv2.INTER_AREA), as a plain resize of the
crop would, so fine detail does not alias; the rest is bilinear.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def warp(src: np.ndarray, src_origin: tuple[float, float], scale: tuple[float, float],
         dst_origin: tuple[float, float], dst_size: tuple[int, int],
         shrink: bool = True) -> np.ndarray:
    """The [dst_h, dst_w] image with X_dst = (X_src - src_origin) * scale + dst_origin per
    axis; outside `src` the nearest edge pixel is repeated."""
    sx, sy = scale
    if shrink and (sx < 0.5 or sy < 0.5):
        h, w = src.shape[:2]
        nw, nh = max(1, round(w * sx * 2)), max(1, round(h * sy * 2))
        small = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / w, nh / h
        return warp(small, (src_origin[0] * fx, src_origin[1] * fy), (sx / fx, sy / fy),
                    dst_origin, dst_size, shrink=False)
    # warpAffine's inverse map takes dst pixel indices to src pixel indices
    m = np.array([[1 / sx, 0, (0.5 - dst_origin[0]) / sx + src_origin[0] - 0.5],
                  [0, 1 / sy, (0.5 - dst_origin[1]) / sy + src_origin[1] - 0.5]])
    return cv2.warpAffine(src, m, dst_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def cut_square(frame: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """The square (x0, y0, side) of `frame`, resized to size x size."""
    x0, y0, side = box
    # Only the pixels under the box (and one around it) take part: cheap on a big frame.
    h, w = frame.shape[:2]
    ix0, iy0 = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
    ix1, iy1 = min(w, math.ceil(x0 + side) + 1), min(h, math.ceil(y0 + side) + 1)
    s = size / side
    return warp(frame[iy0:iy1, ix0:ix1], (x0 - ix0, y0 - iy0), (s, s), (0.0, 0.0), (size, size))


def paste_region(box: tuple[float, float, float], width: int, height: int
                 ) -> tuple[int, int, int, int]:
    """The whole pixels (x0, y0, x1, y1) a box touches, inside the frame."""
    x0, y0, side = box
    return (max(0, math.floor(x0)), max(0, math.floor(y0)),
            min(width, math.ceil(x0 + side)), min(height, math.ceil(y0 + side)))


def uncut_square(crop: np.ndarray, box: tuple[float, float, float],
                 region: tuple[int, int, int, int]) -> np.ndarray:
    """The crop put back at `box` (frame pixels), as the pixels of `region`."""
    x0, y0, side = box
    rx0, ry0, rx1, ry1 = region
    s = side / crop.shape[0]
    return warp(crop, (0.0, 0.0), (s, s), (x0 - rx0, y0 - ry0), (rx1 - rx0, ry1 - ry0))
