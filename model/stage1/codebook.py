"""Spatial-temporal codebooks (paper Sec. 3.2, Eqs. 3-5 and 7): C_S for appearance, C_T for
motion.

Latents z_h [B, D, t, h, w] from E_h give (Eq. 3)
    spatial latents   z_S = z_h
    temporal latents  z_T = TA(z_h) + (z_t - z_{t - window})
where TA is self-attention over the t axis at each spatial position and the residual is
the difference between latents `window` frames apart (zero for the first frames). Each is
looked up in its own codebook by nearest neighbour (Eq. 4) and the two codes are fused
(Eq. 5, addition by default; a 1x1x1 convolution is stc's option):

    z_q = z_qS (+) z_qT.

The code-level loss (Eq. 7) and the straight-through estimator act on the *fused* code, not
on each branch:

    L_f = ||sg(z_h) - z_q||^2 + beta ||z_h - sg(z_q)||^2,     out = z_h + sg(z_q - z_h),

so the two codebooks learn together to reconstruct z_h (they are complementary: C_T holds
what C_S leaves over) and Stage II's target z_q stays close to the encoder's latents. The
authors' code (Dixin-Lab/BFVR-STC, VectorQuantizerST) does the same on the fused code; it
puts beta on the codebook term instead of the commitment term, while stc follows Eq. 7 as
printed. The marginal prior regulariser (Eq. 6) stays per codebook, on the distances of z_S
to C_S and of z_T to C_T; it is also the only loss that reaches the temporal attention TA
(nearest-neighbour selection has no gradient and the straight-through path goes to z_h).
Distances and losses are computed in float32 whatever the autocast context.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from stc.model.stage1.mpr import marginal_prior_loss


class Quantized(NamedTuple):
    z_q: torch.Tensor                 # fused, straight-through [B, D, t, h, w]
    indices_s: torch.Tensor           # [B, t, h, w] into C_S
    indices_t: torch.Tensor           # [B, t, h, w] into C_T
    # code (Eq. 7 on the fused code), mpr = mpr_s + mpr_t (Eq. 6 per codebook), and two
    # diagnostics without gradient: err_s = ||z_h - z_qS||^2 (the spatial code alone) and
    # err_fused = ||z_h - z_q||^2 (both codes), so a log shows what C_T adds.
    losses: dict[str, torch.Tensor]


def full_precision(device: torch.device):
    """Leave any autocast region: distances to 1024 codes are not safe in bfloat16."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()   # e.g. the meta device used for shape checks


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """z_q in the forward pass, identity gradient to z in the backward pass."""
    return z + (z_q - z).detach()


