"""Decoding in a forked child after the parent decoded (DataLoader workers on Linux's
default start method). PyAV 18.1's per-thread swscale context made the child wait forever
on slice threads the fork did not copy: core/fork_safety.py."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from stc.core.video import iter_frames
from stc.degrade.codec import decode_video_bytes, encode_lossless_rgb

from tests.conftest import noise_video


def _decode_both(path: str, data: bytes, want: np.ndarray) -> None:
    frames = np.stack([img for _, img in iter_frames(path)])
    again = decode_video_bytes(data, "lossless stream")
    # Exit codes carry the verdict: an assertion in the child is exit code 1.
    assert np.array_equal(frames, want) and np.array_equal(again, want)


@pytest.mark.parametrize("size", [64, 320])
def test_a_forked_child_decodes_after_its_parent_did(tmp_path, size):
    path = noise_video(tmp_path / "a.mp4", frames=6, size=size)
    want = np.stack([img for _, img in iter_frames(path)])               # the parent's thread now has a scaler
    data = encode_lossless_rgb(want, 25.0)
    assert np.array_equal(decode_video_bytes(data, "lossless stream"), want)

    child = multiprocessing.get_context("fork").Process(target=_decode_both, args=(str(path), data, want))
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
        child.join()
    assert not hung, "the forked child's decode hung (a scaler inherited from the parent)"
    assert child.exitcode == 0
