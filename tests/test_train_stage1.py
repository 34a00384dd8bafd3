"""Stage I training on real frames: the loss falls, resume is exact, the CLI resumes and
says so, the pretrained losses run inside a step, and Ray Train runs the same loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from stc.core.config import from_dict, to_dict
from stc.core.video import encode_frames, read_frames
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestWriter
from stc.model.stage1.config import Stage1Config, load_stage1_config
from stc.model.stage1.trainer import Stage1Trainer, train_stage1_ray
from stc.model.stage1.vqgan3d import load_stage1
from stc.pipelines.cli import main as stc_main

CLIP_FRAMES = 40


@pytest.fixture(scope="module")
def real_manifest(shared_videos, tmp_path_factory) -> Path:
    """A curated-style manifest of three real clips (face-centred 64x64 crops, 40 frames),
    plus a rejected row that training must ignore. Built directly: curation has its own tests."""
    import cv2

    out = tmp_path_factory.mktemp("curated")
    rows = []
    for name in ("hdtf_1", "hdtf_3", "talkshow_1"):
        frames = read_frames(shared_videos / f"{name}.mp4", 0, CLIP_FRAMES)
        h, w = frames.shape[1:3]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        crops = [cv2.resize(f[y0:y0 + side, x0:x0 + side], (64, 64), interpolation=cv2.INTER_AREA)
                 for f in frames]
        rel = f"clips/{name}.mp4"
        encode_frames(crops, out / rel, fps=25.0, crf=10, preset="ultrafast")
        rows.append({"clip_id": name, "source_path": str(shared_videos / f"{name}.mp4"),
                     "source": "shared", "status": "kept", "reason": "kept", "message": "",
                     "clip_path": rel, "clip_size": 64, "clip_num_frames": len(crops),
                     "clip_fps": 25.0})
    rows.append({"clip_id": "side", "source_path": "x.mp4", "source": "shared",
                 "status": "rejected", "reason": "side_face", "message": "side face"})
    with ManifestWriter(out / "manifest.parquet", CLIP_SCHEMA) as writer:
        for row in rows:
            writer.add(row)
    return out / "manifest.parquet"


def tiny(**over) -> Stage1Config:
    """stage1-tiny with dotted overrides, e.g. tiny(**{"train.log_every": 1})."""
    d = to_dict(load_stage1_config("stage1-tiny"))
    for key, value in over.items():
        section, leaf = key.split(".")
        d[section][leaf] = value
    return from_dict(Stage1Config, d)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_stage1_lowers_reconstruction_loss_on_real_frames(real_manifest, tmp_path):
    run = tmp_path / "run"
    cfg = tiny(**{"train.max_steps": 20, "train.log_every": 5, "train.val_every": 20,
                  "train.ckpt_every": 20, "data.num_workers": 0})
    trainer = Stage1Trainer(cfg, real_manifest, run, log=lambda m: None)
    assert {c.clip_id for c, _ in trainer.split.train} | {c.clip_id for c, _ in trainer.split.val} \
        == {"hdtf_1", "hdtf_3", "talkshow_1"}              # the rejected row is not used
    trainer.run()
    logged = [m for m in metrics(run) if "loss/l1" in m]
    assert [m["step"] for m in logged] == [5, 10, 15, 20]
    first, last = logged[0]["loss/l1"], logged[-1]["loss/l1"]
    assert last < 0.8 * first, (first, last)
    assert logged[-1]["train/psnr"] > logged[0]["train/psnr"] + 1.0
    for book in ("S", "T"):
        assert 0 < logged[-1][f"codebook/{book}_utilisation"] <= 1
        assert logged[-1][f"codebook/{book}_perplexity"] >= 1
    assert "val/psnr" in logged[-1] and "val/psnr" in metrics(run)[0]   # step 0 and the end
    assert list((run / "tb").glob("events.out.tfevents.*"))

    # The loader Stage II will use: EMA weights + saved config, same outputs as the trainer's EMA.
    model, loaded_cfg = load_stage1(run)
    assert loaded_cfg.model == cfg.model
    x = trainer._val[:1]
    with torch.no_grad():
        assert torch.equal(model(x)[0], trainer.ema.model.eval()(x)[0])
    raw, _ = load_stage1(run / "checkpoints" / "step_00000020" / "model.safetensors")
    assert torch.equal(raw.codebook_s.weight, trainer.model.codebook_s.weight)


def test_resume_continues_with_identical_next_step_loss(real_manifest, tmp_path, capsys):
    cfg = tiny(**{"train.log_every": 1, "train.val_every": 100, "train.ckpt_every": 2,
                  "data.num_workers": 0})
    config_file = tmp_path / "s1.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(cfg)))

    straight = tmp_path / "straight"
    Stage1Trainer(cfg, real_manifest, straight, max_steps=4, log=lambda m: None).run()

    resumed = tmp_path / "resumed"
    argv = ["train", "stage1", "--manifest", str(real_manifest), "--config", str(config_file),
            "--out", str(resumed)]
    assert stc_main(argv + ["--max-steps", "2"]) == 0
    assert "starting" in capsys.readouterr().out
    assert stc_main(argv + ["--max-steps", "4"]) == 0
    assert "resuming" in capsys.readouterr().out

    a = {m["step"]: m for m in metrics(straight) if "loss/total" in m}
    b = {m["step"]: m for m in metrics(resumed) if "loss/total" in m}
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert b[step]["loss/total"] == a[step]["loss/total"]
        assert b[step]["loss/l1"] == a[step]["loss/l1"]
    ema_a = load_file(str(straight / "checkpoints/step_00000004/ema.safetensors"))
    ema_b = load_file(str(resumed / "checkpoints/step_00000004/ema.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)

    # Nothing left to do, and a different config is refused with a clear message.
    assert stc_main(argv + ["--max-steps", "4"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    changed = ["train", "stage1", "--manifest", str(real_manifest), "--config", "stage1-tiny",
               "--out", str(resumed)]
    assert stc_main(changed) == 2
    assert "different config" in capsys.readouterr().err


def test_perceptual_and_dinov2_adversarial_losses_train(real_manifest, tmp_path):
    from tests.test_model_pretrained import save_tiny_dinov2, save_vgg19

    cfg = tiny(**{"train.max_steps": 2, "train.log_every": 1, "train.val_every": 100,
                  "train.ckpt_every": 2, "data.num_workers": 0, "losses.perceptual": 1.0,
                  "losses.adversarial": 0.1, "perceptual.weights": str(save_vgg19(tmp_path)),
                  "discriminator.backbone": str(save_tiny_dinov2(tmp_path))})
    run = tmp_path / "run"
    trainer = Stage1Trainer(cfg, real_manifest, run, log=lambda m: None)
    heads_before = {k: v.clone() for k, v in trainer.disc.head_state_dict().items()}
    backbone_before = {k: v.clone() for k, v in trainer.disc.backbone.state_dict().items()}
    trainer.run()
    logged = [m for m in metrics(run) if "loss/total" in m]
    for key in ("loss/perceptual", "loss/adv_g", "loss/d", "adv_weight"):
        assert all(np.isfinite(m[key]) for m in logged), key
    assert any(not torch.equal(v, trainer.disc.head_state_dict()[k]) for k, v in heads_before.items())
    assert all(torch.equal(v, trainer.disc.backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert (run / "checkpoints/step_00000002/disc_heads.safetensors").exists()


def test_ray_train_runs_the_same_loop(real_manifest, tmp_path, ray_session):
    cfg = tiny(**{"train.log_every": 1, "train.val_every": 100, "train.ckpt_every": 2,
                  "data.num_workers": 0})
    run = tmp_path / "ray_run"
    result = train_stage1_ray(cfg, real_manifest, run, workers=1, max_steps=2, cpus_per_worker=1)
    assert result["step"] == 2
    assert (run / "checkpoints/step_00000002/ema.safetensors").exists()
    # Worker 0 wrote what the single-process loop writes; same seed and windows, same losses.
    straight = tmp_path / "straight"
    Stage1Trainer(cfg, real_manifest, straight, max_steps=2, device="cpu", log=lambda m: None).run()
    a = {m["step"]: m["loss/total"] for m in metrics(straight) if "loss/total" in m}
    b = {m["step"]: m["loss/total"] for m in metrics(run) if "loss/total" in m}
    assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.timeout(120)
def test_loader_workers_decode_after_the_trainer_process_did(real_manifest, tmp_path):
    """data.num_workers=2 forks the workers from a process that has already decoded (here the
    fixture and the read below): with PyAV 18.1 that hung forever (core/fork_safety.py)."""
    read_frames(real_manifest.parent / "clips" / "hdtf_1.mp4", 0, 4)
    run = tmp_path / "run"
    cfg = tiny(**{"train.max_steps": 4, "train.log_every": 2, "train.val_every": 4,
                  "train.ckpt_every": 4, "data.num_workers": 2})
    Stage1Trainer(cfg, real_manifest, run, log=lambda m: None).run()
    assert [m["step"] for m in metrics(run) if "loss/l1" in m] == [2, 4]
