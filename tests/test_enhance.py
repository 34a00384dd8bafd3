"""Face-aware `stc enhance` on real clips: a talk-show face placed on a 1280x720 frame comes
back 1280x720 (or x N), its face region restored by a (tiny, untrained) Stage II model and
everything outside the pasted boxes bit-identical to the same frames encoded without any
restoration; chunk seams crossfade; faceless frames pass through; memory stays bounded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stc.core.config import ConfigError
from stc.core.video import FrameWriter, encode_frames, ffmpeg_exe, probe, read_frames, resize_frames
from stc.pipelines.cli import main as stc
from stc.pipelines.enhance import Enhancer, run_enhance
from stc.model.restore.crops import read_boxes, union_box
from stc.model.restore.engine import FaceVideoRestorer, chunk_weight, keep_center_face, plan_chunks
from stc.model.restore.options import FaceOptions
from stc.model.restore.paste import DEFAULT_ELLIPSE, face_mask
from stc.model.restore.tracking import FaceTrack
from .test_stage2 import save_tiny_run, tiny_stage2

W, H = 1280, 720
# x264 lossless in yuv444p: what remains of a pass-through is the per-pixel RGB<->YUV
# rounding, identical for identical input pixels.
LOSSLESS = dict(crf=0, preset="ultrafast", pix_fmt="yuv444p")


def background(width: int = W, height: int = H) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1),
                     np.full_like(xx, 90)], -1).astype(np.uint8)


def place(frames: np.ndarray, x: int, y: int, faceless_head: int = 0) -> np.ndarray:
    """The clip pasted at (x, y) on a 1280x720 gradient, drifting right 2 px per frame,
    after `faceless_head` frames of background only."""
    bg = background()
    out = [bg.copy() for _ in range(faceless_head)]
    for i, f in enumerate(frames):
        b = bg.copy()
        h, w = f.shape[:2]
        b[y:y + h, x + 2 * i:x + 2 * i + w] = f
        out.append(b)
    return np.stack(out)


def with_audio(video: Path, out: Path) -> Path:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(video),
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest",
                    str(out)], check=True)
    return out


def passthrough(src: Path, dst: Path, upscale: int = 1) -> np.ndarray:
    """The input's frames through the same encoder settings, untouched (resized by
    `upscale` as the background is): what enhance must give outside the face boxes."""
    frames = read_frames(src)
    h, w = frames.shape[1:3]
    with FrameWriter(dst, w * upscale, h * upscale, probe(src).fps, **LOSSLESS) as wr:
        for f in frames:
            wr.write(resize_frames(f, w * upscale, h * upscale))
    return read_frames(dst)


@pytest.fixture(scope="module")
def work(shared_videos, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("enhance")
    face = read_frames(shared_videos / "talkshow_1.mp4", 0, 12)       # 388x512, 20 fps
    silent = encode_frames(place(face, 446, 104, faceless_head=2), root / "silent.mp4",
                           fps=20, **LOSSLESS)
    two = read_frames(shared_videos / "hdtf_3.mp4", 0, 6)             # 512x512
    two = np.stack([resize_frames(f, 384, 384) for f in two])
    pair = place(face[:6], 446, 104)
    pair[:, 300:684, 860:1244] = two                                  # a second, off-centre face
    return {"root": root, "run": save_tiny_run(root / "run2"),
            "talk": with_audio(silent, root / "talk.mp4"),
            "two": encode_frames(pair, root / "two.mp4", fps=25, **LOSSLESS)}


def test_enhance_restores_the_face_and_leaves_the_rest_of_the_frame(work):
    import av

    out = work["root"] / "out" / "talk.mp4"
    summary = run_enhance([str(work["talk"])], out, work["run"], device="cpu", progress=False,
                          save_crops=True, crf=0, preset="ultrafast", pix_fmt="yuv444p")
    assert summary["done"] == 1 and not summary["errors"]
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (W, H, 14) and info.fps == 20
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1                        # the input's audio, copied

    got = read_frames(out)
    ref = passthrough(work["talk"], work["root"] / "ref.mp4")
    boxes = read_boxes(out.parent / "talk_crops")
    assert set(boxes["track"].dropna()) == {0}
    assert boxes["frame"].tolist() == list(range(14))           # one row per frame and face
    assert (boxes["restored"] == "yes").sum() == 12
    x0, y0, x1, y1 = union_box(boxes)
    # the face box sits on the face: inside the placed clip, about its size
    assert 446 - 50 <= x0 and x1 <= 446 + 388 + 22 + 50 and 200 <= x1 - x0 <= 512
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(got[:, outside], ref[:, outside])     # bit-exact outside the boxes
    diff = np.abs(got.astype(int) - ref.astype(int))
    # the two faceless frames are not touched at all; the face region of every other is
    assert np.array_equal(got[:2], ref[:2])
    face = diff[2:, y0 + (y1 - y0) // 4:y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4:x1 - (x1 - x0) // 4]
    assert face.mean(axis=(1, 2, 3)).min() > 5
    stats = json.loads((out.parent / "enhance_stats.json").read_text())["videos"]["talk"]
    assert stats["faces"] == 1 and stats["frames_with_face"] == 12
    assert stats["seconds_per_clip"] > 0
    # --save-crops: the model's input and output crops of the face, at the model's size
    for kind in ("input", "restored"):
        crop = probe(out.parent / "talk_crops" / f"face01_{kind}.mp4")
        assert (crop.width, crop.height, crop.num_frames) == (32, 32, 12)


def test_upscale_resizes_the_background_and_pastes_the_face_at_n_times(work):
    src = work["root"] / "short.mp4"
    encode_frames(read_frames(work["talk"], 2, 6), src, fps=20, **LOSSLESS)
    out = work["root"] / "up" / "short.mp4"
    summary = run_enhance([str(src)], out, work["run"], device="cpu", progress=False,
                          faces=FaceOptions(upscale=2), save_crops=True, **LOSSLESS)
    assert summary["done"] == 1, summary
    info = probe(out)
    assert (info.width, info.height) == (2 * W, 2 * H)
    got = read_frames(out)
    ref = passthrough(src, work["root"] / "ref_up.mp4", upscale=2)
    x0, y0, x1, y1 = union_box(read_boxes(out.parent / "short_crops"), scale=2)
    outside = np.ones((2 * H, 2 * W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(got[:, outside], ref[:, outside])
    assert np.abs(got[:, ~outside].astype(int) - ref[:, ~outside]).mean() > 5


def test_a_learned_background_upsampler_comes_from_user_weights(work, tmp_path):
    """--bg-upsampler: a TorchScript x2 model of the user's (here nearest-neighbour
    upsampling, exported the way a Real-ESRGAN would be) replaces the plain resize."""
    import torch

    model = torch.jit.script(torch.nn.Upsample(scale_factor=2.0, mode="nearest"))
    weights = tmp_path / "x2.pt"
    torch.jit.save(model, str(weights))
    src = tmp_path / "short.mp4"
    encode_frames(read_frames(work["talk"], 2, 4), src, fps=20, **LOSSLESS)
    out = tmp_path / "up.mp4"
    summary = run_enhance([str(src)], out, work["run"], device="cpu", progress=False,
                          faces=FaceOptions(upscale=2), bg_upsampler=weights, save_crops=True,
                          **LOSSLESS)
    assert summary["done"] == 1, summary
    frames = read_frames(src)
    with FrameWriter(tmp_path / "ref.mp4", 2 * W, 2 * H, 20, **LOSSLESS) as wr:
        for f in frames:
            wr.write(np.ascontiguousarray(f.repeat(2, axis=0).repeat(2, axis=1)))
    ref = read_frames(tmp_path / "ref.mp4")
    x0, y0, x1, y1 = union_box(read_boxes(tmp_path / "up_crops"), 2)
    outside = np.ones((2 * H, 2 * W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(read_frames(out)[:, outside], ref[:, outside])
    with pytest.raises(ConfigError, match="--upscale"):
        run_enhance([str(src)], tmp_path / "o.mp4", work["run"], device="cpu", progress=False,
                    bg_upsampler=weights)


def test_chunk_seams_crossfade(work):
    """A track's own chunks of T = 4 overlapping by 2 frames; a stand-in model that paints
    its k-th call's crops a flat 40 * (k + 1): frames shared by two chunks are their linear
    blend, so a seam is a fade, never a jump. The face appears on frame 2, so its first chunk
    starts there (a chunk never reaches into frames without the face)."""
    calls = []

    def paint(clips: np.ndarray) -> tuple[np.ndarray, float]:
        calls.append(len(calls))
        return np.full_like(clips, 40 * len(calls)), 0.0

    restorer = FaceVideoRestorer(paint, 32, 4, FaceOptions(overlap=2, feather=0.0,
                                                           color_match=False))
    out = work["root"] / "seams.mp4"
    stats = restorer.enhance(work["talk"], out, **LOSSLESS, crops_dir=work["root"] / "seam_crops")
    assert plan_chunks(12, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 12)]
    boxes = read_boxes(work["root"] / "seam_crops")
    got = read_frames(out)
    chunks = [(2 + s, 2 + e) for s, e in plan_chunks(12, 4, 2)]
    for j in range(2, 14):
        b = boxes[boxes["frame"] == j].iloc[0]
        centre = got[j, int((b.y0 + b.y1) / 2), int((b.x0 + b.x1) / 2)].astype(float).mean()
        cover = [(chunk_weight(j, s, e), 40 * (k + 1)) for k, (s, e) in enumerate(chunks)
                 if s <= j < e]
        assert abs(centre - sum(w * v for w, v in cover) / sum(w for w, _ in cover)) <= 1.5
    assert stats["chunks"] == len(calls) == 5 and stats["max_buffered"] <= 4 + 2


def test_only_center_face_keeps_the_face_nearest_the_centre(work):
    out_all = work["root"] / "two_all.mp4"
    out_c = work["root"] / "two_center.mp4"
    for dst, center in ((out_all, False), (out_c, True)):
        run_enhance([str(work["two"])], dst, work["run"], device="cpu", progress=False,
                    faces=FaceOptions(only_center_face=center), save_crops=True, **LOSSLESS)
    both = read_boxes(work["root"] / "two_all_crops")
    one = read_boxes(work["root"] / "two_center_crops")
    assert both["track"].nunique() == 2
    assert one["track"].nunique() == 1
    x0, x1 = one["x0"].iloc[0], one["x1"].iloc[0]
    assert abs((x0 + x1) / 2 - W / 2) < 200                    # the talk-show face, centred
    # the other face is left as it was
    ref = passthrough(work["two"], work["root"] / "two_ref.mp4")
    assert np.array_equal(read_frames(out_c)[:, 300:684, 860:1244], ref[:, 300:684, 860:1244])
    assert not np.array_equal(read_frames(out_all)[:, 300:684, 860:1244],
                              ref[:, 300:684, 860:1244])


def test_faceless_video_passes_through(work, tmp_path):
    src = encode_frames(np.stack([background(320, 240)] * 5), tmp_path / "wall.mp4", fps=25,
                        **LOSSLESS)
    out = tmp_path / "wall_out.mp4"
    summary = run_enhance([str(src)], out, work["run"], device="cpu", progress=False, **LOSSLESS)
    assert summary["faces"]["wall_out"]["faces"] == 0
    assert np.array_equal(read_frames(out), passthrough(src, tmp_path / "ref.mp4"))


def test_memory_is_bounded_by_a_chunk_on_long_videos(work, tmp_path):
    """40 frames, T = 4: the restorer never holds more than a chunk and its overlap."""
    frames = read_frames(work["talk"], 2, 12)
    long = encode_frames(np.concatenate([frames[:10]] * 4), tmp_path / "long.mp4", fps=20,
                         crf=18, preset="ultrafast")
    enh = Enhancer(work["run"], "cpu", preset="ultrafast", faces=FaceOptions(detect_every=3))
    stats = enh.enhance(long, tmp_path / "long_out.mp4")
    assert stats["frames"] == 40 and stats["max_buffered"] <= 4 + enh.faces.overlap
    assert probe(tmp_path / "long_out.mp4").num_frames == 40


def test_only_center_face_picks_per_frame():
    """Two tracks [K, frames, 4]: the left face (centre x 150) is there on frames 0-4, the
    right one (x 650) on 0-8; with the frame centre at x 300 the left one wins while it is
    there, then the right one."""
    def track(k: int, box: tuple, n: int) -> FaceTrack:
        return FaceTrack(k, 0, 0, n, np.tile(np.array(box, float), (n, 1)), np.ones(n, bool),
                         np.tile(DEFAULT_ELLIPSE, (n, 1)))

    kept = keep_center_face([track(0, (100, 100, 200, 200), 5),
                             track(1, (600, 100, 700, 200), 9)], 600, 300)
    assert [(t.index, t.start, t.end) for t in kept] == [(0, 0, 5), (1, 5, 9)]


def test_chunk_plan_covers_every_frame_and_weights_blend():
    for n, T, o in ((1, 4, 1), (4, 4, 1), (5, 4, 1), (23, 8, 2), (100, 24, 6)):
        chunks = plan_chunks(n, T, o)
        covered = np.zeros(n, int)
        for s, e in chunks:
            assert e - s == min(n, T)
            covered[s:e] += 1
        assert covered.min() >= 1 and chunks[-1][1] == n
    face = np.array([116.0, 16.0, 148.0, 48.0])
    m = face_mask((100.0, 0.0, 64.0), face, DEFAULT_ELLIPSE, 0.08, size=64)
    assert m.shape == (64, 64) and m[34, 32] > 0.99
    assert m[0].max() == 0 and m[:, 0].max() == 0 and m[63].max() == 0 and m[:, 63].max() == 0


def test_a_stage1_run_is_refused_with_a_plain_message(work, tmp_path, capsys):
    from stc.model.training.checkpoint import save_checkpoint

    m = tiny_stage2()
    run1 = tmp_path / "run1"
    from stc.model.stage1.config import load_stage1_config

    save_checkpoint(run1, 1, {"model": m.vqgan.state_dict()}, {}, load_stage1_config("stage1-tiny"))
    with pytest.raises(ConfigError, match="is a Stage I run; stc enhance needs a Stage II run"):
        run_enhance([str(work["talk"])], tmp_path / "o.mp4", run1, device="cpu", progress=False)
    assert stc(["enhance", str(work["talk"]), "-o", str(tmp_path / "o.mp4"),
                "--checkpoint", str(run1)]) == 2
    assert "is a Stage I run; stc enhance needs a Stage II run" in capsys.readouterr().err


def test_aligned_refuses_full_frame_options(work, tmp_path):
    with pytest.raises(ConfigError, match="--aligned"):
        run_enhance([str(work["talk"])], tmp_path / "o.mp4", work["run"], device="cpu",
                    aligned=True, faces=FaceOptions(upscale=2), progress=False)
