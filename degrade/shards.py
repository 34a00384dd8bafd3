"""Paired shards: Parquet files of LQ-HQ windows, written atomically, read by the loader.

Storage, and why
----------------
* **LQ of a recipe that ends with BFVR** (`lq_format = "h264-lowres"`): the low-resolution
  libx264 bitstream the degradation really produced (raw Annex-B H.264 bytes), plus the
  up-resize (`lq_up_interp`, OpenCV) to `width x height` done at load time. The
  degradation computes its own output with that same decode+resize function
  (`degrade.video.lq_from_bitstream`), so the stored LQ decodes to exactly the produced
  frames. This keeps the LQ of a pair small (~17 KB for 24 frames, against megabytes of
  lossless 512 px frames) and stores the one artefact that matters bit for bit: the
  compressed stream. H.264 decoding is bit-exact by specification; the YUV->RGB
  conversion (PyAV/swscale) and the OpenCV resize are deterministic for given library
  versions, which the pairs manifest records in `software`.
* **LQ of a recipe of brightness steps only** (`"hq-replay"`): no bytes at all; the LQ is
  rebuilt at load time from the stored HQ and the recorded per-frame alphas in `params`
  (`degrade.recipe.replay`, the very function the degradation applied, checked equal when
  the pair is written). Storing it losslessly would cost ~6.5 MB per 24-frame 512 px pair,
  ten times the HQ, for frames that are a pure function of data already in the row.
* **LQ of any other recipe** (`"h264rgb-lossless"`): libx264rgb at -qp 0 in rgb24, which
  decodes to exactly the produced RGB bytes (pixel flicker re-renders full-size frames
  with a diffusion model; there is no smaller faithful form).
* **HQ** (`hq_format = "h264"`): the window re-encoded with libx264 yuv420p at `hq_crf`
  (10 by default, 0 = -qp 0) on its own, so a shard needs nothing but itself. The
  degradation is applied to the *decoded* HQ bytes, so the pair is exact: the LQ is the
  degradation of precisely the HQ frames the loader returns. (Referencing the curated
  clip by frame range would save bytes but makes shards depend on another folder and
  makes the loader decode from the clip's start for every window.)

Shards live in `OUT/shards/RECIPE-seedSEED/shard-<time>-<pid>-<hex>.parquet` (names no two
writers can share), the pairs of one or more whole clips each (the pipeline flushes at clip
boundaries, so a clip is durable before its manifest rows are written), cut at `max_bytes`
(256 MB by default) or `max_pairs`, one Parquet row group per few pairs so
the loader can read pairs without reading a whole shard. OUT may be a URL (s3://...): a shard
is then one PUT, as atomic as the local rename. `--format webdataset` writes the same pairs
as tar shards instead (`degrade.webdataset`).
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from stc.core import storage
from stc.core.names import SHARDS_DIR
from stc.core.storage import Location
from stc.degrade.codec import decode_h264
from stc.degrade.recipe import replay
from stc.degrade.video import lq_from_bitstream
from stc.manifests.io import new_part_name, write_table
from stc.manifests.schema import ManifestSchema

HQ_FORMAT = "h264"
LQ_LOWRES = "h264-lowres"
LQ_LOSSLESS = "h264rgb-lossless"
LQ_REPLAY = "hq-replay"
ROW_GROUP_PAIRS = 4

SHARD_SCHEMA = ManifestSchema(
    name="degraded_pair_shard",
    version=1,
    key="pair_id",
    arrow=pa.schema([
        ("pair_id", pa.string()),
        ("clip_id", pa.string()),
        ("recipe", pa.string()),
        ("seed", pa.int64()),
        ("window", pa.int32()),
        ("start_frame", pa.int64()),
        ("num_frames", pa.int32()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("hq_format", pa.string()),
        ("hq", pa.binary()),
        ("lq_format", pa.string()),
        ("lq", pa.binary()),
        ("lq_stream_width", pa.int32()),    # frame size inside the LQ stream
        ("lq_stream_height", pa.int32()),
        ("lq_up_interp", pa.string()),      # resize to width x height at load (h264-lowres)
        ("params", pa.string()),
    ]),
)

SHARD_GLOB = "shard-*.parquet"


def shard_dir(out: Location, recipe: str, seed: int) -> Location:
    """OUT/shards/RECIPE-seedSEED, a local folder or a URL prefix."""
    return storage.join(out, SHARDS_DIR, f"{recipe}-seed{seed}")


def decode_pair(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(lq, hq) of one shard row, each uint8 [T, H, W, 3] RGB."""
    what = f"pair {row['pair_id']}"
    hq = decode_h264(row["hq"], f"{what} HQ")
    if row["lq_format"] == LQ_LOWRES:
        lq = lq_from_bitstream(row["lq"], row["width"], row["height"], row["lq_up_interp"])
    elif row["lq_format"] == LQ_LOSSLESS:
        lq = decode_h264(row["lq"], f"{what} LQ")
    elif row["lq_format"] == LQ_REPLAY:
        lq = replay(hq, json.loads(row["params"]))
    else:
        raise ValueError(f"{what}: unknown lq_format {row['lq_format']!r}; upgrade stc")
    if lq.shape != hq.shape:
        raise ValueError(f"{what}: LQ {lq.shape} and HQ {hq.shape} differ; the shard is damaged")
    return lq, hq


class ShardWriter:
    """Buffer pairs and write them as one shard once `max_bytes` or `max_pairs` is reached
    (or `flush_seconds` passed); `flush()` returns the (relative shard path, row index) of
    every pair it wrote, so the caller records them in the pairs manifest only once the
    shard exists."""

    pattern = SHARD_GLOB

    def __init__(self, out: Location, recipe: str, seed: int, max_bytes: int = 256 << 20,
                 max_pairs: int = 512, flush_seconds: float = 300.0):
        self.out = storage.location(out)
        self.dir = shard_dir(self.out, recipe, seed)
        storage.makedirs(self.dir)
        self.max_bytes, self.max_pairs, self.flush_seconds = max_bytes, max_pairs, flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._extra: list[Any] = []
        self._bytes = 0
        self._last = time.monotonic()

    def _keep(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """What of a pair the shard stores."""
        return {k: row[k] for k in SHARD_SCHEMA.columns}

    def _write(self, rows: list[Mapping[str, Any]]) -> Location:
        path = storage.join(self.dir, new_part_name("shard"))
        write_table(SHARD_SCHEMA.table(rows), path, row_group_size=ROW_GROUP_PAIRS,
                    compression="none")
        return path

    def add(self, row: Mapping[str, Any], extra: Any = None) -> list[tuple[str, int, Any]]:
        self._rows.append(self._keep(row))
        self._extra.append(extra)
        self._bytes += len(row["hq"]) + len(row["lq"])
        if (self._bytes >= self.max_bytes or len(self._rows) >= self.max_pairs
                or time.monotonic() - self._last >= self.flush_seconds):
            return self.flush()
        return []

    def flush(self) -> list[tuple[str, int, Any]]:
        """Write the buffered pairs; [(shard path relative to out, row, extra), ...]."""
        self._last = time.monotonic()
        if not self._rows:
            return []
        rel = storage.relative(self._write(self._rows), self.out)
        done = [(rel, i, e) for i, e in enumerate(self._extra)]
        self._rows, self._extra, self._bytes = [], [], 0
        return done
