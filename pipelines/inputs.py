"""What a user may name as input: files, folders, globs, .txt and .parquet lists, local or
in object storage (s3://bucket/prefix/, gs://..., any fsspec URL)."""

from __future__ import annotations

import glob
import io
from pathlib import Path
from typing import Iterable

import pandas as pd

from stc.core import storage
from stc.core.names import CLIP_MANIFEST, CURATE_CONFIG, ENHANCE_STATS, LOCK_FILE, PAIRS_MANIFEST
from stc.core.paths import resolved, walk_files

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts"}


# Files only stc writes: a folder holding one is an stc output (curated clips, pairs,
# restored videos), never raw footage, even when it lies inside an input folder.
OUTPUT_MARKERS = (CURATE_CONFIG, CLIP_MANIFEST, PAIRS_MANIFEST, ENHANCE_STATS, LOCK_FILE)


def is_output_folder(folder: Path) -> bool:
    return any((folder / m).exists() for m in OUTPUT_MARKERS)


# --- inputs ------------------------------------------------------------------------
def gather_inputs(inputs: Iterable[str]) -> list[tuple[str, str]]:
    """(path, source) for every video named by the inputs, in a stable order.

    An input is a folder (searched recursively for video extensions), a glob, a .txt
    list (one path per line, '#' comments), a .parquet list (column `path` or
    `source_path`, optional `source`), or a file. `source` is the folder or list the
    video came from, for per-source statistics. Files are kept whatever their
    extension when named directly: a broken one becomes an error row, not a silent skip.
    A folder is walked through links to other folders (each real folder once: a link loop
    ends), and past stc's own output folders (`is_output_folder`): a run's clips are not
    footage for the next run.
    Any of these may be a URL (`s3://raw/` is the folder `raw`), and lists may name URLs.
    """
    found: dict[str, str] = {}

    def add(path: Path | str, source: str) -> None:
        if storage.is_url(path):
            found.setdefault(str(storage.location(path)), source)
            return
        found.setdefault(str(resolved(path)), source)

    for item in inputs:
        if storage.is_url(item):
            _gather_url(item, add)
            continue
        p = Path(item)
        if p.is_dir():
            # Links are followed (footage is often linked in from other disks), each real
            # folder once; a video name that leads nowhere still gets its error row.
            for f in walk_files(p, prune=is_output_folder):
                if f.suffix.lower() in VIDEO_EXTENSIONS and (f.is_file() or f.is_symlink()):
                    add(f, resolved(p).name)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line and storage.is_url(line):
                    add(line, p.stem)
                elif line:
                    q = Path(line)
                    add(q if q.is_absolute() else p.parent / q, p.stem)
        elif p.suffix == ".parquet" and p.exists():
            df = pd.read_parquet(p)
            col = "path" if "path" in df.columns else "source_path" if "source_path" in df.columns else None
            if col is None:
                raise FileNotFoundError(f"{p}: an input list needs a 'path' or 'source_path' column")
            sources = df["source"] if "source" in df.columns else [p.stem] * len(df)
            for path, source in zip(df[col], sources):
                add(path if storage.is_url(path) else Path(path), str(source))
        elif p.exists() or p.is_symlink():
            add(p, resolved(p).parent.name)
        elif any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            for m in matches:
                if Path(m).is_file() or Path(m).is_symlink():
                    add(Path(m), resolved(m).parent.name)
        else:
            # A missing path still gets its error row: the user asked for it.
            add(p, p.parent.name)
    return sorted(found.items())


def _gather_url(item: str, add) -> None:
    """`gather_inputs` for one URL: a prefix, a glob, a .txt or .parquet list, an object."""
    loc = storage.location(item)
    if any(c in item.split("://", 1)[1] for c in "*?["):
        for url in storage.expand_glob(item):
            add(url, storage.name(storage.parent(url)))
    elif storage.suffix(loc) == ".txt" and storage.isfile(loc):
        for line in storage.read_text(loc).splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                absolute = storage.is_url(line) or line.startswith("/")
                add(line if absolute else storage.join(storage.parent(loc), line), storage.stem(loc))
    elif storage.suffix(loc) == ".parquet" and storage.isfile(loc):
        df = pd.read_parquet(io.BytesIO(storage.read_bytes(loc)))
        col = "path" if "path" in df.columns else "source_path" if "source_path" in df.columns else None
        if col is None:
            raise FileNotFoundError(f"{loc}: an input list needs a 'path' or 'source_path' column")
        sources = df["source"] if "source" in df.columns else [storage.stem(loc)] * len(df)
        for path, source in zip(df[col], sources):
            add(path if storage.is_url(path) else Path(path), str(source))
    elif storage.isdir(loc):
        for url in storage.find_files(loc):
            if storage.suffix(url).lower() in VIDEO_EXTENSIONS:
                add(url, storage.name(loc))
    else:
        # A missing object still gets its error row: the user asked for it.
        add(loc, storage.name(storage.parent(loc)))
