"""`stc eval` on real clips: each metric moves the right way for a known degradation.

GT is the first 12 frames of hdtf_1 (real, 512x512); preds are made from it here
(identical copy, Gaussian blur, shuffled frame order) or are another person's clip
(hdtf_3), so every expectation follows from how the pred was built. Tests of plumbing
(CLI, weights loading, Ray) use the same frames shrunk to 128x128 to stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stc.core.config import ConfigError
from stc.core.video import encode_frames, read_frames
from stc.manifests.io import read_manifest
from stc.model.metrics import EVAL_SCHEMA, EvalConfig, VideoEvaluator, evaluate_pair
from stc.model.metrics.fvd import frechet_distance
from stc.model.metrics.lpips import LPIPS, NETS, load_lpips
from stc.pipelines.cli import main
from stc.pipelines.evaluate import evaluate_dirs

FRAMES = 12


@pytest.fixture(scope="module")
def clips(shared_videos, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval_clips")
    gt = read_frames(shared_videos / "hdtf_1.mp4", 0, FRAMES)
    other = read_frames(shared_videos / "hdtf_3.mp4", 0, FRAMES)
    made = {
        "gt": gt,
        "blur": np.stack([cv2.GaussianBlur(f, (0, 0), 2.5) for f in gt]),
        "shuffled": gt[np.random.default_rng(0).permutation(FRAMES)],
        "other": other,
    }
    # Lossless-ish (crf 0 is not yuv420p-safe for every reader): crf 4 keeps PSNR > 45 dB.
    for k in ("gt", "blur", "shuffled"):
        made[f"{k}_small"] = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA)
                                       for f in made[k][:8]])
    made["noisy_small"] = np.clip(made["gt_small"] + np.random.default_rng(1).normal(0, 25, made["gt_small"].shape),
                                  0, 255).astype(np.uint8)
    return {k: encode_frames(v, d / f"{k}.mp4", fps=25, crf=4, preset="ultrafast") for k, v in made.items()}


@pytest.fixture(scope="module")
def evaluator() -> VideoEvaluator:
    # Faces on every 4th frame: 4 face frames per clip keeps dlib's embedder affordable.
    return VideoEvaluator(EvalConfig(face_stride=4))


@pytest.fixture(scope="module")
def rows(clips, evaluator) -> dict[str, dict]:
    out = {k: evaluate_pair(clips[k], clips["gt"], evaluator=evaluator, key=k) for k in ("gt", "blur", "other")}
    # Shuffling only breaks motion: the flow score is all this row is for.
    out["shuffled"] = evaluate_pair(clips["shuffled"], clips["gt"], EvalConfig(face_stride=0))
    return out


def test_identical_pred_is_perfect(rows):
    r = rows["gt"]
    assert r["status"] == "ok" and r["frames"] == FRAMES and not r["resized"]
    assert r["psnr"] == EvalConfig().psnr_cap          # MSE 0 -> the documented cap, not inf
    assert r["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert r["akd"] == pytest.approx(0.0, abs=1e-9) and r["face_frames"] == FRAMES // 4
    assert r["ids"] == pytest.approx(1.0, abs=1e-6)
    assert r["flow_epe"] == 0.0
    assert r["face_cons"] == pytest.approx(r["face_cons_gt"]) and 0.95 < r["face_cons"] <= 1.0
    assert r["flow_method"] == "dis" and r["color"] == "rgb"   # the paper's default planes


def test_blur_lowers_fidelity_and_moves_landmarks(rows):
    ok, blur = rows["gt"], rows["blur"]
    assert blur["status"] == "ok"
    assert 20 < blur["psnr"] < 40 and blur["ssim"] < 0.95
    assert blur["akd"] > 0.3 > ok["akd"]
    assert blur["ids"] < ok["ids"]


def test_other_person_has_clearly_lower_identity(rows):
    same, other = rows["blur"]["ids"], rows["other"]["ids"]
    # dlib's embeddings share a large common component: different people still score
    # ~0.8-0.9 in cosine, a blurred copy of the same person > 0.99.
    assert same > 0.98 and other < same - 0.05
    assert rows["other"]["akd"] > rows["blur"]["akd"]


def test_flow_score_catches_temporal_jitter(rows):
    # Shuffled frames: each frame is a real GT frame, so only the motion is wrong.
    assert rows["shuffled"]["flow_epe"] > 2.0
    assert rows["shuffled"]["flow_epe"] > 5 * rows["blur"]["flow_epe"]


def test_sizes_and_lengths_are_reconciled(clips, tmp_path):
    small = read_frames(clips["gt"], 0, 6)
    small = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in small])
    pred = encode_frames(small, tmp_path / "gt.mp4", fps=25, crf=4, preset="ultrafast")
    r = evaluate_pair(pred, clips["gt"], EvalConfig(face_stride=0))
    assert r["status"] == "ok" and r["resized"] and (r["width"], r["height"]) == (512, 512)
    assert (r["frames"], r["pred_frames"], r["gt_frames"]) == (6, 6, FRAMES)
    assert "resized" in r["message"] and "compared the first 6" in r["message"]
    assert 25 < r["psnr"] < EvalConfig().psnr_cap


def test_cli_folders_error_rows_parquet_and_sidecar(clips, tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for stem in ("a", "missing", "corrupt"):
        (gt / f"{stem}.mp4").write_bytes(clips["gt_small"].read_bytes())
    (pred / "a.mp4").write_bytes(clips["blur_small"].read_bytes())
    (pred / "corrupt.mp4").write_bytes(clips["blur_small"].read_bytes()[:3000])   # truncated download
    (pred / "extra.mp4").write_bytes(clips["blur_small"].read_bytes())             # no GT
    (pred / "enhance_stats.json").write_text(json.dumps({"seconds_per_clip": 2.5,
                                                         "videos": {"a": {"seconds_per_clip": 1.25}}}))
    out = tmp_path / "res" / "eval.parquet"
    rc = main(["eval", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--face-stride", "0",
               "--color", "rgb"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "PSNR" in table and "mean" in table and "missing_pred" in table
    df = read_manifest(out, EVAL_SCHEMA).set_index("video")
    assert list(df.index) == ["a", "corrupt", "extra", "missing"]
    assert df.loc["a", "status"] == "ok" and df.loc["a", "seconds_per_clip"] == 1.25
    assert df.loc["a", "color"] == "rgb" and np.isnan(df.loc["a", "akd"])   # face metrics off
    assert df.loc["missing", "reason"] == "missing_pred"
    assert df.loc["extra", "reason"] == "missing_gt"
    assert df.loc["corrupt", "status"] == "error" and df.loc["corrupt", "reason"] in ("unreadable", "no_frames")
    assert "corrupt.mp4" in df.loc["corrupt", "message"]
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["ok"] == 1 and summary["errors"] == 3
    assert summary["mean"]["psnr"] == pytest.approx(df.loc["a", "psnr"])
    # Same inputs, same bytes: timings live in the summary, not the table.
    again = tmp_path / "again.parquet"
    main(["eval", "--pred", str(pred), "--gt", str(gt), "--out", str(again), "--face-stride", "0", "--color", "rgb"])
    assert again.read_bytes() == out.read_bytes()


def _random_lpips_state(net: str) -> dict[str, torch.Tensor]:
    """A randomly initialised LPIPS saved in the lpips package's own key layout."""
    torch.manual_seed(0)
    model = LPIPS(net)
    state = {}
    taps = NETS[net]["taps"]
    bounds = [0] + [t + 1 for t in taps]
    for k, v in model.state_dict().items():
        kind, idx, name = k.split(".")
        if kind == "features":
            s = next(i for i in range(5) if bounds[i] <= int(idx) < bounds[i + 1]) + 1
            state[f"net.slice{s}.{idx}.{name}"] = v.clone()
        else:  # lins.K.weight: lpips keeps them non-negative
            state[f"lin{idx}.model.1.weight"] = v.abs().clone()
    return state


