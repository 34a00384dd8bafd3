"""The 3D-VQGAN (paper Sec. 3.2): a purely convolutional 3D encoder E_h and decoder D_h.

Each resolution level is residual blocks (optionally followed by convolutional
self-attention) and one down/up-sampling block. Sampling layers are spatial-only
(1 x 2 x 2) or spatial-temporal (2 x 2 x 2), chosen per step by
`ModelConfig.temporal_down`. The paper fixes the factors H/h = W/w = 8 and T/t = 2
(Sec. 3.3); 4 levels with the first step temporal is how the authors' code reaches them
(and stc's default). Tensors are video-major: [B, C, T, H, W].
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stc.core.config import load_config
from stc.model.stage1.codebook import Codebook, Quantized, SpatialTemporalQuantizer
from stc.model.stage1.config import ModelConfig, Stage1Config
from stc.model.training.checkpoint import (
    CONFIG_FILE,
    load_weights,
    read_safetensors,
    resolve_checkpoint,
)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6, affine=True)


class ResBlock3D(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch, groups)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention3D(nn.Module):
    """Single-head convolutional self-attention over all T*H*W positions (1x1x1 q, k, v)."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Conv3d(ch, 3 * ch, 1)
        self.proj = nn.Conv3d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, t * h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, t, h, w))


