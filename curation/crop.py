"""Crop by face proportion (paper Sec. 4.1): one square region per clip.

The region is the union of the main face's boxes over the clip, each expanded about its
centre, made square around the union's centre and moved (not squashed) to fit in the
frame. One box per clip keeps the face's motion in the clip instead of stabilising it
away, which is what a temporal model must learn from.
"""

from __future__ import annotations

import numpy as np

from stc.curation.faces import Box


def crop_box(boxes: list[Box], width: int, height: int, expand: float) -> tuple[int, int, int, int]:
    """Square (x0, y0, x1, y1) in pixels, x1/y1 exclusive, even side, inside the frame."""
    if not boxes:
        raise ValueError("crop_box needs at least one face box")
    ex = []
    for b in boxes:
        cx, cy = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2
        hw, hh = (b.x1 - b.x0) * expand / 2, (b.y1 - b.y0) * expand / 2
        ex.append((cx - hw, cy - hh, cx + hw, cy + hh))
    ex = np.array(ex)
    ux0, uy0 = ex[:, 0].min(), ex[:, 1].min()
    ux1, uy1 = ex[:, 2].max(), ex[:, 3].max()
    side = max(ux1 - ux0, uy1 - uy0)
    side = int(min(round(side), width, height)) // 2 * 2
    cx, cy = (ux0 + ux1) / 2, (uy0 + uy1) / 2
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return x0, y0, x0 + side, y0 + side


def face_proportion(boxes: list[Box], box: tuple[int, int, int, int]) -> float:
    """Median area of the main face over the crop's area: how much of the clip is face."""
    side_area = (box[2] - box[0]) * (box[3] - box[1])
    return float(np.median([b.area for b in boxes]) / side_area) if boxes and side_area else 0.0
