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
from stc.pipelines.face_restore import (
    FaceOptions,
    FaceVideoRestorer,
    chunk_weight,
    feather_mask,
    keep_center_face,
    plan_chunks,
    union_box,
)
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
    boxes = json.loads((out.parent / "talk_crops" / "boxes.json").read_text())
    assert {b["track"] for b in boxes} == {0}
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
    x0, y0, x1, y1 = union_box(json.loads((out.parent / "short_crops" / "boxes.json")
                                          .read_text()), scale=2)
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
    x0, y0, x1, y1 = union_box(json.loads((tmp_path / "up_crops" / "boxes.json").read_text()), 2)
    outside = np.ones((2 * H, 2 * W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(read_frames(out)[:, outside], ref[:, outside])
    with pytest.raises(ConfigError, match="--upscale"):
        run_enhance([str(src)], tmp_path / "o.mp4", work["run"], device="cpu", progress=False,
                    bg_upsampler=weights)


def test_chunk_seams_crossfade(work):
    """Chunks of T = 4 overlapping by 2 frames; a stand-in model that paints chunk k's crops
    a flat 40 * (k + 1): frames shared by two chunks are their linear blend, so a seam is a
    fade, never a jump."""
    calls = []

    def paint(clips: np.ndarray) -> tuple[np.ndarray, float]:
        calls.append(len(calls))
        return np.full_like(clips, 40 * len(calls)), 0.0

    restorer = FaceVideoRestorer(paint, 32, 4, FaceOptions(overlap=2, feather=0.0))
    out = work["root"] / "seams.mp4"
    stats = restorer.enhance(work["talk"], out, **LOSSLESS, crops_dir=work["root"] / "seam_crops")
    assert plan_chunks(14, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 12), (10, 14)]
    boxes = json.loads((work["root"] / "seam_crops" / "boxes.json").read_text())
    x0, y0, x1, y1 = boxes[1]["box"]
    centre = read_frames(out)[:, (y0 + y1) // 2, (x0 + x1) // 2].astype(float).mean(axis=1)
    # chunk k covers frames 2k..2k+3; frame 4 is in chunks 1 (weight 1) and 2 (weight 1)
    expected = []
    chunks = plan_chunks(14, 4, 2)
    for j in range(2, 14):
        cover = [(chunk_weight(j, s, e), 40 * (k + 1)) for k, (s, e) in enumerate(chunks)
                 if s <= j < e]
        expected.append(sum(w * v for w, v in cover) / sum(w for w, _ in cover))
    assert np.abs(centre[2:] - expected).max() <= 1.5
    assert stats["chunks"] == len(calls) == 6 and stats["max_buffered"] <= 4 + 2


def test_only_center_face_keeps_the_face_nearest_the_centre(work):
    out_all = work["root"] / "two_all.mp4"
    out_c = work["root"] / "two_center.mp4"
    for dst, center in ((out_all, False), (out_c, True)):
        run_enhance([str(work["two"])], dst, work["run"], device="cpu", progress=False,
                    faces=FaceOptions(only_center_face=center), save_crops=True, **LOSSLESS)
    both = json.loads((work["root"] / "two_all_crops" / "boxes.json").read_text())
    one = json.loads((work["root"] / "two_center_crops" / "boxes.json").read_text())
    assert len({b["track"] for b in both}) == 2
    assert len({b["track"] for b in one}) == 1
    x0, _, x1, _ = one[0]["box"]
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
    tracks = np.full((2, 10, 4), np.nan)
    tracks[0, :5] = (100, 100, 200, 200)
    tracks[1, :9] = (600, 100, 700, 200)
    present = ~np.isnan(keep_center_face(tracks, 600, 300)[:, :, 0])
    assert present.sum(axis=0).max() == 1
    assert present[0].tolist() == [True] * 5 + [False] * 5
    assert present[1].tolist() == [False] * 5 + [True] * 4 + [False]


def test_chunk_plan_covers_every_frame_and_weights_blend():
    for n, T, o in ((1, 4, 1), (4, 4, 1), (5, 4, 1), (23, 8, 2), (100, 24, 6)):
        chunks = plan_chunks(n, T, o)
        covered = np.zeros(n, int)
        for s, e in chunks:
            assert e - s == min(n, T)
            covered[s:e] += 1
        assert covered.min() >= 1 and chunks[-1][1] == n
    m = feather_mask(64, 0.1)
    assert m[32, 32, 0] == 1 and m[0, 0, 0] < 0.05 and m.shape == (64, 64, 1)


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
