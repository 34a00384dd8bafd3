"""The torch dataset Stage II training reads: (lq, hq) pairs from the degraded shards.

    ds = PairDataset("pairs_dir", recipe="bfvr", shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=4)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for lq, hq in loader:   # each float32 [B, C, T, H, W] in [-1, 1]

Each item is `(lq, hq)`: float32 tensors shaped [C, T, H, W] (C = 3, RGB), uint8 mapped
to [-1, 1] by `x / 127.5 - 1`. `recipe` picks one recipe (or a list; None = every recipe
in the folder), `clips` keeps only those clip ids (a train/validation split), `size`
resizes both clips (area when shrinking, bicubic when enlarging, as Stage I does) when
training wants another size than the shards hold, `return_meta=True` adds a dict with the
pair id and the drawn parameters (`params` stays a JSON string so default collation works).

It is an IterableDataset so that it reads shards sequentially instead of seeking per
item: the unit of work is one Parquet row group (a few pairs) of one shard. Every epoch
the units of *all* shards are shuffled together with (seed, epoch), then dealt round
robin to distributed ranks (RANK / WORLD_SIZE, or the arguments) and DataLoader workers,
each unit to exactly one reader, and pairs are shuffled again inside a buffer of
`shuffle_buffer` pairs. Only pairs whose row in `pairs.parquet` is `ok` are read, so
orphan pairs of an interrupted run never reach training.

`pairs_dir` may be a URL (s3://pairs, `core.storage`): shards are then read by range
requests, a row group (or a tar's few samples) at a time. WebDataset tar shards
(`stc degrade --format webdataset`) are read like Parquet ones, in units of the same size,
and give the same tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
from torch.utils.data import IterableDataset, get_worker_info

from stc.core import storage
from stc.core.fs import within
from stc.core.names import PAIRS_MANIFEST
from stc.core.tensors import to_tensor
from stc.core.video import resize_frames
from stc.degrade.shards import ROW_GROUP_PAIRS, decode_pair
from stc.degrade.webdataset import CONTAINER, TarShardReader, decode_sample
from stc.manifests.io import read_table
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.manifests.schema import ManifestError

Unit = tuple[str, int, tuple[int, ...]]   # (shard path relative to root, row group, rows in it)


def _parquet(loc: storage.Location) -> pq.ParquetFile:
    return pq.ParquetFile(loc if isinstance(loc, Path) else storage.open_input(loc))


def _is_tar(shard: str) -> bool:
    return shard.endswith(".tar")


class PairDataset(IterableDataset):
    def __init__(self, pairs_dir: str | Path, recipe: str | Sequence[str] | None = None,
                 size: int | None = None, shuffle: bool = True, seed: int = 0, *,
                 seeds: Sequence[int] | None = None, clips: Collection[str] | None = None,
                 shuffle_buffer: int = 16,
                 return_meta: bool = False, rank: int | None = None,
                 world_size: int | None = None, allow_outside: bool = False):
        self.root = storage.location(pairs_dir)
        recipes = [recipe] if isinstance(recipe, str) else recipe
        table = read_table(storage.join(self.root, PAIRS_MANIFEST), PAIRS_SCHEMA)
        clips = set(clips) if clips is not None else None
        rows = [r for r in table.select(["status", "recipe", "seed", "clip_id",
                                          "lq_path_or_shard", "shard_row"]).to_pylist()
                if r["status"] == "ok" and (recipes is None or r["recipe"] in recipes)
                and (seeds is None or r["seed"] in seeds)
                and (clips is None or r["clip_id"] in clips)]
        if not rows:
            have = sorted(set(table.column("recipe").to_pylist()))
            raise ValueError(f"{self.root}/pairs.parquet has no ok pairs"
                             f"{' for recipe ' + str(list(recipes)) if recipes else ''} "
                             f"(recipes there: {have}); run `stc degrade` first")
        wanted: dict[str, set[int]] = {}
        for r in rows:
            wanted.setdefault(r["lq_path_or_shard"], set()).add(r["shard_row"])
        # A shard path must stay inside the folder (before anything is opened, so a refusal
        # says nothing about what exists outside): a pairs.parquet from elsewhere must not
        # make training read other files.
        outside = [s for s in sorted(wanted) if within(self.root, s) is None]
        if outside and not allow_outside:
            raise ManifestError(f"{len(outside)} shard path(s) in {self.root}/pairs.parquet lead "
                                f"outside {self.root} (e.g. {outside[0]!r}); refused, nothing was "
                                "read. Pass allow_outside=True if that is on purpose")
        self.units: list[Unit] = []
        for shard in sorted(wanted):
            path = storage.join(self.root, shard)
            if shard.endswith(".mp4"):
                raise ValueError(f"{self.root} holds pairs made with `stc degrade --format mp4` "
                                 "(videos to watch and evaluate); train on pairs made with "
                                 "--format parquet (the default) or webdataset")
            if not storage.isfile(path):
                raise FileNotFoundError(f"{path}, listed in {self.root}/pairs.parquet, is missing; "
                                        "the folder is incomplete: copy it whole or rerun stc degrade")
            if _is_tar(shard):
                # Units of a tar: runs of ROW_GROUP_PAIRS samples, as a Parquet row group.
                groups: dict[int, list[int]] = {}
                for i in sorted(wanted[shard]):
                    groups.setdefault(i // ROW_GROUP_PAIRS, []).append(i % ROW_GROUP_PAIRS)
                self.units += [(shard, g, tuple(inside)) for g, inside in sorted(groups.items())]
                continue
            meta = _parquet(path).metadata
            start = 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                inside = tuple(i - start for i in sorted(wanted[shard]) if start <= i < start + n)
                if inside:
                    self.units.append((shard, g, inside))
                start += n
        self.num_pairs = len(rows)
        self.size = size
        self.shuffle, self.seed, self.buffer = shuffle, seed, max(1, shuffle_buffer)
        self.return_meta = return_meta
        self.rank = rank if rank is not None else int(os.environ.get("RANK", 0))
        self.world_size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} must lie in [0, world_size={self.world_size})")
        self.epoch = 0

    def __len__(self) -> int:
        """Pairs in the folder (all ranks together)."""
        return self.num_pairs

    def set_epoch(self, epoch: int) -> None:
        """A new shuffle order; call before each epoch (workers copy it when they start)."""
        self.epoch = epoch

    def _my_units(self) -> list[Unit]:
        units = list(self.units)
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(units)
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        return units[self.rank * nw + wid::self.world_size * nw]

    def _rows(self) -> Iterator[dict[str, Any]]:
        files: dict[str, Any] = {}
        for shard, g, inside in self._my_units():
            if shard not in files:
                path = storage.join(self.root, shard)
                files[shard] = TarShardReader(path) if _is_tar(shard) else _parquet(path)
            if _is_tar(shard):
                for i in inside:
                    yield files[shard].row(g * ROW_GROUP_PAIRS + i)
                continue
            group = files[shard].read_row_group(g).to_pylist()
            for i in inside:
                yield group[i]

    def __iter__(self) -> Iterator[Any]:
        if not self.shuffle:
            for row in self._rows():
                yield self._item(row)
            return
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, info.id if info else 0])
        buf: list[dict[str, Any]] = []
        for row in self._rows():
            buf.append(row)
            if len(buf) >= self.buffer:
                yield self._item(buf.pop(int(rng.integers(len(buf)))))
        while buf:
            yield self._item(buf.pop(int(rng.integers(len(buf)))))

    def _resize(self, frames: np.ndarray) -> np.ndarray:
        if self.size is None:
            return frames

        return resize_frames(frames, self.size, self.size)

    def _item(self, row: dict[str, Any]):
        lq, hq = decode_sample(row) if row.get("container") == CONTAINER else decode_pair(row)
        item = (to_tensor(self._resize(lq)), to_tensor(self._resize(hq)))
        if self.return_meta:
            meta = {"pair_id": row["pair_id"], "clip_id": row["clip_id"], "recipe": row["recipe"],
                    "start_frame": row["start_frame"], "params": row["params"]}
            return (*item, meta)
        return item
