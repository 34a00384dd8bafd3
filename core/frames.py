"""Frame folders as videos: `input/*.png` in, `output/*.png` out, the same names.

Restoration tools are often fed image sequences (an editor's export, a film scan); stc takes
a folder of images wherever it takes a video. The frames are the folder's images in natural
name order (`f2.png` before `f10.png`); all must have one size. A folder written by
`FolderWriter` appears whole or not at all: the images go to a temp folder beside it that is
renamed into place on `close()`.

`open_frames` / `open_writer` pick a video or a folder, so a caller handles both alike.
"""

from __future__ import annotations

import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from stc.core.fs import TEMP_PREFIX
from stc.core.video import FrameSink, FrameWriter, VideoError, VideoInfo, iter_frames, probe

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_FOLDER_FPS = 25.0       # an image sequence carries no rate; outputs are images too


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def frame_files(folder: str | Path) -> list[Path]:
    """The images directly inside `folder`, in natural name order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(TEMP_PREFIX)]
    return sorted(files, key=_natural_key)


def is_frame_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and bool(frame_files(p))


def read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoError(f"{path}: not a readable image; re-export or remove it")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def probe_folder(folder: str | Path, fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
    files = frame_files(folder)
    if not files:
        raise VideoError(f"{folder}: holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    h, w = read_image(files[0]).shape[:2]
    return VideoInfo(path=str(folder), fps=fps, num_frames=len(files), width=w, height=h,
                     duration=len(files) / fps, codec="images", rotation=0)


def iter_folder(folder: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    files = frame_files(folder)
    size = None
    for i, f in enumerate(files):
        img = read_image(f)
        if size is None:
            size = img.shape
        elif img.shape != size:
            raise VideoError(f"{f}: is {img.shape[1]}x{img.shape[0]}, the folder's first image "
                             f"{size[1]}x{size[0]}; every frame of a sequence needs one size")
        yield i, img


class FolderWriter(FrameSink):
    """Frames as PNG files named like the input's (or `000000.png`...); the folder appears
    only when `close()` succeeds, replacing an older one."""

    def __init__(self, path: str | Path, width: int, height: int,
                 names: list[str] | None = None):
        self.path, self.size, self.names = Path(path), (height, width), names
        self.tmp = self.path.with_name(f"{TEMP_PREFIX}{self.path.name}.{os.getpid()}.tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self.check(frame)
        name = (Path(self.names[self.frames]).stem if self.names and self.frames < len(self.names)
                else f"{self.frames:06d}") + ".png"
        if not cv2.imwrite(str(self.tmp / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise VideoError(f"{self.path}: writing frame {self.frames} failed (disk full?)")
        self.frames += 1

    def close(self) -> Path:
        if self.frames == 0:
            self.abort()
            raise VideoError(f"writing {self.path} failed: no frames given")
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_frames(src: str | Path, fps: float = DEFAULT_FOLDER_FPS
                ) -> tuple[VideoInfo, Callable[[], Iterator[tuple[int, np.ndarray]]]]:
    """(info, frames) of a video or a frame folder; `frames()` starts a fresh decode each
    call, yielding (index, RGB uint8)."""
    if Path(src).is_dir():
        return probe_folder(src, fps), lambda: iter_folder(src)
    return probe(src), lambda: iter_frames(src)


VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov"}


def open_writer(src: str | Path, dst: str | Path, width: int, height: int,
                fps: float | Fraction, **encode) -> FrameWriter | FolderWriter:
    """An x264 video when `dst` ends in .mp4/.mkv/.mov (with the input's audio when `src` is
    a video; `encode`: FrameWriter's crf, preset, pix_fmt), else a folder of PNGs named like
    the input's frames."""
    src = Path(src)
    if Path(dst).suffix.lower() in VIDEO_SUFFIXES:
        return FrameWriter(dst, width, height, fps, audio_from=None if src.is_dir() else src,
                           **encode)
    names = [p.name for p in frame_files(src)] if src.is_dir() else None
    return FolderWriter(dst, width, height, names)


def count_frames(path: str | Path) -> int:
    """Frames of a video or frame folder as the folder or container says; 0 when unknown,
    missing or unreadable (so a broken earlier output is redone, never skipped)."""
    p = Path(path)
    if p.is_dir():
        return len(frame_files(p))
    try:
        return probe(p).num_frames if p.is_file() else 0
    except VideoError:
        return 0
