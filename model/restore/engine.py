"""Face-aware video restoration: find the faces, restore each at the model's size, paste back.

The restorer sees square face crops of T frames, as it was trained on (curation's crops);
a real video is a full frame of any size and length, with cuts. Two streaming passes over the
video bridge the two, never holding more than about a chunk of frames:

1. **tracks** (`tracking.TrackFinder`): shots, faces and landmarks from one decode, linked
   into tracks that end at every cut; a box on every frame of a track.
2. **restore and paste**: each track gets one crop per frame, its face box smoothed over
   time and expanded by curation's crop rule (`smoothing.steady_crops`), cut with sub-pixel
   accuracy (`warp`), so the crop follows the head without shaking. Each track is cut into
   its own chunks of T frames (its first chunk starts with the track, so a chunk never holds
   another shot's frames), consecutive chunks sharing `overlap` frames; the model restores
   all chunks that end on a frame in one batch, and where two chunks overlap their restored
   crops are crossfaded linearly, so chunk seams show as a blend instead of a jump. Each
   restored crop is pasted back at its box (x `upscale`) through a soft elliptical mask that
   follows the face, colour-matched to the frame at its edge (`paste`).

Frames without a face are written unchanged (resized by `upscale`); pixels outside every
crop box are the input's (or its resize), bit for bit before encoding. The restore function
is any `restore(crops [B, T, size, size, 3] uint8) -> (restored, seconds)`: a Stage II model
(`stc.pipelines.enhance.Enhancer`, any run its loader reads) or a stand-in in tests.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from stc.core.frames import open_frames, open_writer
from stc.core.video import resize_frames
from stc.model.restore.crops import CropsWriter
from stc.model.restore.draw import draw_face
from stc.model.restore.options import FaceOptions
from stc.model.restore.paste import blend, face_mask
from stc.model.restore.smoothing import smooth_window, steady_crops
from stc.model.restore.tracking import FaceTrack, FaceTracks, TrackFinder
from stc.model.restore.warp import cut_square, paste_region, uncut_square

MIN_CROP_SIDE = 8      # a face a few pixels wide has nothing to restore

# on_frame(phase, frames done in that phase): "tracking" (first pass), then "restoring"
OnFrame = Callable[[str, int], None]


def plan_chunks(num_frames: int, T: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of the chunks: T frames each, consecutive ones sharing `overlap` frames,
    the last one ending at the last frame; fewer than T frames are one short chunk."""
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


def keep_center_face(tracks: list[FaceTrack], width: int, height: int) -> list[FaceTrack]:
    """Per frame, only the track whose box centre is nearest the frame centre keeps its box;
    a track that loses some frames is split into its remaining runs."""
    if len(tracks) < 2:
        return tracks
    n = max(t.end for t in tracks)
    dist = np.full((len(tracks), n), np.inf)
    for k, t in enumerate(tracks):
        cx = (t.faces[:, 0] + t.faces[:, 2]) / 2 - width / 2
        cy = (t.faces[:, 1] + t.faces[:, 3]) / 2 - height / 2
        dist[k, t.start:t.end] = cx * cx + cy * cy
    nearest = dist.argmin(axis=0)
    out = []
    for k, t in enumerate(tracks):
        keep = nearest[t.start:t.end] == k
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            out.append(FaceTrack(t.index, t.shot, t.start + a, t.start + b, t.faces[a:b],
                                 t.detected[a:b], t.ellipse[a:b]))
    return out


def restored_frames(plans: list["TrackPlan"], num_frames: int) -> np.ndarray:
    """[num_frames] bool: the frames where at least one face gets restored."""
    out = np.zeros(num_frames, bool)
    for p in plans:
        out[p.track.start:p.track.end] |= p.restorable
    return out


@dataclass
class TrackPlan:
    """One face track on its way through the second pass."""

    track: FaceTrack
    crops: np.ndarray              # [n, 3] crop box (x0, y0, side) per frame, input pixels
    faces: np.ndarray              # [n, 4] smoothed face box per frame
    chunks: list[tuple[int, int]]  # absolute frames
    restorable: np.ndarray         # [n] bool: crop big enough to restore
    inputs: dict[int, np.ndarray] = field(default_factory=dict)    # frame -> model input
    acc: dict[int, np.ndarray] = field(default_factory=dict)       # frame -> weighted sum
    weight: dict[int, float] = field(default_factory=dict)

    def covers(self, j: int) -> bool:
        return self.track.start <= j < self.track.end


