"""The first pass of `stc enhance`: every face of a video as a track of per-frame boxes, cut at
every shot.

One decode feeds three of curation's parts: the shot detector (`curation.shots`, TransNetV2
by default, on 48x27 thumbnails), the face detector (`curation.faces.FaceDetector`, on every
`stride`-th frame shrunk to `side` pixels, and the last frame) with dlib's 68 landmarks per
face, and curation's tracker (`curation.tracks.FaceTracker`: box overlap, dlib's face
embedding where overlap is ambiguous). Detections reach the tracker only once the shot
detector's verdict on their frame is final; at each cut or transition the shot's tracker is
closed and a new one opened, so no track crosses a cut, and the frames of a transition (a
dissolve's blend of two shots) belong to no track.

A track covers every frame from its first to its last detection (stretched to the shot's
ends when it was seen on the first or last frame looked at); between detections its box and
mask ellipse are interpolated. Memory stays bounded on any length: what the embedding may
still be asked for is kept as small face crops for the last `max_gap` frames only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

import cv2
import numpy as np

from stc.curation.config import FaceConfig, ShotConfig, TrackConfig
from stc.curation.faces import Box, FaceDetector, FaceEmbedder, downscale
from stc.curation.shots import Shot, make_detector, shots_between
from stc.curation.side_face import LandmarkPredictor
from stc.curation.tracks import FaceTracker, Track
from stc.model.restore.options import FaceOptions
from stc.model.restore.paste import DEFAULT_ELLIPSE, ellipse_from_landmarks


def cut_frames(transition: tuple[int, int, float]) -> tuple[int, int]:
    """The frames [t0, t1) a transition takes from both shots. TransNetV2 flags a hard cut on
    the last frame before it, a whole frame of the old shot that curation may drop but a
    restorer must not leave raw: a one-frame transition becomes a cut after that frame. A
    longer one (a dissolve, a wipe) holds blends of two shots and stays in no shot."""
    t0, t1 = transition[0], transition[1]
    return (t1, t1) if t1 - t0 <= 1 else (t0, t1)


@dataclass
class FaceTrack:
    """One face through one shot, a box on every frame of [start, end)."""

    index: int                 # over the whole video, in order of shot, then first appearance
    shot: int
    start: int
    end: int                   # exclusive
    faces: np.ndarray          # [n, 4] face boxes (x0, y0, x1, y1), input pixels
    detected: np.ndarray       # [n] bool: the detector found it on that frame
    ellipse: np.ndarray        # [n, 5] mask ellipse relative to the face box (paste.py)

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass
class FaceTracks:
    frames: int
    shots: list[Shot]
    tracks: list[FaceTrack] = field(default_factory=list)
    detections: int = 0        # frames the detector ran on
    stride: int = 1
    seconds: dict[str, float] = field(default_factory=dict)

    def frames_with_face(self) -> int:
        seen = np.zeros(self.frames, bool)
        for t in self.tracks:
            seen[t.start:t.end] = True
        return int(seen.sum())


@dataclass
class _Sample:
    boxes: list[Box]                         # input pixels
    ellipses: list[np.ndarray]
    crops: list[tuple[np.ndarray, Box]] | None   # for the embedding: face crop, box in it


def _embed_crop(small: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """The face with half a side of margin (all dlib's embedding reads) and its box there."""
    h, w = small.shape[:2]
    m = 0.5 * max(box.x1 - box.x0, box.y1 - box.y0)
    x0, y0 = int(max(0, box.x0 - m)), int(max(0, box.y0 - m))
    x1, y1 = int(min(w, box.x1 + m)), int(min(h, box.y1 + m))
    return (np.ascontiguousarray(small[y0:y1, x0:x1]),
            Box(box.x0 - x0, box.y0 - y0, box.x1 - x0, box.y1 - y0, box.score))


class TrackFinder:
    """Detector, landmarks and embedder loaded once; `find` runs the first pass of a video."""

    def __init__(self, opts: FaceOptions):
        self.opts = opts
        self.face_cfg = FaceConfig(detector=opts.detector, detect_max_side=opts.detection_side(),
                                   upsample=opts.upsample)
        self.detector = FaceDetector(self.face_cfg)
        self.landmarks = LandmarkPredictor()
        self._embedder: FaceEmbedder | None = None

    @property
    def embedder(self) -> FaceEmbedder:
        if self._embedder is None:           # dlib's ResNet, loaded only when needed
            self._embedder = FaceEmbedder()
        return self._embedder

    def detect(self, rgb: np.ndarray, keep_crops: bool) -> _Sample:
        small, scale = downscale(rgb, self.face_cfg.detect_max_side)
        found = self.detector.detect(small)
        boxes = [b.scaled(1 / scale) for b in found]
        ellipses = [ellipse_from_landmarks(self.landmarks(small, b) / scale,
                                           (o.x0, o.y0, o.x1, o.y1)) for b, o in zip(found, boxes)]
        crops = [_embed_crop(small, b) for b in found] if keep_crops else None
        return _Sample(boxes, ellipses, crops)

    def find(self, frames: Iterable[tuple[int, np.ndarray]], fps: float, width: int,
             height: int, on_frame: Callable[[int], None] | None = None) -> FaceTracks:
        import time

        opts = self.opts
        fps = fps if fps > 0 else 25.0
        stride = opts.detection_stride(fps)
        cfg = TrackConfig(min_iou=opts.iou_min, max_gap_seconds=opts.max_gap_seconds)
        shots = make_detector(ShotConfig(detector=opts.shots), fps, width, height)
        samples: dict[int, _Sample] = {}
        pending: deque[int] = deque()        # sampled frames not yet given to a tracker
        closed: list[Track] = []
        state = {"tracker": None, "shot": 0, "start": 0, "consumed": 0}
        seconds = {"detect": 0.0, "shots": 0.0}

        def embed(frame: int, box: Box) -> np.ndarray | None:
            s = samples.get(frame)
            if s is None or s.crops is None or box not in s.boxes:
                return None
            crop, local = s.crops[s.boxes.index(box)]     # at detection scale
            return self.embedder(crop, local)

        def new_tracker(start: int) -> FaceTracker:
            t = FaceTracker(cfg, fps, embed, shot=state["shot"], shot_start=start)
            # a face is looked for every `stride` frames: missing in between is not leaving
            t.max_gap = max(t.max_gap, stride)
            return t

        state["tracker"] = new_tracker(0)

        def close_shot(end: int) -> None:
            tracker = state["tracker"]
            tracker.shot_end = end
            closed.extend(tracker.close())

        def feed(upto: int) -> None:
            """Give the tracker every sample before `upto`, where shots are final."""
            while pending and pending[0] < upto:
                f = pending.popleft()
                while state["consumed"] < len(shots.transitions) and \
                        cut_frames(shots.transitions[state["consumed"]])[0] <= f:
                    t0, t1 = cut_frames(shots.transitions[state["consumed"]])
                    state["consumed"] += 1
                    close_shot(max(state["start"], t0))
                    state["shot"] += 1
                    state["start"] = max(state["start"], t1)
                    state["tracker"] = new_tracker(state["start"])
                if f >= state["start"]:          # not inside a transition
                    state["tracker"].update(f, samples[f].boxes)
            keep = state["tracker"].max_gap + 1
            for f in [f for f in samples if f < upto - keep and samples[f].crops is not None]:
                samples[f].crops = None

        count = 0
        last: tuple[int, np.ndarray] | None = None
        for index, rgb in frames:
            count = index + 1
            t0 = time.perf_counter()
            if shots.thumb_size is not None:
                shots.push(np.ascontiguousarray(
                    cv2.resize(rgb, shots.thumb_size, interpolation=cv2.INTER_AREA)))
            else:
                shots.push(None)
            t1 = time.perf_counter()
            if index % stride == 0:
                samples[index] = self.detect(rgb, True)
                pending.append(index)
                last = None
            else:
                last = (index, rgb)      # the true last frame is always looked at
            seconds["shots"] += t1 - t0
            seconds["detect"] += time.perf_counter() - t1
            feed(shots.safe())
            if on_frame:
                on_frame(index)
        if last is not None:
            samples[last[0]] = self.detect(last[1], True)
            pending.append(last[0])
        shots.finish()
        feed(count + 1)
        close_shot(count)
        shot_list = shots_between([(*cut_frames(t), t[2]) for t in shots.transitions], 0, count)
        tracks = [self._span(k, t, samples, count, shot_list) for k, t in enumerate(
            sorted(closed, key=lambda t: (t.frames[0], t.boxes[0].x0)))]
        return FaceTracks(count, shot_list, [t for t in tracks if t.frames > 0],
                          detections=len(samples), stride=stride, seconds=seconds)

    @staticmethod
    def _span(k: int, t: Track, samples: dict[int, _Sample], count: int,
              shots: list[Shot]) -> FaceTrack:
        start, end = t.start, min(t.end, count)
        shot = next((s.index for s in shots if s.start <= start < s.end), t.shot)
        n = max(0, end - start)
        faces = np.array([[b.x0, b.y0, b.x1, b.y1] for b in (t.box_at(f) for f in
                                                             range(start, end))]).reshape(n, 4)
        detected = np.zeros(n, bool)
        detected[[f - start for f in t.frames if start <= f < end]] = True
        # ellipses: interpolated between detections like the boxes, held past the ends
        known = np.array([samples[f].ellipses[slot] for f, slot in zip(t.frames, t.slots)])
        frames = np.arange(start, end)
        ellipse = np.stack([np.interp(frames, t.frames, known[:, i]) for i in range(5)], 1) \
            if len(known) else np.tile(DEFAULT_ELLIPSE, (n, 1))
        return FaceTrack(k, shot, start, end, faces, detected, ellipse.reshape(n, 5))
