"""Face tracks: face boxes found on sampled frames, linked into one track per face and shot.

    tracks = track_faces({0: [box_a, box_b], 12: [box_a2, box_b2], 24: []}, fps=25.0)
    tracks[0].box_at(7)        # interpolated between frames 0 and 12

Only the frames in `detections` were looked at (an empty list: looked at, no face). A
detection joins the open track whose last box it overlaps (IoU >= `min_iou`) when that
pairing is unambiguous and the track was seen on the previous looked-at frame; where one box
overlaps two tracks or two boxes one track, where a face missed on a looked-at frame comes
back, and where a face lost for a moment shows up elsewhere, dlib's 128-d face embedding of
the two faces decides (when an `embed` function is given). A track ends when its face has
not been seen for `max_gap_seconds` (it left, or turned away), and never crosses a shot
boundary.

A track never holds two people. Overlap alone links a box to whoever stood at the same
place a moment before, across a cut the shot detector missed or a dissolve: so every
`drift_check_seconds` the face's embedding is compared with the mean of the track's
embeddings so far, and where it is farther than `max_drift_distance` the track is split at
the first detection that is (the detections since the last check are embedded to find it).
One far detection followed by a near one is an outlier (blur, a hand), not a new person.
`track_faces` then cuts the frames of each such change out of both tracks: the one cut
frame where the picture shows a hard cut, else a margin around the split, since a dissolve
the shot stage missed runs on either side of it (`curation.person_change`).
The embeddings computed stay on the track (`Track.embeddings`), for its clips' identity.

A track covers [start, end): from its first detection to its last, stretched to the shot's
own start (end) when it was seen on the first (last) frame looked at in the shot, since
nothing says the face was absent before (after) it. Between detections its box is
interpolated linearly; the face is assumed present through gaps shorter than the limit.

Used by `stc curate` (one clip per track segment) and `stc enhance` (face-aware windows).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from stc.curation.config import TrackConfig
from stc.curation.faces import Box
from stc.curation.person_change import PersonChange, change_span, margin_frames

# embed(frame, box) -> 128-d descriptor, or None where the frame is no longer at hand.
Embed = Callable[[int, Box], "np.ndarray | None"]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One face through one shot. `frames[i]` is a sampled frame where it was detected,
    `boxes[i]` its box there and `slots[i]` the position of that box in the frame's list
    of detections (to find the landmarks or anything else the caller keeps per box)."""

    shot: int                       # index of the shot (0 when no shots were given)
    index: int                      # within the shot, in order of first appearance
    frames: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    start: int = 0                  # first frame covered
    end: int = 0                    # one past the last frame covered
    # frame -> dlib descriptor of the detection there, for the detections that were embedded
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    # Where it begins because the identity check ended another person's track: (near, far),
    # that track's last detection and this one's first; `before` is that track.
    # track_faces cuts the change's frames out of both.
    change: tuple[int, int] | None = None
    before: "Track | None" = field(default=None, repr=False, compare=False)
    person_change: PersonChange | None = None     # the frames cut out, once they are

    @property
    def after_identity_change(self) -> bool:
        return self.change is not None

    def box_at(self, frame: int) -> Box:
        """The box at any frame: linear between the two detections around it, the nearest
        detection's box outside them."""
        i = bisect.bisect_left(self.frames, frame)
        if i < len(self.frames) and self.frames[i] == frame:
            return self.boxes[i]
        if i == 0:
            return self.boxes[0]
        if i == len(self.frames):
            return self.boxes[-1]
        f0, f1 = self.frames[i - 1], self.frames[i]
        a, b = self.boxes[i - 1], self.boxes[i]
        t = (frame - f0) / (f1 - f0)
        return Box(a.x0 + t * (b.x0 - a.x0), a.y0 + t * (b.y0 - a.y0),
                   a.x1 + t * (b.x1 - a.x1), a.y1 + t * (b.y1 - a.y1), a.score + t * (b.score - a.score))

    def between(self, start: int, end: int) -> list[int]:
        """Positions i of the detections with start <= frames[i] < end."""
        lo, hi = bisect.bisect_left(self.frames, start), bisect.bisect_left(self.frames, end)
        return list(range(lo, hi))

    @property
    def median_side(self) -> float:
        return float(np.median([np.sqrt(b.area) for b in self.boxes])) if self.boxes else 0.0


