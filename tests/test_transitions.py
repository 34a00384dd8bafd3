"""Every transition ends a shot: dissolves, fades through black, wipes, jump cuts and hard
cuts between two people framed alike, on footage built from the real shared clips
(tests/transitions_footage.py) so every span is known by construction.

The real pipeline runs end to end (`run_curate` on Ray, TransNetV2, dlib, PP-OCR, x264):
every transition must be found with its type, and no kept clip may hold more than 2 frames
of one. `--config fast` (PySceneDetect) is pinned to what it finds: everything but the
dissolve.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from stc.core.video import read_frames
from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig, ShotConfig
from stc.curation.shots import (
    TRANSNET_SIZE,
    SceneDetectShots,
    gate_opens,
    shots_between,
    window_change,
)
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import read_manifest
from stc.pipelines.curate import run_curate

from . import raw_footage, transitions_footage

TOLERANCE = 2           # frames a kept clip may share with a transition


@pytest.fixture(scope="module")
def edited(shared_videos, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transitions")
    return {"every": transitions_footage.every_transition(shared_videos, tmp / "every.mp4"),
            "tmp": tmp}


def _overlap(a0, a1, b0, b1) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _matches(truth, found) -> dict:
    """Each true transition -> the found one overlapping it (within 2 frames), or None."""
    out = {}
    for kind, a, b in truth:
        hit = [t for t in found if _overlap(a - TOLERANCE, b + TOLERANCE, t["start"], max(t["end"], t["start"] + 1))]
        out[(kind, a, b)] = hit[0] if hit else None
    return out


def _shots_doc(out, rows):
    sid = rows["source_id"].iloc[0]
    return json.loads((out / "shots" / f"{sid}.json").read_text())


EXPECTED_TYPE = {"dissolve": "dissolve", "fade": "fade", "wipe": "wipe", "jump": "jump_cut", "cut": "cut"}


def test_every_transition_ends_a_shot_in_the_curate_pipeline(edited, ray_session):
    built = edited["every"]
    cfg = edited["tmp"] / "default-small.yaml"
    cfg.write_text("crop: {size: 128}\nencode: {preset: ultrafast}\n")
    out = edited["tmp"] / "out"
    run_curate([str(built.path)], out, config=str(cfg), progress=False)
    rows = read_manifest(out / "manifest.parquet", CLIP_SCHEMA).sort_values("start_frame")
    doc = _shots_doc(out, rows)
    found = doc["transitions"]
    # Found, each with its type, and nothing else.
    for (kind, a, b), hit in _matches(built.transitions, found).items():
        assert hit is not None, (kind, a, b, found)
        assert hit["type"] == EXPECTED_TYPE[kind], (kind, hit)
    assert len(found) == len(built.transitions), found
    # The shots are the frames between the transitions; no kept clip holds a transition.
    assert len(doc["shots"]) == len(built.shots)
    kept = rows[rows["status"] == "kept"]
    assert len(kept) >= len(built.shots) - 1, list(rows["message"])
    for r in kept.itertuples():
        for kind, a, b in built.transitions:
            assert _overlap(r.start_frame, r.end_frame, a, b) <= TOLERANCE, (r.clip_id, kind, a, b)
        assert any(s0 <= r.start_frame and r.end_frame <= s1 for s0, s1, _ in doc["shots"])


def test_fast_config_finds_all_but_the_dissolve_and_no_cut_in_a_moving_head(edited, shared_videos):
    """PySceneDetect sees the hard cuts, the thumbnail checks the fade and the wipe, the
    face check the jump cut and the cut between two people on one wall; a dissolve is
    missed (the fast config says so). On real single-shot clips with fast head turns
    nothing is found."""
    built = edited["every"]
    cfg = CurateConfig.load("fast")
    curator = ClipCurator(cfg, edited["tmp"] / "fast")
    curator(str(built.path))
    found = json.loads(next((edited["tmp"] / "fast" / "shots").glob("every-*.json")).read_text())
    hits = _matches(built.transitions, found["transitions"])
    missed = [k for k, hit in hits.items() if hit is None]
    assert [k[0] for k in missed] == ["dissolve"], found["transitions"]
    assert all(hit["type"] == EXPECTED_TYPE[k[0]] for k, hit in hits.items() if hit is not None)
    for name in ("hdtf_4", "hdtf_6"):
        curator(str(shared_videos / f"{name}.mp4"))
        doc = json.loads(next((edited["tmp"] / "fast" / "shots").glob(f"{name}-*.json")).read_text())
        assert doc["transitions"] == [] and len(doc["shots"]) == 1, (name, doc["transitions"])


def test_the_gate_opens_on_gradual_transitions(edited):
    """The windowed gate opens on every block holding a dissolve or a fade, which a
    per-frame jump (2-5 grey levels a frame here) never shows."""
    frames = read_frames(edited["every"].path, 0, 150)
    thumbs = [cv2.resize(f, TRANSNET_SIZE, interpolation=cv2.INTER_AREA) for f in frames]
    change = [window_change(thumbs, t) for t in range(len(thumbs))]
    per_frame = [0.0] + [float(np.abs(b.astype(np.int16) - a).mean()) for a, b in zip(thumbs, thumbs[1:])]
    for kind, a, b in edited["every"].transitions[:2]:       # the dissolve, the fade
        assert max(per_frame[a:b]) < 10, kind                 # the old gate's gate_jump
        for block in range(a // 50, (b - 1) // 50 + 1):
            assert gate_opens(change, block, ShotConfig()), (kind, block)


def test_scenedetect_scores_a_black_and_white_source_on_luma(shared_videos, tmp_path):
    """A hard cut between two black-and-white shots: the content score averages hue,
    saturation and luma, so on grey frames a cut scores a third of its luma change and
    passes no threshold; the detector sees the source has no colour and scores luma alone."""
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector

    built = raw_footage.joined(shared_videos, tmp_path / "cuts.mp4",
                               [("hdtf_1.mp4", 30, 1.4), ("hdtf_3.mp4", 30, 1.4)])
    grey = [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
            for f in read_frames(built.path)]
    det = SceneDetectShots(ShotConfig(detector="scenedetect"), 25.0, 1280, 720)
    thumbs = [cv2.resize(f, det.thumb_size, interpolation=cv2.INTER_AREA) for f in grey]
    for t in thumbs:
        det.push(t)
    det.finish()
    assert det.luma_only
    shots = shots_between(det.transitions, 0, len(grey))
    assert [s.start for s in shots[1:]] == built.cuts
    # The same frames scored on colour as well, as before: the cut is missed.
    colour = ContentDetector(threshold=ShotConfig().content_threshold)
    cuts = [c for i, t in enumerate(thumbs)
            for c in colour.process_frame(FrameTimecode(i, 25.0), cv2.cvtColor(t, cv2.COLOR_RGB2BGR))]
    assert cuts == []


@pytest.mark.parametrize("clips, frames", [(("hdtf_1.mp4", "hdtf_5.mp4"), 15),
                                           (("hdtf_2.mp4", "hdtf_1.mp4"), 30)])
def test_a_dissolve_the_single_frame_head_underscores_is_found_whole(shared_videos, tmp_path,
                                                                     clips, frames):
    """Between two letterboxed faces TransNetV2's single-frame head scores these dissolves
    0.13 and 0.31 at most (its threshold: 0.5) while its many-hot head marks a run of their
    frames: that run is a dissolve, widened by the margin since it marks only the middle of
    a long one. The shots either side hold none of its frames; a single shot stays one shot."""
    a, b = clips
    built = transitions_footage.edit(shared_videos, tmp_path / "d.mp4", [
        transitions_footage.ShotPart(a, 0, 60, "letterbox", 1.1), transitions_footage.Join("dissolve", frames),
        transitions_footage.ShotPart(b, 30, 60, "letterbox", 1.1)])
    (_, d0, d1), = built.transitions
    pictures = read_frames(built.path)
    on = shots_between(_detect(pictures, ShotConfig()), 0, len(pictures))
    assert len(on) == 2 and on[0].end <= d0 and on[1].start >= d1, (on, d0, d1)
    # Without the run rule the single-frame head alone misses it.
    off = _detect(pictures, ShotConfig(many_hot_min_frames=0))
    assert not any(_overlap(t.start, t.end, d0, d1) for t in off), off
    alone = read_frames(shared_videos / a)
    assert _detect(alone, ShotConfig()) == []


def _detect(pictures, cfg: ShotConfig) -> list:
    from stc.curation.shots import make_detector

    det = make_detector(cfg, 25.0, pictures[0].shape[1], pictures[0].shape[0])
    for f in pictures:
        det.push(np.ascontiguousarray(cv2.resize(f, det.thumb_size, interpolation=cv2.INTER_AREA)))
    det.finish()
    return det.transitions
