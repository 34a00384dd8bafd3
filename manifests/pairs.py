"""The pairs manifest: one row per LQ-HQ pair (a T-frame window of a curated clip) made
by one recipe and seed, plus one error row for every clip that gave no pairs.

`pair_id` is `RECIPE/SEED/CLIP_ID/WINDOW` (window zero-padded). A clip that failed gets
one row with window 0, so the pair that replaces it on a successful rerun has the same
key and wins (the latest part wins in `manifests.io`). `lq_path_or_shard` is the shard
file, relative to the output folder, and `shard_row` the pair's row in it; `params` is
JSON: a list with one object per recipe step holding every drawn value.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from stc.manifests.schema import ManifestSchema

PAIR_STATUSES = ("ok", "error")
PAIR_REASONS = {
    "ok": "ok",
    "unreadable": "error",       # the curated clip is missing, empty or corrupt
    "outside_root": "error",     # the manifest names a clip outside its folder: not read
    "too_short": "error",        # fewer frames than one window
    "degrade_failed": "error",   # a degradation or encode failed: the message says which
    "internal_error": "error",   # a bug: the message has the traceback tail
}

PAIRS_SCHEMA_VERSION = 1


def pair_id(recipe: str, seed: int, clip_id: str, window: int) -> str:
    return f"{recipe}/{seed}/{clip_id}/{window:04d}"


_fields = [
    ("pair_id", pa.string()),
    ("clip_id", pa.string()),
    ("recipe", pa.string()),
    ("settings_hash", pa.string()),    # hash of the recipe and window options
    ("seed", pa.int64()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("message", pa.string()),
    ("window", pa.int32()),
    ("start_frame", pa.int64()),       # first frame of the window in the curated clip
    ("num_frames", pa.int32()),
    ("fps", pa.float64()),
    ("width", pa.int32()),             # HQ and (decoded) LQ size
    ("height", pa.int32()),
    ("lq_path_or_shard", pa.string()),  # shard file relative to the output folder
    ("shard_row", pa.int32()),
    ("hq_format", pa.string()),
    ("lq_format", pa.string()),
    ("hq_bytes", pa.int64()),
    ("lq_bytes", pa.int64()),
    ("params", pa.string()),           # JSON: [{"step": ..., every drawn value}, ...]
    ("source_clip", pa.string()),      # the curated clip, as the manifest names it
    ("software", pa.string()),         # versions the bytes depend on
]


def _check(row: Mapping[str, Any]) -> str | None:
    if row["status"] not in PAIR_STATUSES:
        return f"status {row['status']!r} is not one of {PAIR_STATUSES}"
    if PAIR_REASONS.get(row["reason"]) != row["status"]:
        return f"reason {row['reason']!r} does not belong to status {row['status']!r}"
    if row["status"] == "ok" and not row["lq_path_or_shard"]:
        return "ok row without a shard"
    return None


PAIRS_SCHEMA = ManifestSchema(
    name="degraded_pairs",
    version=PAIRS_SCHEMA_VERSION,
    arrow=pa.schema(_fields),
    key="pair_id",
    row_checks=(_check,),
)
