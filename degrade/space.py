"""Bytes `stc degrade` will write for a list of curated clips, before it runs (`core.space`).

A pair stores its HQ window re-encoded at `hq_crf` and `size` (the clip's own bytes per
frame, rescaled from the clip's CRF and size) and its LQ: BFVR's low-resolution bitstream
(a few % of the HQ), nothing for a brightness-only recipe (replayed at load time), or
lossless RGB otherwise and in mp4 pairs; plus one manifest row per pair.
"""

from __future__ import annotations

import os

from stc.core.space import x264_bits_per_pixel
from stc.core.video import VideoError, probe
from stc.degrade.recipe import Recipe
from stc.degrade.windows import WindowOptions

# [stc: measured on 3 real curated clips, recipe bfvr: LQ 16.7 KB against HQ 645 KB per
# 24-frame 512 px pair (2.6%); 5% leaves room for busier footage]
LOWRES_LQ_FRACTION = 0.05
# [stc: x264rgb -qp 0 of 512 px face frames, ~6.5 MB per 24-frame pair (degrade.shards):
# 0.35 of the raw RGB bytes]
LOSSLESS_LQ_OF_RAW = 0.35
# [stc: measured, pairs.parquet parts: ~2 KB per pair row with its parameters, and ~10 KB
# per part]
BYTES_PER_PAIR_ROW = 2_000
BYTES_PER_CLIP = 10_000


def windowed_frames(frames: int, opts: WindowOptions) -> tuple[int, int]:
    """(pairs, frames stored) for a clip of `frames` frames: whole windows only, as
    `degrade.windows.iter_windows` cuts them."""
    if not opts.window:
        return (1, frames) if frames else (0, 0)
    if frames < opts.window:
        return 0, 0
    n = (frames - opts.window) // (opts.stride or opts.window) + 1
    if opts.max_windows:
        n = min(n, opts.max_windows)
    return n, n * opts.window


def lq_kind(recipe: Recipe, format: str) -> str:
    if format == "mp4" or (recipe.replayable and format == "webdataset"):
        return "lossless"
    if recipe.steps and recipe.steps[-1].kind == "bfvr":
        return "lowres"
    return "replay" if recipe.replayable else "lossless"


def clip_pair_bytes(clip_path: str, clip_frames: int, clip_size: int, clip_crf: float | None,
                    opts: WindowOptions, lq: str) -> float:
    """Bytes of one curated clip's pairs (0 for a clip that gives none or is missing)."""
    try:
        clip_bytes = os.path.getsize(clip_path)
    except OSError:
        return BYTES_PER_CLIP           # an error row
    if clip_frames <= 0:                # not in the manifest: the clip's header says
        try:
            clip_frames = probe(clip_path).num_frames
        except (VideoError, OSError):
            return BYTES_PER_CLIP
    pairs, stored = windowed_frames(clip_frames, opts)
    if not pairs or clip_frames <= 0:
        return BYTES_PER_CLIP
    scale = (opts.size / clip_size) ** 2 if clip_size else 1.0
    rate = x264_bits_per_pixel(opts.hq_crf) / x264_bits_per_pixel(
        opts.hq_crf if clip_crf is None else clip_crf)
    hq = clip_bytes / clip_frames * stored * scale * rate
    lq_bytes = {"lowres": LOWRES_LQ_FRACTION * hq, "replay": 0.0,
                "lossless": LOSSLESS_LQ_OF_RAW * 3 * opts.size ** 2 * stored}[lq]
    return hq + lq_bytes + BYTES_PER_PAIR_ROW * pairs + BYTES_PER_CLIP
