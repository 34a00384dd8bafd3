"""Disk space a run will take, told before it starts: the x264 rate model and the check.

A pipeline that writes video (curate's clips, degrade's HQ windows) knows before it runs how
many frames at what size and CRF it may write; the bytes follow from x264's rate at that
CRF. Checking them against the free space up front turns "the disk filled up an hour in"
into one sentence before the first worker starts (the run still stops cleanly and resumes
if the estimate was short: `pipelines.driver`).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from stc.core.fs import DiskFull, _size

# [stc: measured, x264 veryfast yuv420p CRF 10 on the 512x512 face clips `stc curate` cut
# from the shared clips (8 clips, 1094 frames): 0.64-0.92 bits per pixel, mean 0.80; the
# upper middle is taken so that a full disk is found before the run, not in it]
BITS_PER_PIXEL_CRF10 = 0.85
# [stc: x264's CRF scale: +6 halves the bit rate, -6 doubles it (the rule of thumb its
# documentation gives; within ~20% between CRF 4 and 28 on the shared clips)]
CRF_HALVING_STEP = 6.0
# [stc: never below what the encoder writes for a still picture at a very high CRF]
MIN_BITS_PER_PIXEL = 0.005


def x264_bits_per_pixel(crf: float) -> float:
    """Bits per pixel of a yuv420p libx264 encode of face footage at `crf` (0: lossless,
    about 6x the CRF 10 rate on camera footage)."""
    if crf <= 0:
        return BITS_PER_PIXEL_CRF10 * 6.0
    return max(MIN_BITS_PER_PIXEL, BITS_PER_PIXEL_CRF10 * 2 ** ((10.0 - crf) / CRF_HALVING_STEP))


def x264_bytes(frames: float, width: int, height: int, crf: float) -> float:
    return frames * width * height * x264_bits_per_pixel(crf) / 8


T = TypeVar("T")


def sampled(items: list[T], measure: Callable[[T], float | None], weight: Callable[[T], float],
            most: int = 64) -> list[float]:
    """`measure(item)` for every item, from at most `most` real measurements spread over the
    list: the others get `weight(item)` times the measured per-weight rate (e.g. frames from
    file bytes), so an estimate over a million inputs opens only `most` of them. Items that
    cannot be measured or weighed count as the mean of those that could."""
    if not items:
        return []
    step = max(1, len(items) // most)
    probed = {i: measure(items[i]) for i in range(0, len(items), step)}
    ok = {i: v for i, v in probed.items() if v is not None}
    if not ok:
        return []
    mean = sum(ok.values()) / len(ok)
    w_ok = sum(weight(items[i]) for i in ok)
    rate = sum(ok.values()) / w_ok if w_ok > 0 else None
    out = []
    for i, it in enumerate(items):
        if i in ok:
            out.append(ok[i])
        elif i in probed:                  # opened and unreadable: it will write an error row
            out.append(0.0)
        else:
            w = weight(it) if rate is not None else 0.0
            out.append(w * rate if w > 0 else mean)
    return out


def folder_bytes(folder: str | Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist yet)."""
    root = Path(folder)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


class NotEnoughSpace(DiskFull):
    """A run refused before it started: its estimated output does not fit the free space."""


def free_bytes(folder: str | Path) -> int:
    """Free bytes on the file system that holds `folder` (its nearest existing parent)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_free_space(folder: str | Path, needed: float, what: str, units: Iterable[str] = ()
                     ) -> None:
    """Refuse a run whose estimated output (`needed` bytes) is larger than the free space
    of `folder`, in one sentence naming both and the ways out."""
    free = free_bytes(folder)
    if needed <= free:
        return
    detail = f" ({', '.join(units)})" if units else ""
    raise NotEnoughSpace(
        errno.ENOSPC,
        f"not enough space in {folder} for this run: {what} needs about {_size(needed)}"
        f"{detail}, and {_size(free)} is free. Nothing was written. Free space, give another "
        "--out, or do part of the inputs (--limit N); --no-space-check runs anyway (the run "
        "stops cleanly and resumes if the disk fills up)")
