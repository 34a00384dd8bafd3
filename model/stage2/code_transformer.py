"""A code-lookup transformer (paper Sec. 3.3): latents in, codebook logits out, per token.

The t*h*w latent positions of a clip are flattened into one sequence, so attention spans
space and time. Position embeddings are learned on the training grid and resized
(trilinearly) when a clip has another grid, e.g. a shorter last chunk at inference.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stc.model.stage2.config import TransformerConfig


class CodeTransformer(nn.Module):
    def __init__(self, in_dim: int, num_codes: int, grid: tuple[int, int, int],
                 cfg: TransformerConfig):
        super().__init__()
        self.grid = tuple(grid)
        self.proj_in = nn.Linear(in_dim, cfg.width)
        self.pos = nn.Parameter(torch.zeros(1, cfg.width, *grid))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, dim_feedforward=int(cfg.width * cfg.mlp_ratio),
            dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
        # nested tensors are a fast path for padded batches; ours never have padding.
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, num_codes, bias=False)

    def position(self, grid: tuple[int, int, int]) -> torch.Tensor:
        pos = self.pos
        if tuple(grid) != self.grid:
            pos = F.interpolate(pos, size=grid, mode="trilinear", align_corners=False)
        return pos.flatten(2).transpose(1, 2)          # [1, t*h*w, width]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D, t, h, w] -> logits [B, K, t, h, w] (the layout cross_entropy expects)."""
        b, _, t, h, w = z.shape
        x = self.proj_in(z.flatten(2).transpose(1, 2)) + self.position((t, h, w))
        x = self.head(self.norm(self.blocks(x)))       # [B, t*h*w, K]
        return x.transpose(1, 2).reshape(b, -1, t, h, w)
