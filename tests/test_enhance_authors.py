"""`stc enhance --aligned --preset authors`: the frame handling of the authors'
scripts/infer_bfvr.py (fixture README section 7) around an imported model, checked on the
tensors (range, colour order, resize, the first 24 frames in one pass, odd T, one global
min-max) and through the command on a short aligned clip of real footage. The model is a
small checkpoint in the authors' layout (32^2 input), imported as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stc.core.config import ConfigError
from stc.core.video import encode_frames, probe, read_frames
from stc.model.authors import authors_forward, authors_runner
from stc.model.restore.aligned import AUTHORS_FPS, read_first_frames, restore_authors_clip
from stc.model.stage2.model import load_stage2
from stc.pipelines.cli import main as stc
from stc.pipelines.enhance import run_enhance
from tests.authors_fixture import small_checkpoint

SIZE = 32          # the small checkpoint's 4 x 4 latent grid x 8


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("authors_enhance")
    run = root / "imported"
    assert stc(["weights", "import", str(small_checkpoint(root / "ckpt-bfvr.pth", seed=5)),
                "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def model(imported):
    m, cfg = load_stage2(imported)
    assert cfg.data.size == SIZE
    return m


def frames_rgb(n: int, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """Non-square frames whose three channels differ, so a swapped colour order shows."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    f[..., 0] //= 2                      # red darker than blue everywhere
    f[..., 2] = 128 + f[..., 2] // 2
    return f


def test_input_is_their_preprocessing(model):
    src = frames_rgb(30)
    clip = restore_authors_clip(authors_runner(model), SIZE, src)
    x = clip.input
    # the first 24 frames only, squashed to the model's square size (aspect not kept)
    assert x.shape == (1, 3, 24, SIZE, SIZE) and x.dtype == torch.float32
    # RGB / 255 in [0, 1], no mean/std normalisation: every value is a grey level / 255
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x, torch.round(x * 255) / 255)
    for i in (0, 23):
        want = cv2.resize(src[i], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        got = (x[0, :, i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(got, want)          # channel 0 is red: RGB order
    assert float(x[0, 0].mean()) < float(x[0, 2].mean())


def test_one_pass_over_the_clip_and_one_global_min_max(model):
    clip = restore_authors_clip(authors_runner(model), SIZE, frames_rgb(30, seed=1))
    # one forward over all 24 frames, no windows: the same as the model on the whole clip
    whole = authors_forward(model, clip.input)[0]
    assert clip.output.shape == (1, 3, 24, SIZE, SIZE)
    torch.testing.assert_close(clip.output, whole, rtol=0, atol=1e-6)
    # post-processing: one min and max over every frame, pixel and channel, x 255, round
    # half to even, no clamp
    y = clip.output[0].permute(1, 2, 3, 0).numpy()
    lo, hi = y.min(), y.max()
    want = np.round((y - lo) / (hi - lo) * 255.0).astype(np.uint8)
    assert clip.frames.shape == (24, SIZE, SIZE, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_array_equal(clip.frames, want)
    assert clip.frames.min() == 0 and clip.frames.max() == 255
    per_frame = [np.round((f - f.min()) / (f.max() - f.min()) * 255.0).astype(np.uint8)
                 for f in y]
    assert not np.array_equal(np.stack(per_frame), clip.frames)   # global, not per frame


def test_odd_frame_count_loses_its_last_frame_and_one_frame_is_refused(model):
    clip = restore_authors_clip(authors_runner(model), SIZE, frames_rgb(7, seed=2))
    assert clip.input.shape[2] == 7 and clip.frames.shape[0] == 6     # 2 * floor(7 / 2)
    with pytest.raises(ValueError, match="at least 2 frames"):
        restore_authors_clip(authors_runner(model), SIZE, frames_rgb(1))


def test_command_on_a_real_aligned_clip(model, imported, shared_videos, tmp_path):
    """30 frames of an aligned real face clip (HDTF, 512^2, shrunk to 64x56 so the squash
    shows): --preset authors writes the first 24 frames at the model's size and 24 fps; the
    default aligned path keeps every frame at the input's rate."""
    real = read_frames(shared_videos / "hdtf_3.mp4", 0, 30)
    real = np.stack([cv2.resize(f, (64, 56), interpolation=cv2.INTER_AREA) for f in real])
    src = encode_frames(real, tmp_path / "face.mp4", fps=25, crf=0, preset="ultrafast",
                        pix_fmt="yuv444p")
    out = tmp_path / "authors.mp4"
    assert stc(["enhance", str(src), "-o", str(out), "--checkpoint", str(imported), "--aligned",
                "--preset", "authors", "--crf", "0"]) == 0
    info = probe(out)
    assert (info.width, info.height) == (SIZE, SIZE) and info.fps == pytest.approx(AUTHORS_FPS)
    written = read_frames(out)
    assert written.shape == (24, SIZE, SIZE, 3)
    want = restore_authors_clip(authors_runner(model), SIZE, read_first_frames(src)).frames
    # x264 at CRF 0 in yuv420p keeps the luma but subsamples the chroma, which on an
    # untrained model's noisy output moves the decoded luma a little where RGB clips
    luma = lambda f: f.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    diff = np.abs(luma(written) - luma(want))
    assert diff.mean() < 3, diff.mean()           # measured 1.3; red and blue swapped: 10
    stats = json.loads((tmp_path / "enhance_stats.json").read_text())
    assert stats["mode"] == "aligned-authors"
    video = stats["videos"]["authors"]
    assert video["frames"] == 24 and video["frames_dropped"] == 6 and video["chunks"] == 1

    default = tmp_path / "stc.mp4"
    assert stc(["enhance", str(src), "-o", str(default), "--checkpoint", str(imported),
                "--aligned", "--x264-preset", "ultrafast"]) == 0
    d = probe(default)
    assert d.fps == pytest.approx(25) and read_frames(default).shape[0] == 30


def test_authors_preset_needs_aligned(imported, tmp_path):
    with pytest.raises(ConfigError, match="--aligned"):
        run_enhance([str(tmp_path / "x.mp4")], tmp_path / "o.mp4", imported,
                    aligned_preset="authors", progress=False)
