"""Bad inputs that used to pass as good ones (issue 11, items 4 and 5).

* A file cut short (an interrupted download) is an `error` row with reason `truncated`,
  whether its index survived (moov first: ffmpeg decodes the part that is there without a
  word) or not, and whether 10, 50 or 90% of it is left.
* A clip whose display matrix says "turn me" (phone videos) is analysed and cropped upright:
  PyAV 18 exposes the rotation only on decoded frames, and the old probe read 0 for it.

Inputs are made from the bundled sample clip with the project's ffmpeg, so these run
without the shared clips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from stc.core.video import (
    TruncatedVideo,
    check_frame_count,
    ffmpeg_exe,
    probe,
    read_frames,
)
from stc.curation.clip import ClipCurator
from stc.curation.config import CurateConfig
from stc.manifests.clips import REASONS, funnel_counts

from tests.conftest import SHARED_VIDEOS

SAMPLE = Path(__file__).resolve().parents[1] / "curation" / "samples" / "hdtf_3.mp4"


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """Clips made once for the module: 75-frame (3 s) talking-head clips with the index first
    (faststart) and last, an upright 384x512 portrait, and the same portrait stored sideways
    with a display matrix that turns it back."""
    d = tmp_path_factory.mktemp("inputs")
    common = ["-i", str(SAMPLE), "-frames:v", "75", "-an", "-c:v", "libx264", "-preset", "veryfast"]
    ffmpeg(*common, "-vf", "scale=384:384", "-crf", "23", "-movflags", "+faststart",
           str(d / "faststart.mp4"))
    ffmpeg(*common, "-vf", "scale=384:384", "-crf", "23", str(d / "index_last.mp4"))
    ffmpeg("-i", str(SAMPLE), "-frames:v", "60", "-an", "-vf", "crop=384:512:64:0",
           "-c:v", "libx264", "-crf", "12", "-preset", "veryfast", str(d / "upright.mp4"))
    # Stored turned 90 degrees clockwise; a player turns it back 90 degrees counter-clockwise.
    ffmpeg("-i", str(d / "upright.mp4"), "-an", "-vf", "transpose=1", "-c:v", "libx264",
           "-crf", "12", "-preset", "veryfast", str(d / "sideways.mp4"))
    ffmpeg("-display_rotation", "90", "-i", str(d / "sideways.mp4"), "-c", "copy",
           str(d / "portrait.mp4"))
    return d


def cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def curator(tmp_path_factory) -> ClipCurator:
    return ClipCurator(CurateConfig.load(None), tmp_path_factory.mktemp("curated"))


@pytest.mark.parametrize("layout", ["faststart", "index_last"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_cut_mp4_is_a_truncated_error_row(made, curator, tmp_path, layout, fraction):
    path = cut(made / f"{layout}.mp4", tmp_path / f"{layout}_{int(fraction * 100)}.mp4", fraction)
    (row,), _ = curator(str(path))
    assert (row["status"], row["reason"]) == ("error", "truncated"), row["message"]
    assert str(path) in row["message"] and "download it again" in row["message"]
    assert row["clip_path"] is None
    assert REASONS["truncated"] == ("error", "decodable")
    assert funnel_counts(["truncated", "kept"])["decodable"] == 1


def test_frames_short_of_the_declared_count_are_truncated_too(made, curator, tmp_path):
    """A cut file whose boxes were 'repaired' to fit (mdat resized to the bytes left) still
    declares 75 frames in its index; decoding gives far fewer: truncated, not too_short."""
    data = bytearray(cut(made / "faststart.mp4", tmp_path / "x.mp4", 0.5).read_bytes())
    at = data.index(b"mdat") - 4
    data[at:at + 4] = (len(data) - at).to_bytes(4, "big")
    path = tmp_path / "repaired.mp4"
    path.write_bytes(bytes(data))
    info = probe(path)                       # the boxes fit: no verdict from them
    assert info.num_frames == 75
    (row,), _ = curator(str(path))
    assert (row["status"], row["reason"]) == ("error", "truncated"), row["message"]
    assert "of the 75 frames" in row["message"]
    with pytest.raises(TruncatedVideo):
        check_frame_count(info, 33)


def test_whole_files_are_not_called_truncated(made, shared_videos_or_samples):
    for path in [made / "faststart.mp4", made / "index_last.mp4", *shared_videos_or_samples]:
        info = probe(path)
        check_frame_count(info, len(read_frames(path, 0, None, "gray")))


@pytest.fixture(scope="module")
def shared_videos_or_samples() -> list[Path]:
    found = sorted(SHARED_VIDEOS.glob("*.mp4")) if SHARED_VIDEOS.is_dir() else []
    return found or sorted(SAMPLE.parent.glob("*.mp4"))


def test_display_rotation_is_read_from_the_decoded_frames(made):
    upright, portrait = probe(made / "upright.mp4"), probe(made / "portrait.mp4")
    assert (upright.width, upright.height, upright.rotation) == (384, 512, 0)
    # -display_rotation 90 is counter-clockwise; stc records the clockwise turn, 270.
    assert (portrait.width, portrait.height, portrait.rotation) == (384, 512, 270)
    a, b = read_frames(made / "upright.mp4", 0, 3), read_frames(made / "portrait.mp4", 0, 3)
    assert a.shape == b.shape == (3, 512, 384, 3)
    assert np.abs(a.astype(int) - b).mean() < 3       # the same picture, two lossy encodes
    assert b.flags.c_contiguous and b.flags.owndata


def first_kept(curator: ClipCurator, path: Path) -> dict:
    rows, _ = curator(str(path))
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept, [(r["reason"], r["message"]) for r in rows]   # sideways: dlib finds no face
    return kept[0]


def test_a_rotated_clip_is_analysed_and_cropped_upright(made, curator):
    """Analysis (PyAV frames, turned by stc) and the crop (ffmpeg's autorotate) must see the
    same upright picture: the box found on one is cut from the other."""
    up, rot = first_kept(curator, made / "upright.mp4"), first_kept(curator, made / "portrait.mp4")
    assert rot["rotation"] == 270 and (rot["width"], rot["height"]) == (384, 512)
    box = lambda r: np.array([r["crop_x0"], r["crop_y0"], r["crop_x1"], r["crop_y1"]])  # noqa: E731
    assert np.abs(box(up) - box(rot)).max() <= 8, (box(up), box(rot))
    assert abs(rot["face_frame_fraction"] - up["face_frame_fraction"]) < 0.1
    out = curator.out_dir
    a = read_frames(out / up["clip_path"], 0, 5).astype(float)
    b = read_frames(out / rot["clip_path"], 0, 5).astype(float)
    psnr = 10 * np.log10(255 ** 2 / np.mean((a - b) ** 2))
    assert psnr > 30, psnr          # the written clip is upright too, the same crop


def test_bad_inputs_each_become_clean_rows(made, curator, tmp_path):
    """A zoo of inputs a real collection contains: each gives rows with a status and a known
    reason, never a crash or an internal_error; the ones whose verdict is certain get it."""
    d = tmp_path
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("hello, not a video\n")
    (d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(100_000))
    (d / "dangling.mp4").symlink_to(d / "gone.mp4")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(d / "audio_only.mp4"))
    ffmpeg("-i", str(SAMPLE), "-frames:v", "1", str(d / "still.png"))
    (d / "png.mp4").write_bytes((d / "still.png").read_bytes())
    ffmpeg("-i", str(SAMPLE), "-frames:v", "1", "-c:v", "libx264", str(d / "one_frame.mp4"))
    ffmpeg("-i", str(SAMPLE), "-frames:v", "30", "-vf", "scale=34:34", "-c:v", "libx264",
           str(d / "tiny.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-c:v", "libx264",
           str(d / "no_face.mp4"))
    ffmpeg("-i", str(made / "faststart.mp4"), "-c", "copy", str(d / "whole.mkv"))
    cut(d / "whole.mkv", d / "cut.mkv", 0.5)
    # Stored upside down, with a display matrix that turns it back.
    ffmpeg("-i", str(made / "upright.mp4"), "-vf", "hflip,vflip", "-c:v", "libx264", "-crf", "12",
           str(d / "stored_flipped.mp4"))
    ffmpeg("-display_rotation", "180", "-i", str(d / "stored_flipped.mp4"), "-c", "copy",
           str(d / "upside_down.mp4"))
    (d / "stored_flipped.mp4").unlink()
    ffmpeg("-i", str(made / "upright.mp4"), "-vf", "setpts='PTS+if(gt(N,20),0.3/TB,0)'",
           "-fps_mode", "vfr", "-c:v", "libx264", str(d / "vfr.mp4"))
    ffmpeg("-i", str(made / "upright.mp4"), "-c:v", "libvpx-vp9", "-b:v", "300k", "-deadline",
           "realtime", str(d / "vp9.webm"))
    flipped = bytearray((made / "index_last.mp4").read_bytes())
    for i in range(2000, len(flipped) // 2, 997):
        flipped[i] ^= 0xFF
    (d / "bit_rot.mp4").write_bytes(bytes(flipped))
    for pct in (0.1, 0.5, 0.9):
        cut(made / "faststart.mp4", d / f"cut_{int(pct * 100)}.mp4", pct)
    cut(made / "index_last.mp4", d / "cut_index_last.mp4", 0.5)

    expect = {"empty": "unreadable", "text": "unreadable", "random": "unreadable",
              "dangling": "unreadable", "audio_only": "unreadable", "png": "too_short",
              "one_frame": "too_short", "no_face": "no_face", "cut_10": "truncated",
              "cut_50": "truncated", "cut_90": "truncated", "cut_index_last": "truncated",
              "cut": "truncated"}       # an mkv declares no frame count, only a duration
    inputs = sorted(p for p in d.iterdir() if p.suffix in (".mp4", ".mkv", ".webm")
                    and p.name != "whole.mkv")
    assert len(inputs) == 18
    verdicts = {}
    for path in inputs:
        rows, _ = curator(str(path))
        assert rows, path
        for row in rows:
            assert row["reason"] in REASONS and row["reason"] != "internal_error", (path, row)
            assert row["status"] == REASONS[row["reason"]][0]
            assert row["status"] == "kept" or row["message"], (path, row)
        verdicts[path.stem] = {r["reason"] for r in rows}
    for stem, reason in expect.items():
        assert verdicts[stem] == {reason}, (stem, verdicts[stem])
    assert "kept" in verdicts["upside_down"], verdicts["upside_down"]
