"""A code-lookup transformer (paper Sec. 3.3): latents in, codebook logits out, per token.

Two wirings, chosen by `TransformerConfig`:

  attention "clip", position "input" (stc's default): the t*h*w latent positions of a clip
      form one sequence, so attention spans space and time; an input projection maps D to
      the width and a learned (t, h, w) position embedding is added to it once.
  attention "frame", position "qk" (the authors' CodeFormer3D): each latent frame's h*w
      tokens are a sequence of their own (the B*t frames are independent, temporal mixing
      comes only from the temporal branch's input); a learned (h*w, width) embedding, the
      same for every frame, is added to the queries and keys of every layer and never to
      the values; no input projection (width = D).

Either way each layer is pre-norm (LayerNorm, self-attention, residual; LayerNorm, GELU MLP,
residual) and the head is LayerNorm + a bias-free linear layer to the codebook's logits.
Position embeddings are resized (linearly) when a clip's grid differs from the training grid,
e.g. a shorter last chunk at inference.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stc.model.stage2.config import TransformerConfig


class CodeLayer(nn.Module):
    """Pre-norm transformer layer; `pos`, when given, goes into queries and keys only.
    Parameter names are nn.TransformerEncoderLayer's (and the authors' TransformerSALayer's)."""

    def __init__(self, width: int, heads: int, mlp: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(width, mlp)
        self.linear2 = nn.Linear(mlp, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        qk = h if pos is None else h + pos
        a = self.self_attn(qk, qk, h, need_weights=False)[0]
        x = x + F.dropout(a, self.dropout, self.training)
        h = F.dropout(F.gelu(self.linear1(self.norm2(x))), self.dropout, self.training)
        return x + F.dropout(self.linear2(h), self.dropout, self.training)


class CodeTransformer(nn.Module):
    def __init__(self, in_dim: int, num_codes: int, grid: tuple[int, int, int],
                 cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.per_frame = cfg.attention == "frame"
        self.grid = tuple(grid[1:]) if self.per_frame else tuple(grid)
        if cfg.proj_in:
            self.proj_in = nn.Linear(in_dim, cfg.width)
        elif in_dim != cfg.width:
            raise ValueError(f"transformer.proj_in is off, so its width ({cfg.width}) must equal "
                             f"the latent dim ({in_dim})")
        n = 1
        for g in self.grid:
            n *= g
        # [tokens, width]: the authors' (h*w, 256) layout for a frame grid.
        self.pos = nn.Parameter(torch.zeros(n, cfg.width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        mlp = int(round(cfg.width * cfg.mlp_ratio))
        self.layers = nn.ModuleList(CodeLayer(cfg.width, cfg.heads, mlp, cfg.dropout)
                                    for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, num_codes, bias=False)

    def position(self, grid: tuple[int, ...]) -> torch.Tensor:
        """[tokens, width] for `grid` ((h, w) per frame, or (t, h, w) per clip)."""
        pos = self.pos
        if tuple(grid) != self.grid:
            mode = "bilinear" if len(grid) == 2 else "trilinear"
            p = pos.t().reshape(1, -1, *self.grid)
            p = F.interpolate(p, size=tuple(grid), mode=mode, align_corners=False)
            pos = p.flatten(2)[0].t()
        return pos

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, t, h, w] -> sequences [N, L, D]: N = B*t frames (index b*t + t_i) of h*w
        tokens (h-major), or N = B clips of t*h*w tokens."""
        b, d, t, h, w = z.shape
        if self.per_frame:
            return z.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, d)
        return z.flatten(2).transpose(1, 2)

    def forward_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D, t, h, w] -> logits [N, L, K] in the layout of `tokens`."""
        _, _, t, h, w = z.shape
        x = self.tokens(z)
        if self.cfg.proj_in:
            x = self.proj_in(x)
        pos = self.position((h, w) if self.per_frame else (t, h, w))[None]
        qk_pos = None
        if self.cfg.position == "qk":
            qk_pos = pos
        else:
            x = x + pos
        for layer in self.layers:
            x = layer(x, qk_pos)
        return self.head(self.norm(x))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D, t, h, w] -> logits [B, K, t, h, w] (the layout cross_entropy expects)."""
        b, _, t, h, w = z.shape
        x = self.forward_tokens(z)
        if self.per_frame:
            return x.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3)
        return x.transpose(1, 2).reshape(b, -1, t, h, w)
