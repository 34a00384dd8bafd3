"""Face-aware video restoration: find the faces, restore each at the model's size, paste back.

The restorer sees square face crops of T frames, as it was trained on (curation's crops);
a real video is a full frame of any size and length. This module bridges the two in two
streaming passes over the video, never holding more than a chunk of frames:

1. **track**: dlib's detector (curation's `FaceDetector`) on every `detect_every`-th frame
   (and the last), linked into one track per face by curation's tracker
   (`curation.tracks.FaceTracker`: box overlap, dlib's face embedding where overlap is
   ambiguous); between detections a track's box is interpolated, so a face has a box on
   every frame of its track.
2. **restore and paste**: the video is cut into chunks of T frames that overlap by
   `overlap` frames. In each chunk, each face track gets one square box, made from its boxes
   in the chunk by curation's crop rule (`curation.crop.crop_box`: expand each box by
   `expand`, take the union, square it, move it inside the frame), so the crop is what the
   model was trained on and the face may move inside it. The T crops go through the model
   together, and each restored crop is pasted back at its box (scaled by `upscale`) with a
   feathered square mask. Where two chunks overlap, their pasted frames are crossfaded
   linearly, so a box that moves from one chunk to the next, or the model's own
   chunk-to-chunk differences, show as a blend instead of a jump at the seam.

Frames without a face are written unchanged (resized by `upscale`); pixels outside every
face box are the input's (or its plain resize), bit for bit before encoding.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from stc.core.fs import write_text_atomic
from stc.core.video import FrameWriter, iter_frames, probe, resize_frames
from stc.curation.config import CropConfig, FaceConfig, TrackConfig
from stc.curation.crop import crop_box
from stc.curation.faces import Box, FaceDetector, FaceEmbedder, downscale
from stc.curation.tracks import FaceTracker

# (x0, y0, x1, y1), input pixels, x1/y1 exclusive
BoxT = tuple[int, int, int, int]


@dataclass
class FaceOptions:
    """How faces are found, cropped and pasted back (`stc enhance` flags)."""

    detect_every: int = 1          # run the detector on every k-th frame (and the last)
    detect_max_side: int = 640     # frames are shrunk to this longer side for detection
    upsample: int = 0              # dlib upsampling: finds faces half as small, 4x slower
    expand: float = CropConfig().expand   # curation's crop rule: box side x this
    overlap: int | None = None     # frames shared by consecutive chunks (None: T // 4, >= 1)
    feather: float = 0.1           # mask ramp width, as a fraction of the box side
    iou_min: float = TrackConfig().min_iou        # a face's boxes on successive detections
    max_gap_seconds: float = TrackConfig().max_gap_seconds   # unseen longer: the track ends
    only_center_face: bool = False # per frame, restore only the face nearest the centre
    upscale: int = 1               # output size = input size x this

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {self.detect_every}")
        if self.upscale < 1:
            raise ValueError(f"upscale must be at least 1, got {self.upscale}")
        if not 0 <= self.feather <= 0.5:
            raise ValueError(f"feather must lie in [0, 0.5], got {self.feather}")
        if self.expand < 1:
            raise ValueError(f"expand must be at least 1, got {self.expand}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap must be 0 or more, got {self.overlap}")


# --- tracking ------------------------------------------------------------------------
def keep_center_face(tracks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Per frame, only the track whose box centre is nearest the frame centre keeps its box."""
    if len(tracks) < 2:
        return tracks
    cx = (tracks[:, :, 0] + tracks[:, :, 2]) / 2 - width / 2
    cy = (tracks[:, :, 1] + tracks[:, :, 3]) / 2 - height / 2
    dist = np.where(np.isnan(cx), np.inf, cx * cx + cy * cy)
    nearest = dist.argmin(axis=0)
    out = tracks.copy()
    for k in range(len(tracks)):
        out[k, nearest != k] = np.nan
    return out[~np.isnan(out[:, :, 0]).all(axis=1)]


