"""Raw footage in, many clips out: shot cuts, face tracks and the clip rows of a source.

The inputs are built from the real shared clips (tests/raw_footage.py), so every cut frame
and every face's half of the frame is known by construction: clips of different sizes
letterboxed into one 1280x720 stream with hard cuts, two people side by side in one shot,
and one long shot. Everything runs the real models: TransNetV2 (and PySceneDetect), dlib's
detector, landmarks and face embedding, PP-OCR, ffmpeg/x264, on Ray.
"""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from stc.core.video import probe, read_frames
from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig, FaceConfig, ShotConfig, TrackConfig
from stc.curation.faces import Box, FaceDetector, FaceEmbedder
from stc.curation.shots import (
    TRANSNET_SIZE,
    detect_shots,
    gate_opens,
    make_detector,
    shots_between,
    window_change,
)
from stc.curation.tracks import track_faces
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import read_manifest
from stc.pipelines.curate import run_curate

from . import raw_footage

MAX_SECONDS = 4.0     # the long shot (12 s) must become three clips


# --- tracks on their own ------------------------------------------------------------------
def _box(x, y, side=100.0):
    return Box(x, y, x + side, y + side, 1.0)


def test_two_faces_become_two_tracks_with_interpolated_boxes():
    # Two faces drifting right, sampled every 10 frames; the right one leaves after frame 20.
    dets = {f: [_box(100 + f, 100), _box(600 + f, 120)] for f in (0, 10, 20)}
    dets.update({f: [_box(100 + f, 100)] for f in (30, 40, 50)})
    tracks = track_faces(dets, TrackConfig(max_gap_seconds=0.5), fps=25.0, num_frames=60)
    assert [(t.index, t.start, t.end) for t in tracks] == [(0, 0, 60), (1, 0, 21)]
    left, right = tracks
    assert left.frames == [0, 10, 20, 30, 40, 50] and right.frames == [0, 10, 20]
    assert left.box_at(15).x0 == pytest.approx(115) and left.box_at(59).x0 == 150
    assert all(b.x0 >= 600 for b in right.boxes)


def test_a_track_never_crosses_a_shot_and_a_lost_face_ends_its_track():
    dets = {f: [_box(100, 100)] for f in range(0, 100, 10)}
    tracks = track_faces(dets, TrackConfig(), fps=25.0, shots=[(0, 45), (46, 100)])
    assert [(t.shot, t.start, t.end) for t in tracks] == [(0, 0, 45), (1, 46, 100)]
    # Missing for 2 s (longer than max_gap_seconds=1): two tracks, the first ending where
    # the face was last seen.
    gone = {f: ([] if 20 <= f < 70 else [_box(100, 100)]) for f in range(0, 100, 10)}
    tracks = track_faces(gone, TrackConfig(max_gap_seconds=1.0), fps=25.0, num_frames=100)
    assert [(t.start, t.end) for t in tracks] == [(0, 11), (70, 100)]


def test_ambiguous_overlap_is_decided_by_the_face_embedding():
    # Two faces cross: at frame 10 each box overlaps both previous ones about equally.
    # Overlap alone would pair them by the larger overlap (swapping identities); the
    # embedding (here one fixed vector per person) keeps each face on its own track.
    a0, b0 = _box(100, 100), _box(160, 100)
    a1, b1 = _box(135, 100), _box(125, 100)          # a moved right past b
    person = {a0: 0, a1: 0, b0: 1, b1: 1}
    vec = {0: np.zeros(128), 1: np.full(128, 0.2)}
    dets = {0: [a0, b0], 10: [a1, b1]}
    by_overlap = track_faces(dets, TrackConfig(embed=False), fps=25.0)
    assert {t.boxes[0]: t.boxes[1] for t in by_overlap} == {a0: b1, b0: a1}
    by_face = track_faces(dets, TrackConfig(), fps=25.0, embed=lambda f, b: vec[person[b]])
    assert {t.boxes[0]: t.boxes[1] for t in by_face} == {a0: a1, b0: b1}


