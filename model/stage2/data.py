"""Stage II training data: a fresh degradation every time a window is drawn.

The authors degrade on the fly (Dixin-Lab/BFVR-STC, `bfvr_dataset.py`): every time the data
loader draws an item it picks a clip and a 24-frame window and draws new degradation
parameters (sigma, r, delta, crf). stc does the same with its own recipe code: draw number
`index` (the global sample number, step by step, so a resumed run draws exactly what the
uninterrupted one would have)

  - picks a training clip and a start frame with `numpy.random.default_rng([seed, stream,
    index])` (`seed` = train.seed, `stream` = the curriculum step, so steps differ),
  - reads that window of the curated HQ clip at `size` x `size` (core.video.resize_frames,
    as Stage I does),
  - degrades it with `stc.degrade.recipe.Recipe.run`, the very code `stc degrade` runs,
    seeded by (degrade seed, clip id, recipe name) with spawn key (index, recipe step):
    every draw has its own sigma, r, delta, crf (or flicker frames and alphas), reproducible
    from (seed, index, clip).

`stc degrade` shards stay the reproducible evaluation and paired-data path: the validation
pairs of a curriculum step are shards of the held-out clips (made once, identical for every
evaluation), and a step can train on shards instead (`data: pairs`, or `pairs: DIR`), which
the pixel-flicker curriculum does because its recipe runs a diffusion model per frame (the
authors also read pre-rendered SD-flicker clips rather than making them per draw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stc.core.config import ConfigError
from stc.core.tensors import to_tensor
from stc.core.video import read_frames, resize_frames
from stc.degrade.recipe import Recipe, load_recipe
from stc.manifests.schema import ManifestError
from stc.model.stage1.data import Clip, by_split_column, hash_fraction, load_clips


@dataclass(frozen=True)
class OnlineSource:
    """Where a curriculum step draws its training pairs from when it degrades on the fly."""
    manifest: Path          # curated manifest: the HQ clips
    recipe: str             # built-in recipe name or YAML file
    degrade_seed: int = 0   # seeds the degradation draws (Curriculum.degrade_seed)
    stream: int = 0         # the curriculum step's position: its windows differ from others'
    allow_outside: bool = False   # clips the manifest names outside its folder are read too


def split_ids(ids: list[str], fraction: float) -> tuple[set[str], set[str]]:
    """(train ids, validation ids) by the clip-id hash Stage I uses: at least one of each
    when there are two or more clips, the one clip in both when there is one."""
    ids = sorted(set(ids))
    if len(ids) == 1:
        return set(ids), set(ids)
    val = {c for c in ids if hash_fraction(c) < fraction}
    if not val:
        val = {min(ids, key=hash_fraction)}
    if val == set(ids):
        val.discard(max(val, key=hash_fraction))
    return set(ids) - val, val


def check_online(recipe: Recipe) -> None:
    if recipe.uses_diffusion:
        raise ConfigError(
            f"recipe {recipe.name!r} runs a diffusion model on every chosen frame: degrading it "
            "at every draw is too slow to train on; give the curriculum step `data: pairs` "
            "(its pairs are made once by `stc degrade`) or `pairs: DIR`")


def load_window_uint8(clip: Clip, start: int, num_frames: int, size: int) -> np.ndarray:
    """Frames [start, start + num_frames) of a clip as uint8 [T, size, size, 3]."""
    frames = read_frames(clip.path, start, num_frames)
    if len(frames) < num_frames:
        raise ManifestError(f"{clip.path}: only {len(frames)} frames from {start}, "
                            f"wanted {num_frames}")
    return np.ascontiguousarray(resize_frames(frames, size, size))


class OnlinePairs(Dataset):
    """index (the global draw number) -> (lq, hq), float32 [3, T, size, size] in [-1, 1].

    `draw(index)` gives the uint8 frames and what was drawn, for inspection.
    """

    def __init__(self, clips: list[Clip], recipe: Recipe, num_frames: int, size: int,
                 seed: int = 0, degrade_seed: int = 0, stream: int = 0):
        if not clips:
            raise ManifestError("no training clips to draw windows from")
        check_online(recipe)
        self.clips, self.recipe = clips, recipe
        self.num_frames, self.size = num_frames, size
        self.seed, self.degrade_seed, self.stream = seed, degrade_seed, stream

    def __len__(self) -> int:   # sampled by index; any index is valid
        return 2 ** 62

    def choose(self, index: int) -> tuple[Clip, int]:
        rng = np.random.default_rng([self.seed, self.stream, index])
        clip = self.clips[int(rng.integers(len(self.clips)))]
        start = int(rng.integers(0, clip.num_frames - self.num_frames + 1))
        return clip, start

    def draw(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(lq, hq) uint8 [T, size, size, 3] and {clip_id, start_frame, params} of one draw."""
        clip, start = self.choose(index)
        hq = load_window_uint8(clip, start, self.num_frames, self.size)
        video, params = self.recipe.run(hq, clip.fps, self.degrade_seed, clip.clip_id, index,
                                        device="cpu")
        return video.frames, hq, {"clip_id": clip.clip_id, "start_frame": start, "params": params}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        lq, hq, _ = self.draw(int(index))
        return to_tensor(lq), to_tensor(hq)


def online_clips(manifest: str | Path, num_frames: int, val_fraction: float,
                 allow_outside: bool = False) -> tuple[list[Clip], list[Clip]]:
    """(training clips, held-out clips) of a curated manifest, split by clip-id hash, or by
    its `split` column where `stc split` wrote one (test clips are in neither)."""
    clips = load_clips(manifest, min_frames=num_frames, allow_outside=allow_outside)
    if any(c.split for c in clips):
        return by_split_column(clips)
    train_ids, val_ids = split_ids([c.clip_id for c in clips], val_fraction)
    return ([c for c in clips if c.clip_id in train_ids], [c for c in clips if c.clip_id in val_ids])


def online_dataset(src: OnlineSource, num_frames: int, size: int, seed: int,
                   val_fraction: float) -> tuple[OnlinePairs, set[str]]:
    """The training dataset of an online step and the ids of the clips held out from it."""
    train, val = online_clips(src.manifest, num_frames, val_fraction, src.allow_outside)
    ds = OnlinePairs(train, load_recipe(src.recipe), num_frames, size, seed=seed,
                     degrade_seed=src.degrade_seed, stream=src.stream)
    return ds, {c.clip_id for c in val}


def val_windows_per_clip(val_pairs: int, val_clips: int) -> int:
    """Windows to degrade per held-out clip so that `val_pairs` pairs exist."""
    return max(1, math.ceil(val_pairs / max(1, val_clips)))
