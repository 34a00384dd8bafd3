"""The authors' released model in stc's network: import, golden forward, refusals.

The golden test rebuilds the fixture's synthetic checkpoint from `keys.json` and the fill
recipe (tests/authors_fixture.py, SEED a parameter), saves it as the release is saved, imports
it and compares with what the authors' unmodified code computed (fixture README Sec. 8).
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from stc.model.authors import (
    AuthorsCheckpointError,
    authors_decode,
    authors_forward,
    authors_postprocess,
    load_authors,
    load_authors_checkpoint,
)
from tests.authors_fixture import (
    fill,
    fixture_dir,
    fixture_layout,
    save_release,
    small_checkpoint,
    small_layout,
)

GOLDEN = fixture_dir() / "io_seed0.safetensors"
needs_fixture = pytest.mark.skipif(not GOLDEN.exists(), reason=f"no fixture at {fixture_dir()}")


def _close(name, got, want, atol):
    err = (got.double() - want.double()).abs().max().item()
    assert err <= atol, f"{name}: max |diff| {err:.3g} > {atol}"


def staged_check(model, expected: dict[str, torch.Tensor]) -> None:
    """Fixture README Sec. 8: lq_feat and logits to 1e-4, indices wherever the top-1/top-2 gap
    is >= 1e-4, `out` to 1e-5 from the stored indices, frames to +-1."""
    x = expected["input_u8"].float() / 255.0
    out, logits_s, logits_t, lq = authors_forward(model, x)
    assert out.shape == (1, 3, 4, 512, 512) and lq.shape == (1, 256, 2, 64, 64)
    assert logits_s.shape == logits_t.shape == (2, 4096, 1024)
    # 1. lq_feat
    _close("lq_feat_sub4", lq[..., ::4, ::4], expected["lq_feat_sub4"], 1e-4)
    _close("lq_feat_c16", lq[:, ::16], expected["lq_feat_c16"], 1e-4)
    _close("lq_feat_sum_c", lq.double().sum((0, 2, 3, 4)), expected["lq_feat_sum_c_f64"], 1e-1)
    # the temporal branch's input on the authors' layout
    with torch.no_grad():
        sa = model.vqgan.quantizer.temporal_attention(lq)
        t_in = model.temporal_input(lq)
    _close("sa_out_sub8", sa[..., ::8, ::8], expected["sa_out_sub8"], 1e-4)
    _close("t_in_sub8", t_in.permute(0, 2, 3, 4, 1)[:, :, ::8, ::8, :], expected["t_in_sub8"], 1e-4)
    # 2. logits
    for b, logits in (("s", logits_s), ("t", logits_t)):
        _close(f"logits_{b}_rows256", logits[:, ::256, :], expected[f"logits_{b}_rows256"], 1e-4)
        _close(f"top1_logit_{b}", logits.max(-1).values, expected[f"top1_logit_{b}"], 1e-4)
        # 3. indices, except near-ties
        idx = logits.argmax(-1, keepdim=True)
        sure = expected[f"top12_gap_{b}"][..., None] >= 1e-4
        want = expected[f"top_idx_{b}"]
        assert torch.equal(idx[sure], want[sure]), f"{b}: top-1 codes differ away from near-ties"
    # 4. generator on the stored indices (the forward's own output when every index agrees)
    same = all(torch.equal(lg.argmax(-1, keepdim=True), expected[f"top_idx_{b}"])
               for b, lg in (("s", logits_s), ("t", logits_t)))
    if same:
        gen = out
    else:
        with torch.no_grad():
            gen = authors_decode(model, expected["top_idx_s"], expected["top_idx_t"], (1, 2, 64, 64))
    _close("output_sub4", gen[..., 0::4, 0::4], expected["output_sub4"], 1e-5)
    _close("output_sub4_off3", gen[..., 3::4, 3::4], expected["output_sub4_off3"], 1e-5)
    _close("output_crop_tl32", gen[..., :32, :32], expected["output_crop_tl32"], 1e-5)
    _close("output_crop_br32", gen[..., -32:, -32:], expected["output_crop_br32"], 1e-5)
    _close("output_minmax", torch.stack([gen.min(), gen.max()]), expected["output_minmax"], 1e-5)
    frames = authors_postprocess(gen)[:, ::4, ::4, ::-1].copy()     # BGR as the script writes
    diff = (torch.from_numpy(frames).int() - expected["frames_bgr_u8_sub4"].int()).abs().max()
    assert int(diff) <= 1


@pytest.mark.slow
@needs_fixture
@pytest.mark.parametrize("seed", [int(os.environ.get("STC_AUTHORS_SEED", 0))])
def test_golden_forward_matches_the_authors_code(tmp_path, seed):
    """Full size (71 M parameters, 4 x 512^2): one forward, ~30-60 s on 2 CPU cores."""
    from safetensors.torch import load_file

    golden = fixture_dir() / f"io_seed{seed}.safetensors"
    if not golden.exists():
        pytest.skip(f"no expected tensors for seed {seed}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = save_release(fill(fixture_layout(), seed), tmp_path / "ckpt-bfvr.pth")
    imported = load_authors(path)
    assert imported.variant.name == "bfvr"
    assert len(imported.dropped) == 76 and imported.dropped_params == 19_638_528
    model = imported.model
    assert not model.training and next(model.parameters()).device.type == "cpu"
    used = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vqgan.encoder."))
    assert used == 51_431_427
    staged_check(model, load_file(str(golden)))


def test_small_checkpoint_imports_and_runs(tmp_path):
    path = small_checkpoint(tmp_path / "small.pth")
    model = load_authors_checkpoint(path)
    x = torch.rand(2, 3, 4, 32, 32)
    out, ls, lt, lq = authors_forward(model, x)
    assert out.shape == x.shape and lq.shape == (2, 32, 2, 4, 4)
    assert ls.shape == lt.shape == (4, 16, 64)
    assert 0 < float(out.min()) and float(out.max()) < 1
    # stc's own convention runs the same network: [-1, 1] in and out
    restored = model.restore(x * 2 - 1)
    assert torch.allclose((restored + 1) / 2, out.clamp(0, 1), atol=1e-5)
    # a de-flicker layout (6 layers) is told apart by its keys; its heads come from the variant
    d = load_authors(small_checkpoint(tmp_path / "df.pth", layers=6))
    assert d.variant.name == "deflicker" and d.model.cfg.transformer.heads == 4


def test_authors_motion_residual_is_not_a_frame_difference():
    """The option the import sets mixes channels across frames; stc's default is z_t - z_{t-1}."""
    from stc.model.stage2.model import authors_layout_residual

    z = torch.randn(1, 4, 2, 3, 3)
    r = authors_layout_residual(z)
    assert r.shape == z.shape and torch.count_nonzero(r[:, :, 0]) == 0
    assert not torch.allclose(r[:, :, 1], z[:, :, 1] - z[:, :, 0])      # not a frame difference
    rows = z.permute(1, 0, 2, 3, 4).reshape(2, -1)
    assert torch.equal(r.permute(2, 0, 3, 4, 1).reshape(2, -1)[1], rows[1] - rows[0])


