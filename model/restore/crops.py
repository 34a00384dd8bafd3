"""`--save-crops`: what the restorer saw and did, frame by frame, to tell a bad paste from a
bad restoration.

`OUT_crops/boxes.csv` has one row per (frame, face track): frame, time, shot, track, whether
the detector found the face on that frame (`detected`, else the box is interpolated along
the track), whether it was restored, the crop box cut out and restored (`x0, y0, x1, y1`,
input pixels, sub-pixel) and the smoothed face box in it (`face_x0...`). A frame without
any face has one row with an empty track and `restored` no. Beside it, per track,
`faceNN_input.mp4` (the model's input crops) and `faceNN_restored.mp4` (its output).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stc.core.fs import atomic_path
from stc.core.video import FrameWriter

TABLE = "boxes.csv"
COLUMNS = ["frame", "time", "shot", "track", "detected", "restored", "x0", "y0", "x1", "y1",
           "face_x0", "face_y0", "face_x1", "face_y1"]


class CropsWriter:
    def __init__(self, folder: str | Path, size: int, fps: float):
        self.folder, self.size, self.fps = Path(folder), size, fps if fps > 0 else 25.0
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writers: dict[tuple[int, str], FrameWriter] = {}
        self.rows: list[dict] = []

    def crop(self, track: int, kind: str, image: np.ndarray) -> None:
        """One crop of a track, in frame order (`kind`: input or restored)."""
        key = (track, kind)
        if key not in self.writers:
            self.writers[key] = FrameWriter(self.folder / f"face{track + 1:02d}_{kind}.mp4",
                                            self.size, self.size, self.fps, crf=12,
                                            preset="veryfast")
        self.writers[key].write(np.ascontiguousarray(image))

    def row(self, frame: int, shot: int | None, track: int | None, detected: bool,
            restored: bool, crop: np.ndarray | None = None, face: np.ndarray | None = None
            ) -> None:
        r = {"frame": frame, "time": round(frame / self.fps, 4), "shot": shot, "track": track,
             "detected": "yes" if detected else "no", "restored": "yes" if restored else "no"}
        if crop is not None:
            x0, y0, side = (float(v) for v in crop)
            r.update(x0=round(x0, 3), y0=round(y0, 3), x1=round(x0 + side, 3),
                     y1=round(y0 + side, 3))
        if face is not None:
            r.update({f"face_{k}": round(float(v), 3) for k, v in zip(("x0", "y0", "x1", "y1"), face)})
        self.rows.append(r)

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()

    def close(self) -> Path:
        for w in self.writers.values():
            w.close()
        table = pd.DataFrame(self.rows, columns=COLUMNS)
        for c in ("shot", "track"):
            table[c] = table[c].astype("Int64")
        with atomic_path(self.folder / TABLE) as tmp:
            table.to_csv(tmp, index=False)
        return self.folder / TABLE


def read_boxes(folder: str | Path) -> pd.DataFrame:
    """The `boxes.csv` of a --save-crops folder."""
    return pd.read_csv(Path(folder) / TABLE, dtype={"shot": "Int64", "track": "Int64"})


def union_box(boxes: pd.DataFrame, scale: int = 1) -> tuple[int, int, int, int] | None:
    """The smallest whole-pixel box holding every restored crop of a boxes table (output
    pixels): outside it the output is the input's, bit for bit."""
    b = boxes[boxes["restored"] == "yes"]
    if b.empty:
        return None
    return (int(np.floor(b["x0"].min() * scale)), int(np.floor(b["y0"].min() * scale)),
            int(np.ceil(b["x1"].max() * scale)), int(np.ceil(b["y1"].max() * scale)))
