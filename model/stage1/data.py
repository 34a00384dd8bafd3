"""Random frame windows from the curated manifest (HQ clips) for Stage I.

Sampling is a pure function of (seed, sample index): sample i of step s on worker r is
index ((s * world + r) * batch + i), and its clip, start frame and flip come from a NumPy
generator seeded with (seed, index). A resumed run therefore sees exactly the windows the
uninterrupted run would have seen, whatever the number of loader processes.

Validation windows come from clips held out by a hash of their clip_id (at least one clip);
with a single clip, its last window is held out and training windows end before it. A
manifest written by `stc split` decides instead: its `split` column puts every clip of one
identity in train, val or test, and test clips are never read here.
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from stc.core import storage
from stc.core.fs import OutsideRoot
from stc.core.tensors import to_tensor
from stc.core.video import probe, read_frames, resize_frames
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestPaths, locate_manifest, read_manifest
from stc.manifests.schema import ManifestError


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: str
    num_frames: int
    fps: float = 25.0      # the curated clip's rate (Stage II's on-the-fly codec step uses it)
    split: str | None = None   # train / val / test from `stc split`; None: not split


@dataclass(frozen=True)
class Split:
    train: list[tuple[Clip, int]]        # (clip, largest start frame allowed)
    val: list[tuple[Clip, int]]          # (clip, start frame)


def manifest_location(manifest: str | Path) -> tuple[storage.Location, storage.Location]:
    """(manifest folder, clips root) from `DIR` or `DIR/manifest.parquet` (or a URL)."""

    p = locate_manifest(manifest)
    return p, storage.parent(p)


@functools.lru_cache(maxsize=None)
def local_clip(path: str) -> str:
    """A clip as a local file for the decoders: the path itself, or for a URL (s3://...) a
    copy in the node's object cache (`core.storage.cached_input`), fetched on first use."""
    return str(storage.cached_input(path)) if storage.is_url(path) else path


def load_clips(manifest: str | Path, min_frames: int = 1,
               allow_outside: bool = False) -> list[Clip]:
    """Kept clips of a curated manifest with at least `min_frames` frames, sorted by id.

    Clip paths leading outside the manifest's folder are refused (ManifestError) unless
    `allow_outside`: training on a manifest from elsewhere must not read other files."""

    path, root = manifest_location(manifest)
    df = read_manifest(path, CLIP_SCHEMA)
    df = df[df["status"] == "kept"]
    paths = ManifestPaths(path, root, allow_outside)
    clips, short, refused = [], [], []
    for row in df.itertuples(index=False):
        try:
            clip_path = paths(row.clip_path)
        except OutsideRoot as exc:
            refused.append(str(exc))
            continue
        n = row.clip_num_frames
        if n is None or (isinstance(n, float) and math.isnan(n)) or n <= 0:
            n = probe(local_clip(str(clip_path))).num_frames
        if n < min_frames:
            short.append(row.clip_id)
            continue
        fps = row.clip_fps
        fps = float(fps) if fps is not None and fps == fps and fps > 0 else 25.0
        split = getattr(row, "split", None)
        clips.append(Clip(row.clip_id, str(clip_path), int(n), fps,
                          split if isinstance(split, str) else None))
    if refused:
        raise ManifestError(f"{len(refused)} kept clip(s) refused: {refused[0]}")
    if short:
        warnings.warn(f"{len(short)} kept clip(s) shorter than {min_frames} frames skipped "
                      f"(e.g. {short[0]})", stacklevel=2)
    if not clips:
        raise ManifestError(f"{path} has no kept clip with at least {min_frames} frames; "
                            "run `stc curate` first or lower data.num_frames")
    return clips


def hash_fraction(clip_id: str) -> float:
    """A clip's fixed place in [0, 1): clips below a fraction are held out, whatever the
    order or number of clips (Stage II splits its pairs the same way)."""
    return int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16) / 2 ** 32


