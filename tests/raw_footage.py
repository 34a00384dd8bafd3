"""Raw-style footage built from the real shared clips, for tests and benchmarks.

The shared clips are single-shot talking heads; raw interviews and broadcasts are long
1280x720 streams with camera cuts and several people. These builders make such streams
from the real frames, so every cut frame and every face's place is known by construction:

- `joined`: clips of different sizes, each letterboxed (scaled, centred, black bars) into
  one 1280x720 stream and joined with hard cuts.
- `side_by_side`: two clips next to each other in one shot (two people, one camera).
- `ping_pong`: one clip played forward, backward, forward... (a long shot with no cut:
  a plain loop would jump from the last frame to the first, which is a cut).

All are written with x264 (ultrafast, CRF 16) at 25 fps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stc.core.video import FrameWriter, read_frames

WIDTH, HEIGHT = 1280, 720


@dataclass
class Built:
    path: Path
    num_frames: int
    cuts: list[int] = field(default_factory=list)        # first frame of every shot but the first
    # per part: (name, first frame, end frame, content box x0, y0, x1, y1 in the stream)
    parts: list[tuple[str, int, int, tuple[int, int, int, int]]] = field(default_factory=list)


def place(frame: np.ndarray, scale: float, canvas: np.ndarray, cx: int, cy: int) -> tuple[int, int, int, int]:
    """Draw `frame` scaled by `scale`, centred at (cx, cy) on `canvas`; returns its box."""
    h, w = frame.shape[:2]
    sw, sh = int(round(w * scale)) // 2 * 2, int(round(h * scale)) // 2 * 2
    img = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    x0, y0 = cx - sw // 2, cy - sh // 2
    canvas[y0:y0 + sh, x0:x0 + sw] = img
    return x0, y0, x0 + sw, y0 + sh


def _writer(path: Path, fps: float) -> FrameWriter:
    return FrameWriter(path, WIDTH, HEIGHT, fps, crf=16, preset="ultrafast")


def joined(videos: Path, out: Path, parts: list[tuple[str, int, float]], fps: float = 25.0) -> Built:
    """`parts`: (clip file name, frames to take from its start, scale); each part becomes one
    shot of the 1280x720 stream, a hard cut between parts."""
    built = Built(out, 0)
    with _writer(out, fps) as w:
        for name, count, scale in parts:
            frames = read_frames(videos / name, 0, count)
            start = w.frames
            for f in frames:
                canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
                box = place(f, scale, canvas, WIDTH // 2, HEIGHT // 2)
                w.write(canvas)
            if start:
                built.cuts.append(start)
            built.parts.append((name, start, w.frames, box))
        built.num_frames = w.frames
    return built


def side_by_side(videos: Path, out: Path, left: str, right: str, count: int,
                 fps: float = 25.0) -> Built:
    """Two clips in the two halves of one shot, each scaled to fill its half's height."""
    a, b = read_frames(videos / left, 0, count), read_frames(videos / right, 0, count)
    n = min(len(a), len(b))
    built = Built(out, n)
    with _writer(out, fps) as w:
        for fa, fb in zip(a[:n], b[:n]):
            canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            s = min(HEIGHT / fa.shape[0], (WIDTH // 2) / fa.shape[1])
            box_a = place(fa, s, canvas, WIDTH // 4, HEIGHT // 2)
            s = min(HEIGHT / fb.shape[0], (WIDTH // 2) / fb.shape[1])
            box_b = place(fb, s, canvas, 3 * WIDTH // 4, HEIGHT // 2)
            w.write(canvas)
    built.parts = [(left, 0, n, box_a), (right, 0, n, box_b)]
    return built


def ping_pong(videos: Path, out: Path, name: str, count: int, total: int, scale: float = 1.0,
              fps: float = 25.0) -> Built:
    """`total` frames of the first `count` frames of a clip, played back and forth."""
    frames = read_frames(videos / name, 0, count)
    cycle = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    built = Built(out, total)
    with _writer(out, fps) as w:
        for i in range(total):
            canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            box = place(frames[cycle[i % len(cycle)]], scale, canvas, WIDTH // 2, HEIGHT // 2)
            w.write(canvas)
    built.parts = [(name, 0, total, box)]
    return built
