"""Bytes `stc curate` will write for a list of sources, before it runs (`core.space`).

Every frame of a source may end up in a clip (a clip is `crop.size` squared, x264 at
`encode.crf`); what curation drops is not known before it looks, so the estimate is the
one the disk must allow for. Beside the clips each source writes its manifest rows (one
part per task, ~30 KB with the identity embedding and evidence columns) and its shots file.
"""

from __future__ import annotations

import os
from typing import Any

from stc.core import storage
from stc.core.space import sampled, x264_bytes
from stc.core.video import VideoError, probe
from stc.curation.config import CurateConfig

# [stc: measured on the shared clips: manifest part 25-37 KB per source, shots/*.json 0.5 KB]
BYTES_PER_SOURCE = 36_000


def source_frames(path: str) -> float | None:
    """Frames of one local source from its header (None: unreadable, or on object storage)."""
    if storage.is_url(path):
        return None
    try:
        info = probe(path)
    except (VideoError, OSError):
        return None
    return float(info.num_frames or round(info.fps * info.duration))


def _file_bytes(path: str) -> float:
    try:
        return float(os.path.getsize(path)) if not storage.is_url(path) else 0.0
    except OSError:
        return 0.0


def curate_bytes(items: list[dict[str, Any]], cfg: CurateConfig) -> float | None:
    """Bytes the sources in `items` (`source_path`) will take at most; None when none of
    them can be probed (all on object storage)."""
    frames = sampled([it["source_path"] for it in items], source_frames, _file_bytes)
    if not frames:
        return None
    return (x264_bytes(sum(frames), cfg.crop.size, cfg.crop.size, cfg.encode.crf)
            + BYTES_PER_SOURCE * len(items))
