"""Example pairs to look at: a few LQ-HQ pairs of each recipe in a pairs folder, read back in
whatever format `stc degrade` stored them (Parquet shards, WebDataset tars, mp4 files), so
the report shows what a recipe does to a face before anyone trains on it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from stc.core.names import PAIRS_GT_DIR, PAIRS_MANIFEST
from stc.core.paths import allowed_path
from stc.core.video import read_frames
from stc.degrade.shards import decode_pair
from stc.degrade.webdataset import CONTAINER, TarShardReader, decode_sample
from stc.manifests.io import read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA


def pairs_folder(pairs: str | Path) -> Path:
    p = Path(pairs)
    return p.parent if p.name == PAIRS_MANIFEST else p


def pick_examples(rows: list[dict[str, Any]], per_recipe: int) -> dict[str, list[dict[str, Any]]]:
    """Up to `per_recipe` ok rows of each recipe, from as many clips as possible (the first
    window of each clip in clip order, then second windows), so a strip is varied and the
    same folder always gives the same strip."""
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["recipe"], r["seed"], r["window"], r["clip_id"])):
        if r["status"] != "ok":
            continue
        chosen = by_recipe.setdefault(r["recipe"], [])
        if len(chosen) < per_recipe:
            chosen.append(r)
    return by_recipe


def read_pair(root: Path, row: dict[str, Any], allow_outside: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    """(lq, hq) uint8 [T, H, W, 3] of one manifest row, from the file it names (inside the
    pairs folder, by the one path policy of `core.paths`, unless `allow_outside`)."""
    stored = row["lq_path_or_shard"]
    path = allowed_path(stored, [root], what="lq_path_or_shard", where=root / PAIRS_MANIFEST,
                        allow_outside=allow_outside)
    if stored.endswith(".mp4"):
        gt = allowed_path(Path(PAIRS_GT_DIR) / Path(stored).name, [root], what="gt path",
                          where=root / PAIRS_MANIFEST, allow_outside=allow_outside)
        return read_frames(path), read_frames(gt)
    if stored.endswith(".tar"):
        sample = TarShardReader(path).row(int(row["shard_row"]))
        return decode_sample(sample) if sample.get("container") == CONTAINER else decode_pair(sample)
    pf = pq.ParquetFile(path)
    index, start = int(row["shard_row"]), 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if index < start + n:
            return decode_pair(pf.read_row_group(g).to_pylist()[index - start])
        start += n
    raise FileNotFoundError(f"{path} has no row {index}; the pairs folder is damaged: rerun "
                            "stc degrade")


def example_pairs(pairs: str | Path, per_recipe: int = 4, allow_outside: bool = False
                  ) -> dict[str, list[dict[str, Any]]]:
    """recipe -> [{pair_id, clip_id, window, params, lq, hq}] with the middle frame of each
    example's LQ and HQ (uint8 [H, W, 3]); pairs that cannot be read are skipped."""
    root = pairs_folder(pairs)
    rows = read_manifest(root / PAIRS_MANIFEST, PAIRS_SCHEMA).to_dict("records")
    out: dict[str, list[dict[str, Any]]] = {}
    for recipe, chosen in pick_examples(rows, per_recipe).items():
        for r in chosen:
            try:
                lq, hq = read_pair(root, r, allow_outside)
            except (OSError, ValueError) as exc:
                out.setdefault(recipe, [])
                print(f"stc stats: skipping example pair {r['pair_id']} ({exc})", file=sys.stderr)
                continue
            mid = len(hq) // 2
            out.setdefault(recipe, []).append(
                {"pair_id": r["pair_id"], "clip_id": r["clip_id"], "window": int(r["window"]),
                 "params": r["params"], "lq": lq[mid], "hq": hq[mid]})
    return out

