"""Pairs as plain videos (`stc degrade --format mp4`): a test set to watch, hand over, or
score with `stc eval --pred lq --gt gt` directly.

Each pair becomes two files with the same name, `sample_key(pair_id)` (recipe, seed, clip
and window):

    OUT/gt/KEY.mp4   the HQ window: the pair's stored H.264 stream muxed into mp4 without
                     re-encoding, so it decodes to exactly the HQ a Parquet shard gives
    OUT/lq/KEY.mp4   the LQ at the HQ's size, as the model sees it (a BFVR low-resolution
                     stream already resized, brightness replayed), stored losslessly
                     (libx264rgb -qp 0): it decodes to exactly those RGB frames

The pairs manifest names the LQ file in `lq_path_or_shard` (the GT file has the same name
under gt/), with `hq_format`/`lq_format` = "mp4". Training reads Parquet or WebDataset
shards; an mp4 pairs folder is for looking and evaluating.

Workers build the files' bytes (`to_mp4_pair`, beside the degradation); the driver writes
each pair's two files atomically before its manifest rows, as for shards.
"""

from __future__ import annotations

from typing import Any, Mapping

from stc.core import storage
from stc.core.names import PAIRS_GT_DIR, PAIRS_LQ_DIR
from stc.core.storage import Location
from stc.degrade.codec import encode_lossless_rgb
from stc.degrade.shards import decode_pair, shard_dir
from stc.degrade.webdataset import mux_mp4, sample_key

MP4_FORMAT = "mp4"


def to_mp4_pair(row: Mapping[str, Any]) -> dict[str, Any]:
    """A shard row (raw streams, as `degrade_clip` makes it) -> the same row with the GT and
    LQ mp4 files' bytes in `hq`/`lq`."""
    what = f"pair {row['pair_id']}"
    fps = float(row["fps"])
    lq, _ = decode_pair(row)
    out = dict(row)
    out["hq"] = mux_mp4(row["hq"], fps, f"{what} HQ")
    out["lq"] = mux_mp4(encode_lossless_rgb(lq, fps, what=f"{what} LQ"), fps, f"{what} LQ")
    out.update(hq_format=MP4_FORMAT, lq_format=MP4_FORMAT, container=MP4_FORMAT)
    return out


class Mp4PairWriter:
    """`degrade.shards.ShardWriter`'s add/flush contract for mp4 pairs: `add` writes the
    pair's two files and returns (LQ path relative to out, 0, extra) at once."""

    # Files are named by pair, so a rerun overwrites what a killed run left; nothing of
    # this writer lives in the shard folder the driver sweeps for orphans.
    pattern = "*.mp4"

    def __init__(self, out: Location, recipe: str, seed: int, **_: Any):
        self.out = storage.location(out)
        self.dir = shard_dir(self.out, recipe, seed)      # never created
        for sub in (PAIRS_LQ_DIR, PAIRS_GT_DIR):
            storage.makedirs(storage.join(self.out, sub))

    def add(self, row: Mapping[str, Any], extra: Any = None) -> list[tuple[str, int, Any]]:
        if row.get("container") != MP4_FORMAT:
            raise ValueError(f"pair {row['pair_id']}: mp4 pairs take to_mp4_pair rows")
        name = sample_key(row["pair_id"]) + ".mp4"
        storage.write_bytes(storage.join(self.out, PAIRS_GT_DIR, name), row["hq"])
        storage.write_bytes(storage.join(self.out, PAIRS_LQ_DIR, name), row["lq"])
        return [(f"{PAIRS_LQ_DIR}/{name}", 0, extra)]

    def flush(self) -> list[tuple[str, int, Any]]:
        return []