@dataclass
class FaceStats:
    frames: int = 0
    frames_with_face: int = 0      # frames where at least one face was restored
    faces: int = 0                 # face tracks restored
    shots: int = 0
    detections: int = 0            # frames the detector ran on
    chunks: int = 0                # model calls
    crops: int = 0                 # T-frame face crops restored (tracks x chunks)
    model_seconds: float = 0.0
    track_seconds: float = 0.0     # the first pass: decode, shots, detect, link
    max_buffered: int = 0          # most decoded frames held at once (memory is bounded by it)


class FaceVideoRestorer:
    """Restores the faces of whole videos (or frame folders) with `restore(crops [B, T,
    size, size, 3] uint8) -> (restored, seconds)`, the chunk length T and crop size the
    model was trained on."""

    def __init__(self, restore: Callable[[np.ndarray], tuple[np.ndarray, float]], size: int,
                 T: int, opts: FaceOptions | None = None,
                 upsampler: Callable[[np.ndarray], np.ndarray] | None = None):
        self.restore, self.size, self.T = restore, size, T
        self.opts = opts or FaceOptions()
        self.overlap = (max(1, T // 4) if T > 1 else 0) if self.opts.overlap is None \
            else min(self.opts.overlap, T - 1)
        self.upsampler = upsampler
        self._finder: TrackFinder | None = None

    @property
    def finder(self) -> TrackFinder:
        if self._finder is None:
            self._finder = TrackFinder(self.opts)
        return self._finder

    def find_tracks(self, src: str | Path, on_frame: OnFrame | None = None) -> FaceTracks:
        """The first pass alone: shots and face tracks of `src`."""
        info, frames = open_frames(src, self.opts.fps)
        cb = (lambda i: on_frame("tracking", i + 1)) if on_frame else None
        return self.finder.find(frames(), info.fps or 25.0, info.width, info.height, cb)

    def plan(self, tracks: list[FaceTrack], width: int, height: int, fps: float
             ) -> list[TrackPlan]:
        window = smooth_window(fps, self.opts.smooth_seconds)
        plans = []
        for t in tracks:
            crops, faces = steady_crops(t.faces, width, height, self.opts.expand, window,
                                        self.opts.smooth_order)
            chunks = [(t.start + s, t.start + e) for s, e in plan_chunks(t.frames, self.T,
                                                                         self.overlap)]
            plans.append(TrackPlan(t, crops, faces, chunks, crops[:, 2] >= MIN_CROP_SIDE))
        return plans

    def enhance(self, src: str | Path, dst: str | Path, *, crf: float = 18,
                preset: str = "medium", pix_fmt: str = "yuv420p",
                crops_dir: str | Path | None = None, on_frame: OnFrame | None = None) -> dict:
        """Restore the faces of `src` into `dst` (same fps, audio copied; a frame folder
        into a frame folder); returns stats."""
        info, frames = open_frames(src, self.opts.fps)
        fps = info.fps or 25.0
        t0 = time.perf_counter()
        found = self.find_tracks(src, on_frame)
        track_seconds = time.perf_counter() - t0
        num_frames = found.frames
        tracks = found.tracks
        if self.opts.only_center_face:
            tracks = keep_center_face(tracks, info.width, info.height)
        plans = self.plan(tracks, info.width, info.height, fps)
        up = self.opts.upscale
        W, H = info.width * up, info.height * up
        stats = FaceStats(frames=num_frames, shots=len(found.shots), track_seconds=track_seconds,
                          detections=found.detections,
                          faces=len({p.track.index for p in plans if p.restorable.any()}))
        # frame j can be written once every chunk covering it is restored
        ready_at = np.arange(num_frames)
        ending: dict[int, list[tuple[TrackPlan, int, int]]] = {}
        for p in plans:
            if not p.restorable.any():
                continue
            for s, e in p.chunks:
                ready_at[s:e] = np.maximum(ready_at[s:e], e - 1)
                ending.setdefault(e - 1, []).append((p, s, e))
        stats.frames_with_face = int(restored_frames(plans, num_frames).sum())
        crops = CropsWriter(crops_dir, self.size, fps) if crops_dir else None
        buffer: dict[int, np.ndarray] = {}
        write_ptr = 0
        try:
            with open_writer(src, dst, W, H, fps, crf=crf, preset=preset,
                             pix_fmt=pix_fmt) as writer:
                for i, frame in frames():
                    if i >= num_frames:      # the first pass saw fewer frames: keep its count
                        break
                    buffer[i] = frame
                    stats.max_buffered = max(stats.max_buffered, len(buffer))
                    for p in plans:
                        if p.covers(i) and p.restorable.any():
                            crop = cut_square(frame, tuple(p.crops[i - p.track.start]), self.size)
                            p.inputs[i] = crop
                            if crops is not None:
                                crops.crop(p.track.index, "input", crop)
                    if i in ending:
                        self._restore_chunks(ending.pop(i), stats)
                    while write_ptr <= i and ready_at[write_ptr] <= i:
                        j = write_ptr
                        writer.write(self._compose(j, buffer.pop(j), plans, crops))
                        if on_frame:
                            on_frame("restoring", j + 1)
                        write_ptr += 1
                if write_ptr < num_frames:
                    raise RuntimeError(f"{src}: the second decode ended after {write_ptr} of "
                                       f"{num_frames} frames; the file changed while it was read")
        except BaseException:
            if crops is not None:
                crops.abort()
            raise
        if crops is not None:
            crops.close()
        out = asdict(stats)
        out.update(chunk_frames=self.T, overlap=self.overlap, width=W, height=H, fps=fps,
                   source=str(src), mode="faces", upscale=up, detector=self.opts.detector,
                   detect_every=found.stride, shots_found=[[s.start, s.end] for s in found.shots])
        return out

    def _restore_chunks(self, chunks: list[tuple[TrackPlan, int, int]], stats: FaceStats) -> None:
        """Restore, in one model call, every chunk that ends on the same frame."""
        batch = []
        for p, s, e in chunks:
            clip = [p.inputs[j] for j in range(s, e)]
            # shorter than T (a short track): repeat the last crop, keep the real ones
            clip += [clip[-1]] * (self.T - len(clip))
            batch.append(np.stack(clip))
        out, seconds = self.restore(np.stack(batch))
        stats.chunks += 1
        stats.crops += len(chunks)
        stats.model_seconds += seconds
        for (p, s, e), r in zip(chunks, out):
            for j in range(s, e):
                w = chunk_weight(j, s, e)
                if j in p.acc:
                    p.acc[j] += w * r[j - s].astype(np.float32)
                    p.weight[j] += w
                else:
                    p.acc[j] = w * r[j - s].astype(np.float32)
                    p.weight[j] = w
            # inputs no later chunk of this track reads
            later = [cs for cs, _ in p.chunks if cs > s]
            keep_from = min(later) if later else e
            for j in [j for j in p.inputs if j < keep_from]:
                del p.inputs[j]

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

    def _compose(self, j: int, frame: np.ndarray, plans: list[TrackPlan],
                 crops: CropsWriter | None) -> np.ndarray:
        out = self._background(frame)
        up = self.opts.upscale
        H, W = out.shape[:2]
        drawn = []
        any_face = False
        for p in plans:
            if not p.covers(j):
                continue
            any_face = True
            n = j - p.track.start
            ok = bool(p.restorable[n])
            if crops is not None:
                crops.row(j, p.track.shot, p.track.index, bool(p.track.detected[n]), ok,
                          p.crops[n], p.faces[n])
            if not ok:
                continue
            crop = p.acc.pop(j) / p.weight.pop(j)
            if crops is not None:
                crops.crop(p.track.index, "restored",
                           np.clip(np.rint(crop), 0, 255).astype(np.uint8))
            box = tuple(float(v) * up for v in p.crops[n])
            region = paste_region(box, W, H)
            x0, y0, x1, y1 = region
            if x1 <= x0 or y1 <= y0:
                continue
            patch = uncut_square(crop, box, region)
            mask = face_mask(tuple(p.crops[n]), p.faces[n], p.track.ellipse[n], self.opts.feather)
            alpha = uncut_square(mask, box, region)
            if out is frame:
                out = frame.copy()
            mixed = blend(out[y0:y1, x0:x1], patch, alpha, self.opts.color_match)
            out[y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
            drawn.append((p.crops[n], p.faces[n] if p.track.detected[n] else None,
                          p.track.index))
        if crops is not None and not any_face:
            crops.row(j, None, None, False, False)
        if self.opts.draw_box and drawn:
            if out is frame:
                out = frame.copy()
            for crop_box, face, k in drawn:
                draw_face(out, crop_box, face, k, up)
        return out