def find_tracks(src: str | Path, opts: FaceOptions, detector: FaceDetector | None = None,
                fps: float = 25.0) -> tuple[int, np.ndarray]:
    """(frame count, face tracks [K, frames, 4] in input pixels, NaN where a track has no
    box) of a video, in one decode. Detections are linked as they come, so only the frames
    a face embedding may still be asked of (the last `max_gap_seconds`) are kept."""
    detector = detector or FaceDetector(face_config(opts))
    cfg = TrackConfig(min_iou=opts.iou_min, max_gap_seconds=opts.max_gap_seconds)
    looked: dict[int, tuple[np.ndarray, float, list[Box]]] = {}   # frame -> (small, scale, boxes)
    embedder: list[FaceEmbedder] = []

    def embed(frame: int, box: Box) -> np.ndarray | None:
        seen = looked.get(frame)
        if seen is None or box not in seen[2]:
            return None
        if not embedder:                      # dlib's ResNet, loaded only when needed
            embedder.append(FaceEmbedder())
        return embedder[0](seen[0], box.scaled(seen[1]))

    tracker = FaceTracker(cfg, fps, embed)
    # a face is looked for every detect_every frames: missing in between is not leaving
    tracker.max_gap = max(tracker.max_gap, opts.detect_every)
    keep = tracker.max_gap + 1

    def look(index: int, rgb: np.ndarray) -> None:
        small, scale = downscale(rgb, opts.detect_max_side)
        boxes = [b.scaled(1 / scale) for b in detector.detect(small)]
        looked[index] = (small, scale, boxes)
        for f in [f for f in looked if f < index - keep]:
            del looked[f]
        tracker.update(index, boxes)

    last: tuple[int, np.ndarray] | None = None
    count = 0
    for index, rgb in iter_frames(src):
        count = index + 1
        if index % opts.detect_every == 0:
            look(index, rgb)
            last = None
        else:
            last = (index, rgb)     # the true last frame is always looked at
    if last is not None:
        look(*last)
    tracker.shot_end = count
    out = np.full((0, count, 4), np.nan)
    tracks = tracker.close()
    if tracks:
        out = np.full((len(tracks), count, 4), np.nan)
        for k, t in enumerate(tracks):
            for f in range(t.start, min(t.end, count)):
                b = t.box_at(f)
                out[k, f] = (b.x0, b.y0, b.x1, b.y1)
    return count, out


def face_config(opts: FaceOptions) -> FaceConfig:
    return FaceConfig(detect_max_side=opts.detect_max_side, upsample=opts.upsample)


