"""One curated clip -> its LQ-HQ pairs: T-frame windows, each degraded as its own video.

A pair is a window of `window` consecutive frames (24 by default; 0 = the whole clip)
starting every `stride` frames (default: `window`, no overlap), at most `max_windows`
per clip (0 = all); a tail shorter than a window is dropped. Each window is an
independent video for the recipe: one parameter set per window, and the BFVR compression
codes the whole window. Frames are resized to `size` when the curated clip has another
size.

The HQ of a pair is the window re-encoded on its own (see `degrade.shards` for why) and
the recipe degrades the *decoded* HQ, so the LQ is the degradation of exactly the HQ
frames the loader returns.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from stc.core.config import checks, in_range
from stc.core.video import VideoError, ffmpeg_exe, iter_frames, resize_frames
from stc.degrade.codec import decode_h264, encode_h264, encode_lossless_rgb
from stc.degrade.recipe import Recipe, replay
from stc.degrade.shards import HQ_FORMAT, LQ_LOSSLESS, LQ_LOWRES, LQ_REPLAY
from stc.manifests.pairs import pair_id


@dataclass
class WindowOptions:
    window: int = 24          # T; 0 = the whole clip as one window
    stride: int = 0           # 0 = window (no overlap)
    max_windows: int = 0      # per clip; 0 = all
    size: int = 512           # output size (square)
    hq_crf: int = 10          # HQ re-encode; 0 = -qp 0
    hq_preset: str = "veryfast"
    resize_interp: str = "area"   # curated clip -> size, when they differ

    def __post_init__(self) -> None:
        if self.window < 0 or self.stride < 0 or self.max_windows < 0:
            raise ValueError("window, stride and max_windows must be >= 0")
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size must be an even number >= 16, got {self.size}")


checks(WindowOptions, in_range(0, 51, "hq_crf"))    # libx264's CRF scale


def software_versions() -> str:
    """The libraries the stored bytes depend on (x264 in the ffmpeg build, swscale in PyAV)."""
    import av
    import cv2

    return (f"numpy {np.__version__}; opencv {cv2.__version__}; av {av.__version__}; "
            f"ffmpeg {Path(ffmpeg_exe()).name}")


def iter_windows(path: Path, opts: WindowOptions) -> Iterator[tuple[int, int, np.ndarray]]:
    """(window index, start frame, frames [T, H, W, 3]) in one decode of the clip.

    The frame count is not trusted from the container: windows are cut as frames arrive,
    and decoding stops after the last window that `max_windows` allows.
    """
    if not opts.window:
        frames = [img for _, img in iter_frames(path)]
        if frames:
            yield 0, 0, np.stack(frames)
        return
    t, stride, limit = opts.window, opts.stride or opts.window, opts.max_windows or None

    def in_a_window(i: int) -> bool:
        first = max(0, -(-(i - t + 1) // stride))   # ceil((i - t + 1) / stride)
        last = i // stride if limit is None else min(i // stride, limit - 1)
        return first <= last

    open_windows: dict[int, list[np.ndarray]] = {}
    for i, img in iter_frames(path, want=in_a_window):
        if i % stride == 0 and (limit is None or i // stride < limit):
            open_windows[i // stride] = []
        for w in sorted(open_windows):
            open_windows[w].append(img)
            if len(open_windows[w]) == t:
                yield w, w * stride, np.stack(open_windows.pop(w))
        if limit is not None and i // stride >= limit - 1 and not open_windows:
            return


def degrade_clip(clip: dict[str, Any], clip_path: Path, recipe: Recipe, seed: int,
                 opts: WindowOptions, device: str = "auto") -> list[dict[str, Any]]:
    """Every pair of one clip as shard rows, or one error row (`status` = error).

    All or nothing per clip: a clip that fails half way gives only its error row, so a
    rerun with --retry-errors redoes it whole and the manifest never mixes attempts.
    """
    clip_id = clip["clip_id"]
    fps = float(clip.get("clip_fps") or 25.0)
    base = {"clip_id": clip_id, "recipe": recipe.name, "seed": seed}

    def error(reason: str, message: str) -> list[dict[str, Any]]:
        return [{**base, "pair_id": pair_id(recipe.name, seed, clip_id, 0), "status": "error",
                 "reason": reason, "message": message, "window": 0}]

    out: list[dict[str, Any]] = []
    try:
        for w, start, frames in iter_windows(clip_path, opts):
            frames = resize_frames(frames, opts.size, opts.size, opts.resize_interp)
            try:
                hq_bytes = encode_h264(frames, fps, opts.hq_crf, opts.hq_preset, what=f"{clip_id} HQ")
                hq = decode_h264(hq_bytes, f"{clip_id} HQ")
                lq, params = recipe.run(hq, fps, seed, clip_id, w, device=device)
                if lq.bitstream is not None:
                    lq_format, lq_bytes = LQ_LOWRES, lq.bitstream
                    sw, sh = params[-1]["lowres_width"], params[-1]["lowres_height"]
                elif recipe.replayable:
                    lq_format, lq_bytes, sw, sh = LQ_REPLAY, b"", lq.width, lq.height
                    if not np.array_equal(replay(hq, params), lq.frames):
                        raise RuntimeError(f"{recipe.name}: replaying the recorded parameters "
                                           "does not give the degraded frames")
                else:
                    lq_format, sw, sh = LQ_LOSSLESS, lq.width, lq.height
                    lq_bytes = encode_lossless_rgb(lq.frames, fps, what=f"{clip_id} LQ")
            except VideoError as exc:
                return error("degrade_failed", f"window {w} (frame {start}): {exc}")
            out.append({**base, "pair_id": pair_id(recipe.name, seed, clip_id, w), "status": "ok",
                        "reason": "ok", "message": "", "window": w, "start_frame": start,
                        "num_frames": len(frames), "fps": fps, "width": opts.size,
                        "height": opts.size, "hq_format": HQ_FORMAT, "hq": hq_bytes,
                        "lq_format": lq_format, "lq": lq_bytes, "lq_stream_width": sw,
                        "lq_stream_height": sh, "lq_up_interp": lq.up_interp,
                        "params": json.dumps(params)})
    except VideoError as exc:
        return error("unreadable", f"{exc}")
    except Exception as exc:  # noqa: BLE001 - one bad clip must not end the run
        tail = "".join(traceback.format_exception(exc)).strip().splitlines()[-4:]
        return error("internal_error", " | ".join(tail))
    if not out:
        return error("too_short", f"{clip_path}: fewer than {opts.window} frames, no window fits; "
                                  "lower --window or drop the clip")
    return out
