"""Shared fixtures: one Ray cluster per test session, the real clips, generated clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stc.core.runtime import init_ray
from stc.core.video import encode_frames

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = Path(os.environ.get("STC_TEST_VIDEOS", ROOT.parent / "shared" / "data" / "videos"))


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """../shared/data/videos, or skip: the real clips are not part of the repository."""
    if not SHARED_VIDEOS.is_dir() or not any(SHARED_VIDEOS.glob("*.mp4")):
        pytest.skip(f"real clips not found at {SHARED_VIDEOS} (set STC_TEST_VIDEOS)")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def ray_session():
    """A local 2-CPU Ray cluster started once for the whole test session."""

    init_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()


def noise_video(path: Path, frames: int = 30, size: int = 128, fps: float = 25.0, seed: int = 0) -> Path:
    """A small faceless clip: smooth moving noise, encoded with the project's encoder."""

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    import cv2

    base = cv2.resize(base, (size * 2, size * 2), interpolation=cv2.INTER_CUBIC)
    out = [np.ascontiguousarray(base[i:i + size, i:i + size]) for i in range(frames)]
    return encode_frames(out, path, fps=fps, crf=18, preset="ultrafast")
