"""Identity-true tracks and person ids (issue 22 item 2).

The tracker and the clustering on their own run on made-up embeddings (one vector per
person); the real case is raw footage built from the shared clips (tests/raw_footage.py),
so who is on screen at every frame is known by construction: two different people framed at
the same place across a cut that the shot stage is told not to look for. It runs the real
models (dlib's detector, landmarks and 128-d face embedding, x264). Person ids across the
shots of a source (A in shots 1 and 3, B in shot 2) are pinned in tests/test_split.py, on
its curated corpus.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig, FaceConfig, TrackConfig
from stc.curation.faces import Box, FaceDetector, downscale
from stc.curation.identity import ClipFace, connected_identities, person_labels
from stc.curation.tracks import iou, track_faces
from stc.core.video import read_frames

from . import raw_footage

A, B = np.zeros(128), np.full(128, 0.1)          # |A - B| = 1.13: two people


def _box(x=100.0, y=100.0, side=100.0):
    return Box(x, y, x + side, y + side, 1.0)


def _embed(person_at):
    calls = []

    def embed(frame, box):
        calls.append(frame)
        return person_at(frame)
    return embed, calls


# --- the tracker --------------------------------------------------------------------------
def test_a_face_that_becomes_another_person_at_the_same_place_splits_the_track():
    # One box at one place every 12 frames; from frame 120 on it is someone else (a cut the
    # shot stage missed). Overlap alone links them all.
    dets = {f: [_box()] for f in range(0, 240, 12)}
    embed, calls = _embed(lambda f: A if f < 120 else B)
    by_overlap = track_faces(dets, TrackConfig(embed=False), fps=25.0, num_frames=240)
    assert len(by_overlap) == 1
    # Where the split falls; the frames cut out around it are tests/test_person_change.py's.
    tracks = track_faces(dets, TrackConfig(change_margin_seconds=0), fps=25.0, num_frames=240,
                         embed=embed)
    assert [(t.start, t.end) for t in tracks] == [(0, 109), (120, 240)]
    assert tracks[0].frames[-1] == 108 and tracks[1].frames[0] == 120
    # Checked about once a second, plus the frames between the last check and the drift.
    assert len(set(calls)) < len(dets)
    # Each track keeps the embeddings it computed, all of its own person.
    assert all((v == A).all() for v in tracks[0].embeddings.values())
    assert all((v == B).all() for v in tracks[1].embeddings.values())


def test_one_far_face_between_near_ones_is_an_outlier_not_a_new_person():
    dets = {f: [_box()] for f in range(0, 240, 12)}
    checked = sorted(track_faces(dets, TrackConfig(), fps=25.0, num_frames=240,
                                 embed=lambda f, b: A)[0].embeddings)
    blurred = checked[3]                  # a frame the identity check looks at
    embed, _ = _embed(lambda f: B if f == blurred else A)
    tracks = track_faces(dets, TrackConfig(), fps=25.0, num_frames=240, embed=embed)
    assert [(t.start, t.end) for t in tracks] == [(0, 240)]


def test_a_face_missed_on_one_frame_rejoins_its_track_only_if_it_is_the_same_person():
    # Seen at 0, 12, 24, missed at 36, a face at the same place at 48 onwards.
    dets = {f: ([] if f == 36 else [_box()]) for f in range(0, 96, 12)}
    same = track_faces(dets, TrackConfig(drift_check_seconds=100), fps=25.0, num_frames=96,
                       embed=lambda f, b: A)
    assert [(t.start, t.end) for t in same] == [(0, 96)]
    # The identity check runs rarely here (100 s): the gap link itself asks the embedding.
    other = track_faces(dets, TrackConfig(drift_check_seconds=100), fps=25.0, num_frames=96,
                        embed=lambda f, b: A if f < 36 else B)
    assert [(t.start, t.end) for t in other] == [(0, 25), (48, 96)]


# --- clustering ---------------------------------------------------------------------------
def _face(vec, shot, track, start, end):
    return ClipFace(np.asarray(vec, float), (shot, track), start, end)


def test_person_labels_join_shots_and_keep_faces_on_screen_together_apart():
    rng = np.random.default_rng(0)
    a = lambda: A + rng.normal(0, 0.01, 128)      # noqa: E731 - one person, many faces
    b = lambda: B + rng.normal(0, 0.01, 128)      # noqa: E731
    faces = [_face(a(), 0, 0, 0, 100), _face(b(), 1, 0, 100, 200), _face(a(), 2, 0, 200, 300),
             _face(a(), 2, 0, 300, 400)]
    assert person_labels(faces, 0.55) == [0, 1, 0, 0]
    # Two tracks on screen at the same frames are two people, however alike their faces.
    twins = [_face(A, 0, 0, 0, 100), _face(A + 0.001, 0, 1, 50, 150)]
    assert person_labels(twins, 0.55) == [0, 1]
    # The pieces of one track are one person, even where their faces drift apart.
    pieces = [_face(A, 0, 0, 0, 100), _face(B, 0, 0, 100, 200)]
    assert person_labels(pieces, 0.55) == [0, 0]


def test_connected_identities_by_blocks_equal_the_whole_matrix():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 0.2, (6, 128))
    vecs = np.concatenate([c + rng.normal(0, 0.01, (5, 128)) for c in centres])
    whole = connected_identities(vecs, 0.6, block=len(vecs))
    blocked = connected_identities(vecs, 0.6, block=7)
    assert whole == blocked and len(set(whole)) == 6
    assert connected_identities(vecs[:2], 1e-6, same=[(0, 1)]) == [0, 0]


# --- real footage -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(shared_videos, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identity")
    return {
        # two different people, same size and place, one hard cut between them
        "same_place": raw_footage.joined(shared_videos, tmp / "same_place.mp4", [
            ("hdtf_2.mp4", 75, 1.0), ("hdtf_5.mp4", 75, 1.0)]),
        "tmp": tmp,
    }


def _cfg(**shots):
    cfg = CurateConfig()
    cfg.crop.size, cfg.encode.preset = 128, "ultrafast"
    for k, v in shots.items():
        setattr(cfg.shots, k, v)
    return cfg


def test_two_people_at_the_same_place_across_a_missed_cut_are_never_one_track(built):
    src = built["same_place"]
    cut = src.cuts[0]
    # By construction overlap alone would link them: the faces just before and after the
    # cut sit at the same place.
    det = FaceDetector(FaceConfig())
    before, after = (det.detect(downscale(f, 640)[0])[0]
                     for f in read_frames(src.path, cut - 1, 2))
    assert iou(before, after) > TrackConfig().min_iou
    # The shot stage is off, so only the faces can tell.
    rows, _ = ClipCurator(_cfg(detector="none"), built["tmp"] / "same_place")(str(src.path))
    clips = [r for r in rows if r.get("start_frame") is not None and r["clip_id"] != r["source_id"]]
    assert len(clips) >= 2, [(r["clip_id"], r["message"]) for r in rows]
    for r in clips:
        assert r["end_frame"] <= cut or r["start_frame"] >= cut, (r["clip_id"], r["start_frame"],
                                                                  r["end_frame"])
    # Each person's clips reach to within the margin cut out around a change of person
    # (shot detection off: no picture to tell a cut from a dissolve by) and one sampling
    # stride (13 frames) of the cut.
    reach = round(TrackConfig().change_margin_seconds * 25) + 13
    assert max(r["end_frame"] for r in clips if r["end_frame"] <= cut) >= cut - reach
    assert min(r["start_frame"] for r in clips if r["start_frame"] >= cut) <= cut + reach
    first = {r["person_id"] for r in clips if r["end_frame"] <= cut}
    second = {r["person_id"] for r in clips if r["start_frame"] >= cut}
    assert len(first) == len(second) == 1 and first != second
    # The evidence: where the face became someone else, for the review page.
    doc = json.loads((built["tmp"] / "same_place" / "shots" / f"{clips[0]['source_id']}.json").read_text())
    after = min(r["start_frame"] for r in clips if r["start_frame"] >= cut)
    assert doc["identity_changes"] == [after] and doc["persons"] == 2


def test_the_review_timeline_marks_where_a_face_became_someone_else():
    from stc.audit.review import IDENTITY_COLOR, source_figure

    clip = {"clip_id": "s_s000_t00_00", "status": "kept", "reason": "kept", "start_frame": 0,
            "end_frame": 73, "person_id": "s_p00", "person_distance": 0.04,
            "identity_id": "id0", "split": "train", "turned_runs": [], "text": {}}
    other = {**clip, "clip_id": "s_s000_t01_00", "start_frame": 84, "end_frame": 150,
             "person_id": "s_p01", "identity_id": "id1", "split": "test"}
    fig = source_figure([{"source_id": "s", "num_frames": 150, "fps": 25.0, "shots": [[0, 150]],
                          "transitions": [], "identity_changes": [84],
                          "person_changes": [{"start": 60, "end": 84, "kind": "gradual"}],
                          "clips": [clip, other]}], "t")
    ax = fig.axes[0]
    marks = [ln for ln in ax.lines if ln.get_color() == IDENTITY_COLOR]
    assert [list(ln.get_xdata()) for ln in marks] == [[84, 84]]
    labels = [t.get_text() for t in ax.texts]
    assert any("person s_p01 (face 0.04 from its mean) id1 in test" in t for t in labels), labels
    # The frames cut out around the change, shaded and labelled.
    assert any("person change (gradual) 60-84" in t for t in labels), labels
    from matplotlib.colors import to_rgba
    shaded = [p for p in ax.patches if p.get_facecolor()[:3] == to_rgba(IDENTITY_COLOR)[:3]]
    assert [(p.get_x(), p.get_width()) for p in shaded] == [(60, 24)]
