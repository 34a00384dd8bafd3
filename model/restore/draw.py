"""`--draw-box`: each restored face's crop box and track number drawn on the output frame, to
check what was found and followed (the face box too, on frames where the detector ran)."""

from __future__ import annotations

import cv2
import numpy as np

CROP_COLOUR = (0, 230, 0)
DETECTION_COLOUR = (255, 200, 0)


def draw_face(frame: np.ndarray, crop: tuple[float, float, float], face: np.ndarray | None,
              track: int, scale: int = 1) -> None:
    """Draw in place, in output pixels (`scale` x input pixels)."""
    x0, y0, side = (v * scale for v in crop)
    thick = max(1, round(frame.shape[0] / 360))
    p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x0 + side)) - 1, int(round(y0 + side)) - 1)
    cv2.rectangle(frame, p0, p1, CROP_COLOUR, thick, cv2.LINE_AA)
    if face is not None:
        f = [int(round(v * scale)) for v in face]
        cv2.rectangle(frame, (f[0], f[1]), (f[2] - 1, f[3] - 1), DETECTION_COLOUR, thick, cv2.LINE_AA)
    cv2.putText(frame, f"face {track + 1}", (p0[0] + 3 * thick, p0[1] + 12 * thick),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, CROP_COLOUR, thick, cv2.LINE_AA)
