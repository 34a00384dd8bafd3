"""`stc enhance` on footage built from the real clips, truth by construction: every frame has
a face, and the cuts are where the clips were joined.

- Every shared clip, letterboxed into 1280x720 (scaled to the height, black bars) for 20
  frames, joined end to end with hard cuts: the face is restored on >= 95% of frames, no
  track crosses a cut, and the crop centre's frame-to-frame second difference stays under 1%
  of the crop side at the 99th percentile in every track (no saw-tooth).
- Two clips joined by a 15-frame dissolve (`transitions_footage`): no track reaches into it.
- talkshow_2 (mostly three-quarter views) as it is: restored on >= 90% of frames.
- A frame folder in gives a frame folder out (same names, bit-exact outside the crops), with
  per-frame progress; --draw-box draws; an incomplete earlier output is redone, a complete
  one skipped; the MMOD CNN detector, run on sampled frames, finds the face too.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from . import raw_footage

from stc.core.frames import frame_files
from stc.core.video import encode_frames, probe, read_frames
from stc.model.restore.crops import read_boxes, union_box
from stc.model.restore.engine import FaceVideoRestorer
from stc.model.restore.options import FaceOptions
from stc.pipelines.enhance import Enhancer, run_enhance
from .test_stage2 import save_tiny_run

W, H = 1280, 720
SEGMENT = 20                    # frames of each clip in the joined video
FAST = dict(crf=18, preset="ultrafast")


def fit(clip: Path) -> tuple[str, int, float]:
    """A `raw_footage.joined` part: the clip's first SEGMENT frames scaled to fit 1280x720."""
    info = probe(clip)
    return clip.name, SEGMENT, min(W / info.width, H / info.height)


def restored_fraction(boxes) -> float:
    per_frame = boxes.groupby("frame")["restored"].apply(lambda r: (r == "yes").any())
    return float(per_frame.mean())


def second_difference_p99(boxes) -> dict[int, float]:
    """Per track: 99th percentile of |c[t+1] - 2 c[t] + c[t-1]| / crop side, c the centre."""
    out = {}
    for k, t in boxes.dropna(subset=["track"]).groupby("track"):
        t = t.sort_values("frame")
        c = np.stack([(t.x0 + t.x1) / 2, (t.y0 + t.y1) / 2], 1)
        if len(c) < 3:
            continue
        d2 = np.linalg.norm(c[2:] - 2 * c[1:-1] + c[:-2], axis=1) / (t.x1 - t.x0).to_numpy()[1:-1]
        out[int(k)] = float(np.percentile(d2, 99))
    return out