def code_loss(z: torch.Tensor, z_q: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 7: ||sg(z) - z_q||^2 (moves the codes to the latents) + beta ||z - sg(z_q)||^2
    (commits the latents to the codes), each a mean over elements."""
    return F.mse_loss(z_q, z.detach()) + beta * F.mse_loss(z, z_q.detach())


def code_counts(indices: torch.Tensor, size: int) -> torch.Tensor:
    """How often each of `size` codes is selected in `indices`."""
    return torch.bincount(indices.flatten(), minlength=size)


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a code histogram: 1 when one code is used, K when all K equally."""
    p = counts.float() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def utilisation(counts: torch.Tensor) -> float:
    """Fraction of the codebook selected at least once."""
    return float((counts > 0).float().mean())


class Codebook(nn.Module):
    """K x D embeddings with nearest-neighbour lookup."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size, self.dim = size, dim
        self.weight = nn.Parameter(torch.empty(size, dim).uniform_(-1.0 / size, 1.0 / size))

    def distances(self, flat: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances [N, K] of rows `flat` [N, D] to every code."""
        w = self.weight.float()
        d = flat.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1) - 2 * flat @ w.t()
        return d.clamp_min(0)

    def forward(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(quantised rows [N, D], indices [N], distances [N, K])."""
        d = self.distances(flat)
        idx = d.argmin(dim=1)
        return self.embed(idx), idx, d

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.weight.float())


class TemporalAttention(nn.Module):
    """Self-attention along t at every spatial position of [B, D, t, h, w]."""

    def __init__(self, dim: int, norm_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(dim, norm_groups), dim, eps=1e-6)
        self.qkv = nn.Conv3d(dim, 3 * dim, 1)
        self.proj = nn.Conv3d(dim, dim, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = z.shape
        qkv = self.qkv(self.norm(z)).reshape(b, 3, c, t, h * w)
        # -> [3, B*h*w, 1, t, c]
        qkv = qkv.permute(1, 0, 4, 3, 2).reshape(3, b * h * w, 1, t, c)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = out.reshape(b, h * w, t, c).permute(0, 3, 2, 1).reshape(b, c, t, h, w)
        return self.proj(out)


def temporal_residual(z: torch.Tensor, window: int) -> torch.Tensor:
    """z_t - z_{t-window} along dim 2; frames with no predecessor that far back get 0."""
    if window >= z.shape[2]:
        return torch.zeros_like(z)
    prev = torch.cat([z[:, :, :1].expand(-1, -1, window, -1, -1), z[:, :, :-window]], dim=2)
    out = z - prev
    out[:, :, :window] = 0
    return out


def _flat(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1])


def _unflat(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # contiguous: a permuted view would be channels-last, and the decoder's convolutions and
    # GroupNorms would then run (slower, and less accurately in fp32) in that layout.
    b, c, t, h, w = like.shape
    return flat.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3).contiguous()


class SpatialTemporalQuantizer(nn.Module):
    def __init__(self, dim: int, size_s: int = 1024, size_t: int = 1024, beta: float = 0.25,
                 window: int = 1, fusion: str = "add", norm_groups: int = 32):
        super().__init__()
        self.dim, self.beta, self.window, self.fusion = dim, beta, window, fusion
        self.codebook_s = Codebook(size_s, dim)
        self.codebook_t = Codebook(size_t, dim)
        self.temporal_attention = TemporalAttention(dim, norm_groups)
        if fusion == "conv":
            self.fuse_conv = nn.Conv3d(2 * dim, dim, 1)
        elif fusion != "add":
            raise ValueError(f"fusion must be 'add' or 'conv', got {fusion!r}")

    def temporal_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.temporal_attention(z) + temporal_residual(z, self.window)

    def fuse(self, q_s: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
        if self.fusion == "add":
            return q_s + q_t
        return self.fuse_conv(torch.cat([q_s, q_t], dim=1))

    def forward(self, z: torch.Tensor) -> Quantized:
        with full_precision(z.device):
            z = z.float()
            z_s, z_t = z, self.temporal_latents(z)
            b, _, t, h, w = z.shape
            out_s, idx_s, d_s = self.codebook_s(_flat(z_s))
            out_t, idx_t, d_t = self.codebook_t(_flat(z_t))
            q_s, q_t = _unflat(out_s, z_s), _unflat(out_t, z_t)
            fused = self.fuse(q_s, q_t)                        # Eq. 5
            code = code_loss(z, fused, self.beta)              # Eq. 7 on the fused code
            mpr_s, mpr_t = marginal_prior_loss(d_s), marginal_prior_loss(d_t)   # Eq. 6
            z_q = straight_through(z, fused)
            with torch.no_grad():
                err_s = F.mse_loss(q_s, z)
                err_fused = F.mse_loss(fused, z)
        losses = {"code": code, "mpr": mpr_s + mpr_t, "mpr_s": mpr_s, "mpr_t": mpr_t,
                  "err_s": err_s, "err_fused": err_fused}
        return Quantized(z_q, idx_s.reshape(b, t, h, w), idx_t.reshape(b, t, h, w), losses)

    def lookup(self, indices_s: torch.Tensor, indices_t: torch.Tensor) -> torch.Tensor:
        """Fused quantised latents [B, D, t, h, w] from code indices [B, t, h, w]."""
        q_s = self.codebook_s.embed(indices_s).permute(0, 4, 1, 2, 3).contiguous()
        q_t = self.codebook_t.embed(indices_t).permute(0, 4, 1, 2, 3).contiguous()
        return self.fuse(q_s, q_t)
