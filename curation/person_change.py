"""Where a tracked face becomes another person inside one shot: the frames no clip may hold.

The tracker (`curation.tracks`) splits a track where its face's embedding drifts to someone
else's, between `near` (the last detection still the first person) and `far` (the first
that is not). Inside one shot that happens only where the shot stage missed a transition:
a cut between look-alike pictures, or a dissolve between two people framed alike, which
TransNetV2 can miss at any length (a 20-frame dissolve between two letterboxed interviews
scored under its threshold on every frame). The split point says where dlib's embedding
changed its mind, which in a dissolve is somewhere in its middle: splitting there left
6 cross-faded frames, a ghost of the first face, in the second person's clip.

The picture tells the two apart. A hard cut changes the picture more in its one frame than
in the `CUT_LAG` frames on either side of it (mean |grey thumbnail a - thumbnail b|, the
series `Transitions.step` and `Transitions.lag` keep): a talking head moves less in a third
of a second than a picture is replaced. There the cut frame is the boundary and nothing
else is lost. Anything else is gradual, and the span runs `margin` frames beyond [near, far]
on both sides: every frame of a dissolve up to about 2 x margin long whose embedding
crossing lies near its middle, and of one up to ~1.4 x margin long wherever the crossing
lies between 30% and 70% of it. Dropping footage here is cheap (it happens once per missed
transition); keeping a cross-fade teaches a temporal model to blend faces. Without the
thumbnails (shot detection off) every change is treated as gradual.

The same test decides a cut that `curation.jump_cuts` finds by the face alone: in a slow
dissolve between two people the face detector can switch from one fading face to the other
between two frames, which reads as a cut there (on the built cases: a 2-s dissolve, its
frame-to-frame change 0.49 of the change over 8 frames; a real cut between two people
framed alike on one wall 1.51, a hard cut 25).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# A cut's own change must reach this (grey levels, 0-255, mean over the thumbnail): below
# it a "dominant" frame is noise on a still picture, not a new picture.
MIN_CUT_STEP = 2.0
CUT_LAG = 8             # frames either side a cut's one-frame change must outdo


@dataclass(frozen=True)
class PersonChange:
    start: int          # first frame that belongs to no clip
    end: int            # one past the last (start == end: a cut, no frame lost)
    kind: str           # "cut" | "gradual"
    near: int           # last detection of the first person
    far: int            # first detection of the second

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "kind": self.kind,
                "near": self.near, "far": self.far}


def margin_frames(seconds: float, fps: float) -> int:
    """The margin in frames (`TrackConfig.change_margin_seconds` at the source's rate)."""
    return int(round(seconds * (fps if fps > 0 else 25.0)))


def widened(start: int, end: int, margin: int) -> tuple[int, int]:
    """[start, end) of a gradual change the detectors barely see, `margin` further each way."""
    return max(0, start - margin), end + margin


def is_cut(step: Sequence[float], lag: Sequence[float], c: int) -> bool:
    """Whether frame c starts a new picture: `step[t]` is the change from frame t-1 to t,
    `lag[t]` from frame t - CUT_LAG to t (either may end early: the last frames)."""
    if c <= 0 or c >= len(step) or step[c] < MIN_CUT_STEP:
        return False
    sides = [lag[i] for i in (c - 1, c + CUT_LAG) if CUT_LAG <= i < len(lag)]
    return step[c] > max(sides, default=0.0)


def change_span(near: int, far: int, margin: int, step: Sequence[float] | None = None,
                lag: Sequence[float] | None = None) -> PersonChange:
    """The frames of the transition behind a change of person between detections `near`
    and `far` (`step`, `lag`: the picture's change series, see `is_cut`, or None)."""
    if step is not None and lag is not None and near < far < len(step):
        # the cut frame, if any: the largest one-frame change after `near`, up to `far`
        c = near + 1 + int(np.argmax(np.asarray(step[near + 1:far + 1], np.float64)))
        if is_cut(step, lag, c):
            return PersonChange(c, c, "cut", near, far)
    return PersonChange(*widened(near + 1, far, margin), "gradual", near, far)