# --- chunks, boxes and masks ---------------------------------------------------------
def plan_chunks(num_frames: int, T: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of the chunks: T frames each, consecutive ones sharing `overlap` frames,
    the last one ending at the last frame; a video shorter than T is one short chunk."""
    if num_frames <= T:
        return [(0, num_frames)] if num_frames else []
    step = max(1, T - overlap)
    starts = list(range(0, num_frames - T + 1, step))
    if starts[-1] != num_frames - T:
        starts.append(num_frames - T)
    return [(s, s + T) for s in starts]


def chunk_weight(j: int, start: int, end: int) -> float:
    """Crossfade weight of a chunk at frame j: its distance to the chunk's nearer end, so
    two overlapping chunks fade linearly into each other across the overlap."""
    return float(min(j - start + 1, end - j))


@lru_cache(maxsize=64)
def feather_mask(side: int, feather: float) -> np.ndarray:
    """[side, side, 1] float32 alpha: 1 inside, falling smoothly to ~0 at the square's edge
    over `feather` x side pixels, so the pasted crop has no visible border."""
    ramp = max(1.0, feather * side)
    pos = np.arange(side) + 0.5
    a = np.clip(np.minimum(pos, side - pos) / ramp, 0.0, 1.0)
    a = a * a * (3 - 2 * a)
    return np.minimum.outer(a, a).astype(np.float32)[:, :, None]


@dataclass
class Layer:
    """One face track's restored crops in one chunk."""

    track: int
    box: BoxT                      # input pixels
    start: int                     # first frame of the chunk
    present: np.ndarray            # [chunk frames] bool: the track has a box on that frame
    restored: np.ndarray           # [chunk frames, size, size, 3] uint8
    crops: np.ndarray | None = None  # the model's inputs, kept only for --save-crops


@dataclass
class FaceStats:
    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0                 # tracks restored
    chunks: int = 0                # chunks with a face (model calls)
    crops: int = 0                 # face crops restored (tracks x chunks)
    model_seconds: float = 0.0
    track_seconds: float = 0.0     # the first pass: decode, detect, link
    max_buffered: int = 0          # most decoded frames held at once (memory is bounded by it)
    boxes: list[dict] = field(default_factory=list)   # per (chunk, track): box and frames


class FaceVideoRestorer:
    """Restores the faces of whole videos with `restore(crops [B, T, size, size, 3] uint8)
    -> (restored, seconds)`, the chunk length T and crop size the model was trained on."""

    def __init__(self, restore: Callable[[np.ndarray], tuple[np.ndarray, float]], size: int,
                 T: int, opts: FaceOptions | None = None,
                 upsampler: Callable[[np.ndarray], np.ndarray] | None = None):
        self.restore, self.size, self.T = restore, size, T
        self.opts = opts or FaceOptions()
        self.overlap = (max(1, T // 4) if T > 1 else 0) if self.opts.overlap is None \
            else min(self.opts.overlap, T - 1)
        self.upsampler = upsampler
        self._detector: FaceDetector | None = None

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(face_config(self.opts))
        return self._detector

    def boxes_for(self, tracks: np.ndarray, start: int, end: int, width: int, height: int
                  ) -> Iterator[tuple[int, BoxT, np.ndarray]]:
        """(track, square box, presence per frame) of every track seen in [start, end)."""
        for k, t in enumerate(tracks):
            span = t[start:end]
            present = ~np.isnan(span[:, 0])
            if not present.any():
                continue
            boxes = [Box(*b) for b in span[present]]
            box = crop_box(boxes, width, height, self.opts.expand)
            if box[2] - box[0] >= 8:     # a face a few pixels wide has nothing to restore
                yield k, box, present

    def enhance(self, src: str | Path, dst: str | Path, *, crf: float = 18,
                preset: str = "medium", pix_fmt: str = "yuv420p",
                crops_dir: str | Path | None = None,
                on_chunk: Callable[[int], None] | None = None) -> dict:
        """Restore the faces of `src` into `dst` (same fps, audio copied); returns stats."""
        info = probe(src)
        t0 = time.perf_counter()
        num_frames, tracks = find_tracks(src, self.opts, self.detector, info.fps or 25.0)
        track_seconds = time.perf_counter() - t0
        if self.opts.only_center_face:
            tracks = keep_center_face(tracks, info.width, info.height)
        up = self.opts.upscale
        W, H = info.width * up, info.height * up
        chunks = plan_chunks(num_frames, self.T, self.overlap)
        stats = FaceStats(frames=num_frames, faces=len(tracks), track_seconds=track_seconds)
        stats.frames_with_face = int((~np.isnan(tracks[:, :, 0])).any(axis=0).sum()) \
            if len(tracks) else 0
        # the chunks covering each frame: contiguous, since chunks are sorted by start
        first_cover = [0] * num_frames
        last_cover = [0] * num_frames
        for c in range(len(chunks) - 1, -1, -1):
            for j in range(*chunks[c]):
                first_cover[j] = c
        for c, (s, e) in enumerate(chunks):
            for j in range(s, e):
                last_cover[j] = c
        crops = _CropWriters(Path(crops_dir), self.size, info.fps) if crops_dir else None
        buffer: dict[int, np.ndarray] = {}
        layers: dict[int, list[Layer]] = {}
        next_chunk = write_ptr = 0
        try:
            with FrameWriter(dst, W, H, info.fps, crf=crf, preset=preset, pix_fmt=pix_fmt,
                             audio_from=src) as writer:
                for i, frame in iter_frames(src):
                    if i >= num_frames:      # the first pass saw fewer frames: keep its count
                        break
                    buffer[i] = frame
                    stats.max_buffered = max(stats.max_buffered, len(buffer))
                    while next_chunk < len(chunks) and chunks[next_chunk][1] - 1 <= i:
                        layers[next_chunk] = self._restore_chunk(
                            chunks[next_chunk], buffer, tracks, info.width, info.height, stats)
                        if crops is not None:
                            end = chunks[next_chunk + 1][0] if next_chunk + 1 < len(chunks) \
                                else chunks[next_chunk][1]
                            crops.add(layers[next_chunk], end)
                        next_chunk += 1
                        if on_chunk:
                            on_chunk(1)
                    while write_ptr <= i and (not chunks or last_cover[write_ptr] < next_chunk):
                        j = write_ptr
                        covering = range(first_cover[j], last_cover[j] + 1) if chunks else ()
                        writer.write(self._compose(j, buffer.pop(j), covering, chunks, layers))
                        write_ptr += 1
                        for c in [c for c in layers if chunks[c][1] <= write_ptr]:
                            del layers[c]
                if write_ptr < num_frames:
                    raise RuntimeError(f"{src}: the second decode ended after {write_ptr} of "
                                       f"{num_frames} frames; the file changed while it was read")
        except BaseException:
            if crops is not None:
                crops.abort()
            raise
        if crops is not None:
            crops.close(stats.boxes)
        out = asdict(stats)
        out.pop("boxes")
        out.update(chunk_frames=self.T, overlap=self.overlap, width=W, height=H, fps=info.fps,
                   source=str(src), mode="faces", upscale=up)
        return out

    def _restore_chunk(self, chunk: tuple[int, int], buffer: dict[int, np.ndarray],
                       tracks: np.ndarray, width: int, height: int, stats: FaceStats
                       ) -> list[Layer]:
        s, e = chunk
        found = list(self.boxes_for(tracks, s, e, width, height))
        if not found:
            return []
        batch = []
        for _, (x0, y0, x1, y1), _ in found:
            crop = np.stack([buffer[j][y0:y1, x0:x1] for j in range(s, e)])
            crop = resize_frames(crop, self.size, self.size)
            # shorter than T (a short video): repeat the last frame, keep the real ones
            if len(crop) < self.T:
                crop = np.concatenate([crop, np.repeat(crop[-1:], self.T - len(crop), 0)])
            batch.append(crop)
        crops = np.stack(batch)
        restored, seconds = self.restore(crops)
        stats.chunks += 1
        stats.crops += len(found)
        stats.model_seconds += seconds
        layers = []
        for (k, box, present), r, c in zip(found, restored, crops):
            layers.append(Layer(k, box, s, present, r[:e - s], c[:e - s]))
            stats.boxes.append({"chunk": len(stats.boxes), "track": k, "start": s, "end": e,
                                "box": list(box),
                                "frames": [s + int(f) for f in np.flatnonzero(present)]})
        return layers

    def _background(self, frame: np.ndarray) -> np.ndarray:
        up = self.opts.upscale
        if up == 1:
            return frame
        if self.upsampler is not None:
            out = self.upsampler(frame)
            want = (frame.shape[0] * up, frame.shape[1] * up, 3)
            if out.shape != want or out.dtype != np.uint8:
                raise ValueError(f"the background upsampler returned {out.shape} {out.dtype}, "
                                 f"expected {want} uint8 (x{up}); give weights of a x{up} model")
            return out
        return resize_frames(frame, frame.shape[1] * up, frame.shape[0] * up)

    def _compose(self, j: int, frame: np.ndarray, covering, chunks, layers) -> np.ndarray:
        base = self._background(frame)
        pasted = [(chunk_weight(j, *chunks[c]), [ly for ly in layers.get(c, [])
                                                  if ly.present[j - ly.start]])
                  for c in covering]
        pasted = [(w, lys) for w, lys in pasted if lys]
        if not pasted:
            return base
        up = self.opts.upscale
        # Work on the union of the boxes only: everything outside stays the base's bytes.
        boxes = [tuple(v * up for v in ly.box) for _, lys in pasted for ly in lys]
        rx0, ry0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        rx1, ry1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        region = base[ry0:ry1, rx0:rx1].astype(np.float32)
        total = sum(w for w, _ in pasted)
        acc = np.zeros_like(region)
        for w, lys in pasted:
            comp = region.copy()
            for ly in lys:
                x0, y0, x1, y1 = (v * up for v in ly.box)
                side = x1 - x0
                patch = resize_frames(ly.restored[j - ly.start], side, side).astype(np.float32)
                m = feather_mask(side, self.opts.feather)
                sub = comp[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
                sub += m * (patch - sub)
            acc += (w / total) * comp
        out = base.copy()
        out[ry0:ry1, rx0:rx1] = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
        return out


class _CropWriters:
    """--save-crops: per face track, the model's input crops and its restored crops as two
    videos (`faceNN_input.mp4`, `faceNN_restored.mp4`), and `boxes.json` with every chunk's
    box, so a bad paste can be told from a bad restoration."""

    def __init__(self, folder: Path, size: int, fps: float):
        self.folder, self.size, self.fps = folder, size, fps
        self.writers: dict[tuple[int, str], FrameWriter] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, layers: list[Layer], end: int) -> None:
        # Overlapping frames are written once, from the chunk that starts first.
        for ly in layers:
            for kind, frames in (("input", ly.crops), ("restored", ly.restored)):
                key = (ly.track, kind)
                if key not in self.writers:
                    self.writers[key] = FrameWriter(
                        self.folder / f"face{ly.track + 1:02d}_{kind}.mp4", self.size,
                        self.size, self.fps, crf=12, preset="veryfast")
                for f in range(min(len(frames), end - ly.start)):
                    if ly.present[f]:
                        self.writers[key].write(frames[f])
            ly.crops = None

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()

    def close(self, boxes: list[dict]) -> None:
        for w in self.writers.values():
            w.close()
        write_text_atomic(self.folder / "boxes.json", json.dumps(boxes, indent=1))


def union_box(boxes: list[dict], scale: int = 1) -> BoxT | None:
    """The smallest box holding every pasted box of a `boxes.json` (output pixels)."""
    if not boxes:
        return None
    b = np.array([x["box"] for x in boxes]) * scale
    return (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))
