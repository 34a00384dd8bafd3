"""Byte-level video coding for pairs: H.264 in memory through ffmpeg-python, decoded by PyAV.

Streams are raw Annex-B H.264 (`-f h264`), not mp4: no container timestamps or muxer
ids, so the same frames and flags give the same bytes, and the bytes are exactly what
the encoder produced. Frame rate is kept beside the bytes by the caller.

Two encodings are used (see `degrade.shards` for why):

* `encode_h264` (yuv420p, libx264 at a CRF): the BFVR compression itself, and the HQ window.
* `encode_lossless_rgb` (libx264rgb, -qp 0, rgb24): bit-exact RGB frames, for LQ clips
  whose last step is not a compression (brightness / pixel flicker).

Both run single-threaded with curation.video's bit-exact flags: x264's output depends on
its thread count, so a fixed count of one makes the bytes independent of the machine's
core count (workers already run one per core).
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from stc.core.proc import run_program
from stc.core.video import VideoError, ffmpeg_exe, x264_args


def _args(flags: list[str]) -> dict[str, str]:
    return {k.lstrip("-"): v for k, v in zip(flags[0::2], flags[1::2])}


def _encode(frames: np.ndarray, fps: float, out_args: dict[str, str], what: str) -> bytes:
    import ffmpeg

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(f"{what}: expected frames [T, H, W, 3], got {frames.shape}")
    t, h, w, _ = frames.shape
    fps_q = Fraction(fps or 25.0).limit_denominator(1001)
    stream = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=str(fps_q))
              .output("pipe:", format="h264", an=None, **out_args)
              .global_args("-nostdin", "-loglevel", "error"))
    done = run_program(stream.compile(cmd=ffmpeg_exe()), input=frames.tobytes(), capture_output=True)
    if done.returncode != 0:
        tail = (done.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise VideoError(f"{what}: ffmpeg failed ({' | '.join(tail)})")
    out = done.stdout
    if not out:
        raise VideoError(f"{what}: ffmpeg produced no bytes")
    return out


def encode_h264(frames: np.ndarray, fps: float, crf: float, preset: str = "medium",
                what: str = "h264 encode") -> bytes:
    """libx264 yuv420p at `crf` (0 means -qp 0), bit-exact flags, single thread."""
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise VideoError(f"{what}: {frames.shape[2]}x{frames.shape[1]} frames need even sizes for yuv420p")
    args = _args(x264_args(crf, preset=preset, threads=1))
    if crf == 0:
        args.pop("crf")
        args["qp"] = "0"
    return _encode(frames, fps, args, what)


def encode_lossless_rgb(frames: np.ndarray, fps: float, preset: str = "ultrafast",
                        what: str = "lossless encode") -> bytes:
    """libx264rgb -qp 0 in rgb24: decodes to exactly these RGB bytes."""
    args = _args(x264_args(0, preset=preset, pix_fmt="rgb24", threads=1))
    args.pop("crf")
    args["c:v"] = "libx264rgb"
    args["qp"] = "0"
    return _encode(frames, fps, args, what)


def decode_video_bytes(data: bytes, what: str, fmt: str | None = None) -> np.ndarray:
    """Every frame of an in-memory video (a container, or a raw stream of format `fmt`) as
    [T, H, W, 3] uint8 RGB."""
    import av

    try:
        with av.open(io.BytesIO(data), format=fmt) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.error.FFmpegError as exc:
        raise VideoError(f"{what}: cannot decode ({exc})") from None
    if not frames:
        raise VideoError(f"{what}: no frames decoded")
    return np.stack(frames)


def decode_h264(data: bytes, what: str = "h264 stream") -> np.ndarray:
    """Every frame of a raw H.264 stream as [T, H, W, 3] uint8 RGB."""
    return decode_video_bytes(data, what, "h264")
