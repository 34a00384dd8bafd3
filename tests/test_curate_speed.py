"""Curation's speed settings change no decision (issue 26).

TransNetV2 in bfloat16, one x264 thread per worker and writes that overlap the scan are the
shipped settings; the reference is float32, x264 on several threads and every write after
the scan. On a constructed raw 1280x720 source (a dissolve, a hard cut, truth known by
construction, tests/raw_footage.py) and a real shared clip, both must give the same rows:
status, reason, frames, crop, shot boundaries, and the motion measured on the written
frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stc.core.video import FrameWriter, probe, read_frames
from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig
from stc.curation.shots import TRANSNET_SIZE, load_transnetv2

from . import raw_footage

DECISIONS = ("clip_id", "status", "reason", "start_frame", "end_frame", "crop_x0", "crop_y0",
             "crop_x1", "crop_y1", "clip_num_frames", "motion_sum")


def _dissolve_and_cut(videos: Path, out: Path) -> Path:
    """hdtf_1 (50 frames), a 15-frame dissolve into hdtf_2 (50), a hard cut to talkshow_4
    (50), each letterboxed into 1280x720. TransNetV2 scores this dissolve 0.83: far from its
    threshold, so the decisions are the settings', not float rounding's (into hdtf_3 it
    scores 0.497-0.508 with the precision and thread count, and flips)."""
    a, b, c = (read_frames(videos / n, 0, 65) for n in ("hdtf_1.mp4", "hdtf_2.mp4", "talkshow_4.mp4"))

    def boxed(frame: np.ndarray, scale: float) -> np.ndarray:
        canvas = np.zeros((raw_footage.HEIGHT, raw_footage.WIDTH, 3), np.uint8)
        raw_footage.place(frame, scale, canvas, raw_footage.WIDTH // 2, raw_footage.HEIGHT // 2)
        return canvas

    with FrameWriter(out, raw_footage.WIDTH, raw_footage.HEIGHT, 25, crf=16, preset="ultrafast") as w:
        for f in a[:50]:
            w.write(boxed(f, 1.2))
        for k in range(15):
            mix = (k + 1) / 16
            w.write((boxed(a[50 + k], 1.2) * (1 - mix) + boxed(b[k], 1.2) * mix).round().astype(np.uint8))
        for f in b[15:65]:
            w.write(boxed(f, 1.2))
        for f in c[:50]:
            w.write(boxed(f, 1.3))
    return out


def _curate(cfg: CurateConfig, files: list[Path], out: Path) -> tuple[list[dict], list]:
    curator = ClipCurator(cfg, out)
    rows = [r for f in files for r in curator(str(f))[0]]
    # Shot boundaries; the score of the cut that opens a shot moves with the precision.
    shots = [[sh[:2] for sh in json.loads(p.read_text())["shots"]]
             for p in sorted((out / "shots").glob("*.json"))]
    return [{k: r.get(k) for k in DECISIONS} for r in sorted(rows, key=lambda r: r["clip_id"])], shots


@pytest.fixture(scope="module")
def sources(shared_videos, tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("speed")
    return [_dissolve_and_cut(shared_videos, tmp / "dissolve_cut.mp4"), shared_videos / "hdtf_6.mp4"]


def _config() -> CurateConfig:
    """The default checks, with fewer samples and small clips to keep the test short."""
    cfg = CurateConfig.load("default")
    cfg.sampling.per_second, cfg.text.frames, cfg.crop.size = 1.0, 3, 128
    return cfg


def test_speed_settings_give_the_reference_decisions(sources, tmp_path):
    fast = _config()
    fast.shots.precision = "bf16"           # what `auto` picks on a CPU with native bfloat16
    ref = _config()
    ref.shots.precision = "fp32"
    ref.encode.overlap = False
    ref.encode.threads = 2
    got, got_shots = _curate(fast, sources, tmp_path / "fast")
    want, want_shots = _curate(ref, sources, tmp_path / "ref")
    assert got == want
    assert got_shots == want_shots
    # The constructed source really exercised the shot detector and the writer.
    assert len(got_shots[0]) >= 2
    assert any(r["status"] == "kept" for r in got)
    for r in got:
        if r["status"] == "kept":
            assert probe(tmp_path / "fast" / "clips" / f"{r['clip_id']}.mp4").num_frames == r["clip_num_frames"]


def test_bfloat16_transnetv2_marks_the_same_frames(sources):
    """Scores of a window around the dissolve in float32 and bfloat16: within 0.01 of each
    other, and the same frames above both heads' thresholds."""
    import cv2
    import torch

    frames = read_frames(sources[0])
    thumbs = np.stack([cv2.resize(f, TRANSNET_SIZE, interpolation=cv2.INTER_AREA) for f in frames])
    window = torch.from_numpy(np.ascontiguousarray(thumbs[25:125]))[None]   # dissolve in the middle
    with torch.inference_mode():
        s32, m32 = load_transnetv2("fp32").predict_raw(window)
        s16, m16 = load_transnetv2("bf16").predict_raw(window)
    assert s16.dtype == torch.float32
    assert float((s32 - s16).abs().max()) < 0.01 and float((m32 - m16).abs().max()) < 0.01
    # The 50 frames a window scores; the single-frame head at its cut threshold (0.5), the
    # many-hot head at the span threshold (0.2) that extends a transition over its frames.
    s32, m32, s16, m16 = (v[0, 25:75, 0] for v in (s32, m32, s16, m16))
    assert torch.equal(s32 > 0.5, s16 > 0.5)
    assert torch.equal(m32 > 0.2, m16 > 0.2)
    assert bool((m32 > 0.2).any())          # the dissolve is in this window


def test_a_failed_source_leaves_no_written_clip(sources, tmp_path, monkeypatch):
    """With writes overlapping the scan, a source that fails after some clips were written
    (here: its shots file cannot be recorded) leaves none of them behind."""
    curator = ClipCurator(_config(), tmp_path)

    def broken(s):
        raise OSError("disk gone")

    monkeypatch.setattr(curator, "record_shots", broken)
    rows, _ = curator(str(sources[0]))
    assert [r["status"] for r in rows] == ["error"]
    assert not list((tmp_path / "clips").glob("*.mp4"))


def test_every_step_reports_its_cpu_seconds(sources, tmp_path):
    """timings["cpu.STEP"]: each timed step's CPU seconds, the write's including the ffmpeg
    that encoded it (the only program a curator starts, so every child CPU second reaped
    during the call is the write's), and no more in all than the source's CPU."""
    import resource

    def children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    curator = ClipCurator(_config(), tmp_path)
    k0 = children()
    rows, timings = curator(str(sources[1]))
    encoders = children() - k0
    assert any(r["status"] == "kept" for r in rows) and encoders > 0
    steps = [k for k in timings if k != "cpu" and not k.startswith("cpu.")]
    assert {"decode", "faces", "text", "write"} <= set(steps)
    assert all(timings[f"cpu.{k}"] >= 0 for k in steps)
    assert encoders - 1e-6 <= timings["cpu.write"] <= encoders + timings["write"] + 0.05
    assert sum(timings[f"cpu.{k}"] for k in steps) <= timings["cpu"] + 0.05
