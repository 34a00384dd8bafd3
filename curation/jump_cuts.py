"""Jump cuts, and cuts between two people framed alike: transitions the shot detector's
thumbnails barely show, told by the face.

A jump cut (the same person, a chunk of the take removed) or a cut to another person at the
same place against the same wall changes a 48x27 thumbnail by 2-5 grey levels, as much as a
talking head moving; TransNetV2 scores them below 0.01. What gives them away is the face:
between two adjacent frames its landmarks move further than a head moves in a frame, or
it becomes another person.

The check costs little because it runs only where the thumbnail's change spikes (it
changes `spike_ratio` x more than the median of the 8 frames before, and by `spike_min`):
there the caller decodes the frames before, at and after the jump at the face detector's
size (`observe` asks for them during the one decode of the source) and hands their faces to
`add`. A jump at frame c between faces P (c-1), Q (c) and R (c+1):
- a cut when the dlib embedding of P and Q lies further apart than `max_embed_distance`
  (0.6, dlib's same-person threshold) and Q and R are the same person;
- a jump cut when the landmarks move by `jump_min` of the face size from P to Q (mean over
  the 68 points) and `jump_ratio` x more than from Q to R: a head in motion moves about as
  much on the next frame, a jump happens once. On the shared clips a frame-to-frame move
  reaches 0.053 of the face size at most (a fast turn), a 1.6 s jump cut 0.078, and the
  next frame after it moves 0.007.
The transition is the frame before the jump, [c-1, c), as TransNetV2 marks a hard cut.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from stc.curation.config import ShotConfig
from stc.curation.shots import TRANSNET_SIZE, Transition

LOOKBACK = 8            # frames whose median change a spike is measured against
MIN_LINK_IOU = 0.2      # a face at c is the face at c-1 when their boxes overlap this much


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a.x0, b.x0), max(a.y0, b.y0), min(a.x1, b.x1), min(a.y1, b.y1)
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / max(a.area + b.area - inter, 1e-9)


class FaceJumps:
    """Streaming: `observe` every frame's thumbnail during the decode (it says which frames
    need their faces), `add` the faces of those frames, `take` the decided transitions.
    `embed(sample, slot)` gives the 128-d embedding of a sample's face."""

    name = "faces"

    def __init__(self, cfg: ShotConfig, embed: Callable[[object, int], np.ndarray | None]):
        self.cfg, self.embed = cfg, embed
        self.prev: np.ndarray | None = None
        self.change: list[float] = []
        self.open: dict[int, dict[int, object]] = {}   # candidate frame c -> {frame: sample}
        self.recent: dict[int, object] = {}            # the last frames' samples
        self.decided: list[Transition] = []
        self.observed = 0
        self.stats = {"candidates": 0, "checked": 0, "jump_cuts": 0, "person_cuts": 0}

    def observe(self, index: int, thumb: np.ndarray) -> tuple[bool, bool]:
        """(this frame's faces are needed, the previous frame's are needed too)."""
        import cv2

        small = thumb if thumb.shape[:2] == TRANSNET_SIZE[::-1] else cv2.resize(
            thumb, TRANSNET_SIZE, interpolation=cv2.INTER_AREA)
        grey = small.astype(np.float32).mean(axis=2)
        d = 0.0 if self.prev is None else float(np.abs(grey - self.prev).mean())
        self.prev = grey
        self.change.append(d)
        self.observed = index + 1
        before = self.change[max(0, index - LOOKBACK):index]
        if index >= 2 and len(before) >= 2 and d > self.cfg.spike_min and \
                d > self.cfg.spike_ratio * max(float(np.median(before)), 0.05):
            self.open[index] = {i: self.recent[i] for i in (index - 1,) if i in self.recent}
            self.stats["candidates"] += 1
            return True, True
        return index - 1 in self.open, False

    def add(self, index: int, sample) -> None:
        """A frame's faces: a sample (`curation.clip.Sample`), or a function that makes it,
        called only if the jump proves isolated. Every sampled frame comes here, so that a
        jump right after one finds it."""
        self.recent[index] = sample
        for i in [i for i in self.recent if i < index - 1]:
            del self.recent[i]
        for c, got in self.open.items():
            if c - 1 <= index <= c + 1:
                got[index] = sample
        self._decide(final=False)

    def wanted(self, index: int) -> bool:
        return any(c - 1 <= index <= c + 1 for c in self.open)

    def finish(self) -> None:
        self._decide(final=True)

    def safe(self) -> int:
        return min([c - 1 for c in self.open] + [self.observed])

    def take(self) -> list[Transition]:
        out, self.decided = self.decided, []
        return out

    def _decide(self, final: bool) -> None:
        for c in sorted(self.open):
            got = self.open[c]
            # Every frame c-1..c+1 comes once analysed; past c+2 nothing more will come.
            if not final and not {c - 1, c, c + 1} <= got.keys() and self.observed <= c + 2:
                continue
            del self.open[c]
            # A cut happens once: the frame after it changes far less than the jump (a
            # dissolve, a fade or a head in motion keeps changing). Faces are only found
            # for such isolated jumps.
            if len(self.change) > c + 1 and self.change[c + 1] > 0.5 * self.change[c]:
                continue
            self.stats["checked"] += 1
            p, q, r = (self._sample(got.get(i)) for i in (c - 1, c, c + 1))
            kind = self.judge(p, q, r)
            if kind is not None:
                self.stats["jump_cuts" if kind == "jump_cut" else "person_cuts"] += 1
                self.decided.append(Transition(c - 1, c, round(self.change[c], 3), kind, self.name))

    @staticmethod
    def _sample(item):
        return item() if callable(item) else item

    def judge(self, p, q, r) -> str | None:
        """The verdict on a jump between samples p (c-1), q (c) and r (c+1), or None."""
        if p is None or q is None or not p.boxes or not q.boxes:
            return None
        largest = p.boxes[0].area
        for i, bp in enumerate(p.boxes):
            if bp.area < 0.5 * largest:
                continue
            j = max(range(len(q.boxes)), key=lambda k: _iou(bp, q.boxes[k]))
            if _iou(bp, q.boxes[j]) < MIN_LINK_IOU:
                continue
            k = None
            if r is not None and r.boxes:
                k = max(range(len(r.boxes)), key=lambda m: _iou(q.boxes[j], r.boxes[m]))
                if _iou(q.boxes[j], r.boxes[k]) < MIN_LINK_IOU:
                    k = None
            side = float(np.sqrt(bp.area))
            ep, eq = self.embed(p, i), self.embed(q, j)
            if ep is not None and eq is not None and \
                    float(np.linalg.norm(ep - eq)) > self.cfg.max_embed_distance:
                er = self.embed(r, k) if k is not None else None
                if er is None or float(np.linalg.norm(eq - er)) <= self.cfg.max_embed_distance:
                    return "cut"
            move = float(np.abs(q.points[j] - p.points[i]).mean()) / side
            after = float(np.abs(r.points[k] - q.points[j]).mean()) / side if k is not None else 0.0
            if move > self.cfg.jump_min and move > self.cfg.jump_ratio * max(after, 0.003):
                return "jump_cut"
        return None