def test_dlib_embedding_tells_the_two_people_apart(raw):
    """The real 128-d embedding on the side-by-side frames: the same person on two frames
    is close, the two people are far (dlib's threshold 0.6)."""
    frames = read_frames(raw["two"].path, 0, 30)[[0, 29]]
    det, emb = FaceDetector(FaceConfig()), FaceEmbedder()
    vecs = []
    for f in frames:
        small = cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA)
        boxes = sorted(det.detect(small), key=lambda b: b.x0)
        assert len(boxes) == 2
        vecs.append([emb(small, b) for b in boxes])
    same = [np.linalg.norm(vecs[0][i] - vecs[1][i]) for i in (0, 1)]
    other = np.linalg.norm(vecs[0][0] - vecs[0][1])
    assert max(same) < 0.4 < 0.6 < other


# --- shots on their own ---------------------------------------------------------------------
def test_shots_between_transitions():
    shots = shots_between([(59, 60, 0.8), (100, 104, 0.9)], 0, 150)
    assert [(s.index, s.start, s.end, s.score) for s in shots] == [
        (0, 0, 59, None), (1, 60, 100, 0.8), (2, 104, 150, 0.9)]
    assert [(s.start, s.end) for s in shots_between([(0, 3, 0.9)], 0, 10)] == [(3, 10)]


def _detect(frames, cfg):
    det = make_detector(cfg, 25.0, frames.shape[2], frames.shape[1])
    for f in frames:
        det.push(cv2.resize(f, det.thumb_size, interpolation=cv2.INTER_AREA))
    det.finish()
    return shots_between(det.transitions, 0, len(frames)), det.stats


def test_gated_transnetv2_finds_the_cuts_a_full_run_finds(raw):
    # The first 120 frames: cuts at 60 and 110.
    frames = read_frames(raw["cuts"].path, 0, 120)
    gated, stats = _detect(frames, ShotConfig())
    full, full_stats = _detect(frames, ShotConfig(gate=False))
    assert stats["blocks"] == full_stats["blocks_run"] == 3
    assert [(s.start, s.end, s.score) for s in gated] == [(s.start, s.end, s.score) for s in full]
    assert [s.start for s in gated[1:]] == [60, 110] and all(s.score > 0.5 for s in gated[1:])
    # A picture that does not change leaves the gate shut: the model never runs on it.
    _, still = _detect(np.repeat(frames[:1], 120, axis=0), ShotConfig())
    assert still["blocks_run"] == 0


def _change(frames):
    thumbs = [cv2.resize(f, TRANSNET_SIZE, interpolation=cv2.INTER_AREA) for f in frames]
    return [window_change(thumbs, t) for t in range(len(thumbs))]


def test_the_gate_opens_on_a_jump_cut(shared_videos):
    # A cut between two takes of the same person in front of the same wall.
    f = read_frames(shared_videos / "hdtf_1.mp4")
    j = _change(np.concatenate([f[:60], f[120:180]]))
    assert j[60] > 16
    assert gate_opens(j, 1, ShotConfig())


def test_scenedetect_finds_the_cuts_within_two_frames(raw):
    shots = detect_shots(read_frames(raw["cuts"].path), ShotConfig(detector="scenedetect"))
    assert len(shots) == len(raw["cuts"].cuts) + 1
    for c, before, after in zip(raw["cuts"].cuts, shots, shots[1:]):
        assert abs(after.start - c) <= 2 and abs(before.end - c) <= 2


