"""Reading and writing manifests as Parquet part files.

A manifest is a folder `NAME.parquet/` of `part-NNNNNN.parquet` files (or one plain
Parquet file, for reading). Writers flush small parts often and atomically, so an
interrupted run keeps everything it finished and a rerun can skip it. When a key appears
in several parts, the latest part wins: that is how a retried row replaces an old one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from stc.manifests.schema import ManifestError, ManifestSchema

_PART = re.compile(r"^part-(\d{6})\.parquet$")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only on success.

    Readers never see a half-written file, and a crash leaves only a dot-file that the
    next run ignores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600; give the result the permissions a plain open() would.
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_table(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _parts(path: Path) -> list[Path]:
    parts = [p for p in path.iterdir() if _PART.match(p.name)]
    return sorted(parts, key=lambda p: int(_PART.match(p.name).group(1)))


def manifest_files(path: str | Path) -> list[Path]:
    """The Parquet files of a manifest (a folder of parts or a single file), oldest first."""
    path = Path(path)
    if path.is_dir():
        return _parts(path)
    if path.is_file():
        return [path]
    return []


class ManifestWriter:
    """Append rows to a manifest folder, flushing a part every `flush_every` rows or
    `flush_seconds`, whichever comes first."""

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
        existing = _parts(self.path)
        self._next = int(_PART.match(existing[-1].name).group(1)) + 1 if existing else 0
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self.rows_written = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self._rows.append(dict(row))
        if (len(self._rows) >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        table = self.schema.table(self._rows)
        write_table(table, self.path / f"part-{self._next:06d}.parquet")
        self._next += 1
        self.rows_written += len(self._rows)
        self._rows = []

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        # Flush even on error or Ctrl-C: the rows finished so far are real work.
        self.flush()


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


def read_ray(path: str | Path, schema: ManifestSchema):
    """The manifest as a Ray Dataset, for pipelines that consume it on a cluster.

    Duplicated keys are resolved first on the driver (manifests are small: one row per
    clip), so downstream stages see exactly the rows `read_manifest` returns.
    """
    import ray

    return ray.data.from_arrow(read_table(path, schema))


def locate_manifest(path: str | Path, default_name: str = "manifest.parquet") -> Path:
    """`DIR/manifest.parquet` when given the curation folder DIR, else the path itself."""
    p = Path(path).expanduser()
    if p.name != default_name and (p / default_name).exists():
        p = p / default_name
    if not p.exists():
        raise ManifestError(f"manifest {path} not found: give the output folder of the pipeline "
                            f"or the {default_name} inside it")
    return p
