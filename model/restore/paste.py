"""Paste-back that hides the seam: a soft mask that follows the face, colour-matched at its edge.

The mask is a filled ellipse around the face (from dlib's 68 landmarks where they were
found: jaw width, chin to brows raised by a third of the face for the forehead, rolled with
the eye line; otherwise a fixed ellipse in the face box), blurred by a Gaussian of `feather`
x the face side, and brought to zero at the crop's border. Hair, neck and background stay the
frame's own, so no square edge shows, and the crop's border (where a restorer is weakest and
the crop may hold other people) never shows.

The restored face can come back lighter or darker than the frame around it (the model sees
only the crop); the seam shows as a halo. Before blending, the restored pixels are shifted by
the mean colour difference between the frame and the restoration over the mask's outer ring
(0.1 < alpha < 0.6), so the face meets the frame at its own colour; one shift for the whole
face keeps its inner shading as the model made it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# (dx, dy, ax, ay, roll): ellipse centre offset from the face box centre and half-axes, in
# face box sides, and roll in radians. [stc: dlib HOG/MMOD boxes span brows to chin; the
# forehead above them belongs to the face, the neck below does not]
DEFAULT_ELLIPSE = np.array([0.0, -0.08, 0.55, 0.72, 0.0])
JAW, BROWS, LEFT_EYE, RIGHT_EYE, CHIN = slice(0, 17), slice(17, 27), slice(36, 42), slice(42, 48), 8


def ellipse_from_landmarks(points: np.ndarray, face: tuple[float, float, float, float]
                           ) -> np.ndarray:
    """Ellipse parameters (as DEFAULT_ELLIPSE) of 68 landmarks [68, 2] in a face box."""
    left, right = points[LEFT_EYE].mean(0), points[RIGHT_EYE].mean(0)
    roll = math.atan2(right[1] - left[1], right[0] - left[0])
    c, s = math.cos(-roll), math.sin(-roll)
    mid = points.mean(0)
    upright = (points - mid) @ np.array([[c, s], [-s, c]])       # rotated by -roll
    x_lo, x_hi = upright[JAW, 0].min(), upright[JAW, 0].max()
    brow, chin = upright[BROWS, 1].min(), upright[CHIN, 1]
    top, bottom = brow - (chin - brow) / 3, chin + 0.03 * (chin - brow)
    ucx, ucy = (x_lo + x_hi) / 2, (top + bottom) / 2
    cx = mid[0] + ucx * math.cos(roll) - ucy * math.sin(roll)
    cy = mid[1] + ucx * math.sin(roll) + ucy * math.cos(roll)
    side = max(face[2] - face[0], face[3] - face[1], 1.0)
    fcx, fcy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    out = np.array([(cx - fcx) / side, (cy - fcy) / side, 0.53 * (x_hi - x_lo) / side,
                    (bottom - top) / 2 / side, roll])
    # a landmark fit that went wrong (a profile, a blurred face) falls back to the plain one
    plausible = (abs(out[0]) < 0.3 and abs(out[1]) < 0.3 and 0.3 < out[2] < 0.9
                 and 0.4 < out[3] < 1.0 and abs(roll) < 0.8)
    return out if plausible else DEFAULT_ELLIPSE.copy()


MASK_SIZE = 256     # the mask is drawn on a crop this size and warped like the crop


def face_mask(crop: tuple[float, float, float], face: np.ndarray, ellipse: np.ndarray,
              feather: float, size: int = MASK_SIZE) -> np.ndarray:
    """[size, size] float32 alpha over the crop box (x0, y0, side) for a face box `face`
    (x0, y0, x1, y1, same pixels) with ellipse parameters `ellipse`; zero on the crop's
    border. Drawn in the crop's own frame, it is warped back exactly as the crop is."""
    x0, y0, cs = crop
    k = size / cs
    fside = max(face[2] - face[0], face[3] - face[1], 1.0) * k
    dx, dy, ax, ay, roll = ellipse
    cx = ((face[0] + face[2]) / 2 - x0) * k + dx * fside - 0.5     # pixel-index coordinates
    cy = ((face[1] + face[3]) / 2 - y0) * k + dy * fside - 0.5
    m = np.zeros((size, size), np.uint8)
    f = 16     # cv2 draws with 4 fractional bits: the mask moves by sub-pixels, not in steps
    cv2.ellipse(m, (int(round(cx * f)), int(round(cy * f))),
                (max(1, int(round(ax * fside * f))), max(1, int(round(ay * fside * f)))),
                math.degrees(roll), 0, 360, 255, -1, cv2.LINE_AA, 4)
    alpha = m.astype(np.float32) / 255
    sigma = feather * fside
    if sigma >= 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    # zero at the crop's border: ramps over its outer 4%
    pos = np.arange(size) + 0.5
    ramp = np.clip((np.minimum(pos, size - pos) - 0.5) / max(1.0, 0.04 * size), 0, 1)
    return alpha * np.minimum.outer(ramp, ramp).astype(np.float32)


def color_offset(base: np.ndarray, patch: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per-channel mean of base - patch over the mask's outer ring (zero if it is empty)."""
    ring = (alpha > 0.1) & (alpha < 0.6)
    if ring.sum() < 16:
        return np.zeros(3, np.float32)
    return (base[ring].astype(np.float32) - patch[ring].astype(np.float32)).mean(0)


def blend(base: np.ndarray, patch: np.ndarray, alpha: np.ndarray, color_match: bool
          ) -> np.ndarray:
    """base + alpha * (patch - base), float32 (alpha [h, w]); the patch colour-matched first
    if asked."""
    base = base.astype(np.float32)
    patch = patch.astype(np.float32)
    if color_match:
        patch = patch + color_offset(base, patch, alpha)
    return base + alpha[:, :, None] * (patch - base)
