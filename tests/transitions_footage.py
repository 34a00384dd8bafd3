"""Raw footage with every kind of shot transition, built from the real shared clips.

An edit is a list of shots (clip, first frame, frame count, framing) and the transitions
between them, written as one 1280x720 x264 stream (ultrafast, CRF 16, 25 fps), so the span
of every transition is known by construction:

- `cut`: the next shot starts on the next frame;
- `dissolve`: L frames where the outgoing shot (running on) and the incoming shot (its L
  frames before its first shot frame) are cross-faded;
- `fade`: the outgoing shot fades to black over L frames, stays black for `black` frames,
  the incoming shot fades in over L frames;
- `wipe`: a vertical edge sweeps left to right over L frames, the incoming shot left of it;
- `jump`: the same clip goes on after `skip` of its frames were cut out (a jump cut).

Framings: `letterbox` scales the clip into the middle of a black 1280x720 frame; `wall`
keeps only an ellipse around the clip's (centred) face and puts it at the same place on one
plain grey wall, so two different people in that framing differ only in the face.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stc.core.video import read_frames

from .raw_footage import HEIGHT, WIDTH, _writer, place

WALL_GREY = 118


@dataclass(frozen=True)
class ShotPart:
    clip: str                   # file name in the shared videos folder
    start: int                  # first clip frame shown as the shot
    count: int
    framing: str = "letterbox"  # letterbox | wall
    scale: float = 1.3


@dataclass(frozen=True)
class Join:
    kind: str                   # cut | dissolve | fade | wipe | jump
    frames: int = 0             # L (dissolve, fade, wipe)
    black: int = 0              # black frames in the middle of a fade
    skip: int = 0               # clip frames cut out of a jump cut


@dataclass
class Edited:
    path: Path
    num_frames: int
    # (kind, first frame, end frame) in the stream: the frames that belong to no shot; a cut
    # or jump cut at frame c is (c - 1, c + 1): the last frame before and the first after.
    transitions: list[tuple[str, int, int]] = field(default_factory=list)
    shots: list[tuple[int, int]] = field(default_factory=list)   # [start, end) of each shot


class _Frames:
    """Clip frames by index, each decoded once."""

    def __init__(self, videos: Path):
        self.videos, self.cache = videos, {}

    def __call__(self, name: str, i: int) -> np.ndarray:
        if name not in self.cache:
            self.cache[name] = read_frames(self.videos / name)
        frames = self.cache[name]
        return frames[min(i, len(frames) - 1)]


def _wall_mask(h: int, w: int) -> np.ndarray:
    """A feathered ellipse around the middle of a face-centred clip, 0-1."""
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, (w // 2, int(h * 0.47)), (int(w * 0.3), int(h * 0.4)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(m, (0, 0), sigmaX=w * 0.02)[..., None]


def render(frame: np.ndarray, framing: str, scale: float) -> np.ndarray:
    if framing == "letterbox":
        canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        place(frame, scale, canvas, WIDTH // 2, HEIGHT // 2)
        return canvas
    wall = np.full((HEIGHT, WIDTH, 3), WALL_GREY, np.uint8)
    placed = np.zeros_like(wall)
    x0, y0, x1, y1 = place(frame, scale, placed, WIDTH // 2, HEIGHT // 2)
    m = np.zeros((HEIGHT, WIDTH, 1), np.float32)
    m[y0:y1, x0:x1] = _wall_mask(y1 - y0, x1 - x0)
    return (placed * m + wall * (1 - m)).round().astype(np.uint8)


def edit(videos: Path, out: Path, items: list, fps: float = 25.0) -> Edited:
    """`items`: ShotPart, Join, ShotPart, Join, ..., ShotPart."""
    get = _Frames(videos)
    shots = items[0::2]
    joins = items[1::2]
    built = Edited(out, 0)

    def shot_frame(s: ShotPart, i: int) -> np.ndarray:
        return render(get(s.clip, s.start + i), s.framing, s.scale)

    with _writer(out, fps) as w:
        for k, s in enumerate(shots):
            first = w.frames
            for i in range(s.count):
                w.write(shot_frame(s, i))
            built.shots.append((first, w.frames))
            if k == len(shots) - 1:
                break
            j, nxt = joins[k], shots[k + 1]
            t0 = w.frames
            L = j.frames
            if j.kind == "dissolve":
                for i in range(L):
                    a = shot_frame(s, s.count + i).astype(np.float32)
                    b = shot_frame(nxt, i - L).astype(np.float32)
                    t = (i + 1) / (L + 1)
                    w.write((a * (1 - t) + b * t).round().astype(np.uint8))
            elif j.kind == "fade":
                for i in range(L):
                    a = shot_frame(s, s.count + i).astype(np.float32)
                    w.write((a * (1 - (i + 1) / (L + 1))).round().astype(np.uint8))
                for _ in range(j.black):
                    w.write(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
                for i in range(L):
                    b = shot_frame(nxt, i - L).astype(np.float32)
                    w.write((b * ((i + 1) / (L + 1))).round().astype(np.uint8))
            elif j.kind == "wipe":
                for i in range(L):
                    a, b = shot_frame(s, s.count + i), shot_frame(nxt, i - L)
                    edge = int(round(WIDTH * (i + 1) / (L + 1)))
                    f = a.copy()
                    f[:, :edge] = b[:, :edge]
                    w.write(f)
            elif j.kind not in ("cut", "jump"):
                raise ValueError(j.kind)
            if j.kind in ("cut", "jump"):
                built.transitions.append((j.kind, t0 - 1, t0 + 1))
            else:
                built.transitions.append((j.kind, t0, w.frames))
        built.num_frames = w.frames
    return built


def every_transition(videos: Path, out: Path, shot: int = 45) -> Edited:
    """One source holding every kind: letterboxed clips joined by a 15-frame dissolve, a
    fade through black, a wipe and a jump cut, then a hard cut to two different people
    framed alike on one grey wall, and a hard cut between them."""
    return edit(videos, out, [
        ShotPart("hdtf_1.mp4", 0, shot), Join("dissolve", 15),
        ShotPart("hdtf_2.mp4", 20, shot), Join("fade", 8, black=4),
        ShotPart("hdtf_3.mp4", 20, shot), Join("wipe", 12),
        ShotPart("hdtf_5.mp4", 20, shot), Join("jump"),
        ShotPart("hdtf_5.mp4", 20 + shot + 40, shot), Join("cut"),
        ShotPart("hdtf_2.mp4", 0, shot, "wall", 1.0), Join("cut"),
        ShotPart("hdtf_4.mp4", 0, shot, "wall", 1.0),
    ])
