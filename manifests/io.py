"""Reading and writing manifests as Parquet part files.

A manifest is a folder `NAME.parquet/` of part files (or one plain Parquet file, for
reading). Writers add the rows of one input as one atomic part, so an interrupted run keeps
every input it finished, whole, and a rerun can skip it. Part names carry a nanosecond time,
the process id and random bits, so two writers can never overwrite each other's parts (the
output lock keeps them apart anyway). When a key appears in several parts, the latest part
wins: that is how a retried row replaces an old one.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from stc.core.fs import atomic_path
from stc.core.names import CLIP_MANIFEST
from stc.manifests.schema import ManifestError, ManifestSchema

# part-NNNNNN.parquet (stc 0.1) or part-<time ns, 20 digits>-<pid>-<hex>.parquet
_PART = re.compile(r"^part-(\d{6}|\d{20}-\d+-[0-9a-f]+)\.parquet$")


def write_table(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _part_order(p: Path) -> tuple[int, str]:
    stamp = _PART.match(p.name).group(1)
    # stc 0.1's numbered parts all come before time-stamped ones
    return (0, stamp) if len(stamp) == 6 else (1, stamp)


def _parts(path: Path) -> list[Path]:
    parts = [p for p in path.iterdir() if _PART.match(p.name)]
    return sorted(parts, key=_part_order)


def new_part_name(prefix: str = "part") -> str:
    """A part or shard file name no other writer, process or host can produce."""
    return f"{prefix}-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.parquet"


def manifest_files(path: str | Path) -> list[Path]:
    """The Parquet files of a manifest (a folder of parts or a single file), oldest first."""
    path = Path(path)
    if path.is_dir():
        return _parts(path)
    if path.is_file():
        return [path]
    return []


class ManifestWriter:
    """Append rows to a manifest folder.

    `add_item(rows)` writes the rows of one input as one part at once: an input is in the
    manifest whole or not at all, which is what resume relies on. `add(row)` buffers single
    rows and flushes every `flush_every` rows or `flush_seconds`.
    """

    def __init__(self, path: str | Path, schema: ManifestSchema, flush_every: int = 16,
                 flush_seconds: float = 30.0):
        self.path = Path(path)
        if self.path.is_file():
            raise ManifestError(
                f"{self.path} is a single Parquet file; writers append to a folder of parts. "
                "Move it aside or choose another output folder."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self.bytes_written = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self._rows.append(dict(row))
        if (len(self._rows) >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def add_item(self, rows: list[Mapping[str, Any]]) -> None:
        self._rows.extend(dict(r) for r in rows)
        self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        table = self.schema.table(self._rows)
        target = self.path / new_part_name()
        write_table(table, target)
        self.rows_written += len(self._rows)
        self.bytes_written += target.stat().st_size
        self._rows = []

    def discard(self) -> int:
        """Drop buffered rows (after a failed flush); returns how many were dropped."""
        n, self._rows = len(self._rows), []
        return n

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        # Flush even on error or Ctrl-C: the rows finished so far are real work.
        self.flush()


def compact(path: str | Path, schema: ManifestSchema, min_parts: int = 64) -> bool:
    """Merge a folder of many small parts into one (latest row per key), atomically.

    Only while holding the folder's output lock. The merged part is written before the old
    parts are removed, and readers take the latest row per key, so a crash in between
    leaves duplicates that read the same."""
    path = Path(path)
    parts = manifest_files(path) if path.is_dir() else []
    if len(parts) < min_parts:
        return False
    table = read_table(path, schema)
    write_table(table, path / new_part_name())
    for p in parts:
        p.unlink()
    return True


def read_table(path: str | Path, schema: ManifestSchema, validate: bool = True) -> pa.Table:
    """All rows of a manifest, one per key (latest part wins), sorted by key."""
    path = Path(path)
    files = manifest_files(path)
    if not files:
        if path.is_dir():
            return schema.with_metadata().empty_table()
        raise ManifestError(f"manifest {path} does not exist; run the pipeline that writes it first")
    tables = []
    for f in files:
        try:
            t = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ManifestError(f"{f} is not a readable Parquet file ({exc}); delete it and rerun") from exc
        if validate:
            schema.check_table(t, str(f))
        tables.append(t.select(schema.columns).cast(schema.with_metadata()))
    table = pa.concat_tables(tables)
    keys = table.column(schema.key).to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    if len(last) != len(keys):
        table = table.take(sorted(last.values()))
    return table.sort_by(schema.key)


def read_manifest(path: str | Path, schema: ManifestSchema, validate: bool = True):
    """The manifest as a pandas DataFrame (one row per key, sorted by key)."""
    return read_table(path, schema, validate).to_pandas()


def finished_keys(path: str | Path, schema: ManifestSchema) -> dict[str, str]:
    """key -> status of every row already written (empty when nothing exists yet)."""
    if not manifest_files(path):
        return {}
    table = read_table(path, schema, validate=False)
    status = table.column("status").to_pylist() if "status" in table.column_names else [""] * len(table)
    return dict(zip(table.column(schema.key).to_pylist(), status))


def locate_manifest(path: str | Path, default_name: str = CLIP_MANIFEST) -> Path:
    """`DIR/manifest.parquet` when given the curation folder DIR, else the path itself."""
    p = Path(path).expanduser()
    if p.name != default_name and (p / default_name).exists():
        p = p / default_name
    if not p.exists():
        raise ManifestError(f"manifest {path} not found: give the output folder of the pipeline "
                            f"or the {default_name} inside it")
    return p