def split_clips(clips: list[Clip], num_frames: int, val_fraction: float,
                val_windows: int) -> Split:
    """Deterministic train / validation split (see the module docstring)."""
    if any(c.split for c in clips):
        train, val = by_split_column(clips)
        return Split(train=[(c, c.num_frames - num_frames) for c in train],
                     val=_val_windows(val, num_frames, val_windows))
    if len(clips) == 1:
        c = clips[0]
        last = c.num_frames - num_frames
        if last >= num_frames:
            return Split(train=[(c, last - num_frames)], val=[(c, last)])
        warnings.warn(f"one clip of {c.num_frames} frames: the held-out last window overlaps "
                      "training windows", stacklevel=2)
        return Split(train=[(c, last)], val=[(c, last)])
    ranked = sorted(clips, key=lambda c: hash_fraction(c.clip_id))
    val = [c for c in ranked if hash_fraction(c.clip_id) < val_fraction]
    val = val or ranked[:1]
    if len(val) == len(clips):
        val = val[:-1]
    val_ids = {c.clip_id for c in val}
    train = [(c, c.num_frames - num_frames) for c in clips if c.clip_id not in val_ids]
    return Split(train=train, val=_val_windows(val, num_frames, val_windows))


def by_split_column(clips: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    """(train clips, val clips) as `stc split` assigned them; test clips (and clips it left
    unassigned) are in neither. Refused when either side is empty."""
    train = [c for c in clips if c.split == "train"]
    val = [c for c in clips if c.split == "val"]
    if not train or not val:
        raise ManifestError(f"the manifest's split gives {len(train)} train and {len(val)} val "
                            "clip(s) of usable length; rerun `stc split` with a larger --val")
    return train, val


def _val_windows(val: list[Clip], num_frames: int, val_windows: int) -> list[tuple[Clip, int]]:
    per_clip = max(1, math.ceil(val_windows / len(val)))
    windows = []
    for c in val:
        last = c.num_frames - num_frames
        starts = np.linspace(0, last, per_clip + 2)[1:-1] if per_clip > 1 else [last // 2]
        windows += [(c, int(round(s))) for s in starts]
    return windows[:max(1, val_windows)]


def load_window(path: str, start: int, num_frames: int, size: int) -> torch.Tensor:
    """Frames [start, start + num_frames) as float [3, T, size, size] in [-1, 1]."""

    frames = read_frames(local_clip(path), start, num_frames)
    if len(frames) < num_frames:
        raise ManifestError(f"{path}: only {len(frames)} frames from {start}, "
                            f"wanted {num_frames}")
    return to_tensor(resize_frames(frames, size, size))


class WindowDataset(Dataset):
    """Sample `index` -> a random window, reproducibly (index is the global sample number)."""

    def __init__(self, windows: list[tuple[Clip, int]], num_frames: int, size: int,
                 hflip: bool = True, seed: int = 0):
        if not windows:
            raise ManifestError("no training clips")
        self.windows, self.num_frames, self.size = windows, num_frames, size
        self.hflip, self.seed = hflip, seed

    def __len__(self) -> int:  # sampling is by index; any index is valid
        return 2 ** 62

    def choose(self, index: int) -> tuple[Clip, int, bool]:
        rng = np.random.default_rng([self.seed, index])
        clip, max_start = self.windows[int(rng.integers(len(self.windows)))]
        start = int(rng.integers(0, max_start + 1))
        flip = bool(self.hflip and rng.random() < 0.5)
        return clip, start, flip

    def __getitem__(self, index: int) -> torch.Tensor:
        clip, start, flip = self.choose(index)
        x = load_window(clip.path, start, self.num_frames, self.size)
        return x.flip(-1) if flip else x


class StepSampler(Sampler[int]):
    """Sample indices for steps [start_step, max_steps) of one worker."""

    def __init__(self, start_step: int, max_steps: int, batch_size: int, rank: int = 0,
                 world: int = 1):
        self.start, self.stop, self.batch = start_step, max_steps, batch_size
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)


def val_batch(split: Split, num_frames: int, size: int) -> torch.Tensor:
    """All validation windows as one tensor [N, 3, T, size, size]."""
    return torch.stack([load_window(c.path, s, num_frames, size) for c, s in split.val])
