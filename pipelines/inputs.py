"""What a user may name as input: files, folders, globs, .txt and .parquet lists."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable

import pandas as pd

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts"}


# --- inputs ------------------------------------------------------------------------
def gather_inputs(inputs: Iterable[str]) -> list[tuple[str, str]]:
    """(path, source) for every video named by the inputs, in a stable order.

    An input is a folder (searched recursively for video extensions), a glob, a .txt
    list (one path per line, '#' comments), a .parquet list (column `path` or
    `source_path`, optional `source`), or a file. `source` is the folder or list the
    video came from, for per-source statistics. Files are kept whatever their
    extension when named directly: a broken one becomes an error row, not a silent skip.
    """
    found: dict[str, str] = {}

    def add(path: Path, source: str) -> None:
        key = str(path.expanduser().resolve())
        found.setdefault(key, source)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS:
                    add(f, p.resolve().name)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    q = Path(line)
                    add(q if q.is_absolute() else p.parent / q, p.stem)
        elif p.suffix == ".parquet" and p.exists():
            df = pd.read_parquet(p)
            col = "path" if "path" in df.columns else "source_path" if "source_path" in df.columns else None
            if col is None:
                raise FileNotFoundError(f"{p}: an input list needs a 'path' or 'source_path' column")
            sources = df["source"] if "source" in df.columns else [p.stem] * len(df)
            for path, source in zip(df[col], sources):
                add(Path(path), str(source))
        elif p.exists():
            add(p, p.resolve().parent.name)
        elif any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            for m in matches:
                if Path(m).is_file():
                    add(Path(m), Path(m).resolve().parent.name)
        else:
            # A missing path still gets its error row: the user asked for it.
            add(p, p.parent.name)
    return sorted(found.items())
