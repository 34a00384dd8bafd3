"""Stage II pieces on their own: the code-lookup transformer, the frozen Stage I inside the
Stage II model, curricula as data, and `stc enhance` chunking, fps and audio."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from stc.core.config import ConfigError
from stc.degrade.recipe import load_recipe
from stc.core.video import encode_frames, ffmpeg_exe, probe, read_frames
from stc.model.stage1.config import load_stage1_config
from stc.model.stage1.vqgan3d import VQGAN3D
from stc.model.stage2.code_transformer import CodeTransformer
from stc.model.stage2.config import TransformerConfig, load_stage2_config
from stc.model.stage2.data import OnlinePairs, OnlineSource, check_online
from stc.model.stage2.model import Stage2Model, load_stage2
from stc.model.stage2.trainer import Stage2Trainer
from stc.model.stage2.runs import Curriculum, CurriculumStep, load_curriculum
from stc.model.training.checkpoint import save_checkpoint
from stc.model.training.schedule import warmup_step_decay
from stc.pipelines.enhance import Enhancer, run_enhance


def tiny_stage2(seed: int = 0) -> Stage2Model:
    torch.manual_seed(seed)
    s1 = load_stage1_config("stage1-tiny")
    cfg = load_stage2_config("stage2-tiny")
    cfg.vqgan = s1.model
    return Stage2Model(cfg, VQGAN3D(s1.model))


def test_code_transformer_logits_per_token_and_any_grid():
    tf = CodeTransformer(16, 10, (2, 4, 4), TransformerConfig(layers=1, width=16, heads=2))
    z = torch.randn(3, 16, 2, 4, 4)
    assert tf(z).shape == (3, 10, 2, 4, 4)
    # a shorter clip or another size: position embeddings are resized, not refused
    assert tf(torch.randn(1, 16, 1, 6, 2)).shape == (1, 10, 1, 6, 2)


def test_transformer_sees_space_and_time():
    """Attention spans the flattened t*h*w tokens: changing one latent changes the logits
    of tokens at other frames and positions."""
    tf = CodeTransformer(8, 5, (2, 2, 2), TransformerConfig(layers=1, width=8, heads=2)).eval()
    z = torch.randn(1, 8, 2, 2, 2)
    z2 = z.clone()
    z2[:, :, 0, 0, 0] += 3.0
    diff = (tf(z) - tf(z2)).abs().amax(1)[0]
    assert diff[1, 1, 1] > 1e-4


def test_lq_encoder_starts_from_eh_and_stage1_stays_frozen():
    m = tiny_stage2()
    for a, b in zip(m.lq_encoder.parameters(), m.vqgan.encoder.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    lq, hq = torch.rand(2, 3, 4, 32, 32) * 2 - 1, torch.rand(2, 3, 4, 32, 32) * 2 - 1
    m.train()
    assert not m.vqgan.training
    parts = m.losses(m(lq), m.targets(hq))
    parts["loss/total"].backward()
    assert all(p.grad is None for p in m.vqgan.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.trainable_parameters()
               if p.requires_grad)
    # targets are the frozen model's own code indices of the HQ clip
    q = m.vqgan.quantize(m.vqgan.encode(hq))
    tgt = m.targets(hq)
    assert torch.equal(tgt.indices_s, q.indices_s) and torch.equal(tgt.indices_t, q.indices_t)


def test_restore_decodes_predicted_codes_through_frozen_decoder():
    m = tiny_stage2().eval()
    lq = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    out = m(lq)
    expected = m.vqgan.decode(m.vqgan.lookup(out.logits_s.argmax(1), out.logits_t.argmax(1)))
    assert torch.allclose(m.restore(lq), expected.clamp(-1, 1))


def test_builtin_curricula_and_clear_errors(tmp_path):
    paper = load_curriculum("bfvr")
    assert [s.recipe for s in paper.steps] == ["bfvr-nonoise", "bfvr"]
    assert all(s.online for s in paper.steps)             # fresh degradations per draw
    for name in ("brightness", "pixel"):
        assert load_curriculum(name).steps[-1].recipe == name
    with pytest.raises(ConfigError, match="give a recipe or pairs"):
        Curriculum(name="x", steps=[CurriculumStep(name="a")])
    with pytest.raises(ConfigError, match="unique"):
        Curriculum(name="x", steps=[CurriculumStep(name="a", recipe="bfvr")] * 2)
    bad = tmp_path / "c.yaml"
    bad.write_text("steps:\n  - name: a\n    recipe: bfvr\n    iterations: many\n")
    with pytest.raises(ConfigError, match="iterations"):
        load_curriculum(bad)


def save_tiny_run(run: Path) -> Path:
    m = tiny_stage2()
    save_checkpoint(run, 1, {"model": m.state_dict()}, {}, m.cfg)
    return run


def clip_with_audio(path: Path, frames: int, fps: int = 20, size: int = 48) -> Path:
    """A moving-gradient clip with a sine audio track, made by ffmpeg itself."""

    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={size}x{size}:rate={fps}",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
           "-frames:v", str(frames), "-t", str(frames / fps),
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.mark.parametrize("frames", [3, 10])
def test_enhance_any_length_keeps_fps_and_audio(tmp_path, frames):
    import av

    run = save_tiny_run(tmp_path / "run2")
    src = clip_with_audio(tmp_path / "in.mp4", frames)
    out = tmp_path / "out" / "restored.mp4"
    summary = run_enhance([str(src)], out, run, device="cpu", progress=False, aligned=True)
    assert summary["done"] == 1 and not summary["errors"]
    info = probe(out)
    assert (info.width, info.height) == (32, 32)        # the trained resolution
    assert abs(info.fps - 20) < 1e-6
    assert len(read_frames(out)) == frames               # T = 4: padded or overlapped ends
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1
    import json

    stats = json.loads((out.parent / "enhance_stats.json").read_text())
    assert stats["videos"]["restored"]["chunks"] == -(-frames // 4)
    assert stats["seconds_per_clip"] > 0


def test_enhance_last_chunk_is_the_models_output_for_the_last_T_frames(tmp_path):
    """A 6-frame video with T = 4: frames 4-5 come from running frames 2-5 together."""

    run = save_tiny_run(tmp_path / "run2")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    src = encode_frames(frames, tmp_path / "in.mp4", fps=25, crf=0, preset="ultrafast")
    enh = Enhancer(run, "cpu", crf=0, pix_fmt="yuv444p")
    enh.enhance(src, tmp_path / "out.mp4")
    got = read_frames(tmp_path / "out.mp4")
    decoded = list(read_frames(src))
    tail, _ = enh._run(decoded[2:6])
    head, _ = enh._run(decoded[0:4])
    err = lambda a, b: np.abs(a.astype(int) - np.stack(b).astype(int)).mean()  # noqa: E731
    # x264 lossless in yuv444p leaves only the RGB <-> YUV rounding
    assert err(got[4:], tail[2:]) < 2 and err(got[:4], head) < 2
    assert err(got[4:], head[2:]) > 4 * err(got[4:], tail[2:])


def test_enhance_bad_input_is_reported_not_crashed(tmp_path):
    run = save_tiny_run(tmp_path / "run2")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    summary = run_enhance([str(bad)], tmp_path / "o.mp4", run, device="cpu", progress=False)
    assert str(bad.resolve()) in summary["errors"] and summary["done"] == 0
    assert not (tmp_path / "o.mp4").exists()


def test_enhance_refuses_a_missing_checkpoint_before_starting_workers(tmp_path):
    clip = tmp_path / "in.mp4"
    clip.write_bytes(b"")
    with pytest.raises(ConfigError, match="no such checkpoint"):
        run_enhance([str(clip)], tmp_path / "o.mp4", tmp_path / "missing", device="cpu",
                    progress=False)
    assert not (tmp_path / "o.mp4").exists()


def test_load_stage2_refuses_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_stage2(tmp_path)


# --------------------------------------------------------------------------- paper schedule
def test_shipped_stage2_follows_the_paper_and_authors_schedule():
    """[paper Sec. 4.1] 50k iterations at batch 4; [authors CodeFormer_stage2_bfvr_*.yml]
    Adam 2e-5, no warm-up, MultiStepLR [20000, 35000] x 0.5, EMA 0.995; the curriculum is
    bfvr_1 (2,000 noise-free iterations) then bfvr_2 (50,000)."""
    cfg = load_stage2_config("stage2")
    t, o = cfg.train, cfg.optim
    assert t.batch_size * t.grad_accum == 4
    assert o.lr == 2e-5 and o.warmup_steps == 0 and tuple(o.decay_steps) == (20_000, 35_000)
    assert o.decay_gamma == 0.5 and t.ema_decay == 0.995
    assert (cfg.losses.feature, cfg.losses.ce) == (10.0, 1.0)
    assert (cfg.data.size, cfg.data.num_frames) == (512, 24)
    assert [s.iterations for s in load_curriculum("bfvr").steps] == [2_000, 50_000]
    # the tiny config keeps every mechanism but stays tiny for the CPU end-to-end test
    tiny = load_stage2_config("stage2-tiny")
    assert tiny.train.max_steps <= 40 and tiny.optim.warmup_steps <= 2 and tiny.data.size == 32


def test_deflicker_curricula_start_from_stage1_on_flicker_only_data():
    """The authors train brightness and pixel de-flickering directly from Stage I on flicker-
    only clips for 50k iterations; a noise-free BFVR step first is only a named option."""
    for name in ("brightness", "pixel"):
        cur = load_curriculum(name)
        assert [(s.recipe, s.iterations) for s in cur.steps] == [(name, 50_000)]
        option = load_curriculum(f"{name}-after-nonoise")
        assert [s.recipe for s in option.steps] == ["bfvr-nonoise", name]
        assert "option" in option.description
    # pixel flicker runs a diffusion model per frame: its pairs are made once, not per draw
    assert load_curriculum("pixel").steps[0].data == "pairs"
    with pytest.raises(ConfigError, match="data: pairs"):
        check_online(load_recipe("pixel"))


def test_lr_warms_up_then_decays_in_steps():
    f = lambda s: warmup_step_decay(s, 50_000, 2000, (0.5, 0.75), 0.5)  # noqa: E731
    assert f(0) == pytest.approx(1 / 2000) and f(999) == pytest.approx(0.5)
    assert f(1999) == 1.0 and f(24_999) == 1.0
    assert f(25_000) == 0.5 and f(37_500) == 0.25 and f(49_999) == 0.25


# --------------------------------------------------------------------------- on-the-fly data
CLIP_FRAMES = 8


@pytest.fixture(scope="module")
def curated(shared_videos, tmp_path_factory) -> Path:
    """A curated-style manifest of three real clips (48x48 face crops, 8 frames); one clip
    of exactly 4 frames so that every draw from it is the same window."""
    import cv2

    from stc.manifests.clips import CLIP_SCHEMA
    from stc.manifests.io import write_table

    out = tmp_path_factory.mktemp("curated2")
    rows = []
    for name, n in (("hdtf_1", CLIP_FRAMES), ("hdtf_3", CLIP_FRAMES), ("hdtf_5", 4)):
        frames = read_frames(shared_videos / f"{name}.mp4", 0, n)
        crops = [cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA) for f in frames]
        rel = f"clips/{name}.mp4"
        encode_frames(crops, out / rel, fps=25.0, crf=10, preset="ultrafast")
        row = {"clip_id": name, "source_id": f"{name}-src", "source_path": name,
               "source": "shared", "status": "kept", "reason": "kept", "message": "",
               "clip_path": rel, "clip_size": 48, "clip_num_frames": n, "clip_fps": 25.0,
               "shot_index": 0, "track_index": 0, "start_frame": 0, "end_frame": n}
        rows.append({k: v for k, v in row.items() if k in CLIP_SCHEMA.columns})
    write_table(CLIP_SCHEMA.table(rows), out / "manifest.parquet")
    return out


def one_clip(curated: Path, clip_id: str):
    from stc.model.stage1.data import load_clips

    return [c for c in load_clips(curated, min_frames=4) if c.clip_id == clip_id]


def test_every_draw_of_the_same_window_is_degraded_afresh(curated):
    """A clip of exactly T frames: every draw is the same HQ window, and every draw gets its
    own BFVR parameters and its own LQ (the authors' per-iteration degradation)."""
    ds = OnlinePairs(one_clip(curated, "hdtf_5"), load_recipe("bfvr"), 4, 32, seed=0)
    draws = [ds.draw(i) for i in range(4)]
    hq0 = draws[0][1]
    assert all(np.array_equal(hq, hq0) for _, hq, _ in draws)
    params = [tuple(d[2]["params"][0][k] for k in ("sigma", "scale", "noise", "crf")) for d in draws]
    assert len(set(params)) == 4
    lqs = [lq for lq, _, _ in draws]
    assert all(not np.array_equal(lqs[0], other) for other in lqs[1:])


def test_online_draw_is_the_recipe_code_seeded_by_seed_draw_and_clip(curated):
    from stc.model.stage1.data import load_clips

    clips = load_clips(curated, min_frames=4)
    recipe = load_recipe("bfvr-nonoise")
    ds = OnlinePairs(clips, recipe, 4, 32, seed=3, degrade_seed=7)
    lq, hq, meta = ds.draw(11)
    again, _, _ = OnlinePairs(clips, recipe, 4, 32, seed=3, degrade_seed=7).draw(11)
    assert np.array_equal(lq, again)                          # reproducible from the seeds
    clip = next(c for c in clips if c.clip_id == meta["clip_id"])
    video, params = recipe.run(hq, clip.fps, 7, clip.clip_id, 11)   # what `stc degrade` runs
    assert np.array_equal(video.frames, lq) and params == meta["params"]
    assert meta["params"][0]["noise"] == 0.0
    other, _, _ = OnlinePairs(clips, recipe, 4, 32, seed=3, degrade_seed=8).draw(11)
    assert not np.array_equal(other, lq)
    lq_t, hq_t = ds[11]
    assert lq_t.shape == hq_t.shape == (3, 4, 32, 32)


def save_tiny_stage1(run: Path) -> Path:
    from stc.model.stage1.config import load_stage1_config as s1

    torch.manual_seed(0)
    cfg = s1("stage1-tiny")
    sd = VQGAN3D(cfg.model).state_dict()
    save_checkpoint(run, 1, {"model": sd, "ema": sd}, {}, cfg)
    return run


def tiny_trainer(tmp_path: Path, curated: Path, name: str, **train) -> Stage2Trainer:
    cfg = load_stage2_config("stage2-tiny")
    for k, v in train.items():
        setattr(cfg.train, k, v)
    stage1 = tmp_path / "s1"
    if not stage1.exists():
        save_tiny_stage1(stage1)
    from stc.model.stage1.vqgan3d import load_stage1

    cfg.vqgan = load_stage1(stage1)[1].model
    src = OnlineSource(curated / "manifest.parquet", "bfvr", degrade_seed=0, stream=0)
    return Stage2Trainer(cfg, tmp_path / "val_pairs", "bfvr", tmp_path / name, stage1,
                         max_steps=6, device="cpu", log=lambda m: None, online=src)


def test_trainer_draws_new_windows_every_step_and_resumes_them_exactly(curated, tmp_path):
    tr = tiny_trainer(tmp_path, curated, "a", batch_size=1, grad_accum=2)
    assert tr.val_clips and not (tr.val_clips & tr.train_clips)    # held-out clips never drawn
    steps = list(tr.batches(0))
    assert len(steps) == 6 and all(len(group) == 2 for group in steps)   # 2 micro-batches each
    lq, hq = steps[0][0]
    assert lq.shape == hq.shape == (1, 3, 4, 32, 32)
    assert not torch.equal(steps[0][0][0], steps[0][1][0])
    resumed = list(tr.batches(4))
    assert len(resumed) == 2
    for a, b in zip(resumed, steps[4:]):
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_gradient_accumulation_is_one_batch_of_four_and_ema_follows(curated, tmp_path):
    acc = tiny_trainer(tmp_path, curated, "acc", batch_size=1, grad_accum=4, ema_decay=0.5)
    big = tiny_trainer(tmp_path, curated, "big", batch_size=4, grad_accum=1, ema_decay=0.5)
    group = next(iter(acc.batches(0)))
    joined = [(torch.cat([m[0] for m in group]), torch.cat([m[1] for m in group]))]
    before = {n: p.detach().clone() for n, p in acc.model.named_parameters() if p.requires_grad}
    acc.train_step(group)
    big.train_step(joined)
    for (n, pa), pb in zip(acc.model.named_parameters(), big.model.parameters()):
        if pa.requires_grad:
            assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), n
    # lr of step 0 is the warm-up's first value; the EMA moved halfway to the new weights
    assert acc.opt.param_groups[0]["lr"] == pytest.approx(acc.cfg.optim.lr / acc.cfg.optim.warmup_steps)
    ema = dict(acc.ema.model.named_parameters())
    for n, p in acc.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(ema[n], 0.5 * before[n] + 0.5 * p.detach(), atol=1e-6), n