# --- the pipeline on raw footage ----------------------------------------------------------
@pytest.fixture(scope="module")
def raw(shared_videos, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raw")
    return {
        # 4 shots, 3 hard cuts, clips of 512x512 and 388x512 at three scales, letterboxed
        "cuts": raw_footage.joined(shared_videos, tmp / "cuts.mp4", [
            ("hdtf_2.mp4", 60, 1.0), ("talkshow_1.mp4", 50, 1.4),
            ("hdtf_3.mp4", 70, 1.3), ("talkshow_3.mp4", 40, 1.0)]),
        "two": raw_footage.side_by_side(shared_videos, tmp / "two.mp4", "hdtf_2.mp4",
                                        "hdtf_4.mp4", 50),
        "long": raw_footage.ping_pong(shared_videos, tmp / "long.mp4", "hdtf_5.mp4", 100,
                                      int(3 * MAX_SECONDS * 25), scale=1.2),
        "tmp": tmp,
    }


@pytest.fixture(scope="module")
def curated(raw, ray_session):
    cfg = raw["tmp"] / "raw.yaml"
    # The default config (TransNetV2, split); small fast clips and 4 s pieces.
    # The quality gate is off: the talk-show shots are real low-quality inputs it rejects
    # (`either` in labels.csv), and this is about cuts and tracks (tests/test_quality_gate.py).
    cfg.write_text(f"max_seconds: {MAX_SECONDS}\ncrop: {{size: 256}}\nencode: {{preset: ultrafast}}\n"
                   "quality: {enabled: false}\n")
    out = raw["tmp"] / "out"
    summary = run_curate([str(raw[k].path) for k in ("cuts", "two", "long")], out,
                         config=str(cfg), progress=False)
    df = read_manifest(out / "manifest.parquet", CLIP_SCHEMA)
    by = {k: df[df["source_path"] == str(raw[k].path)].sort_values("start_frame") for k in ("cuts", "two", "long")}
    return {"df": df, "by": by, "out": out, "summary": summary}


def _shots(curated, rows):
    sid = rows["source_id"].iloc[0]
    return json.loads((curated["out"] / "shots" / f"{sid}.json").read_text())


def test_every_cut_is_found_and_no_clip_spans_one(raw, curated):
    rows = curated["by"]["cuts"]
    doc = _shots(curated, rows)
    shots = doc["shots"]
    assert doc["detector"] == "transnetv2" and len(shots) == 4
    for c, before, after in zip(raw["cuts"].cuts, shots, shots[1:]):
        assert abs(after[0] - c) <= 2 and abs(before[1] - c) <= 2, (c, shots)
    for r in rows.itertuples():
        assert not any(r.start_frame < c < r.end_frame for c in raw["cuts"].cuts), r.clip_id
        shot = shots[r.shot_index]
        assert shot[0] <= r.start_frame < r.end_frame <= shot[1]
    # One face per shot: one kept clip per shot, its crop on that shot's picture.
    assert list(rows["status"]) == ["kept"] * 4, list(rows["message"])
    assert list(rows["shot_index"]) == [0, 1, 2, 3] and set(rows["track_index"]) == {0}
    for r, (_, _, _, (x0, y0, x1, y1)) in zip(rows.itertuples(), raw["cuts"].parts):
        cx, cy = (r.crop_x0 + r.crop_x1) / 2, (r.crop_y0 + r.crop_y1) / 2
        assert x0 <= cx <= x1 and y0 <= cy <= y1
        clip = probe(curated["out"] / r.clip_path)
        assert clip.num_frames == r.clip_num_frames == r.end_frame - r.start_frame
        assert r.start_time == pytest.approx(r.start_frame / 25.0)


def test_written_clip_is_its_segment_of_the_source(raw, curated):
    """The clip's first and last frames are the source's frames at start_frame and
    end_frame - 1, cropped and scaled (not a neighbour across the cut)."""
    r = curated["by"]["cuts"].iloc[2]
    src = read_frames(raw["cuts"].path)
    clip = read_frames(curated["out"] / r["clip_path"])
    x0, y0, x1, y1 = (int(r[k]) for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1"))
    ref = np.stack([cv2.resize(f[y0:y1, x0:x1], clip.shape[1:3][::-1], interpolation=cv2.INTER_AREA)
                    for f in src]).astype(float)
    for got, want in ((clip[0], r["start_frame"]), (clip[-1], r["end_frame"] - 1)):
        err = np.abs(ref - got.astype(float)).mean(axis=(1, 2, 3))
        assert int(np.argmin(err)) == want and err[want] < 4


def test_two_people_in_one_shot_become_two_clips_on_their_own_halves(raw, curated):
    rows = curated["by"]["two"].sort_values("crop_x0")
    assert len(rows) == 2 and list(rows["status"]) == ["kept", "kept"], list(rows["message"])
    assert set(rows["shot_index"]) == {0} and sorted(rows["track_index"]) == [0, 1]
    assert rows["clip_id"].nunique() == 2
    half = raw_footage.WIDTH // 2
    left, right = rows.iloc[0], rows.iloc[1]
    assert (left["crop_x0"] + left["crop_x1"]) / 2 < half < (right["crop_x0"] + right["crop_x1"]) / 2
    # Each crop holds its own person's face and not the other's (faces are centred in
    # their halves, at x = 320 and 960).
    assert left["crop_x1"] < 960 - 100 and right["crop_x0"] > 320 + 100
    assert {r.start_frame for r in rows.itertuples()} == {0}
    assert {r.end_frame for r in rows.itertuples()} == {raw["two"].num_frames}


def test_a_long_shot_becomes_clips_of_at_most_max_seconds(raw, curated):
    rows = curated["by"]["long"]
    assert len(_shots(curated, rows)["shots"]) == 1
    assert list(rows["status"]) == ["kept"] * 3, list(rows["message"])
    spans = list(zip(rows["start_frame"], rows["end_frame"]))
    assert spans == [(0, 100), (100, 200), (200, 300)]
    assert all(r.end_time - r.start_time <= MAX_SECONDS + 1e-6 for r in rows.itertuples())
    assert set(rows["shot_index"]) == {0} and set(rows["track_index"]) == {0}


def test_manifest_contract_and_funnel(curated):
    df, summary = curated["df"], curated["summary"]
    assert df["clip_id"].is_unique and len(df) == 4 + 2 + 3
    assert summary["sources"] == {"sources": 3, "with_clips": 3, "with_kept": 3, "clips": 9}
    assert summary["funnel"]["inputs"] == 9 and summary["funnel"]["kept"] == 9
    assert summary["input_frames"] == 220 + 50 + 300
    # Resume is per source: a rerun finds every source done.
    again = run_curate([str(p) for p in df["source_path"].unique()], curated["out"],
                       config=str(curated["out"].parent / "raw.yaml"), progress=False)
    assert again["processed"] == 0 and again["skipped_finished"] == 3


def test_single_shot_talking_heads_keep_their_decisions(shared_videos, tmp_path, ray_session):
    """The labelled single-shot clips, default config: one row each, decided as before."""
    cfg = tmp_path / "default-fast-x264.yaml"
    cfg.write_text("encode: {preset: ultrafast}\n")     # the preset does not change a decision
    # hdtf_3 rather than hdtf_1, whose real turned runs are cut out (tests/test_turned_frames.py).
    names = ["hdtf_3", "talkshow_2", "degraded_lq_1"]
    run_curate([str(shared_videos / f"{n}.mp4") for n in names], tmp_path / "out",
               config=str(cfg), progress=False)
    df = read_manifest(tmp_path / "out" / "manifest.parquet", CLIP_SCHEMA)
    got = {r.source_path.rsplit("/", 1)[1][:-4]: (r.status, r.reason) for r in df.itertuples()}
    assert got == {"hdtf_3": ("kept", "kept"), "talkshow_2": ("rejected", "side_face"),
                   "degraded_lq_1": ("rejected", "crop_too_small")}
    kept = df[df["status"] == "kept"].iloc[0]
    assert (kept["start_frame"], kept["end_frame"], kept["clip_num_frames"]) == (0, 200, 200)


@pytest.mark.parametrize("mode, expect", [("reject", [("rejected", "multiple_faces")] * 2),
                                          ("largest", [("kept", "kept")])])
def test_multi_face_reject_and_largest_modes(raw, mode, expect):
    """`reject` (the old behaviour) rejects both people of a two-person shot; `largest`
    keeps one clip per moment, the larger face's."""
    cfg = CurateConfig.load("fast")
    cfg = replace(cfg, face=replace(cfg.face, multi_face=mode))
    rows, _ = ClipCurator(cfg, raw["tmp"] / f"modes-{mode}")(str(raw["two"].path))
    assert [(r["status"], r["reason"]) for r in rows] == expect, [r["message"] for r in rows]
    assert all(r["multi_face_fraction"] == 1.0 for r in rows)