@dataclass
class _Open:
    track: Track
    last_frame: int
    last_box: Box
    embedding: np.ndarray | None = None
    embedded_frame: int = -1
    # identity drift: sum and count of the embeddings checked so far, the last checked
    # frame, and the position of a far detection awaiting confirmation
    identity_sum: np.ndarray | None = None
    identity_n: int = 0
    checked_frame: int | None = None
    suspect: int | None = None

    @property
    def identity(self) -> np.ndarray | None:
        return None if self.identity_sum is None else self.identity_sum / self.identity_n


class FaceTracker:
    """Links detections frame by frame (frames in increasing order) inside one shot;
    `close()` ends the shot and returns its tracks. `track_faces` drives it."""

    def __init__(self, cfg: TrackConfig = TrackConfig(), fps: float = 25.0,
                 embed: Embed | None = None, shot: int = 0, shot_start: int = 0,
                 shot_end: int | None = None):
        self.cfg, self.embed, self.shot = cfg, embed if cfg.embed else None, shot
        rate = fps if fps > 0 else 25.0
        self.max_gap = max(1, int(round(cfg.max_gap_seconds * rate)))
        self.check_every = max(1, int(round(cfg.drift_check_seconds * rate)))
        self.shot_start, self.shot_end = shot_start, shot_end
        self.open: list[_Open] = []
        self.done: list[Track] = []
        self.first_looked: int | None = None
        self.last_looked: int | None = None
        self.prev_looked: int | None = None
        self.embeddings_computed = 0
        self.identity_splits = 0
        self._cache: dict[tuple[int, Box], np.ndarray | None] = {}

    # --- embeddings ----------------------------------------------------------------------
    def _embedding(self, frame: int, box: Box) -> np.ndarray | None:
        if self.embed is None:
            return None
        key = (frame, box)
        if key not in self._cache:
            vec = self.embed(frame, box)
            self._cache[key] = None if vec is None else np.asarray(vec, np.float64)
            self.embeddings_computed += vec is not None
        return self._cache[key]

    def _track_embedding(self, o: _Open) -> np.ndarray | None:
        if o.embedded_frame != o.last_frame:
            vec = self._embedding(o.last_frame, o.last_box)
            if vec is not None:
                o.embedding, o.embedded_frame = vec, o.last_frame
            o.track.embeddings[o.last_frame] = vec
        return o.embedding

    def _distance(self, o: _Open, frame: int, box: Box) -> float | None:
        # The track's identity (mean of its checked faces) where known: steadier than one face.
        a = o.identity if o.identity is not None else self._track_embedding(o)
        b = self._embedding(frame, box) if a is not None else None
        return None if a is None or b is None else float(np.linalg.norm(a - b))

    # --- linking -------------------------------------------------------------------------
    def update(self, frame: int, boxes: Sequence[Box]) -> None:
        """The detections of one looked-at frame (later than every frame before)."""
        if self.first_looked is None:
            self.first_looked = frame
        self.prev_looked, self.last_looked = self.last_looked, frame
        for o in [o for o in self.open if frame - o.last_frame > self.max_gap]:
            self._finish(o, o.last_frame + 1)
        # Embeddings of frames no open track can link back to are never asked for again.
        for key in [k for k in self._cache if frame - k[0] > self.max_gap]:
            del self._cache[key]
        links = self._link(frame, list(boxes))
        linked = {d for _, d in links}
        for o, d in links:
            o.track.frames.append(frame)
            o.track.boxes.append(boxes[d])
            o.track.slots.append(d)
            o.last_frame, o.last_box = frame, boxes[d]
            self._check_identity(o)
        for d, box in enumerate(boxes):
            if d not in linked:
                t = Track(self.shot, 0, [frame], [box], [d])
                self.open.append(_Open(t, frame, box))

    def _link(self, frame: int, boxes: list[Box]) -> list[tuple[_Open, int]]:
        if not self.open or not boxes:
            return []
        m = np.array([[iou(o.last_box, b) for b in boxes] for o in self.open])
        cand = m >= self.cfg.min_iou
        links: list[tuple[_Open, int]] = []
        used_t, used_d = set(), set()
        # Clear pairs: the only candidate in their row and their column, of a track seen on
        # the previous looked-at frame (a face missed in between may be someone else now).
        for t, d in zip(*np.nonzero(cand)):
            seen = self.open[t].last_frame == self.prev_looked or self.embed is None
            if seen and cand[t].sum() == 1 and cand[:, d].sum() == 1:
                links.append((self.open[t], int(d)))
                used_t.add(int(t))
                used_d.add(int(d))
        # Ambiguous overlaps, then faces that moved or came back without overlap: the face
        # embedding decides, nearest first; without embeddings the largest overlap wins.
        rest = [(int(t), int(d)) for t, d in zip(*np.nonzero(cand)) if t not in used_t and d not in used_d]
        lonely_d = [d for d in range(len(boxes)) if d not in used_d and not cand[:, d].any()]
        lonely_t = [t for t in range(len(self.open)) if t not in used_t and not cand[t].any()]
        pairs = rest + [(t, d) for t in lonely_t for d in lonely_d]
        scored = []
        for t, d in pairs:
            dist = self._distance(self.open[t], frame, boxes[d]) if self.embed else None
            if dist is not None:
                if dist <= self.cfg.max_embed_distance:
                    scored.append((0, dist, -m[t, d], t, d))
            elif m[t, d] >= self.cfg.min_iou:
                scored.append((1, -m[t, d], 0.0, t, d))
        for *_, t, d in sorted(scored):
            if t not in used_t and d not in used_d:
                links.append((self.open[t], d))
                used_t.add(t)
                used_d.add(d)
        return links

    # --- identity drift ----------------------------------------------------------------
    def _embed_at(self, o: _Open, i: int) -> np.ndarray | None:
        t = o.track
        vec = self._embedding(t.frames[i], t.boxes[i])
        if vec is not None:
            t.embeddings[t.frames[i]] = vec
        return vec

    def _far(self, o: _Open, vec: np.ndarray | None) -> bool:
        return vec is not None and float(np.linalg.norm(vec - o.identity)) > self.cfg.max_drift_distance

    def _check_identity(self, o: _Open) -> None:
        """After `o` got a detection: confirm or drop a pending suspect, and on schedule
        compare the face with the track's identity (see the module docstring)."""
        if self.embed is None or self.cfg.max_drift_distance <= 0:
            return
        t = o.track
        last = len(t.frames) - 1
        if o.suspect is not None:
            vec = self._embed_at(o, last)
            if vec is None:
                return
            if self._far(o, vec):
                self._split(o, o.suspect)
            else:
                o.suspect = None        # one far face between near ones: an outlier
                self._add_identity(o, vec, t.frames[last])
            return
        if o.checked_frame is not None and t.frames[last] - o.checked_frame < self.check_every:
            return
        vec = self._embed_at(o, last)
        if vec is None:
            return
        if o.identity is None or not self._far(o, vec):
            self._add_identity(o, vec, t.frames[last])
            return
        # Drift: the first far detection since the last check is where the new face begins.
        first = bisect.bisect_right(t.frames, o.checked_frame)
        far = [i for i in range(first, last) if self._far(o, self._embed_at(o, i))]
        start = far[0] if far else last
        if start < last:
            self._split(o, start)       # two far faces in a row: confirmed
        else:
            o.suspect = last

    def _add_identity(self, o: _Open, vec: np.ndarray, frame: int) -> None:
        o.identity_sum = vec.copy() if o.identity_sum is None else o.identity_sum + vec
        o.identity_n += 1
        o.checked_frame = frame

    def _split(self, o: _Open, i: int) -> None:
        """Detections [i:] of `o`'s track become a new track, the rest ends before them."""
        old = o.track
        new = Track(self.shot, 0, old.frames[i:], old.boxes[i:], old.slots[i:],
                    change=(old.frames[max(0, i - 1)], old.frames[i]), before=old)
        new.embeddings = {f: v for f, v in old.embeddings.items() if f >= new.frames[0]}
        old.embeddings = {f: v for f, v in old.embeddings.items() if f < new.frames[0]}
        del old.frames[i:], old.boxes[i:], old.slots[i:]
        old.start, old.end = old.frames[0], old.frames[-1] + 1
        self.done.append(old)
        self.identity_splits += 1
        o.track, o.suspect = new, None
        o.identity_sum, o.identity_n, o.checked_frame = None, 0, None
        for f in new.frames:
            if f in new.embeddings:
                self._add_identity(o, new.embeddings[f], f)

    def _finish(self, o: _Open, end: int) -> None:
        self.open.remove(o)
        t = o.track
        t.start = t.frames[0]
        t.end = end
        self.done.append(t)

    def close(self) -> list[Track]:
        """End the shot: every track, numbered in order of first appearance."""
        for o in list(self.open):
            if o.suspect is not None:   # the track ended before the far face was confirmed
                self._split(o, o.suspect)
            self._finish(o, o.last_frame + 1)
        tracks = sorted(self.done, key=lambda t: (t.frames[0], t.boxes[0].x0))
        for i, t in enumerate(tracks):
            t.index = i
            # Seen on the shot's first (last) looked-at frame: present from its start (to its
            # end), as far as anyone looked.
            if t.frames[0] == self.first_looked:
                t.start = self.shot_start
            if t.frames[-1] == self.last_looked and self.shot_end is not None:
                t.end = self.shot_end
        self.done = []
        return tracks


