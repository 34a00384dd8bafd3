"""Each curation stage on its own: the paper's rules at their edges, and the real
models (dlib, PP-OCR, ffmpeg/x264) on real and generated frames."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from stc.core.video import VideoError, crop_transcode, probe, read_frames
from stc.curation.config import FaceConfig, SamplingConfig, SideFaceConfig, TextConfig
from stc.curation.crop import crop_box, face_proportion
from stc.curation.faces import Box, FaceDetector, sample_indices
from stc.curation.motion import changed_pixels, motion_intensity
from stc.curation.side_face import LandmarkPredictor, eye_nose_ratio, is_side_face, summarise
from stc.curation.text import TextDetector

from .conftest import noise_video


# --- side face (paper Sec. 6.1) ------------------------------------------------------
def eyes_for_alpha(alpha: float, x30: float = 100.0, d45: float = 20.0) -> tuple[float, float, float]:
    """Outer eye corners x36 < x30 < x45 with |x36-x30| / |x45-x30| = alpha."""
    return x30 - alpha * d45, x30 + d45, x30


@pytest.mark.parametrize("alpha, side", [(0.39, True), (0.41, False), (1.0, False),
                                         (2.49, False), (2.51, True)])
def test_side_rule_at_alpha_edges(alpha, side):
    x36, x45, x30 = eyes_for_alpha(alpha)
    assert eye_nose_ratio(x36, x45, x30) == pytest.approx(alpha)
    assert is_side_face(x36, x45, x30) is side


@pytest.mark.parametrize("x36, x45, x30", [
    (80.0, 120.0, 125.0),   # nose right of both eye corners
    (80.0, 120.0, 70.0),    # nose left of both
    (120.0, 80.0, 125.0),   # mirrored landmark order, still outside
])
def test_nose_outside_the_eyes_is_side(x36, x45, x30):
    assert is_side_face(x36, x45, x30)


def test_nose_on_the_eye_corner_is_side_and_ratio_is_infinite():
    assert eye_nose_ratio(80.0, 120.0, 120.0) == math.inf
    assert is_side_face(80.0, 120.0, 120.0)
    assert is_side_face(80.0, 120.0, 80.0)  # alpha = 0


def test_thresholds_come_from_config():
    x36, x45, x30 = eyes_for_alpha(0.45)
    assert not is_side_face(x36, x45, x30)
    assert is_side_face(x36, x45, x30, SideFaceConfig(alpha_min=0.5))


def _points(alpha):
    p = np.zeros((68, 2))
    p[36, 0], p[45, 0], p[30, 0] = eyes_for_alpha(alpha)
    return p


def test_clip_decision_uses_the_fraction_of_side_frames():
    cfg = SideFaceConfig(max_side_fraction=0.5)
    stats = summarise([_points(a) for a in (1.0, 1.2, 0.3, 3.0)], cfg)
    assert stats.frames == 4 and stats.side_fraction == 0.5
    assert stats.ratio_median == pytest.approx(1.1) and stats.ratio_min == pytest.approx(0.3)
    assert not stats.is_side_dominated(cfg)
    assert summarise([_points(a) for a in (1.0, 0.3, 3.0)], cfg).is_side_dominated(cfg)
    assert summarise([], cfg).side_fraction is None


def test_a_tilted_head_is_not_a_turned_one():
    # Frontal landmarks (alpha 1, nose tip below the eyes) rolled 25 degrees in the image.
    p = np.zeros((68, 2))
    p[36], p[45], p[30] = (80.0, 100.0), (120.0, 100.0), (100.0, 124.0)
    t = math.radians(25)
    rolled = (p - 100) @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) + 100
    image_x = SideFaceConfig(axis="image_x")
    assert summarise([p], image_x).side_fraction == 0.0
    assert summarise([rolled], image_x).side_fraction == 1.0          # the paper's x reads a turn
    assert summarise([rolled], SideFaceConfig()).ratio_median == pytest.approx(1.0)
    # A real turn still reads as one along the eye line: the nose near one eye corner.
    p[30, 0] = 86.0
    assert summarise([p], SideFaceConfig()).side_fraction == 1.0


def test_side_face_evidence_keeps_every_frame_alpha_and_landmarks():
    pts = [_points(a) for a in (1.0, 0.3)] + [_points(1.0)]
    pts[2][30, 0] = pts[2][45, 0]       # nose on the eye corner: alpha is infinite
    ev = summarise(pts, SideFaceConfig(), frames=[0, 12, 24]).evidence
    assert ev["frames"] == [0, 12, 24] and ev["side"] == [False, True, True]
    assert ev["alpha"][:2] == [pytest.approx(1.0), pytest.approx(0.3)] and ev["alpha"][2] is None
    # x30, y30, x36, y36, x45, y45: what a reviewer needs to redraw the rule
    assert ev["points"][1] == [pts[1][30, 0], 0.0, pts[1][36, 0], 0.0, pts[1][45, 0], 0.0]
    with pytest.raises(ValueError, match="2 frame indices for 3"):
        summarise(pts, SideFaceConfig(), frames=[0, 1])


# --- sampling, crop --------------------------------------------------------------------
def test_sample_indices_cover_the_clip():
    idx = sample_indices(200, 25.0, SamplingConfig(per_second=2.0))
    assert idx[0] == 0 and idx[-1] == 199 and len(idx) == 18  # 8 s * 2 + first and last
    assert np.all(np.diff(idx) > 0)
    assert len(sample_indices(100_000, 25.0, SamplingConfig(), max_frames=64)) == 64
    assert sample_indices(3, 25.0, SamplingConfig()) == [0, 2]   # first and last
    assert sample_indices(3, 1.0, SamplingConfig()) == [0, 1, 2]
    assert sample_indices(0, 25.0, SamplingConfig()) == []


def test_crop_box_is_the_square_union_inside_the_frame():
    boxes = [Box(100, 100, 200, 200), Box(140, 110, 240, 210)]
    x0, y0, x1, y1 = crop_box(boxes, 640, 480, expand=1.0)
    assert (x1 - x0) == (y1 - y0) == 140           # union is 140 x 110, made square
    assert (x0, x1) == (100, 240) and y0 <= 100 and y1 >= 210
    # Expanded past the frame edge: the box moves inside instead of being squashed.
    x0, y0, x1, y1 = crop_box([Box(0, 300, 100, 400)], 640, 480, expand=1.8)
    assert x0 == 0 and y1 <= 480 and x1 - x0 == y1 - y0 == 180
    # Larger than the frame: clamped to the shorter side, and always even.
    x0, y0, x1, y1 = crop_box([Box(0, 0, 501, 401)], 641, 481, expand=2.0)
    assert y0 == 0 and y1 - y0 == 480 and x1 - x0 == 480 and x1 <= 641
    assert face_proportion([Box(0, 0, 50, 50)], (0, 0, 100, 100)) == 0.25


# --- motion (paper Sec. 6.2) -----------------------------------------------------------
def test_motion_counts_binarised_changed_pixels():
    a = np.zeros((32, 32), np.uint8)
    b = a.copy()
    b[:4, :8] = 100                 # 32 pixels change strongly
    b[10:12, :] = 10                # 64 pixels change below the threshold
    assert changed_pixels(a, b, threshold=20) == 32
    meter = motion_intensity([a, b, b, a], threshold=20)
    assert meter.total == 64 and meter.frames == 4
    assert meter.intensity == pytest.approx((32 + 0 + 32) / 3 / 1024)
    assert motion_intensity([a, a, a]).intensity == 0.0
    assert motion_intensity([a]).intensity is None


# --- probe and decode --------------------------------------------------------------------
def test_probe_and_decode_generated_clip(tmp_path):
    path = noise_video(tmp_path / "n.mp4", frames=30, size=96, fps=25)
    info = probe(path)
    assert (info.width, info.height, info.num_frames, info.codec) == (96, 96, 30, "h264")
    assert info.fps == pytest.approx(25.0) and info.duration == pytest.approx(1.2, abs=0.05)
    frames = read_frames(path, start=5, count=10)
    assert frames.shape == (10, 96, 96, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize("kind, needle", [
    ("missing", "file not found"),
    ("empty", "empty file (0 bytes)"),
    ("text", "not a video ffmpeg can open"),
    ("truncated", "or remove it"),
])
def test_bad_files_raise_errors_naming_the_file(tmp_path, kind, needle):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("this is not a video\n" * 10)
    elif kind == "truncated":
        good = noise_video(tmp_path / "good.mp4", frames=30)
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(VideoError) as err:
        probe(path)
        read_frames(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_crop_transcode_is_one_pass_and_deterministic(tmp_path):
    src = noise_video(tmp_path / "src.mp4", frames=20, size=128)
    outs = []
    for name in ("a.mp4", "b.mp4"):
        grays = list(crop_transcode(src, tmp_path / name, (16, 32, 80, 96), 64, crf=10, preset="ultrafast"))
        assert len(grays) == 20 and grays[0].shape == (64, 64)
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    written = read_frames(tmp_path / "a.mp4")
    assert written.shape == (20, 64, 64, 3)
    # The gray frames handed back are the frames that were encoded.
    decoded_gray = cv2.cvtColor(written[0], cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(decoded_gray - grays[0].astype(int)).mean() < 3


# --- real models on real frames --------------------------------------------------------
@pytest.fixture(scope="module")
def frontal_frame(shared_videos):
    return read_frames(shared_videos / "hdtf_1.mp4", 0, 1)[0]


def test_dlib_finds_one_frontal_face_with_landmarks(frontal_frame):
    boxes = FaceDetector(FaceConfig()).detect(frontal_frame)
    assert len(boxes) == 1
    b = boxes[0]
    assert 150 < b.x1 - b.x0 < 400 and 0 <= b.x0 < b.x1 <= 512
    pts = LandmarkPredictor()(frontal_frame, b)
    assert pts.shape == (68, 2)
    assert not is_side_face(pts[36, 0], pts[45, 0], pts[30, 0])
    assert FaceDetector(FaceConfig()).detect(np.full((240, 320, 3), 127, np.uint8)) == []


def test_ppocr_reads_drawn_text_but_nothing_on_a_plain_face(frontal_frame):
    det = TextDetector(TextConfig())
    assert not any(b.read for b in det(frontal_frame))
    # The text case is built by drawing text onto a real frame (the shared clips have none).
    with_text = frontal_frame.copy()
    cv2.putText(with_text, "BREAKING NEWS 2026", (20, 470), cv2.FONT_HERSHEY_SIMPLEX, 1.2,
                (255, 255, 255), 3)
    read = [b for b in det(with_text) if b.read]
    assert len(read) == 1 and read[0].rec_score >= 0.95
    assert read[0].text.replace(" ", "") == "BREAKINGNEWS2026"


def test_text_boxes_that_are_not_text_lines_are_ignored():
    det = TextDetector(TextConfig())
    line = np.array([[10, 10], [110, 10], [110, 30], [10, 30]], float)
    logo = np.array([[10, 10], [40, 10], [40, 32], [10, 32]], float)   # "TV5" after DB padding
    earring = np.array([[10, 10], [36, 10], [36, 52], [10, 52]], float)
    whole = np.array([[0, 0], [127, 0], [127, 127], [0, 127]], float)
    assert det.is_text_line(line, 128) and det.is_text_line(logo, 128)
    assert not det.is_text_line(earring, 128)   # taller than wide
    assert not det.is_text_line(whole, 128)     # most of the crop