def test_lpips_loads_package_layouts(clips, tmp_path):
    state = _random_lpips_state("alex")
    torch.save(state, tmp_path / "lpips_alex.pth")
    model = load_lpips(str(tmp_path / "lpips_alex.pth"))
    gt = read_frames(clips["gt_small"], 0, 1)[0]
    blur = read_frames(clips["blur_small"], 0, 1)[0]
    assert model.distance(gt, gt) == pytest.approx(0.0, abs=1e-7)
    d = model.distance(blur, gt)
    assert d > 0

    # The package's v0.1 file holds only the linear layers; the trunk comes from torchvision.
    lin = {k: v for k, v in state.items() if k.startswith("lin")}
    trunk = {k.replace(f"net.slice{k[9]}.", "features."): v for k, v in state.items() if k.startswith("net.")}
    torch.save(lin, tmp_path / "alex.pth")
    torch.save(trunk, tmp_path / "alexnet-owt.pth")
    with pytest.raises(ConfigError, match="backbone"):
        load_lpips(str(tmp_path / "alex.pth"))
    split = load_lpips(str(tmp_path / "alex.pth"), str(tmp_path / "alexnet-owt.pth"))
    assert split.distance(blur, gt) == pytest.approx(d, rel=1e-6)

    with pytest.raises(ConfigError, match="not found"):
        load_lpips(str(tmp_path / "nope.pth"))
    # Through the evaluator: one LPIPS per frame, averaged.
    r = evaluate_pair(clips["blur_small"], clips["gt_small"],
                      EvalConfig(face_stride=0, lpips=str(tmp_path / "lpips_alex.pth"), lpips_stride=4))
    assert r["status"] == "ok" and r["lpips"] > 0


