"""The one content hash of an input file: what says two inputs are the same footage.

`content_hash(loc)` is BLAKE2b with a 32-byte digest over every byte of the file (local path
or any fsspec URL), as 64 hex digits. The whole file, not a sample: two encodes that share
their first and last megabytes (the same container header, a re-cut middle) are different
footage, and a byte-for-byte copy is the only thing a hash may call a duplicate. Reading a
file once more costs far less than decoding it (hashlib's BLAKE2b runs at several hundred
MB/s on one core), and the decoder has usually just put it in the page cache.

The manifest column `source_hash` holds it; `stc curate` hashes only the inputs whose size
another input shares before the run (equal bytes need equal sizes), so a corpus of distinct
files costs one `stat` each up front.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable

from stc.core import storage
from stc.core.storage import Location

ALGORITHM = "blake2b-256"
_CHUNK = 4 << 20


def content_hash(loc: Location) -> str:
    """BLAKE2b-256 (hex) of the bytes of `loc`; OSError when it cannot be read."""
    h = hashlib.blake2b(digest_size=32)
    with storage.open_input(loc) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def identical_groups(paths: Iterable[Location]) -> list[list[Location]]:
    """Groups (two or more, in the given order) of inputs with byte-identical content.

    Only inputs whose size another input shares are read; one that cannot be stat'ed or read
    is in no group (it gets its own error row when curated)."""
    by_size: dict[int, list[Location]] = defaultdict(list)
    for p in paths:
        try:
            by_size[storage.size(p)].append(p)
        except OSError:
            continue
    groups: list[list[Location]] = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash: dict[str, list[Location]] = defaultdict(list)
        for p in same_size:
            try:
                by_hash[content_hash(p)].append(p)
            except OSError:
                continue
        groups += [g for g in by_hash.values() if len(g) > 1]
    return groups
