"""Turned frames count (issue 22): no kept clip holds a turned run of 0.5 s or more.

Inside a face track, a sampled frame where the face is present but the frontal detector
missed it, or its landmarks failed, is turned; where landmarks exist the paper's eye-nose
rule decides. A run that may last `max_turned_seconds` is cut out of the track rather
than averaged into the clip's side fraction. The real cases: a turned stretch of
talkshow_2 (a real three-quarter view) spliced into a frontal HDTF clip, and hdtf_6's own
short turn.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from stc.core.video import encode_frames, read_frames
from stc.curation import side_face
from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig, EncodeConfig, SideFaceConfig
from stc.curation.faces import Box
from stc.curation.side_face import MISSED, NO_LANDMARKS, SIDE, TurnedRun, frontal_segments, turned_runs

FPS = 25.0
HALF_SECOND = int(np.ceil(0.5 * FPS))


# --- the rule on its own -------------------------------------------------------------------
def _points(x36, x45, x30, y=100.0):
    p = np.zeros((68, 2))
    p[:, 1] = y
    p[36], p[45], p[30] = (x36, y), (x45, y), (x30, y + 30)
    return p


def test_a_frame_is_turned_by_the_rule_a_missed_detection_or_failed_landmarks():
    cfg = SideFaceConfig()
    box = Box(50, 50, 200, 200)
    assert side_face.judge_frame(_points(80, 170, 125), box, cfg) is None     # alpha 1
    assert side_face.judge_frame(_points(80, 170, 165), box, cfg) == SIDE     # alpha 17
    assert side_face.judge_frame(None, None, cfg) == MISSED
    assert side_face.judge_frame(_points(120, 122, 121), box, cfg) == NO_LANDMARKS   # collapsed
    assert side_face.judge_frame(_points(80, 170, 125) + 400, box, cfg) == NO_LANDMARKS  # drifted off
    assert side_face.judge_frame(np.full((68, 2), np.nan), box, cfg) == NO_LANDMARKS


def test_a_run_spans_from_the_frontal_sample_before_it_to_the_one_after():
    judged = [(0, None), (12, None), (24, SIDE), (36, MISSED), (48, None), (60, SIDE), (72, None),
              (84, None)]
    runs = turned_runs(0, 96, judged, min_length=HALF_SECOND)
    assert [(r.start, r.end, r.frames, r.why) for r in runs] == [
        (13, 48, [24, 36], [SIDE, MISSED]), (49, 72, [60], [SIDE])]
    # Each may last 0.5 s (13 frames) or more: both are cut; what is left is frontal.
    assert all(r.trimmed for r in runs)
    assert frontal_segments(0, 96, runs) == [(0, 13), (48, 49), (72, 96)]
    # Sampled densely enough, a one-sample turn is provably shorter and stays.
    dense = turned_runs(0, 40, [(0, None), (4, None), (8, SIDE), (12, None), (16, None)], HALF_SECOND)
    assert [(r.start, r.end, r.trimmed) for r in dense] == [(5, 12, False)]
    assert frontal_segments(0, 40, dense) == [(0, 40)]
    # A run at a track's end reaches the end.
    tail = turned_runs(0, 50, [(0, None), (24, SIDE), (48, SIDE)], HALF_SECOND)
    assert [(r.start, r.end) for r in tail] == [(1, 50)]
    assert TurnedRun(1, 50, [24], [SIDE], True).to_json()["trimmed"] is True


# --- real clips through the curator --------------------------------------------------------
def _overlap(row, a, b):
    return max(0, min(row["end_frame"], b) - max(row["start_frame"], a))


@pytest.fixture(scope="module")
def spliced(shared_videos, tmp_path_factory):
    """hdtf_3 (frontal) for 3 s, then 1 s of talkshow_2 turned away (its frames 90-114, a
    three-quarter view), pasted over the HDTF frame where the face was, then hdtf_3 again."""
    tmp = tmp_path_factory.mktemp("turned")
    front = read_frames(shared_videos / "hdtf_3.mp4", 0, 150)
    turned = read_frames(shared_videos / "talkshow_2.mp4", 90, 25)       # 362x512
    h, w = turned.shape[1:3]
    x0 = (front.shape[2] - w) // 2
    middle = front[75:100].copy()
    middle[:, :h, x0:x0 + w] = turned
    frames = np.concatenate([front[:75], middle, front[75:150]])
    path = encode_frames(frames, tmp / "spliced.mp4", fps=FPS, crf=16, preset="veryfast")
    return {"path": path, "span": (75, 100), "tmp": tmp}


def _curate(path, out, **changes):
    cfg = CurateConfig.load("default")
    cfg = replace(cfg, crop=replace(cfg.crop, size=256), encode=EncodeConfig(preset="ultrafast"), **changes)
    return ClipCurator(cfg, out)(str(path))[0]


def test_a_spliced_turn_is_in_no_kept_clip(spliced):
    a, b = spliced["span"]
    rows = _curate(spliced["path"], spliced["tmp"] / "default")
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept, [(r["reason"], r["message"]) for r in rows]
    assert all(_overlap(r, a, b) < HALF_SECOND for r in kept), [(r["start_frame"], r["end_frame"]) for r in kept]
    # The frontal parts on either side are kept.
    assert any(r["end_frame"] <= a + 2 for r in kept) and any(r["start_frame"] >= b - 2 for r in kept)


def test_a_turn_inside_one_track_is_cut_out_not_averaged(spliced):
    """No shot detector and overlap-only tracking: one track runs through the turn, as when
    a person turns away within a shot; the turned run is cut out of it."""
    a, b = spliced["span"]
    cfg = CurateConfig.load("default")
    rows = _curate(spliced["path"], spliced["tmp"] / "one_track",
                   shots=replace(cfg.shots, detector="none"), tracks=replace(cfg.tracks, embed=False))
    kept = [r for r in rows if r["status"] == "kept"]
    assert len(kept) >= 2, [(r["reason"], r["start_frame"], r["end_frame"], r["message"]) for r in rows]
    assert all(_overlap(r, a, b) < HALF_SECOND for r in kept)
    runs = [run for r in kept for run in json.loads(r["turned_runs"])]
    cut = [run for run in runs if run["trimmed"]]
    assert cut and all(run["end"] - run["start"] >= HALF_SECOND for run in cut)
    # The cut run covers the splice: its sampled frames were judged turned inside it.
    assert any(run["start"] <= a + 12 and run["end"] >= b - 12 and
               all(a <= f < b for f in run["frames"]) for run in cut), cut
    # Averaged over the whole track the turn was a minority: the old rule kept it.
    assert all(r["side_fraction"] is None or r["side_fraction"] <= 0.5 for r in kept)


def test_a_real_short_turn_is_cut_and_the_rest_kept(shared_videos, tmp_path):
    rows = _curate(shared_videos / "hdtf_6.mp4", tmp_path / "out")
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept, [(r["reason"], r["message"]) for r in rows]
    cut = [run for run in json.loads(kept[0]["turned_runs"]) if run["trimmed"]]
    assert cut, "hdtf_6 turns its head around frames 36-48 (alpha above 2.5)"
    for r in kept:
        assert all(_overlap(r, run["start"], run["end"]) == 0 for run in cut)
        assert r["end_frame"] - r["start_frame"] >= 24
    assert sum(r["end_frame"] - r["start_frame"] for r in kept) >= 150