def track_faces(detections: Mapping[int, Sequence[Box]], cfg: TrackConfig = TrackConfig(), *,
                fps: float = 25.0, shots: Sequence[tuple[int, int]] | None = None,
                num_frames: int | None = None, embed: Embed | None = None,
                picture=None) -> list[Track]:
    """Face tracks from per-frame detections (frame -> boxes, for the frames looked at).

    `shots`: [start, end) frame ranges; tracks never cross them and frames outside every
    shot (a transition) are ignored. Without shots the whole video is one shot ending at
    `num_frames` (default: one past the last frame looked at). `embed(frame, box)` returns a
    face descriptor (`stc.curation.faces.FaceEmbedder`) for ambiguous links.
    Where a track's face became another person, the frames of that change
    (`curation.person_change`, located with `picture`'s per-frame change series `step` and
    `lag`, a `curation.shots.Transitions`, when known) are cut out of both tracks; a track
    left with no detection goes.
    Returns tracks ordered by shot, then first appearance."""
    frames = sorted(detections)
    if shots is None:
        end = num_frames if num_frames is not None else (frames[-1] + 1 if frames else 0)
        shots = [(0, end)]
    tracks: list[Track] = []
    for s, (start, end) in enumerate(shots):
        tracker = FaceTracker(cfg, fps, embed, shot=s, shot_start=start, shot_end=end)
        for f in frames[bisect.bisect_left(frames, start):bisect.bisect_left(frames, end)]:
            tracker.update(f, detections[f])
        tracks.extend(cut_out_changes(tracker.close(), cfg, fps, picture))
    return tracks


