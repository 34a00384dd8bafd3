"""Stage II pieces on their own: the code-lookup transformer, the frozen Stage I inside the
Stage II model, curricula as data, and `stc enhance` chunking, fps and audio."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from stc.core.config import ConfigError
from stc.core.video import encode_frames, ffmpeg_exe, probe, read_frames
from stc.model.stage1.config import load_stage1_config
from stc.model.stage1.vqgan3d import VQGAN3D
from stc.model.stage2.code_transformer import CodeTransformer
from stc.model.stage2.config import TransformerConfig, load_stage2_config
from stc.model.stage2.model import Stage2Model, load_stage2
from stc.model.stage2.runs import Curriculum, CurriculumStep, load_curriculum
from stc.model.training.checkpoint import save_checkpoint
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
    summary = run_enhance([str(src)], out, run, device="cpu", progress=False)
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


def test_load_stage2_refuses_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_stage2(tmp_path)
