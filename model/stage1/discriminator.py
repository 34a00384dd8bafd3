"""Adversarial critic: a frozen pretrained DINOv2 backbone with trainable lightweight heads.

The backbone (DINOv2 ViT-S/14 in the paper) is loaded through `transformers` from a local
folder written by `save_pretrained` or a hub id, frozen, and kept in eval mode; gradients
still flow through it to the generator's output. Frames are resized to `image_size` and
normalised with ImageNet statistics. One head per selected transformer depth reads the patch
tokens as a grid and scores it at three scales: every patch, 2x2-pooled patches, and the
whole frame (from the CLS token). The logits of all heads are concatenated per frame.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stc.core.config import ConfigError
from stc.core.extras import need
from stc.model.stage1.perceptual import IMAGENET_MEAN, IMAGENET_STD, frames_of


def load_dinov2(backbone: str):
    """`transformers.Dinov2Model` from a local folder or a hub id, with a clear offline error."""
    Dinov2Model = need("transformers", "train", "the DINOv2 discriminator").Dinov2Model

    local = Path(backbone).expanduser()
    source = str(local) if local.exists() else backbone
    try:
        return Dinov2Model.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the DINOv2 backbone {backbone!r} ({exc}); offline? give a local path "
            "with `discriminator.backbone: /path/dinov2-small` (a folder written by "
            "Dinov2Model.save_pretrained, or a downloaded facebook/dinov2-small) or --dinov2"
        ) from None


class ScaleHead(nn.Module):
    """Patch-level, pooled and global logits from one depth's tokens."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.local = nn.Sequential(
            nn.Conv2d(dim, channels, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2))
        self.patch_out = nn.Conv2d(channels, 1, 1)
        self.pooled_out = nn.Conv2d(channels, 1, 1)
        self.global_out = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        n, _, c = tokens.shape
        cls, patches = tokens[:, 0], tokens[:, 1:1 + grid[0] * grid[1]]
        h = self.local(patches.transpose(1, 2).reshape(n, c, *grid))
        logits = [self.patch_out(h).flatten(1), self.global_out(cls)]
        if min(grid) >= 2:
            logits.append(self.pooled_out(F.avg_pool2d(h, 2)).flatten(1))
        return torch.cat(logits, dim=1)


class DinoDiscriminator(nn.Module):
    def __init__(self, backbone: nn.Module, layers: tuple[int, ...], head_channels: int = 64,
                 image_size: int = 224, max_frames: int | None = None):
        super().__init__()
        cfg = backbone.config
        depth = cfg.num_hidden_layers
        bad = [i for i in layers if not 0 <= i <= depth]
        if bad:
            raise ConfigError(f"discriminator.layers {bad} outside 0..{depth} for this backbone")
        self.backbone = backbone.eval().requires_grad_(False)
        self.layers = tuple(layers)
        self.image_size = image_size
        self.patch = cfg.patch_size
        self.max_frames = max_frames
        self.heads = nn.ModuleList(ScaleHead(cfg.hidden_size, head_channels) for _ in layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, backbone: str, **kwargs) -> "DinoDiscriminator":
        return cls(load_dinov2(backbone), **kwargs)

    def train(self, mode: bool = True) -> "DinoDiscriminator":
        super().train(mode)
        self.backbone.eval()
        return self

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith("heads.")}

    def features(self, video: torch.Tensor) -> list[torch.Tensor]:
        """Tokens [N_frames, 1 + patches, C] of the selected depths for a video in [-1, 1]."""
        x = (frames_of(video, self.max_frames) + 1) / 2
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=x.shape[-1] > self.image_size)
        x = (x - self.mean) / self.std
        out = self.backbone(pixel_values=x, output_hidden_states=True)
        return [out.hidden_states[i] for i in self.layers]

    def logits(self, feats: list[torch.Tensor]) -> torch.Tensor:
        g = self.image_size // self.patch
        return torch.cat([head(f.float(), (g, g)) for head, f in zip(self.heads, feats)], dim=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(video))
