"""Eq. 5 and Eq. 7 on the fused code: z_q = z_qS + z_qT, L_f = ||sg(z_h) - z_q||^2 +
beta ||z_h - sg(z_q)||^2, straight-through from z_q to z_h; MPR (Eq. 6) per codebook.

Each test would fail on the per-branch form (C_S against z_h, C_T against TA(z_h) + Δz_h,
a loss and a straight-through copy per branch): its loss value, its codebook gradients,
what the decoder's gradient reaches and what the codes converge to all differ.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stc.model.stage1.codebook import SpatialTemporalQuantizer, code_loss
from stc.model.stage1.mpr import marginal_prior_loss

BETA = 0.25


def quantizer(seed: int = 0, dim: int = 4, size: int = 16) -> SpatialTemporalQuantizer:
    torch.manual_seed(seed)
    q = SpatialTemporalQuantizer(dim, size, size, beta=BETA, norm_groups=2)
    with torch.no_grad():   # codes on the latents' scale, so both codebooks are really used
        q.codebook_s.weight.copy_(torch.randn(size, dim))
        q.codebook_t.weight.copy_(torch.randn(size, dim) * 0.5)
    return q


def codes(quant: SpatialTemporalQuantizer, out) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_qS, z_qT) [B, D, t, h, w] of the chosen indices."""
    q_s = quant.codebook_s.embed(out.indices_s).permute(0, 4, 1, 2, 3)
    q_t = quant.codebook_t.embed(out.indices_t).permute(0, 4, 1, 2, 3)
    return q_s.detach(), q_t.detach()


def test_code_loss_value_is_eq7_of_the_fused_code():
    quant = quantizer()
    z = torch.randn(2, 4, 3, 2, 2)
    out = quant(z)
    q_s, q_t = codes(quant, out)
    fused = q_s + q_t
    expected = (1 + BETA) * F.mse_loss(fused, z)            # both terms have the same value
    assert torch.allclose(out.losses["code"], expected, rtol=1e-5)
    # the forward value of z_q is the fused code (Eq. 5)
    assert torch.allclose(out.z_q, fused, atol=1e-6)
    # the per-branch form gives another number: the test tells them apart
    z_t = quant.temporal_latents(z).detach()
    per_branch = code_loss(z, q_s, BETA) + code_loss(z_t, q_t, BETA)
    assert abs(float(per_branch) - float(expected)) > 0.1 * float(expected)


def test_both_codebooks_move_toward_z_h_by_the_fused_residual():
    """dL/dC[k] = 2/numel * sum over positions that chose k of (z_q - z_h), for C_S and C_T
    alike: the temporal code is pulled by what the fused code misses of z_h, not toward the
    temporal latents."""
    quant = quantizer(1)
    z = torch.randn(1, 4, 4, 3, 3)
    out = quant(z)
    out.losses["code"].backward()
    q_s, q_t = codes(quant, out)
    resid = ((q_s + q_t - z) * 2 / z.numel()).permute(0, 2, 3, 4, 1).reshape(-1, 4)
    for book, idx in ((quant.codebook_s, out.indices_s), (quant.codebook_t, out.indices_t)):
        want = torch.zeros_like(book.weight).index_add_(0, idx.flatten(), resid)
        assert torch.allclose(book.weight.grad, want, atol=1e-6)
        assert want.abs().sum() > 0


def test_straight_through_of_the_fused_code_reaches_z_h_only():
    """The decoder's gradient on z_q passes to z_h unchanged (identity), and the temporal
    attention gets none of it; in the per-branch form z_h would also receive the gradient
    through TA(z_h) + Δz_h and TA would be trained by the decoder."""
    quant = quantizer(2)
    z = torch.randn(1, 4, 4, 3, 3, requires_grad=True)
    g = torch.randn_like(z)
    (quant(z).z_q * g).sum().backward()
    assert torch.allclose(z.grad, g)
    ta = quant.temporal_attention
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ta.parameters())


def test_commitment_term_pulls_z_h_to_the_fused_code():
    quant = quantizer(3)
    z = torch.randn(1, 4, 2, 3, 3, requires_grad=True)
    out = quant(z)
    out.losses["code"].backward()
    q_s, q_t = codes(quant, out)
    want = BETA * 2 * (z.detach() - (q_s + q_t)) / z.numel()
    assert torch.allclose(z.grad, want, atol=1e-7)


def test_mpr_stays_per_codebook_and_is_what_trains_the_temporal_attention():
    quant = quantizer(4)
    z = torch.randn(1, 4, 4, 3, 3)
    out = quant(z)
    d_s = quant.codebook_s.distances(z.permute(0, 2, 3, 4, 1).reshape(-1, 4))
    z_t = quant.temporal_latents(z)
    d_t = quant.codebook_t.distances(z_t.permute(0, 2, 3, 4, 1).reshape(-1, 4))
    assert torch.allclose(out.losses["mpr_s"], marginal_prior_loss(d_s), rtol=1e-5)
    assert torch.allclose(out.losses["mpr_t"], marginal_prior_loss(d_t), rtol=1e-5)
    out.losses["mpr"].backward()
    assert quant.temporal_attention.qkv.weight.grad.abs().sum() > 0


def _fit(fused_loss: bool, steps: int = 300) -> dict[str, float]:
    """Fit the two codebooks to fixed latents with the code loss alone."""
    quant = quantizer(5, dim=4, size=8)
    torch.manual_seed(6)
    z = torch.randn(1, 4, 4, 4, 4)
    opt = torch.optim.Adam([quant.codebook_s.weight, quant.codebook_t.weight], lr=0.05)
    for _ in range(steps):
        out = quant(z)
        if fused_loss:
            loss = out.losses["code"]
        else:   # the per-branch form, for contrast
            q_s = quant.codebook_s.embed(out.indices_s).permute(0, 4, 1, 2, 3)
            q_t = quant.codebook_t.embed(out.indices_t).permute(0, 4, 1, 2, 3)
            loss = code_loss(z, q_s, BETA) + code_loss(quant.temporal_latents(z).detach(), q_t, BETA)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = quant(z)
    return {k: float(out.losses[k]) for k in ("err_s", "err_fused")} | {"var": float(z.var())}


def test_the_fused_code_not_each_branch_tracks_z_h():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fused, branch = _fit(True), _fit(False)
    finally:
        torch.set_num_threads(threads)
    # Eq. 7 on the fused code: z_qS + z_qT approximates z_h, better than C_S alone; fitted
    # per branch, C_S fits z_h and C_T fits TA(z_h) + Δz_h, so their sum overshoots z_h.
    assert fused["err_fused"] < 0.35 * fused["var"], fused
    assert fused["err_fused"] < fused["err_s"], fused
    assert branch["err_fused"] > 2.5 * fused["err_fused"], (fused, branch)
    assert branch["err_fused"] > branch["err_s"], branch


@pytest.mark.parametrize("fusion", ["add", "conv"])
def test_lookup_of_the_indices_gives_the_forward_code(fusion):
    torch.manual_seed(7)
    quant = SpatialTemporalQuantizer(4, 8, 8, beta=BETA, fusion=fusion, norm_groups=2)
    z = torch.randn(1, 4, 2, 3, 3)
    out = quant(z)
    with torch.no_grad():
        assert torch.allclose(quant.lookup(out.indices_s, out.indices_t), out.z_q, atol=1e-5)
