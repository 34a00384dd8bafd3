"""A manifest schema: an Arrow schema with a name, a version and a key column.

The name and version travel in the Parquet file metadata, so a reader can tell a
curated-clip manifest from a pairs manifest, and an old file from a new one, before it
trusts a single column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa

META_NAME = b"stc.schema"
META_VERSION = b"stc.schema_version"


class ManifestError(ValueError):
    """A manifest is missing, of the wrong kind, or has invalid rows."""


@dataclass(frozen=True)
class ManifestSchema:
    name: str
    version: int
    arrow: pa.Schema
    key: str
    # Row-level checks beyond types: each returns an error message or None.
    row_checks: tuple[Callable[[Mapping[str, Any]], str | None], ...] = field(default=())
    # Rows that are replaced together (e.g. all rows of one input): a reader takes a group's
    # rows from the latest part holding it only, so redoing an input drops its old rows.
    group: str | None = None
    # Columns added after the first version: a part written before them lacks them and is
    # read with nulls there (what "not recorded" means), not refused.
    added: frozenset[str] = field(default=frozenset())

    @property
    def columns(self) -> list[str]:
        return self.arrow.names

    def with_metadata(self) -> pa.Schema:
        return self.arrow.with_metadata(
            {META_NAME: self.name.encode(), META_VERSION: str(self.version).encode()}
        )

    def table(self, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
        """Rows (dicts; missing columns become null) as a table of this schema."""
        rows = list(rows)
        extra = sorted({k for r in rows for k in r} - set(self.columns))
        if extra:
            raise ManifestError(f"{self.name} rows carry unknown column(s) {extra}")
        try:
            return pa.Table.from_pylist(rows, schema=self.with_metadata())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ManifestError(f"{self.name} rows do not fit the schema: {exc}") from exc

    def conform(self, table: pa.Table) -> pa.Table:
        """`table`'s columns of this schema, in its order and types; an `added` column the
        table lacks comes back null."""
        for c in self.added:
            if c not in table.column_names:
                table = table.append_column(self.arrow.field(c),
                                            pa.nulls(table.num_rows, self.arrow.field(c).type))
        return table.select(self.columns).cast(self.with_metadata())

    def check_table(self, table: pa.Table, where: str) -> None:
        """Raise ManifestError naming `where` unless `table` fits this schema."""
        meta = table.schema.metadata or {}
        name = meta.get(META_NAME, b"").decode()
        if name and name != self.name:
            raise ManifestError(f"{where} is a {name!r} manifest, expected {self.name!r}")
        version = meta.get(META_VERSION)
        if version is not None and int(version) > self.version:
            raise ManifestError(
                f"{where} has {self.name} schema version {int(version)}, newer than this "
                f"stc understands ({self.version}); upgrade stc"
            )
        missing = [c for c in self.columns if c not in table.column_names and c not in self.added]
        if missing:
            raise ManifestError(f"{where} lacks column(s) {missing} of the {self.name} manifest")
        for f in self.arrow:
            if f.name not in table.column_names:
                continue
            got = table.schema.field(f.name).type
            if got != f.type and not (pa.types.is_null(got)):
                raise ManifestError(f"{where}: column {f.name!r} is {got}, expected {f.type}")
        if self.row_checks:
            for i, row in enumerate(self.conform(table).to_pylist()):
                for check in self.row_checks:
                    msg = check(row)
                    if msg:
                        raise ManifestError(f"{where}: row {i} ({row.get(self.key)}): {msg}")
