"""read_frames seeks to the keyframe before a window instead of decoding from frame 0; the
frames it returns must be exactly those of a decode from the start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from stc.core.video import (
    VideoError,
    crop_transcode,
    encode_frames,
    ffmpeg_exe,
    probe,
    read_frames,
    seek_window,
    x264_args,
)
from stc.curation.config import EncodeConfig

WINDOW = 8


def _moving(frames: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth noise panning diagonally: every frame differs, so a wrong index shows."""
    base = np.random.default_rng(seed).integers(0, 255, (size // 4, size // 4, 3), dtype=np.uint8)
    base = cv2.resize(base, (size * 3, size * 3), interpolation=cv2.INTER_CUBIC)
    return np.stack([base[i:i + size, 2 * i:2 * i + size] for i in range(frames)])


def _keyframes(path: Path) -> list[int]:
    """Display indices of the keyframes, from the packets (every packet is one frame here)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = sorted((p.pts, p.is_keyframe) for p in c.demux(s) if p.pts is not None)
    return [i for i, (_, key) in enumerate(pts) if key]


def _starts(n: int, keys: list[int]) -> list[int]:
    key = keys[1] if len(keys) > 1 else n // 2
    return sorted({0, 1, key - 1, key, key + 1, n // 2, n - WINDOW, n - 3})


def _assert_same_as_linear(path: Path, starts: list[int], fast: bool) -> None:
    full = read_frames(path, 0, None)
    for start in starts:
        want = full[start:start + WINDOW]
        got = read_frames(path, start, WINDOW)
        assert got.shape == want.shape and np.array_equal(got, want), f"start={start}"
        if start > 0 and fast:
            sought = seek_window(path, start, WINDOW)
            assert sought is not None, f"start={start}: the fast path was not taken"
            assert np.array_equal(sought, want), f"start={start}"
    # gray frames come out squeezed, the same way on both paths
    assert np.array_equal(read_frames(path, starts[-2], 2, fmt="gray"),
                          read_frames(path, 0, None, fmt="gray")[starts[-2]:starts[-2] + 2])


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])   # medium adds B-frames
def test_short_keyint_clip_seeks_to_exact_frames(tmp_path, preset):
    path = encode_frames(_moving(60), tmp_path / "k8.mp4", fps=25, crf=18, preset=preset, keyint=8)
    keys = _keyframes(path)
    assert keys[0] == 0 and max(np.diff(keys)) <= 8, keys
    _assert_same_as_linear(path, _starts(60, keys), fast=True)


def test_default_keyint_clip_is_still_correct(tmp_path):
    """x264's default keyint (250) leaves frame 0 the only keyframe: seeking lands there."""
    path = encode_frames(_moving(60), tmp_path / "k0.mp4", fps=25, crf=18, preset="ultrafast")
    assert _keyframes(path) == [0]
    _assert_same_as_linear(path, _starts(60, [0]), fast=True)


def test_real_clips(shared_videos, tmp_path):
    for name in ("talkshow_3.mp4", "hdtf_1.mp4"):   # h264 with B-frames; mpeg4
        path = shared_videos / name
        if not path.exists():
            continue
        n = len(read_frames(path, 0, None, fmt="gray"))
        _assert_same_as_linear(path, _starts(n, _keyframes(path)), fast=True)

    # and a real clip as curation writes it: cropped by crop_transcode with a short keyint
    src = shared_videos / "talkshow_3.mp4"
    if src.exists():
        info = probe(src)
        side = min(info.width, info.height) // 2
        clip = tmp_path / "curated.mp4"
        n = sum(1 for _ in crop_transcode(src, clip, (0, 0, side, side), 128, crf=10,
                                          preset="medium", keyint=16))
        keys = _keyframes(clip)
        assert len(keys) >= n // 16
        _assert_same_as_linear(clip, _starts(n, keys), fast=True)


def test_gap_in_timestamps_falls_back_to_linear_decode(tmp_path):
    """A dropped frame leaves a hole in the pts: pts-based numbering would disagree with
    the decode order after it, so the seek path must refuse and read_frames decode linearly."""
    src = encode_frames(_moving(40), tmp_path / "src.mp4", fps=25, crf=18, preset="ultrafast",
                        keyint=8)
    gap = tmp_path / "gap.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(src),
                    "-vf", "select='not(eq(n\\,10))'", "-fps_mode", "passthrough",
                    *x264_args(18, "ultrafast", keyint=8), str(gap)], check=True)
    assert probe(gap).num_frames == 39
    assert seek_window(gap, 20, WINDOW) is None
    _assert_same_as_linear(gap, [0, 9, 10, 20, 31], fast=False)


def test_window_past_the_end(tmp_path):
    path = encode_frames(_moving(30), tmp_path / "c.mp4", fps=25, crf=18, preset="ultrafast", keyint=8)
    assert len(read_frames(path, 26, WINDOW)) == 4          # the tail, as the linear decode gives
    with pytest.raises(VideoError, match="no frames in"):
        read_frames(path, 40, WINDOW)


def test_keyint_is_bit_exact_and_default_for_curation(tmp_path):
    assert EncodeConfig().keyint == 48
    frames = _moving(20)
    a = encode_frames(frames, tmp_path / "a.mp4", fps=25, crf=18, preset="ultrafast", keyint=8)
    b = encode_frames(frames, tmp_path / "b.mp4", fps=25, crf=18, preset="ultrafast", keyint=8)
    assert a.read_bytes() == b.read_bytes()
    assert "-g" not in x264_args(10)
    args = x264_args(10, keyint=48)
    assert args[args.index("-g") + 1] == "48"
