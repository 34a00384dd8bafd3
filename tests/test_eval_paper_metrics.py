"""`stc eval`'s metrics as the paper defines them (Sec. 4.1), each pinned by an input whose
answer follows from the definition, and told apart from stc's earlier variants (which stay
as extra columns):

- Face-Cons: mean cos(emb(x_1), emb(x_t)), t = 2..T, on the restored video alone
  (earlier: cosine to the clip's mean embedding, now `face_cons_mean`);
- Flow-Score (EvalCrafter): mean optical-flow magnitude of the restored video alone, no GT
  (earlier: end-point error against GT's flow, now `flow_epe`);
- PSNR / SSIM on RGB over the first 24 frames by default (luma stays in psnr_y / ssim_y);
- LPIPS: stc's port against the reference `lpips` package on fixed inputs and weights
  (tests/fixtures/lpips_reference, made by its make_reference.py);
- every shared clip evaluates (talkshow_3 is 390 px wide: its decoded rows are padded), and
  an error message never carries data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stc.core.video import encode_frames, read_frames
from stc.curation.config import SamplingConfig
from stc.curation.faces import sample_indices
from stc.model.metrics import EvalConfig, VideoEvaluator, evaluate_pair
from stc.model.metrics.face import FaceMetrics, FaceScores, cosine
from stc.model.metrics.lpips import load_lpips
from stc.model.metrics.video import short_error

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lpips_reference"


@pytest.fixture(scope="module")
def faces() -> FaceMetrics:
    return FaceMetrics()


# --------------------------------------------------------------------------- Face-Cons
def test_face_cons_is_the_first_frame_against_the_rest(shared_videos, tmp_path, faces):
    """Frame 1 of another person, frames 2..6 of one person: every t >= 2 is compared with
    a different identity, so Face-Cons is low; a mean-embedding score barely notices."""
    a = read_frames(shared_videos / "hdtf_1.mp4", 0, 6)
    b = read_frames(shared_videos / "hdtf_3.mp4", 0, 1)
    mixed = encode_frames(np.concatenate([b, a[1:]]), tmp_path / "mixed.mp4", fps=25, crf=4,
                          preset="ultrafast")
    clean = encode_frames(a, tmp_path / "clean.mp4", fps=25, crf=4, preset="ultrafast")
    cfg = EvalConfig(face_stride=1, max_frames=0)
    ev = VideoEvaluator(cfg)
    r_mixed = evaluate_pair(mixed, mixed, evaluator=ev)
    r_clean = evaluate_pair(clean, clean, evaluator=ev)
    assert r_mixed["face_frames"] == 6 and r_clean["face_frames"] == 6
    assert r_clean["face_cons"] > 0.97
    assert r_mixed["face_cons"] < 0.9
    assert r_mixed["face_cons_mean"] > r_mixed["face_cons"] + 0.1     # the earlier variant

    # the value is exactly mean_t cos(e_1, e_t) of the embeddings the evaluator computes
    scores = FaceScores()
    for f in read_frames(mixed):
        faces.add(scores, f, f)
    e = scores.pred_emb
    assert r_mixed["face_cons"] == pytest.approx(np.mean([cosine(e[0], x) for x in e[1:]]), abs=1e-9)


def test_face_frames_are_sampled_as_curation_samples_them(shared_videos, tmp_path):
    clip = encode_frames(read_frames(shared_videos / "hdtf_2.mp4", 0, 30), tmp_path / "c.mp4",
                         fps=25, crf=4, preset="ultrafast")
    r = evaluate_pair(clip, clip, EvalConfig())          # defaults: 24 frames, sampled faces
    want = sample_indices(24, 25.0, SamplingConfig())     # ~2 per second, first and last
    assert want[0] == 0 and want[-1] == 23
    assert r["frames"] == 24 and r["face_frames"] == len(want)


# --------------------------------------------------------------------------- Flow-Score
def _moving(shared_videos: Path, frames: int, step: int) -> np.ndarray:
    """A 128x128 window sliding `step` pixels right per frame over a still real frame."""
    big = read_frames(shared_videos / "hdtf_1.mp4", 0, 1)[0]
    return np.stack([np.ascontiguousarray(big[160:288, 160 + step * i:288 + step * i])
                     for i in range(frames)])


def test_flow_score_is_the_restored_videos_own_motion(shared_videos, tmp_path):
    moving = _moving(shared_videos, 8, 2)
    still = np.repeat(moving[:1], 8, axis=0)
    enc = {k: encode_frames(v, tmp_path / f"{k}.mp4", fps=25, crf=4, preset="ultrafast")
           for k, v in (("moving", moving), ("still", still))}
    cfg = EvalConfig(face_stride=0)
    same = evaluate_pair(enc["moving"], enc["moving"], cfg)
    against_still = evaluate_pair(enc["moving"], enc["still"], cfg)
    still_pred = evaluate_pair(enc["still"], enc["moving"], cfg)
    # 2 px per frame of content motion, whatever the GT is
    assert same["flow_score"] == pytest.approx(2.0, abs=0.3)
    assert against_still["flow_score"] == pytest.approx(same["flow_score"], rel=1e-9)
    assert still_pred["flow_score"] < 0.1 and still_pred["flow_score_gt"] == pytest.approx(2.0, abs=0.3)
    # the earlier GT-relative variant says the opposite: 0 for the moving copy of a moving GT
    assert same["flow_epe"] == 0.0 and against_still["flow_epe"] > 1.5


# --------------------------------------------------------------------------- PSNR / SSIM
def test_psnr_ssim_on_rgb_over_the_first_24_frames(shared_videos, tmp_path):
    gt = read_frames(shared_videos / "hdtf_4.mp4", 0, 30)[:, ::4, ::4].copy()   # 128x128
    # Luma-neutral colour change (R up, B down by the BT.601 weights) on frames 0..23, then
    # destroyed frames 24..29 that only an all-frames average sees.
    pred = gt.astype(np.float64)
    pred[:24, ..., 0] += 12
    pred[:24, ..., 2] -= 12 * 65.481 / 24.966
    pred[24:] = 255 - pred[24:]
    pred = np.clip(np.rint(pred), 0, 255).astype(np.uint8)
    p = encode_frames(pred, tmp_path / "p.mp4", fps=25, crf=0, preset="ultrafast", pix_fmt="yuv444p")
    g = encode_frames(gt, tmp_path / "g.mp4", fps=25, crf=0, preset="ultrafast", pix_fmt="yuv444p")
    pd, gd = read_frames(p).astype(np.float64), read_frames(g).astype(np.float64)

    r = evaluate_pair(p, g, EvalConfig(face_stride=0))
    assert r["color"] == "rgb" and r["frames"] == 24 and r["gt_frames"] == 30
    mse = ((pd[:24] - gd[:24]) ** 2).reshape(24, -1).mean(1)       # over R, G and B
    assert r["psnr"] == pytest.approx(np.mean(10 * np.log10(255.0 ** 2 / mse)), rel=1e-9)
    # the colour error is nearly invisible in luma: RGB and Y scores differ a lot
    assert r["psnr_y"] > r["psnr"] + 6 and r["ssim_y"] > r["ssim"]

    y = evaluate_pair(p, g, EvalConfig(face_stride=0, color="y"))
    assert y["psnr"] == pytest.approx(r["psnr_y"]) and y["ssim"] == pytest.approx(r["ssim_y"])
    every = evaluate_pair(p, g, EvalConfig(face_stride=0, max_frames=0))
    assert every["frames"] == 30 and every["psnr"] < r["psnr"] - 3


# --------------------------------------------------------------------------- LPIPS
def test_lpips_port_matches_the_reference_package(tmp_path):
    """Same inputs, same (seeded random) weights: the numbers the `lpips` package gave."""
    ref = json.loads((FIXTURE / "reference.json").read_text())
    arrays = dict(np.load(FIXTURE / "weights.npz"))
    keys = sorted({k.split("|")[0] for k in arrays})
    state = {k: torch.from_numpy(arrays[f"{k}|q"].astype(np.float32) * arrays[f"{k}|scale"])
             for k in keys}
    torch.save(state, tmp_path / "lpips_alex_random.pth")      # the lpips package's layout
    model = load_lpips(str(tmp_path / "lpips_alex_random.pth"))
    inputs = np.load(FIXTURE / "inputs.npz")
    assert len(ref["pairs"]) >= 5
    for name, want in ref["pairs"].items():
        got = model.distance(inputs[f"{name}_a"], inputs[f"{name}_b"])
        assert got == pytest.approx(want["distance"], rel=1e-4, abs=1e-9), name
    # the pairs are not all alike: the comparison has something to compare
    d = [v["distance"] for v in ref["pairs"].values()]
    assert min(d) == 0.0 and max(d) > 10 * sorted(d)[1]


# --------------------------------------------------------------------------- robustness
def test_dlib_gets_owned_contiguous_frames(shared_videos, faces):
    """A row-padded view, as PyAV decodes a 390-pixel-wide frame: dlib's typed binding
    refuses it unless the array is made contiguous and owned first."""
    frame = read_frames(shared_videos / "talkshow_3.mp4", 10, 1)[0]
    h, w, _ = frame.shape
    padded = np.zeros((h, w + 10, 3), np.uint8)
    padded[:, :w] = frame
    view = padded[:, :w]
    assert not view.flags.c_contiguous
    scores = FaceScores()
    faces.add(scores, view, view)
    assert scores.no_face == 0 and scores.ids == [pytest.approx(1.0, abs=1e-6)]


def test_every_shared_clip_evaluates(shared_videos):
    ev = VideoEvaluator(EvalConfig(max_frames=6))
    for clip in sorted(shared_videos.glob("*.mp4")):
        r = evaluate_pair(clip, clip, evaluator=ev)
        assert r["status"] == "ok", (clip.name, r["message"])
        assert r["psnr"] == EvalConfig().psnr_cap and r["frames"] == 6


def test_error_messages_carry_no_data(shared_videos):
    import dlib

    faces = FaceMetrics()
    frame = read_frames(shared_videos / "hdtf_1.mp4", 0, 1)[0]
    try:   # a real pybind11 TypeError: its text repeats the arguments, arrays included
        faces.embedder.compute_face_descriptor(frame.astype(np.float32), dlib.rectangle(0, 0, 9, 9))
    except TypeError as exc:
        assert "array(" in str(exc) or "Invoked with" in str(exc)
        msg = short_error(exc)
    else:
        pytest.fail("dlib accepted a float image")
    assert msg.startswith("TypeError: compute_face_descriptor()") and "\n" not in msg
    assert "array(" not in msg and "Invoked with" not in msg and len(msg) < 400
