"""Reading and writing manifests as Parquet part files, committed through one index.

A manifest is a folder `NAME.parquet/` of part files (or one plain Parquet file, for
reading). Each part holds whole inputs (a pipeline's workers write them, one per task), so an
interrupted run keeps every input it committed, whole, and a rerun can skip it. Part names
carry a nanosecond time, the process id and random bits, so two writers can never overwrite
each other's parts. When a key appears in several parts, the latest part wins: that is how a
retried row replaces an old one.

**The index.** `NAME.parquet/_index.json` lists the committed parts, oldest first; it is
written last (a temp file renamed, or one PUT on object storage), so a reader that follows it
sees a run's parts all or not at all, and never a part a worker wrote but the driver has not
committed yet, nor the parts that compaction has merged. Parts the index does not list are
garbage, removed by the next run under the output lock (`open_commit`). A folder without an
index (stc before 0.2, or a folder a test or tool wrote with `ManifestWriter`) is read whole.

Outside stc, read the files the index names (`committed_files` gives them as paths):

    import json, pandas as pd
    idx = json.load(open("OUT/manifest.parquet/_index.json"))
    files = [f"OUT/manifest.parquet/{name}" for name in idx["parts"]]
    df = pd.read_parquet(files)                    # pandas (pyarrow engine)
    ds = ray.data.read_parquet(files)              # Ray Data
    duckdb.read_parquet(files)                     # DuckDB (a list, like read_parquet([...]) in SQL)

then keep the last row per key (`idx["key"]`, in part order) as `read_table` does: a retried
input's new rows are in a later part than its old ones (where `idx["group"]` names a column,
curated manifests' `source_id`, take each group's rows from the latest part holding it: a
redone source replaces all its old rows). After a run's compaction (64 parts or more) the
index names one part with one row per key. A plain directory read
(`pd.read_parquet("OUT/manifest.parquet")`) also sees parts of a run in progress.

**Provenance.** Rows written by the pipeline driver carry `prov_*` columns (`PROVENANCE`):
the node, worker and process that made them, the item's wall and CPU seconds, its per-stage
seconds and the stc version. stc's readers leave them out (a rerun's rows equal the first
run's); `read_table(..., provenance=True)` keeps them, to find a slow or faulty node.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from stc.core import storage
from stc.core.fs import OutsideRoot, atomic_path, within
from stc.core.paths import allowed_path
from stc.core.names import CLIP_MANIFEST
from stc.core.storage import Location
from stc.manifests.schema import ManifestError, ManifestSchema

# part-NNNNNN.parquet (stc 0.1) or part-<time ns, 20 digits>-<pid>-<hex>.parquet
_PART = re.compile(r"^part-(\d{6}|\d{20}-\d+-[0-9a-f]+)\.parquet$")
INDEX_FILE = "_index.json"          # "_": directory readers (pyarrow, pandas, Ray) skip it
INDEX_FORMAT = "stc-manifest-index"

# Who made a row and how long it took; nullable, absent from parts stc 0.1 wrote.
PROVENANCE = pa.schema([
    ("prov_run_id", pa.string()),            # one id per `stc` run (driver invocation)
    ("prov_node_id", pa.string()),           # Ray node id ("local" without Ray)
    ("prov_node_ip", pa.string()),
    ("prov_host", pa.string()),
    ("prov_worker_id", pa.string()),         # Ray actor id, or the process id without Ray
    ("prov_pid", pa.int64()),
    ("prov_started_at", pa.timestamp("ms", tz="UTC")),
    ("prov_seconds", pa.float64()),          # the item's wall seconds in its worker
    ("prov_cpu_seconds", pa.float64()),      # its CPU seconds, ffmpeg children included
    ("prov_step_seconds", pa.string()),      # JSON {stage: seconds}
    ("prov_stc_version", pa.string()),
])


def write_table(table: pa.Table, path: Location, **kwargs: Any) -> int:
    """Write one Parquet file atomically (local path or URL); returns its size in bytes."""
    path = storage.location(path)
    if isinstance(path, Path):
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, **kwargs)
            return tmp.stat().st_size
    # On object storage one PUT of the whole file is the atomic write.
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **kwargs)
    data = sink.getvalue().to_pybytes()
    storage.write_bytes(path, data)
    return len(data)


def read_parquet(path: Location) -> pa.Table:
    """A whole Parquet file from a local path or a URL."""
    path = storage.location(path)
    if isinstance(path, Path):
        return pq.read_table(path)
    return pq.read_table(pa.BufferReader(storage.read_bytes(path)))


def _part_order(p: Location) -> tuple[int, str]:
    stamp = _PART.match(storage.name(p)).group(1)
    # stc 0.1's numbered parts all come before time-stamped ones
    return (0, stamp) if len(stamp) == 6 else (1, stamp)


def _parts(path: Location) -> list[Location]:
    parts = [storage.join(path, n) for n in storage.listdir(path) if _PART.match(n)]
    return sorted(parts, key=_part_order)


def new_part_name(prefix: str = "part") -> str:
    """A part or shard file name no other writer, process or host can produce."""
    return f"{prefix}-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.parquet"


def read_index(path: Location) -> dict[str, Any] | None:
    """The committed index of a manifest folder (None when it has none)."""
    loc = storage.join(path, INDEX_FILE)
    try:
        data = json.loads(storage.read_text(loc))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError as exc:
        raise ManifestError(f"{loc} is damaged ({exc}); restore it or delete the folder") from exc
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT \
            or not isinstance(data.get("parts"), list):
        raise ManifestError(f"{loc} is not an stc manifest index; restore it or delete the folder")
    return data


def write_index(path: Location, parts: Iterable[str], key: str | None = None,
                **fields: Any) -> None:
    """Commit `parts` (names inside `path`, oldest first) as the manifest's parts: one atomic
    write, the last one of a commit."""
    doc = {"format": INDEX_FORMAT, "version": 1, "key": key,
           "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           **fields, "parts": list(parts)}
    storage.write_text(storage.join(path, INDEX_FILE), json.dumps(doc, indent=0))


def manifest_files(path: Location) -> list[Location]:
    """The committed Parquet files of a manifest (the parts its index lists, or every part
    of a folder without an index, or a single file; local or a URL), oldest first."""
    path = storage.location(path)
    index = read_index(path)
    if index is not None:
        return [storage.join(path, n) for n in index["parts"]]
    if storage.isdir(path):
        return _parts(path)
    if storage.isfile(path):
        return [path]
    return []


def committed_files(path: Location) -> list[str]:
    """`manifest_files` as strings: what to give pandas, Ray Data or DuckDB."""
    return [str(f) for f in manifest_files(path)]


class ManifestCommit:
    """The driver's side of a run: the parts committed so far, and the index that lists them.

    Open only under the folder's output lock (`open_commit`). Workers write parts
    (`write_part`); `add` records their names; `commit` rewrites the index with every part
    added so far (one small write, however many parts: the driver never touches rows)."""

    def __init__(self, path: Location, schema: ManifestSchema):
        self.path, self.schema = storage.location(path), schema
        index = read_index(self.path)
        if index is None:
            # A new folder, or one stc 0.1 wrote: its parts are all committed.
            storage.makedirs(self.path)
            self.parts = [storage.name(p) for p in _parts(self.path)] \
                if storage.isdir(self.path) else []
            self._write()
        else:
            self.parts = list(index["parts"])
            listed = set(self.parts)
            # Written by workers of a run that died before committing them, or merged by a
            # compaction that died before removing them: never read, redone or kept merged.
            for name in storage.listdir(self.path):
                if _PART.match(name) and name not in listed:
                    storage.remove(storage.join(self.path, name))
        self._new = 0

    def add(self, names: Iterable[str]) -> None:
        for n in names:
            self.parts.append(n)
            self._new += 1

    @property
    def pending(self) -> int:
        """Parts added since the last commit."""
        return self._new

    def commit(self) -> None:
        if self._new:
            self._write()

    def _write(self) -> None:
        write_index(self.path, self.parts, self.schema.key, schema=self.schema.name,
                    group=self.schema.group)
        self._new = 0


def open_commit(path: Location, schema: ManifestSchema) -> ManifestCommit:
    """Start committing to manifest `path` (under its output lock)."""
    return ManifestCommit(path, schema)


def write_part(path: Location, schema: ManifestSchema, rows: list[Mapping[str, Any]],
               provenance: list[Mapping[str, Any]] | None = None) -> tuple[str, int]:
    """Write `rows` (and one provenance record per row) as a new part of manifest `path`;
    returns (part name, bytes). The part is not read by anyone until it is committed."""
    table = schema.table(rows)
    if provenance is not None:
        prov = pa.Table.from_pylist(list(provenance), schema=PROVENANCE)
        for f in PROVENANCE:
            table = table.append_column(f, prov.column(f.name))
    name = new_part_name()
    return name, write_table(table, storage.join(path, name))


class ManifestWriter:
    """Append rows to a manifest folder.

    `add_item(rows)` writes the rows of one input as one part at once: an input is in the
    manifest whole or not at all, which is what resume relies on. `add(row)` buffers single
    rows and flushes every `flush_every` rows or `flush_seconds`.
    """

    def __init__(self, path: Location, schema: ManifestSchema, flush_every: int = 16,
                 flush_seconds: float = 30.0):
        self.path = storage.location(path)
        if storage.isfile(self.path):
            raise ManifestError(
                f"{self.path} is a single Parquet file; writers append to a folder of parts. "
                "Move it aside or choose another output folder."
            )
        storage.makedirs(self.path)
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
        name, size = write_part(self.path, self.schema, self._rows)
        index = read_index(self.path)
        if index is not None:       # a folder stc's driver commits to: list the part too
            write_index(self.path, [*index["parts"], name], self.schema.key,
                        schema=self.schema.name, group=self.schema.group)
        self.bytes_written += size
        self.rows_written += len(self._rows)
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


def compact(path: Location, schema: ManifestSchema, min_parts: int = 64,
            commit: ManifestCommit | None = None) -> bool:
    """Merge a folder of many small parts into one (latest row per key, provenance kept).

    Only while holding the folder's output lock. The merged part is written, then the index
    switched to it in one write, then the old parts removed: a reader following the index
    sees the old parts or the merged one, never both, wherever a kill stops it (the next
    run removes what the index no longer lists)."""
    path = storage.location(path)
    commit = commit or open_commit(path, schema)
    if len(commit.parts) < min_parts:
        return False
    old = manifest_files(path)
    name = new_part_name()
    write_table(read_table(path, schema, provenance=True), storage.join(path, name))
    commit.parts = [name]
    commit._write()                         # the pointer switch
    for p in old:
        storage.remove(p)
    return True


def _read_part(f: Location, schema: ManifestSchema, validate: bool,
               provenance: bool) -> pa.Table:
    try:
        t = read_parquet(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{f} is not a readable Parquet file ({exc}); delete it and rerun") from exc
    if validate:
        schema.check_table(t, str(f))
    out = schema.conform(t)
    if provenance:
        for fld in PROVENANCE:
            col = t.column(fld.name).cast(fld.type) if fld.name in t.column_names \
                else pa.nulls(t.num_rows, fld.type)
            out = out.append_column(fld, col)
    return out


def read_table(path: Location, schema: ManifestSchema, validate: bool = True,
               provenance: bool = False) -> pa.Table:
    """All committed rows of a manifest, one per key (latest part wins; for a schema with a
    group, each group's rows all come from the latest part holding it), sorted by key.
    Parts are read in parallel (one GET each on object storage). `provenance`: keep the
    `prov_*` columns (null for rows written before stc recorded them)."""
    path = storage.location(path)
    files = manifest_files(path)
    if not files:
        if (isinstance(path, Path) and path.is_dir()) or read_index(path) is not None:
            empty = schema.with_metadata().empty_table()
            if provenance:
                for fld in PROVENANCE:
                    empty = empty.append_column(fld, pa.nulls(0, fld.type))
            return empty
        raise ManifestError(f"manifest {path} does not exist; run the pipeline that writes it first")
    if len(files) == 1:
        tables = [_read_part(files[0], schema, validate, provenance)]
    else:
        with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
            tables = list(pool.map(lambda f: _read_part(f, schema, validate, provenance), files))
    table = pa.concat_tables(tables)
    if schema.group:
        part = [i for i, t in enumerate(tables) for _ in range(t.num_rows)]
        groups = table.column(schema.group).to_pylist()
        latest = dict(zip(groups, part))
        keep = [i for i, (g, p) in enumerate(zip(groups, part)) if g is None or latest[g] == p]
        if len(keep) != len(groups):
            table = table.take(keep)
    keys = table.column(schema.key).to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    if len(last) != len(keys):
        table = table.take(sorted(last.values()))
    return table.sort_by(schema.key)


def read_manifest(path: Location, schema: ManifestSchema, validate: bool = True):
    """The manifest as a pandas DataFrame (one row per key, sorted by key)."""
    return read_table(path, schema, validate).to_pandas()


def finished_keys(path: Location, schema: ManifestSchema, by: str | None = None) -> dict[str, str]:
    """key -> status of every row already written (empty when nothing exists yet). With
    `by` (a column, e.g. the schema's group), the finished values of that column instead,
    each "error" when any of its rows is an error (so a retry redoes the whole group)."""
    if not manifest_files(path):
        return {}
    table = read_table(path, schema, validate=False)
    status = table.column("status").to_pylist() if "status" in table.column_names else [""] * len(table)
    done: dict[str, str] = {}
    for k, st in zip(table.column(by or schema.key).to_pylist(), status):
        done[k] = "error" if done.get(k) == "error" else st
    return done


def locate_manifest(path: Location, default_name: str = CLIP_MANIFEST) -> Location:
    """`DIR/manifest.parquet` when given the curation folder DIR, else the path itself
    (a local `Path`, or a URL string)."""
    p = storage.location(path)
    if storage.name(p) != default_name and storage.exists(storage.join(p, default_name)):
        p = storage.join(p, default_name)
    if not storage.exists(p):
        raise ManifestError(f"manifest {path} not found: give the output folder of the pipeline "
                            f"or the {default_name} inside it")
    return p


# --- paths a manifest names -----------------------------------------------------------------
# Parquet metadata key: JSON list of folders (besides the manifest's own) that its paths
# point into, e.g. Stage II's val_clips.parquet, a subset of a curated manifest that keeps
# absolute paths into the curated folder.
SOURCE_ROOTS = b"stc.source_roots"


def with_source_roots(table: pa.Table, roots: list[Location]) -> pa.Table:
    """`table` with `roots` recorded, for `ManifestPaths` to honour (see there)."""
    meta = dict(table.schema.metadata or {})
    meta[SOURCE_ROOTS] = json.dumps([str(r) for r in roots]).encode()
    return table.replace_schema_metadata(meta)


def source_roots(manifest: Location) -> list[str]:
    """The roots a manifest records (none for most)."""
    files = manifest_files(manifest)
    if not files:
        return []
    f = files[-1]
    schema = pq.read_schema(f) if isinstance(f, Path) else read_parquet(f).schema
    raw = (schema.metadata or {}).get(SOURCE_ROOTS)
    try:
        roots = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [r for r in roots if isinstance(r, str)] if isinstance(roots, list) else []


class ManifestPaths:
    """Turns the paths a manifest names (clip_path, shard paths) into files to open, refusing
    those that lead outside the manifest's folder.

    A manifest is data that may come from elsewhere; `../../etc/passwd` or
    `/proc/self/environ` in it must not make stc read (and copy into shards, or report on)
    files the user never meant to give. A refusal is an `OutsideRoot` whose message is the
    same whether the outside file exists or not. `allow_outside` lifts the rule.

    A recorded source root (`with_source_roots`) lets a path out only to a clip that the
    curated manifest in that root lists itself: recording "/" in a crafted file gains nothing
    beyond what some stc output folder already vouches for.
    """

    def __init__(self, manifest: Location, root: Location | None = None,
                 allow_outside: bool = False, what: str = "clip_path"):
        self.manifest = manifest
        self.root = root if root is not None else storage.parent(storage.location(manifest))
        self.allow_outside, self.what = allow_outside, what
        self.roots = source_roots(manifest) if not allow_outside else []
        self._listed: dict[str, set[str]] = {}

    def __call__(self, text: str) -> Location:
        try:
            # The one path policy (core.paths): resolved, inside the manifest's folder.
            return allowed_path(text, [self.root], what=self.what, where=self.manifest,
                                allow_outside=self.allow_outside)
        except OutsideRoot:
            for r in self.roots:
                target = within(r, text)
                if target is not None and str(target) in self._vouched(r):
                    return target
            raise

    def _vouched(self, root: str) -> set[str]:
        """The resolved clip paths the curated manifest in `root` lists."""
        if root not in self._listed:
            found: set[str] = set()
            for f in manifest_files(storage.join(root, CLIP_MANIFEST)):
                try:
                    col = read_parquet(f).column("clip_path").to_pylist()
                except (KeyError, pa.ArrowInvalid, OSError):
                    continue
                found |= {str(t) for t in (within(root, c) for c in col if c) if t is not None}
            self._listed[root] = found
        return self._listed[root]