class Downsample3D(nn.Module):
    """Strided convolution: halves H, W and, when `temporal`, T.

    Spatial-temporal: a 3x3x3 kernel, stride 2, padded by one on both sides (`pad_after`
    False) or by one zero after the end of T, H and W only (`pad_after`, the authors'
    Downsample). Spatial-only: a kt x 3 x 3 kernel, stride (1, 2, 2), padding (kt // 2, 1, 1).
    """

    def __init__(self, ch: int, temporal: bool, kernel_t: int = 3, pad_after: bool = False):
        super().__init__()
        self.pad_after = temporal and pad_after
        if temporal:
            self.conv = nn.Conv3d(ch, ch, 3, stride=2, padding=0 if self.pad_after else 1)
        else:
            self.conv = nn.Conv3d(ch, ch, (kernel_t, 3, 3), stride=(1, 2, 2),
                                  padding=(kernel_t // 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_after:
            x = F.pad(x, (0, 1, 0, 1, 0, 1))
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest-neighbour upsampling (x2 in H, W and, when `temporal`, T) then a 3x3x3 conv."""

    def __init__(self, ch: int, temporal: bool):
        super().__init__()
        self.scale = (2.0 if temporal else 1.0, 2.0, 2.0)
        self.conv = nn.Conv3d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


def _mid(ch: int, groups: int) -> list[nn.Module]:
    return [ResBlock3D(ch, ch, groups), SelfAttention3D(ch, groups), ResBlock3D(ch, ch, groups)]


def _out_norm(ch: int, cfg: ModelConfig) -> list[nn.Module]:
    return [group_norm(ch, cfg.norm_groups)] + ([nn.SiLU()] if cfg.out_activation else [])


class Encoder3D(nn.Module):
    """E_h: video [B, 3, T, H, W] -> latents z [B, D, T/2, H/8, W/8] (default layout).

    Works in the network's own pixel range (`ModelConfig.pixel_range`); `VQGAN3D.encode`
    converts from stc's [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        g = cfg.norm_groups
        chs = [cfg.base_channels * m for m in cfg.channel_mult]
        blocks: list[nn.Module] = [nn.Conv3d(cfg.in_channels, chs[0], 3, padding=1)]
        ch = chs[0]
        for level, out_ch in enumerate(chs):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock3D(ch, out_ch, g))
                ch = out_ch
                if level in cfg.attn_levels:
                    blocks.append(SelfAttention3D(ch, g))
            if level < len(chs) - 1:
                blocks.append(Downsample3D(ch, cfg.temporal_down[level], cfg.spatial_down_kernel_t,
                                           cfg.temporal_down_padding == "after"))
        blocks += _mid(ch, g)
        blocks += _out_norm(ch, cfg) + [nn.Conv3d(ch, cfg.latent_dim, 3, padding=1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Decoder3D(nn.Module):
    """D_h: (quantised) latents [B, D, t, h, w] -> video [B, 3, T, H, W], unclamped in the
    network's own pixel range (a sigmoid ends it when `pixel_range` is "unit").

    `decoder_levels` "mirror": level i runs at encoder level i's resolution and upsamples
    before level i - 1. "shifted" (the authors' Generator): level i runs at the resolution
    of level i + 1 and upsamples after itself, so the two coarsest levels both run at the
    latent resolution and the last upsampling feeds the output convolution directly.
    Attention follows the resolution: a level attends when its resolution is one of
    `attn_levels`'."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        g = cfg.norm_groups
        chs = [cfg.base_channels * m for m in cfg.channel_mult]
        last = len(chs) - 1
        shifted = cfg.decoder_levels == "shifted"
        ch = chs[-1]
        blocks: list[nn.Module] = [nn.Conv3d(cfg.latent_dim, ch, 3, padding=1)]
        blocks += _mid(ch, g)
        for level in reversed(range(len(chs))):
            res_level = min(level + 1, last) if shifted else level
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock3D(ch, chs[level], g))
                ch = chs[level]
                if res_level in cfg.attn_levels:
                    blocks.append(SelfAttention3D(ch, g))
            # the up-sampling that undoes down-sampling step j is temporal iff step j was
            step = (level if level < last else None) if shifted else (level - 1 if level else None)
            if step is not None:
                blocks.append(Upsample3D(ch, cfg.temporal_down[step]))
        blocks += _out_norm(ch, cfg)
        self.blocks = nn.Sequential(*blocks)
        self.conv_out = nn.Conv3d(ch, cfg.in_channels, 3, padding=1)
        self.sigmoid = cfg.pixel_range == "unit"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.conv_out(self.blocks(z))
        return torch.sigmoid(out) if self.sigmoid else out


class VQGAN3D(nn.Module):
    """E_h, the spatial-temporal quantiser and D_h, with the APIs Stage II builds on.

    encode(x) -> z;  quantize(z) -> (z_q, indices_S, indices_T, losses);  decode(z_q) -> x;
    lookup(indices_S, indices_T) -> z_q (indices [B, t, h, w]); codebook_s / codebook_t are
    C_S and C_T (`.weight` is K x D). Stage II freezes the codebooks and the decoder, starts its
    LQ encoder from `encoder`, and predicts indices for `lookup`.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder3D(cfg)
        self.quantizer = SpatialTemporalQuantizer(
            cfg.latent_dim, cfg.codebook_size_s, cfg.codebook_size_t, beta=cfg.beta,
            window=cfg.temporal_window, fusion=cfg.fusion,
            norm_groups=cfg.ta_norm_groups or cfg.norm_groups)
        self.decoder = Decoder3D(cfg)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ValueError(f"expected a video batch [B, C, T, H, W], got shape {tuple(x.shape)}")
        _, _, t, h, w = x.shape
        s, tf = self.cfg.spatial_factor, self.cfg.temporal_factor
        if h % s or w % s or t % tf:
            raise ValueError(f"input {t}x{h}x{w} (T x H x W): H and W must be divisible by {s} "
                             f"and T by {tf}")

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        """stc's pixel range [-1, 1] -> the network's own (`ModelConfig.pixel_range`)."""
        return (x + 1) * 0.5 if self.cfg.pixel_range == "unit" else x

    def from_native(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1 if self.cfg.pixel_range == "unit" else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, T, H, W] in [-1, 1] -> latents."""
        self.check_input(x)
        return self.encoder(self.to_native(x))

    def quantize(self, z: torch.Tensor) -> Quantized:
        return self.quantizer(z)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Latents -> video in [-1, 1] (unclamped)."""
        return self.from_native(self.decoder(z_q))

    def lookup(self, indices_s: torch.Tensor, indices_t: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(indices_s, indices_t)

    @property
    def codebook_s(self) -> Codebook:
        return self.quantizer.codebook_s

    @property
    def codebook_t(self) -> Codebook:
        return self.quantizer.codebook_t

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output weight, for the adaptive adversarial weight."""
        return self.decoder.conv_out.weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        q = self.quantize(self.encode(x))
        return self.decode(q.z_q), q


def load_stage1(run_dir_or_file: str | Path, device: str | torch.device = "cpu",
                ema: bool = True) -> tuple[VQGAN3D, Stage1Config]:
    """A trained Stage I 3D-VQGAN in eval mode, and the config it was trained with.

    Accepts a run folder (its newest checkpoint), a checkpoint folder, or a .safetensors file
    inside one (that file is loaded, whatever `ema` says). EMA weights by default.
    """

    given = Path(run_dir_or_file).expanduser()
    ckpt = resolve_checkpoint(given)
    cfg = load_config(Stage1Config, ckpt / CONFIG_FILE)
    model = VQGAN3D(cfg.model)
    if given.is_file():
        state = read_safetensors(given)
    else:
        state = load_weights(ckpt, "ema" if ema else "model")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{given}: weights do not fit the saved config's model ({exc})") from None
    return model.to(device).eval(), cfg