class _TinyI3D(torch.nn.Module):
    """Stands in for I3D's shape contract only: [N, 3, T, H, W] -> features [N, 8]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, (3, 7, 7), stride=(1, 4, 4), bias=False)
        with torch.no_grad():  # zero-mean filters: respond to texture and noise, not brightness
            self.conv.weight -= self.conv.weight.mean(dim=(2, 3, 4), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Local energy (noise raises it), scaled to order-1 features like I3D's.
        return 100.0 * self.conv(x).pow(2).mean(dim=(2, 3, 4))


def test_fvd_from_torchscript_and_frechet_formula(clips, tmp_path):
    torch.manual_seed(0)
    torch.jit.script(_TinyI3D()).save(str(tmp_path / "i3d.pt"))
    cfg = EvalConfig(face_stride=0, fvd=str(tmp_path / "i3d.pt"), fvd_clip_frames=4, fvd_size=64)
    _, same = evaluate_dirs(clips["gt_small"], clips["gt_small"], cfg, progress=False)
    _, noisy = evaluate_dirs(clips["noisy_small"], clips["gt_small"], cfg, progress=False)
    assert same["fvd_clips"] == 2
    assert same["fvd"] == pytest.approx(0.0, abs=1e-9) and noisy["fvd"] > 1e-2

    # Diagonal covariances: FD = |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2.
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3)) * [1, 2, 3] + [0, 1, 0]
    b = rng.normal(0, 1, (20000, 3)) * [2, 2, 1]
    assert frechet_distance(a, b) == pytest.approx(1 + 1 + 0 + 4, rel=0.05)

    torch.save({"w": torch.zeros(1)}, tmp_path / "i3d_state.pth")
    with pytest.raises(ConfigError, match="TorchScript"):
        evaluate_dirs(clips["gt_small"], clips["gt_small"], EvalConfig(face_stride=0, fvd=str(tmp_path / "i3d_state.pth")))


class _ZeroFlow(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        return [a[:, :2] * 0.0]


def test_raft_only_as_torchscript(clips, tmp_path):
    torch.save({"fnet.conv1.weight": torch.zeros(1)}, tmp_path / "raft-things.pth")
    with pytest.raises(ConfigError, match="TorchScript RAFT"):
        VideoEvaluator(EvalConfig(face_stride=0, raft=str(tmp_path / "raft-things.pth")))
    torch.jit.script(_ZeroFlow()).save(str(tmp_path / "raft.pt"))
    r = evaluate_pair(clips["shuffled_small"], clips["gt_small"], EvalConfig(face_stride=0, raft=str(tmp_path / "raft.pt")))
    # The given model is really used: its (zero) flows agree perfectly even for shuffled frames.
    assert r["flow_method"] == "raft" and r["flow_epe"] == 0.0


def test_ray_workers_match_in_process(clips, tmp_path, ray_session):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for stem, src in (("x", "blur_small"), ("y", "shuffled_small")):
        (gt / f"{stem}.mp4").write_bytes(clips["gt_small"].read_bytes())
        (pred / f"{stem}.mp4").write_bytes(clips[src].read_bytes())
    cfg = EvalConfig(face_stride=0)
    ray_rows, _ = evaluate_dirs(pred, gt, cfg, workers=2, progress=False)
    local_rows, _ = evaluate_dirs(pred, gt, cfg, workers=1, progress=False)
    assert ray_rows == local_rows and [r["video"] for r in ray_rows] == ["x", "y"]