def test_refuses_bad_files_with_clear_messages(tmp_path):
    good = small_checkpoint(tmp_path / "good.pth")
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AuthorsCheckpointError, match="truncated or corrupt"):
        load_authors_checkpoint(cut)

    # a pickle that would run code when unpickled: refused, and the payload never runs
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"params_ema": {"x": Payload()}}, evil, pickle_module=pickle)
    with pytest.raises(AuthorsCheckpointError, match="refused"):
        load_authors_checkpoint(evil)
    assert not marker.exists()

    sd = fill(small_layout(), 0)
    torch.save({"params": sd}, tmp_path / "noema.pth")
    with pytest.raises(AuthorsCheckpointError, match="no 'params_ema'.*params"):
        load_authors_checkpoint(tmp_path / "noema.pth")

    missing = dict(sd)
    del missing["generator.blocks.2.q.weight"]
    with pytest.raises(AuthorsCheckpointError, match=r"missing 1: generator\.blocks\.2\.q\.weight"):
        load_authors_checkpoint(save_release(missing, tmp_path / "m.pth"))

    extra = dict(sd, **{"generator.blocks.99.weight": torch.zeros(3)})
    with pytest.raises(AuthorsCheckpointError, match=r"unexpected 1: generator\.blocks\.99"):
        load_authors_checkpoint(save_release(extra, tmp_path / "u.pth"))

    wrong = dict(sd, **{"quantize.SA.q.weight": torch.zeros(32, 32, 1, 1)})
    with pytest.raises(AuthorsCheckpointError,
                       match=r"misshaped 1: quantize\.SA\.q\.weight \[32, 32, 1, 1\] \(expected \[32, 32, 1, 1, 1\]\)"):
        load_authors_checkpoint(save_release(wrong, tmp_path / "w.pth"))

    odd = fill(small_layout(layers=3), 0)
    with pytest.raises(AuthorsCheckpointError, match="--variant"):
        load_authors_checkpoint(save_release(odd, tmp_path / "odd.pth"))
    assert load_authors(tmp_path / "odd.pth", "bfvr").model.cfg.transformer.layers == 3
