"""Curating one source video into clips: timed steps, and every outcome is a row.

    probe -> scan: ONE decode of the source, swscale making only small frames from it:
               every frame: a 48x27 thumbnail -> the shot detector (TransNetV2, gated)
               sampled frames (`per_second`): dlib faces + 68 landmarks of every face
             as each shot closes (or each chunk of a long one): face tracks ->
             (shot, track) segments cut into clips of at most `max_seconds` ->
             per clip: face checks, crop box, side face, text
          -> write: every clip that passed, decoding only its own segment (ffmpeg seeks,
             picks the frames by timestamp, crops, scales, x264; motion on the same frames)

A source gives one row per clip, kept or rejected; a source that gives no clip (unreadable,
too short, no face that stays long enough) gives exactly one row saying why. Every shot
found is recorded in `OUT/shots/<source_id>.json`. Nothing raises.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import resource
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from stc.core import storage
from stc.core.fs import write_text_atomic
from stc.core.names import CLIPS_DIR, SHOTS_DIR
from stc.core.paths import resolved
from stc.core.video import (
    Segment,
    TruncatedVideo,
    VideoError,
    VideoInfo,
    check_frame_count,
    crop_transcode,
    probe,
    scan_frames,
)
from stc.curation import crop as crop_mod
from stc.curation import quality, side_face, text
from stc.curation.config import CurateConfig
from stc.curation.faces import Box, FaceDetector, FaceEmbedder, sample_stride
from stc.curation.identity import ClipFace, clip_embedding, person_id, person_labels
from stc.curation.motion import MotionMeter
from stc.curation.jump_cuts import FaceJumps
from stc.curation.shots import Shot, make_detector
from stc.curation.tracks import Track, change_margin, track_faces
from stc.manifests.clips import REASONS

# A shot longer than this many clips' worth is analysed in chunks of it, so a worker holds
# the sampled frames of at most one chunk however long the shot (clips never span chunks).
CHUNK_CLIPS = 3
# Steps that run a program (ffmpeg): their CPU includes the program's.
CHILD_STEPS = frozenset({"write"})


def source_id_for(path: str | Path) -> str:
    """Stable id of an input: the file stem (made safe) and a hash of the absolute path (or
    of the URL, for s3:// and other object storage), so two `clip.mp4` files in different
    folders never collide and reruns find their rows."""
    if storage.is_url(path):
        key, stem = str(storage.location(path)), storage.stem(path)
    else:
        p = resolved(path)
        key, stem = str(p), p.stem
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:80] or "video"
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def clip_id_for(source_id: str, shot: int, track: int, piece: int) -> str:
    """One clip of a source: its shot, its face track in the shot, its piece of the track."""
    return f"{source_id}_s{shot:03d}_t{track:02d}_{piece:02d}"


def shots_file(source_id: str) -> str:
    """Where a source's shots are recorded, relative to the output folder."""
    return f"{SHOTS_DIR}/{source_id}.json"


class Stop(Exception):
    """A step's verdict that ends a clip (or the whole source): a reason code and message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Sample:
    """A sampled frame, as analysed."""

    index: int
    scale: float                      # small = input * scale
    boxes: list[Box]                  # in input pixels, largest first
    points: list[np.ndarray]          # 68x2 landmarks of each box, input pixels
    small: np.ndarray | None = None   # the analysed frame; dropped once its shot is judged
    quality: list[quality.FaceQuality | None] = field(default_factory=list)  # of each box


@dataclass
class Clip:
    """One (shot, track) piece on its way to a row."""

    row: dict[str, Any]
    track: Track
    start: int
    end: int                          # exclusive
    samples: list[Sample]             # every sample in [start, end)
    found: list[int]                  # positions in `track` of its detections in [start, end)
    by_frame: dict[int, Sample] = field(default_factory=dict)
    turned: list[side_face.TurnedRun] = field(default_factory=list)   # of its whole track
    box: tuple[int, int, int, int] | None = None
    passed: bool = False              # every check before the write passed
    embedding: np.ndarray | None = None   # mean face descriptor (curation.identity)
    faces_embedded: int = 0


@dataclass
class SourceState:
    path: str
    source_id: str
    base: dict[str, Any]              # the columns every row of this source shares
    timings: dict[str, float]
    info: VideoInfo | None = None
    fps: float = 25.0
    num_frames: int = 0
    times: list[float | None] = field(default_factory=list)
    detector: Any = None
    pending: list[Sample] = field(default_factory=list)
    samples_seen: int = 0
    faces_seen: int = 0
    max_faces: int = 0
    shots: list[Shot] = field(default_factory=list)
    shot_index: int = 0               # index the open shot will get
    shot_start: int = 0
    shot_score: float | None = None
    span_start: int = 0               # first frame not yet judged in the open shot
    consumed: int = 0                 # transitions of the detector already turned into shots
    track_offset: int = 0             # tracks numbered so far in the open shot
    clips: list[Clip] = field(default_factory=list)
    writes: list[tuple[Clip, Future]] = field(default_factory=list)   # clips being written
    fragments: int = 0                # face segments shorter than min_frames
    person_changes: list = field(default_factory=list)   # curation.person_change spans
    tracks: int = 0
    embeddings: int = 0


class ClipCurator:
    """Holds the loaded models; `__call__` curates one source video and returns (rows,
    timings)."""

    def __init__(self, cfg: CurateConfig, out_dir: str | Path, threads: int = 1):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.threads = threads
        self._detector = self._landmarks = self._text = self._embedder = None
        self._writer: ThreadPoolExecutor | None = None

    # Models load on first use so a worker that only sees unreadable files stays cheap.
    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.cfg.face)
        return self._detector

    @property
    def landmarks(self) -> side_face.LandmarkPredictor:
        if self._landmarks is None:
            self._landmarks = side_face.LandmarkPredictor()
        return self._landmarks

    @property
    def embedder(self) -> FaceEmbedder:
        if self._embedder is None:
            self._embedder = FaceEmbedder()
        return self._embedder

    @property
    def text_detector(self) -> text.TextDetector:
        if self._text is None:
            self._text = text.TextDetector(self.cfg.text, threads=self.threads)
        return self._text

    def __call__(self, source_path: str, source_id: str | None = None, source: str = ""
                 ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        source_id = source_id or source_id_for(source_path)
        base = {"clip_id": source_id, "source_id": source_id, "source_path": str(source_path),
                "source": source, "clip_path": None}
        s = SourceState(str(source_path), source_id, base, {})
        cpu0 = _cpu_seconds()
        try:
            with self._timed(s, "probe"):
                self.probe(s)
            self.scan(s)
            self.check_source(s)
            if not s.clips:
                raise self.why_no_clip(s)
            self.finish_writes(s)
            self.name_persons(s)
            self.record_shots(s)
            rows = [c.row for c in s.clips]
        except Stop as stop:
            self.abandon_writes(s)
            rows = [{**base, "status": REASONS[stop.reason][0], "reason": stop.reason,
                     "message": stop.message}]
        except Exception as exc:  # noqa: BLE001 - a bug must cost one source, not the run
            self.abandon_writes(s)
            tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            rows = [{**base, "status": "error", "reason": "internal_error",
                     "message": f"{source_path}: unexpected {tail}; please report it with this file"}]
        if len(rows) == 1 and rows[0]["clip_id"] == source_id:
            rows[0].update(self._source_facts(s))
        # CPU seconds of this process (all its threads) and of the ffmpeg it ran: what the
        # source cost on an idle machine, however busy this one is.
        s.timings["cpu"] = _cpu_seconds() - cpu0
        return rows, s.timings

    @contextmanager
    def _timed(self, s: SourceState, name: str) -> Iterator[None]:
        """Wall seconds of step `name` in timings[name] and its CPU seconds in
        timings["cpu." + name]: this thread's, plus for the write the ffmpeg it ran (the
        only program a curator starts, one write at a time, so the children's CPU reaped
        meanwhile is that encoder's). Wall time on a shared machine counts waiting for
        a core; the CPU figure does not."""
        t0, c0 = time.perf_counter(), time.thread_time()
        k0 = _children_cpu() if name in CHILD_STEPS else 0.0
        try:
            yield
        finally:
            s.timings[name] = s.timings.get(name, 0.0) + time.perf_counter() - t0
            cpu = time.thread_time() - c0 + (_children_cpu() - k0 if name in CHILD_STEPS else 0.0)
            s.timings[f"cpu.{name}"] = s.timings.get(f"cpu.{name}", 0.0) + cpu

    def _run(self, s: SourceState, c: Clip, steps) -> bool:
        """Run a clip's steps in order; a Stop becomes its row's verdict."""
        try:
            for name, step in steps:
                with self._timed(s, name):
                    step(s, c)
        except Stop as stop:
            c.row.update(status=REASONS[stop.reason][0], reason=stop.reason, message=stop.message)
            return False
        return True

    # --- the source ------------------------------------------------------------------------
    def probe(self, s: SourceState) -> None:
        try:
            info = probe(s.path)
        except TruncatedVideo as exc:
            raise Stop("truncated", str(exc)) from None
        except VideoError as exc:
            raise Stop("unreadable", str(exc)) from None
        s.info = info
        s.fps = info.fps if info.fps > 0 else 25.0
        s.base.update(fps=info.fps, width=info.width, height=info.height, duration=info.duration,
                      codec=info.codec, rotation=info.rotation, num_frames=info.num_frames or None)

    def scan(self, s: SourceState) -> None:
        """The one decode of the source: thumbnails to the shot detector, sampled frames to
        the face detector, and each shot judged as soon as the detector closes it."""
        cfg, info = self.cfg, s.info
        jumps = None
        if cfg.shots.jump_cuts and cfg.shots.detector != "none":
            jumps = FaceJumps(cfg.shots, self._embed_sample)
        with self._timed(s, "shots"):
            s.detector = make_detector(cfg.shots, s.fps, info.width, info.height, self.threads, jumps,
                                       change_margin(cfg.tracks, s.fps))
        stride = sample_stride(s.fps, cfg.sampling)
        max_frames = self._max_frames(s)
        chunk = CHUNK_CLIPS * max_frames
        t_start, c_start = time.perf_counter(), time.thread_time()
        busy = busy_cpu = 0.0
        # The sampled frames' full-resolution luma, held only until the frame is analysed:
        # face quality is measured in source pixels.
        luma: dict[int, np.ndarray] = {}
        frames = scan_frames(s.path, s.detector.thumb_size, lambda i: i % stride == 0,
                             cfg.face.detect_max_side,
                             luma=luma.__setitem__ if cfg.quality.enabled else None,
                             also=jumps.observe if jumps is not None else None,
                             threads=self.threads)
        try:
            for index, when, thumb, small in frames:
                t0, c0 = time.perf_counter(), time.thread_time()
                repeat = index < len(s.times)  # the previous or the last frame once more
                if not repeat:
                    s.times.append(when)
                    s.num_frames = index + 1
                if thumb is not None:
                    with self._timed(s, "shots"):
                        s.detector.push(thumb)
                if small is not None:
                    jump = jumps is not None and jumps.wanted(index)
                    if (not repeat and index % stride == 0) or (repeat and not jump):
                        with self._timed(s, "faces"):
                            sample = self.analyse(index, small, s.info, luma.pop(index, None))
                        s.pending.append(sample)
                        if jumps is not None:
                            with self._timed(s, "shots"):
                                jumps.add(index, sample)
                    elif jump:
                        # Frames the jump-cut check alone asks for cost shot detection,
                        # and only if the jump proves isolated.
                        luma.pop(index, None)
                        with self._timed(s, "shots"):
                            jumps.add(index, functools.partial(self._jump_sample, s, index, small))
                self.drain(s, chunk, final=False)
                busy += time.perf_counter() - t0
                busy_cpu += time.thread_time() - c0
        except TruncatedVideo as exc:
            raise Stop("truncated", str(exc)) from None
        except VideoError as exc:
            raise Stop("unreadable", str(exc)) from None
        s.timings["decode"] = s.timings.get("decode", 0.0) + time.perf_counter() - t_start - busy
        s.timings["cpu.decode"] = (s.timings.get("cpu.decode", 0.0) + time.thread_time() - c_start
                                   - busy_cpu)
        if s.num_frames == 0:
            raise Stop("unreadable", f"{s.path}: no frame could be decoded; re-download or remove it")
        try:
            # Before too_short: a cut file is an error to fix, not a short clip to drop.
            check_frame_count(info, s.num_frames, s.times[-1] if s.times else None)
        except TruncatedVideo as exc:
            raise Stop("truncated", str(exc)) from None
        with self._timed(s, "shots"):
            s.detector.finish()
        self.drain(s, chunk, final=True)

    def _jump_sample(self, s: SourceState, index: int, small: np.ndarray) -> Sample:
        return self.analyse(index, small, s.info)

    def _embed_sample(self, p: Sample, slot: int) -> np.ndarray | None:
        """dlib's embedding of face `slot` of a sample (None once its frame is dropped)."""
        if p.small is None:
            return None
        return self.embedder(p.small, p.boxes[slot].scaled(p.scale), p.points[slot] * p.scale)

    def analyse(self, index: int, small: np.ndarray, info: VideoInfo,
                luma: np.ndarray | None = None) -> Sample:
        scale = small.shape[1] / info.width if info.width else 1.0
        boxes = self.detector.detect(small)
        points = [self.landmarks(small, b) / scale for b in boxes]
        full = [b.scaled(1 / scale) for b in boxes]
        faces = [quality.measure(luma, b) for b in full] if luma is not None else []
        return Sample(index, scale, full, points, small, faces)

    def _max_frames(self, s: SourceState) -> int:
        return max(self.cfg.min_frames, int(math.floor(self.cfg.max_seconds * s.fps)))

    def drain(self, s: SourceState, chunk: int, final: bool) -> None:
        """Judge every span whose shot verdict is final: closed shots, and chunks of the
        open shot once it is `chunk` frames past its last judged frame."""
        det = s.detector
        while True:
            if s.consumed < len(det.transitions):
                t0, t1, score = det.transitions[s.consumed][:3]
                s.consumed += 1
                self.span(s, s.span_start, max(s.span_start, t0), closes=True)
                s.shot_start = s.span_start = max(s.span_start, t1)
                s.shot_score = score
                continue
            if final:
                self.span(s, s.span_start, max(s.span_start, s.num_frames), closes=True)
                return
            if det.safe() - s.span_start >= chunk:
                self.span(s, s.span_start, s.span_start + chunk, closes=False)
                s.span_start += chunk
                continue
            return

    def span(self, s: SourceState, a: int, b: int, closes: bool) -> None:
        """Frames [a, b) of the open shot are final: track its faces and judge its clips;
        with `closes`, the shot ends at b."""
        keep = [p for p in s.pending if p.index >= b]
        samples = [p for p in s.pending if a <= p.index < b]
        s.pending = keep
        for p in samples:
            s.samples_seen += 1
            s.faces_seen += bool(p.boxes)
            s.max_faces = max(s.max_faces, len(p.boxes))
        if b > a and samples:
            first = len(s.clips)
            self.judge_span(s, a, b, samples)
            with self._timed(s, "identity"):
                self.embed_clips(s.clips[first:])
            self.start_writes(s, s.clips[first:])
        for p in samples:
            p.small = None
        if closes:
            if b > s.shot_start:
                s.shots.append(Shot(s.shot_index, s.shot_start, b, s.shot_score))
                s.shot_index += 1
            s.track_offset = 0

    def embed_clips(self, clips: list[Clip]) -> None:
        """The mean face descriptor of every clip with a face worth keeping, while its
        sampled frames are at hand (curation.identity)."""
        for c in clips:
            reason = c.row.get("reason")
            if not c.found or (reason is not None and REASONS[reason][1] in ("decodable", "face")):
                continue
            t = c.track

            def embed(i: int, t: Track = t, c: Clip = c) -> np.ndarray | None:
                p = c.by_frame.get(t.frames[i])
                if p is None or p.small is None:
                    return None
                return self.embedder(p.small, t.boxes[i].scaled(p.scale), p.points[t.slots[i]] * p.scale)

            c.embedding = clip_embedding(t, c.found, embed, self.cfg.identity.min_faces)
            c.faces_embedded = sum(t.frames[i] in t.embeddings for i in c.found)

    def name_persons(self, s: SourceState) -> None:
        """`person_id` of every embedded clip: its source's clips clustered by face."""
        clips = [c for c in s.clips if c.embedding is not None]
        faces = [ClipFace(c.embedding, (c.track.shot, c.track.index), c.start, c.end) for c in clips]
        labels = person_labels(faces, self.cfg.identity.person_distance)
        for label in set(labels):
            members = [c for c, k in zip(clips, labels) if k == label]
            centre = np.mean([c.embedding for c in members], axis=0)
            for c in members:
                c.row.update(person_id=person_id(s.source_id, label),
                             embedding=c.embedding.astype(np.float32).tolist(),
                             identity_faces=c.faces_embedded,
                             person_distance=float(np.linalg.norm(c.embedding - centre)))

    def judge_span(self, s: SourceState, a: int, b: int, samples: list[Sample]) -> None:
        by_frame = {p.index: p for p in samples}

        def embed(frame: int, box: Box) -> np.ndarray | None:
            p = by_frame.get(frame)
            if p is None or p.small is None or box not in p.boxes:
                return None
            slot = p.boxes.index(box)
            return self.embedder(p.small, box.scaled(p.scale), p.points[slot] * p.scale)

        with self._timed(s, "tracks"):
            tracks = track_faces({p.index: p.boxes for p in samples}, self.cfg.tracks, fps=s.fps,
                                 shots=[(a, b)], embed=embed,
                                 picture=s.detector)
            s.person_changes += [t.person_change for t in tracks if t.person_change is not None]
            for t in tracks:
                t.shot, t.index = s.shot_index, t.index + s.track_offset
            s.track_offset += len(tracks)
            s.tracks += len(tracks)
            if self.cfg.face.multi_face == "largest":
                tracks = _largest_only(tracks)
        max_frames = self._max_frames(s)
        for t in tracks:
            length = t.end - t.start
            if length < self.cfg.min_frames:
                s.fragments += 1
                continue
            with self._timed(s, "side_face"):
                runs, segments = self.turned_runs(s, t, samples)
            spans = []
            for a0, a1 in segments:
                n = math.ceil((a1 - a0) / max_frames)
                bounds = [a0 + round(i * (a1 - a0) / n) for i in range(n + 1)]
                spans += [(c0, c1) for c0, c1 in zip(bounds, bounds[1:]) if c1 - c0 >= self.cfg.min_frames]
            if not spans:
                # Turned runs leave no piece long enough: one row says so.
                clip = self.new_clip(s, t, 0, t.start, t.end, samples)
                clip.turned = runs
                s.clips.append(clip)
                trimmed = [r for r in runs if r.trimmed]
                self._run(s, clip, [("side_face", self.check_side_face)])
                if clip.row.get("status") is None:
                    clip.row.update(status="rejected", reason="side_face", message=(
                        f"{s.path} frames {t.start}-{t.end}: turned runs "
                        f"{', '.join(f'{r.start}-{r.end}' for r in trimmed)} leave no frontal "
                        f"piece of min_frames={self.cfg.min_frames}"))
                continue
            for piece, (c0, c1) in enumerate(spans):
                clip = self.new_clip(s, t, piece, c0, c1, samples)
                clip.turned = runs
                s.clips.append(clip)
                clip.passed = self._run(s, clip, [("face_checks", self.check_faces),
                                                  ("crop", self.choose_crop),
                                                  ("side_face", self.check_side_face),
                                                  ("quality", self.check_quality),
                                                  ("text", self.check_text)])

    def turned_runs(self, s: SourceState, t: Track, samples: list[Sample]
                    ) -> tuple[list[side_face.TurnedRun], list[tuple[int, int]]]:
        """The track's turned runs and the frontal segments left once the long ones are
        cut out. A track turned in most of its frames is left whole, for the side-face
        rule to reject as one clip."""
        cfg = self.cfg.side_face
        if cfg.max_turned_seconds <= 0:
            return [], [(t.start, t.end)]
        at = {f: i for i, f in enumerate(t.frames)}
        judged = []
        for p in samples:
            if t.start <= p.index < t.end:
                i = at.get(p.index)
                box = None if i is None else t.boxes[i]
                points = None if i is None else p.points[t.slots[i]]
                judged.append((p.index, side_face.judge_frame(points, box, cfg)))
        runs = side_face.turned_runs(t.start, t.end, judged,
                                     max(1, math.ceil(cfg.max_turned_seconds * s.fps)))
        turned = sum(why is not None for _, why in judged)
        if not judged or turned / len(judged) > cfg.max_side_fraction:
            for r in runs:
                r.trimmed = False
            return runs, [(t.start, t.end)]
        return runs, side_face.frontal_segments(t.start, t.end, runs)

    def new_clip(self, s: SourceState, t: Track, piece: int, start: int, end: int,
                 samples: list[Sample]) -> Clip:
        row = {**s.base, "clip_id": clip_id_for(s.source_id, t.shot, t.index, piece),
               "shot_index": t.shot, "track_index": t.index, "start_frame": start,
               "end_frame": end, "start_time": self._time(s, start), "end_time": self._time(s, end)}
        inside = [p for p in samples if start <= p.index < end]
        return Clip(row, t, start, end, inside, t.between(start, end), {p.index: p for p in inside})

    @staticmethod
    def _time(s: SourceState, frame: int) -> float:
        """Seconds from the first frame to `frame` (the end of the video for num_frames)."""
        t = s.times
        if 0 < frame < len(t) and t[frame] is not None and t[0] is not None:
            return round(t[frame] - t[0], 6)
        if frame >= len(t) and t and t[-1] is not None and t[0] is not None:
            return round(t[-1] - t[0] + (frame - len(t) + 1) / s.fps, 6)
        return round(frame / s.fps, 6)

    # --- writes ----------------------------------------------------------------------------
    # A clip is written once, after every check has passed, so a rejected clip is never
    # encoded. With `encode.overlap` the write (an ffmpeg process decoding the clip's segment
    # and encoding it) runs on a thread of its own while the scan goes on with the next span,
    # so decoding, analysis and encoding overlap; without it the writes wait for the scan.
    def start_writes(self, s: SourceState, clips: list[Clip]) -> None:
        if not self.cfg.encode.overlap:
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="stc-write")
        for c in clips:
            # A clip reaching the last frame decoded so far waits for the scan: whether it
            # ends the source (and so how ffmpeg picks its frames) is not known yet.
            if c.passed and c.end < len(s.times):
                s.writes.append((c, self._writer.submit(self._run, s, c, [("write", self.write_clip)])))

    def finish_writes(self, s: SourceState) -> None:
        started = {id(c) for c, _ in s.writes}
        for _, future in s.writes:
            future.result()
        for c in s.clips:
            if c.passed and id(c) not in started:
                self._run(s, c, [("write", self.write_clip)])

    def abandon_writes(self, s: SourceState) -> None:
        """The source failed after some of its clips were written: no row will name them."""
        for _, future in s.writes:
            try:
                future.result()
            except Exception:  # noqa: BLE001 - the source already failed; its clips go
                pass
        s.writes.clear()
        for c in s.clips:
            if c.row.get("clip_path"):
                (self.out_dir / c.row["clip_path"]).unlink(missing_ok=True)
                c.row.update(clip_path=None)

    def check_source(self, s: SourceState) -> None:
        if s.num_frames < self.cfg.min_frames:
            raise Stop("too_short", f"{s.path}: {s.num_frames} frames, fewer than "
                                    f"min_frames={self.cfg.min_frames}")

    def why_no_clip(self, s: SourceState) -> Stop:
        if s.fragments:
            return Stop("no_face", f"{s.path}: no face stayed on screen for min_frames="
                                   f"{self.cfg.min_frames} frames in one shot ({s.tracks} face "
                                   f"track(s) in {len(s.shots)} shot(s), all shorter)")
        spans = list(getattr(s.detector, "transitions", []))
        if not s.samples_seen and spans:
            # Every frame went to transitions (a short source that is mostly a dissolve).
            found = ", ".join(f"{t.kind} {t.start}-{t.end}" for t in spans)
            return Stop("no_face", f"{s.path}: all {s.num_frames} frames lie in transitions ({found}), "
                                   f"so no shot is left to take a clip from")
        return Stop("no_face", f"{s.path}: no face in any of {s.samples_seen} sampled frames")

    def _source_facts(self, s: SourceState) -> dict[str, Any]:
        """What a source-level row can still say about the source."""
        if not s.samples_seen:
            return {"num_frames": s.num_frames or s.base.get("num_frames")}
        return {"num_frames": s.num_frames, "sampled_frames": s.samples_seen,
                "face_frame_fraction": s.faces_seen / s.samples_seen, "max_faces": s.max_faces}

    def record_shots(self, s: SourceState) -> None:
        det = s.detector
        doc = {"source_path": s.path, "source_id": s.source_id, "detector": det.name,
               "num_frames": s.num_frames, "fps": s.fps,
               "shots": [[sh.start, sh.end, sh.score] for sh in s.shots],
               "transitions": [t.to_json() for t in det.transitions],
               "detector_stats": {k: round(v, 4) for k, v in det.stats.items()},
               "face_tracks": s.tracks, "short_face_tracks": s.fragments,
               # where a track was split because its face became another person's
               "identity_changes": sorted({c.track.start for c in s.clips
                                           if c.track.after_identity_change}),
               # the frames cut out around each change of person, none in any clip
               "person_changes": [ch.to_json() for ch in s.person_changes],
               "persons": len({c.row["person_id"] for c in s.clips if c.row.get("person_id")})}
        write_text_atomic(self.out_dir / shots_file(s.source_id), json.dumps(doc) + "\n")

    # --- one clip ------------------------------------------------------------------------
    def check_faces(self, s: SourceState, c: Clip) -> None:
        cfg = self.cfg.face
        t = c.track
        boxes = [t.boxes[i] for i in c.found]
        fraction = len(c.found) / len(c.samples) if c.samples else 0.0
        multi = []
        for i in c.found:
            p = c.by_frame[t.frames[i]]
            area = t.boxes[i].area
            multi.append(any(j != t.slots[i] and b.area >= cfg.multi_face_ratio * area
                             for j, b in enumerate(p.boxes)))
        size = float(np.median([np.sqrt(b.area) for b in boxes])) if boxes else None
        c.row.update(sampled_frames=len(c.samples), face_frame_fraction=fraction,
                     multi_face_fraction=float(np.mean(multi)) if multi else 0.0,
                     max_faces=max((len(p.boxes) for p in c.samples), default=0),
                     face_size_median=size)
        where = f"{s.path} frames {c.start}-{c.end}"
        if not boxes or fraction < cfg.min_face_frame_fraction:
            raise Stop("no_face", f"{where}: the face in {len(boxes)} of {len(c.samples)} sampled "
                                  f"frames (min_face_frame_fraction={cfg.min_face_frame_fraction})")
        if size < cfg.min_face_size:
            raise Stop("face_too_small", f"{where}: face {size:.0f}px, below "
                                         f"min_face_size={cfg.min_face_size:g}px")
        if cfg.multi_face == "reject" and c.row["multi_face_fraction"] > cfg.max_multi_face_fraction:
            raise Stop("multiple_faces", f"{where}: another face as large in "
                                         f"{c.row['multi_face_fraction']:.0%} of face frames "
                                         f"(max_multi_face_fraction={cfg.max_multi_face_fraction})")

    def choose_crop(self, s: SourceState, c: Clip) -> None:
        cfg = self.cfg.crop
        boxes = [c.track.boxes[i] for i in c.found]
        c.box = crop_mod.crop_box(boxes, s.info.width, s.info.height, cfg.expand)
        x0, y0, x1, y1 = c.box
        c.row.update(crop_x0=x0, crop_y0=y0, crop_x1=x1, crop_y1=y1,
                     face_proportion=crop_mod.face_proportion(boxes, c.box))
        if x1 - x0 < cfg.min_crop_side:
            raise Stop("crop_too_small", f"{s.path} frames {c.start}-{c.end}: crop side "
                                         f"{x1 - x0}px below min_crop_side={cfg.min_crop_side}")

    def check_quality(self, s: SourceState, c: Clip) -> None:
        cfg = self.cfg.quality
        if not cfg.enabled:
            return
        t = c.track
        measured = []
        for i in c.found:
            p = c.by_frame[t.frames[i]]
            q = p.quality[t.slots[i]] if t.slots[i] < len(p.quality) else None
            if q is not None:
                measured.append((t.frames[i], q))
        stats = quality.summarise(measured)
        c.row.update(quality_frames=stats.frames, effective_resolution=stats.effective_resolution,
                     sharpness=stats.sharpness, blockiness=stats.blockiness,
                     quality_evidence=stats.evidence_json())
        failed = stats.verdict(cfg)
        if failed:
            raise Stop(failed[0], f"{s.path} frames {c.start}-{c.end}: {failed[1]}")

    def check_side_face(self, s: SourceState, c: Clip) -> None:
        cfg = self.cfg.side_face
        t = c.track
        points = []
        for i in c.found:
            points.append(c.by_frame[t.frames[i]].points[t.slots[i]])
        stats = side_face.summarise(points, cfg, [t.frames[i] for i in c.found])
        inside = [r for r in c.turned if r.end > c.start and r.start < c.end and not r.trimmed]
        c.row.update(landmark_frames=stats.frames, side_fraction=stats.side_fraction,
                     side_ratio_median=stats.ratio_median, side_ratio_min=stats.ratio_min,
                     side_ratio_max=stats.ratio_max, side_face_evidence=stats.evidence_json(),
                     turned_frames=sum(c.start <= f < c.end for r in inside for f in r.frames),
                     turned_runs=json.dumps([r.to_json() for r in c.turned], separators=(",", ":")))
        if stats.is_side_dominated(cfg):
            raise Stop("side_face", f"{s.path} frames {c.start}-{c.end}: side face in "
                                    f"{stats.side_fraction:.0%} of frames "
                                    f"(max_side_fraction={cfg.max_side_fraction})")

    def check_text(self, s: SourceState, c: Clip) -> None:
        # Frames spread over the clip plus its last sampled frame, inside the crop box.
        frames = [p for p in c.samples if p.small is not None]
        picks = np.linspace(0, len(frames) - 1, min(self.cfg.text.frames, len(frames))).round()
        chosen = sorted({int(i) for i in picks} | {len(frames) - 1}) if frames else []
        dets = []
        x0, y0, x1, y1 = c.box
        for i in chosen:
            f = frames[i]
            b = [int(round(v * f.scale)) for v in (x0, y0, x1, y1)]
            region = np.ascontiguousarray(f.small[b[1]:b[3], b[0]:b[2]])
            # Evidence is kept in input pixels, the coordinates of the crop box.
            dets.append(self.text_detector.frame(f.index, region)
                        .mapped(f.scale, b[0] / f.scale, b[1] / f.scale))
        stats = text.summarise(dets, self.cfg.text)
        c.row.update(ocr_frames=stats.frames, has_text=stats.has_text, text_score=stats.max_score,
                     text_boxes=stats.boxes, text_frames=stats.text_frames,
                     text_area_fraction=stats.area_fraction, text_evidence=stats.evidence_json())
        if stats.has_text:
            raise Stop("text", f"{s.path} frames {c.start}-{c.end}: {stats.describe()}")

    def segment(self, s: SourceState, c: Clip) -> Segment | None:
        """The clip's frames as the encoder picks them: None for the whole source, else by
        timestamp, halfway between neighbours (by decode order without timestamps)."""
        if c.start == 0 and c.end >= s.num_frames:
            return None
        t = s.times
        need = [i for i in (c.start - 1, c.start, c.end - 1, c.end) if 0 <= i < len(t)]
        if any(t[i] is None for i in need + [0]) or any(
                t[i] >= t[i + 1] for i in range(max(0, c.start - 1), min(c.end, len(t) - 1))):
            return Segment(c.end - c.start, first=c.start)
        after = (t[c.start - 1] + t[c.start]) / 2 if c.start > 0 else None
        before = (t[c.end - 1] + t[c.end]) / 2 if c.end < len(t) else None
        # -ss counts from the file's start time, which is at or before frame 0's timestamp:
        # seeking to (frame time - frame 0's time - 1 s) lands at or before the clip.
        return Segment(c.end - c.start, after, before, max(0.0, t[c.start] - t[0] - 1.0))

    def write_clip(self, s: SourceState, c: Clip) -> None:
        cfg = self.cfg
        rel = f"{CLIPS_DIR}/{c.row['clip_id']}.mp4"
        meter = MotionMeter(cfg.motion.threshold)
        try:
            for gray in crop_transcode(s.path, self.out_dir / rel, c.box, cfg.crop.size,
                                       crf=cfg.encode.crf, preset=cfg.encode.preset,
                                       pix_fmt=cfg.encode.pix_fmt,
                                       threads=cfg.encode.threads or self.threads,
                                       keyint=cfg.encode.keyint, segment=self.segment(s, c)):
                meter.add(gray)
        except VideoError as exc:
            raise Stop("encode_failed", f"{exc}; check disk space and that ffmpeg has libx264") from None
        if meter.frames != c.end - c.start:
            (self.out_dir / rel).unlink(missing_ok=True)
            raise Stop("encode_failed", f"{s.path}: frames {c.start}-{c.end} gave {meter.frames} "
                                        f"frames instead of {c.end - c.start} (its timestamps do "
                                        "not match its frame order); remux it with ffmpeg and retry")
        c.row.update(status="kept", reason="kept", message="", clip_path=rel,
                     clip_size=cfg.crop.size, clip_num_frames=meter.frames, clip_fps=s.info.fps,
                     motion_intensity=meter.intensity, motion_sum=meter.total)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + _children_cpu()


def _children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def _largest_only(tracks: list[Track]) -> list[Track]:
    """`multi_face: largest`: a track is dropped where a larger one shares most of its
    frames, so each moment of a shot keeps only its largest face."""
    kept: list[Track] = []
    for t in sorted(tracks, key=lambda t: -t.median_side):
        overlap = sum(max(0, min(t.end, k.end) - max(t.start, k.start)) for k in kept)
        if overlap < (t.end - t.start) / 2:
            kept.append(t)
    return sorted(kept, key=lambda t: (t.start, t.index))