@pytest.fixture(scope="module")
def joined(shared_videos, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("enhance_tracks")
    clips = sorted(shared_videos.glob("*.mp4"))
    built = raw_footage.joined(shared_videos, root / "joined.mp4", [fit(c) for c in clips])
    src = built.path
    run = save_tiny_run(root / "run2")
    out = root / "out" / "joined.mp4"
    summary = run_enhance([str(src)], out, run, device="cpu", progress=False, save_crops=True,
                          **FAST)
    assert summary["done"] == 1, summary
    return {"root": root, "run": run, "clips": clips, "src": src, "out": out, "built": built,
            "boxes": read_boxes(out.parent / "joined_crops")}


def test_the_face_is_restored_on_nearly_every_letterboxed_frame(joined):
    boxes = joined["boxes"]
    assert boxes["frame"].nunique() == SEGMENT * len(joined["clips"])
    assert restored_fraction(boxes) >= 0.95


def test_no_track_crosses_a_constructed_cut(joined):
    tracks = joined["boxes"].dropna(subset=["track"]).groupby("track")["frame"]
    starts = [start for _, start, _, _ in joined["built"].parts]
    segments = {int(k): {int(np.searchsorted(starts, f, side="right")) - 1 for f in frames}
                for k, frames in tracks}
    assert segments and all(len(s) == 1 for s in segments.values()), segments
    # every segment (clip) has its own track
    assert set().union(*segments.values()) == set(range(len(joined["clips"])))


def test_no_track_crosses_a_constructed_dissolve(shared_videos, tmp_path):
    """Two people joined by a 15-frame dissolve, the gradual transition a frame-difference
    cut detector misses: every track lies wholly before or wholly after it (no cross-faded
    frame of two people is restored as one face), and both shots get theirs. Without shot
    detection (`shots: none`) the tracker alone ends the first track inside the dissolve."""
    from .transitions_footage import Join, ShotPart, edit

    built = edit(shared_videos, tmp_path / "dissolve.mp4", [
        ShotPart("hdtf_1.mp4", 0, 25), Join("dissolve", 15), ShotPart("hdtf_2.mp4", 20, 25)])
    ((kind, t0, t1),) = built.transitions
    assert kind == "dissolve"
    crops = tmp_path / "crops"
    FaceVideoRestorer(keep, 32, 4, FaceOptions()).enhance(built.path, tmp_path / "out.mp4",
                                                          crops_dir=crops, **FAST)
    boxes = read_boxes(crops).dropna(subset=["track"])
    spans = {int(k): (int(f.min()), int(f.max())) for k, f in boxes.groupby("track")["frame"]}
    assert all(last < t0 or first >= t1 for first, last in spans.values()), (spans, t0, t1)
    assert any(last < t0 for _, last in spans.values()), spans        # the first shot's
    assert any(first >= t1 for first, _ in spans.values()), spans     # and the second's


def test_crops_follow_the_head_without_a_saw_tooth(joined):
    p99 = second_difference_p99(joined["boxes"])
    assert p99 and max(p99.values()) < 0.01, p99


def keep(clips: np.ndarray) -> tuple[np.ndarray, float]:
    """A restorer that gives its input back: which frames get restored is the engine's
    decision, not the model's, and 300 frames of the tiny model cost a minute."""
    return clips, 0.0


def test_the_three_quarter_talk_show_clip_is_restored_on_nine_frames_in_ten(joined,
                                                                            shared_videos):
    restorer = FaceVideoRestorer(keep, 32, 4, FaceOptions())
    crops = joined["root"] / "ts2_crops"
    stats = restorer.enhance(shared_videos / "talkshow_2.mp4", joined["root"] / "ts2.mp4",
                             crops_dir=crops, **FAST)
    assert stats["frames"] == 300
    assert restored_fraction(read_boxes(crops)) >= 0.90


def test_frame_folder_in_frame_folder_out(joined, tmp_path):
    """input/*.png -> output/*.png with the same names; outside the restored crops the
    output is the input, bit for bit (PNG is lossless); progress is reported per frame."""
    src = tmp_path / "input"
    src.mkdir()
    for i, f in enumerate(read_frames(joined["src"], 0, 10)):
        cv2.imwrite(str(src / f"shot_{i + 1}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out = tmp_path / "output"
    summary = run_enhance([str(src)], out, joined["run"], device="cpu", progress=False,
                          save_crops=True)
    assert summary["done"] == 1, summary
    assert [p.name for p in frame_files(out)] == [p.name for p in frame_files(src)]
    ins = np.stack([cv2.imread(str(p))[:, :, ::-1] for p in frame_files(src)])
    outs = np.stack([cv2.imread(str(p))[:, :, ::-1] for p in frame_files(out)])
    x0, y0, x1, y1 = union_box(read_boxes(tmp_path / "output_crops"))
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(outs[:, outside], ins[:, outside])
    assert np.abs(outs[:, ~outside].astype(int) - ins[:, ~outside]).mean() > 1
    # per-frame progress, both passes
    seen: dict[str, list[int]] = {}
    restorer = Enhancer(joined["run"], "cpu", faces=FaceOptions(draw_box=True)).faces
    restorer.enhance(src, tmp_path / "drawn", on_frame=lambda ph, n: seen.setdefault(ph, []).append(n))
    assert seen["tracking"] == list(range(1, 11)) and seen["restoring"] == list(range(1, 11))
    # --draw-box: the crop box's edge is drawn in green
    drawn = cv2.imread(str(frame_files(tmp_path / "drawn")[5]))[:, :, ::-1].astype(int)
    b = read_boxes(tmp_path / "output_crops").query("frame == 5").iloc[0]
    edge = drawn[int(round(b.y0)) + 1, int((b.x0 + b.x1) / 2)]
    assert edge[1] > 180 and edge[0] < 60 and edge[2] < 60


def test_an_incomplete_output_is_redone_and_a_complete_one_skipped(joined, tmp_path):
    src = tmp_path / "in.mp4"
    encode_frames(read_frames(joined["src"], 0, 8), src, fps=25, **FAST)
    out = tmp_path / "out" / "in.mp4"
    encode_frames(read_frames(joined["src"], 0, 3), out, fps=25, **FAST)   # a cut-short output
    first = run_enhance([str(src)], out, joined["run"], device="cpu", progress=False, **FAST)
    assert first["done"] == 1 and first["skipped"] == 0
    assert len(read_frames(out)) == 8
    again = run_enhance([str(src)], out, joined["run"], device="cpu", progress=False, **FAST)
    assert again["done"] == 0 and again["skipped"] == 1


def test_the_cnn_detector_on_sampled_frames_finds_the_face(joined, shared_videos, tmp_path):
    """dlib's MMOD CNN (weights in face-recognition-models) on every 5th frame, tracked in
    between: every frame of a three-quarter clip letterboxed to 720p is restored."""
    src = raw_footage.joined(shared_videos, tmp_path / "ts2.mp4",
                             [("talkshow_2.mp4", 16, H / 512)], fps=20).path
    restorer = FaceVideoRestorer(keep, 32, 4, FaceOptions(detector="cnn", shots="none"))
    stats = restorer.enhance(src, tmp_path / "out.mp4", crops_dir=tmp_path / "crops", **FAST)
    boxes = read_boxes(tmp_path / "crops")
    assert stats["detect_every"] == 4 and stats["detections"] == 5     # 0, 4, 8, 12 and 15
    assert restored_fraction(boxes) == 1.0 and (boxes["detected"] == "yes").sum() == 5


def test_the_readme_shows_the_draw_box_picture_and_the_measured_detector_table():
    """The README's before/after picture (made with --draw-box) is there, and its detector
    table says what benchmarks/results/enhance_detectors.json measured."""
    import json

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    picture = "benchmarks/results/enhance_before_after.png"
    assert f"![before/after, made with --draw-box]({picture})" in readme
    assert (root / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    measured = json.loads((root / "benchmarks/results/enhance_detectors.json").read_text())
    for name, r in measured["detectors"].items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:6] == [f"{100 * r['letterboxed_720p']['recall']:.0f}%",
                              f"{100 * r['talkshow_2']['recall']:.0f}%",
                              f"{r['letterboxed_720p']['detector_ms_per_frame_run']:.0f}",
                              f"{r['letterboxed_720p']['first_pass_ms_per_frame']:.0f}"], row