def cut_out_changes(tracks: list[Track], cfg: TrackConfig, fps: float, picture=None) -> list[Track]:
    """One shot's tracks with the frames of every change of person cut out of the track
    before it and the track after it (see `curation.person_change`)."""
    if not any(t.change for t in tracks):
        return tracks
    margin = change_margin(cfg, fps)
    step, lag = getattr(picture, "step", None), getattr(picture, "lag", None)
    for t in tracks:
        if t.change is None or t.before is None:
            continue
        ch = change_span(*t.change, margin, step, lag)
        t.person_change = ch
        _keep(t.before, end=ch.start)
        _keep(t, start=ch.end)
    kept = sorted((t for t in tracks if t.frames), key=lambda t: (t.frames[0], t.boxes[0].x0))
    for i, t in enumerate(kept):
        t.index = i
    return kept


def change_margin(cfg: TrackConfig, fps: float) -> int:
    """Frames dropped either side of a gradual change of person."""
    return margin_frames(cfg.change_margin_seconds, fps)


def _keep(t: Track, start: int | None = None, end: int | None = None) -> None:
    """`t` from `start` / up to `end`: its detections outside go. The face was tracked
    across the change, so it is there up to it (held at its nearest detection's box, as at
    a shot's ends): a track ending at a cut reaches the cut frame."""
    inside = [i for i, f in enumerate(t.frames)
              if (start is None or f >= start) and (end is None or f < end)]
    t.frames = [t.frames[i] for i in inside]
    t.boxes = [t.boxes[i] for i in inside]
    t.slots = [t.slots[i] for i in inside]
    t.embeddings = {f: v for f, v in t.embeddings.items()
                    if (start is None or f >= start) and (end is None or f < end)}
    if t.frames and start is not None:
        t.start = start
    if t.frames and end is not None:
        t.end = end
