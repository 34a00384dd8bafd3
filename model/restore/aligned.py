"""Aligned face videos restored the way the authors' `scripts/infer_bfvr.py` does it
(`stc enhance --aligned --preset authors`), so a result can be set beside their published
outputs. The de-flicker scripts handle frames identically.

Their script, step by step (fixture README section 7):
- reads the first 24 frames and drops the rest;
- resizes each to the model's square size (512 for the release) with cv2.INTER_LINEAR, not
  keeping the aspect ratio, with no face detection or alignment;
- feeds RGB / 255 in [0, 1] with no mean/std normalisation, the whole clip in one pass
  (no windows, no padding: an odd frame count loses its last frame, T -> 2*floor(T/2));
- normalises the output by one min and max over the whole clip (no clamp), x 255, rounds
  half to even, and writes 24 fps.

Two steps are not theirs: frames are decoded by ffmpeg rather than cv2.VideoCapture, which
may convert YUV to RGB with other rounding (a grey level here and there). Their writer is
MJPG; stc writes libx264 at --crf (--crf 0 for frames as close as yuv420p allows). The
default aligned path (`stc.pipelines.enhance`: any length, chunks of the model's T) is stc's
own and is what to use for footage rather than comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stc.core.video import FrameWriter, iter_frames, probe

AUTHORS_FRAMES = 24         # their script stops reading after 24 frames, run as one clip
AUTHORS_FPS = 24.0          # cv2.VideoWriter(..., 24.0, ...) in their script, whatever the input

# The model as their script calls it: [1, 3, T, S, S] RGB in [0, 1] -> its output
# [1, 3, 2*(T//2), S, S] before any normalising (stc.model.authors.authors_runner).
ClipForward = Callable[[torch.Tensor], torch.Tensor]


def authors_preprocess(frames_rgb: np.ndarray, size: int = 512) -> torch.Tensor:
    """infer_bfvr.py's input: the first 24 frames, each resized to size x size with
    cv2.INTER_LINEAR (aspect not kept, no face alignment), /255 -> [1, 3, T, size, size]."""
    import cv2

    frames = [cv2.resize(np.ascontiguousarray(f), (size, size), interpolation=cv2.INTER_LINEAR)
              for f in frames_rgb[:AUTHORS_FRAMES]]
    x = np.stack(frames).astype(np.float32) / 255.0
    return torch.from_numpy(x).permute(3, 0, 1, 2)[None].contiguous()


def authors_postprocess(out: torch.Tensor) -> np.ndarray:
    """infer_bfvr.py's output frames: one global min-max over the clip (no clamp), x255,
    round half to even, uint8 -> [T, H, W, 3] RGB."""
    y = out[0].permute(1, 2, 3, 0).float().cpu().numpy()
    lo, hi = float(y.min()), float(y.max())
    y = (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)
    return np.round(y * 255.0).astype(np.uint8)


@dataclass
class AuthorsClip:
    """One clip through the authors' frame handling."""

    input: torch.Tensor      # [1, 3, T, S, S] float32 RGB in [0, 1], what the model is fed
    output: torch.Tensor     # [1, 3, 2*(T//2), S, S], the model's output before normalising
    frames: np.ndarray       # uint8 [2*(T//2), S, S, 3] RGB, the frames written
    seconds: float           # model time


def read_first_frames(src: str | Path, count: int = AUTHORS_FRAMES) -> np.ndarray:
    """The first `count` frames of a video, uint8 RGB [n, H, W, 3] (decoding stops there)."""
    frames = []
    for _, frame in iter_frames(src):
        frames.append(frame)
        if len(frames) == count:
            break
    if not frames:
        raise ValueError(f"{src}: no frames could be decoded")
    return np.stack(frames)


def restore_authors_clip(forward: ClipForward, size: int, frames_rgb: np.ndarray) -> AuthorsClip:
    """Frames uint8 RGB [n, H, W, 3] -> the authors' input at `size`, their one forward pass
    and their output frames. Only the first 24 frames are used, as their script reads no more."""
    x = authors_preprocess(frames_rgb, size)
    if x.shape[2] < 2:
        raise ValueError(f"the authors' model needs at least 2 frames, got {x.shape[2]} (it "
                         "halves T once)")
    t0 = time.perf_counter()
    out = forward(x).float().cpu()
    seconds = time.perf_counter() - t0
    return AuthorsClip(x, out, authors_postprocess(out), seconds)


def enhance_authors(forward: ClipForward, size: int, src: str | Path, dst: str | Path, *,
                    crf: float = 18, preset: str = "medium",
                    pix_fmt: str = "yuv420p") -> dict[str, Any]:
    """Restore `src` into `dst` as infer_bfvr.py would; returns the run's figures."""
    info = probe(src)
    clip = restore_authors_clip(forward, size, read_first_frames(src))
    t_out = clip.frames.shape[0]
    with FrameWriter(dst, size, size, AUTHORS_FPS, crf=crf, preset=preset,
                     pix_fmt=pix_fmt) as writer:
        for f in clip.frames:
            writer.write(f)
    t_in = clip.input.shape[2]
    return {"frames": t_out, "frames_read": t_in,
            "frames_dropped": max(0, (info.num_frames or t_in) - t_out),
            "chunks": 1, "chunk_frames": t_in, "model_seconds": clip.seconds,
            "seconds_per_chunk": clip.seconds,
            "output_range": [float(clip.output.min()), float(clip.output.max())],
            "width": size, "height": size, "fps": AUTHORS_FPS, "source": str(src),
            "mode": "aligned-authors"}
