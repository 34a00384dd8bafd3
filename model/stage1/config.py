"""Typed Stage I configuration: the 3D-VQGAN, its losses, the data windows and the loop.

Defaults are the paper's values (Sec. 3.2 / 5.1: 256x256 crops of 24 frames, D = 256, two
1024-entry codebooks, Adam lr 7e-5 with betas 0.9/0.99, 250k iterations). Built-in YAML files
in `model/stage1/configs/` override subsets; load them by name with `load_stage1_config("stage1-tiny")`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stc.core.config import ConfigError, load_config

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

VGG19_TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
DINOV2_SMALL = "facebook/dinov2-small"


@dataclass
class ModelConfig:
    in_channels: int = 3
    base_channels: int = 64
    # One entry per resolution level; len - 1 down/up-sampling steps (4 levels -> H/h = 8).
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    # Levels (0 = full resolution) whose residual blocks are followed by self-attention.
    # The middle of the encoder and decoder always has one.
    attn_levels: tuple[int, ...] = (3,)
    # Per down-sampling step: True halves T as well (spatial-temporal), False only H, W.
    temporal_down: tuple[bool, ...] = (True, False, False)
    latent_dim: int = 256
    norm_groups: int = 32
    codebook_size_s: int = 1024
    codebook_size_t: int = 1024
    beta: float = 0.25
    # z_T = TA(z) + (z_t - z_{t - window})
    temporal_window: int = 1
    fusion: Literal["add", "conv"] = "add"

    def __post_init__(self) -> None:
        if len(self.temporal_down) != len(self.channel_mult) - 1:
            raise ValueError(
                f"temporal_down needs one entry per down-sampling step "
                f"({len(self.channel_mult) - 1}), got {len(self.temporal_down)}")
        bad = [lvl for lvl in self.attn_levels if not 0 <= lvl < len(self.channel_mult)]
        if bad:
            raise ValueError(f"attn_levels {bad} outside 0..{len(self.channel_mult) - 1}")
        if self.temporal_window < 1:
            raise ValueError("temporal_window must be >= 1")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.temporal_down)


@dataclass
class DataConfig:
    num_frames: int = 24
    size: int = 256
    hflip: bool = True
    # Fraction of clips (by clip_id hash) held out for validation PSNR.
    val_fraction: float = 0.05
    val_windows: int = 8
    num_workers: int = 2


@dataclass
class LossConfig:
    l1: float = 1.0
    perceptual: float = 1.0
    adversarial: float = 0.1
    adaptive_adv_weight: bool = True
    adv_weight_max: float = 1.0e4
    # Generator and discriminator adversarial terms start at this step.
    disc_start: int = 0
    code: float = 1.0
    mpr: float = 0.1


@dataclass
class PerceptualConfig:
    # Local torchvision-format VGG19 file (vgg19-dcbb9e9d.pth), an http(s) URL (torch hub cache),
    # or hf://REPO/FILE; null disables the loss only when losses.perceptual is 0.
    weights: str | None = VGG19_TORCHVISION_URL
    layers: dict[str, float] = field(default_factory=lambda: {
        "relu1_2": 0.1, "relu2_2": 0.1, "relu3_4": 1.0, "relu4_4": 1.0, "relu5_4": 1.0})
    # Frames per clip fed to VGG (evenly spaced); null = all.
    max_frames: int | None = None


@dataclass
class DiscriminatorConfig:
    # Local folder saved by `save_pretrained` or a hub id (facebook/dinov2-small = ViT-S/14).
    backbone: str | None = DINOV2_SMALL
    image_size: int = 224
    # hidden_states indices (0 = patch embeddings) that feed one head each.
    layers: tuple[int, ...] = (3, 6, 9, 12)
    head_channels: int = 64
    max_frames: int | None = None
    lr: float = 7.0e-5


@dataclass
class OptimConfig:
    lr: float = 7.0e-5
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    max_steps: int = 250_000
    batch_size: int = 1          # per worker
    seed: int = 0
    ema_decay: float = 0.999
    amp: Literal["bf16", "none"] = "bf16"   # used on CUDA only
    log_every: int = 50
    val_every: int = 2000
    ckpt_every: int = 5000
    keep_checkpoints: int = 3


@dataclass
class Stage1Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        m, d = self.model, self.data
        if d.size % m.spatial_factor:
            raise ValueError(f"data.size {d.size} is not divisible by {m.spatial_factor}")
        if d.num_frames % m.temporal_factor:
            raise ValueError(f"data.num_frames {d.num_frames} is not divisible by {m.temporal_factor}")
        if self.discriminator.image_size % 14:
            raise ValueError("discriminator.image_size must be a multiple of the patch size 14")

    def check_weights(self) -> None:
        """Enabled losses must have their pretrained networks named."""
        if self.losses.perceptual > 0 and not self.perceptual.weights:
            raise ConfigError(
                f"losses.perceptual is {self.losses.perceptual} but perceptual.weights is empty; "
                "give a local path with `perceptual.weights: /path/vgg19-dcbb9e9d.pth` "
                "(or --vgg), or set losses.perceptual: 0")
        if self.losses.adversarial > 0 and not self.discriminator.backbone:
            raise ConfigError(
                f"losses.adversarial is {self.losses.adversarial} but discriminator.backbone is "
                "empty; give a local path with `discriminator.backbone: /path/dinov2-small` "
                "(or --dinov2), or set losses.adversarial: 0")


def load_stage1_config(name_or_file: str | Path | None = None) -> Stage1Config:
    """A built-in config by name (`stage1`, `stage1-tiny`), a YAML file, or the defaults."""
    return load_config(Stage1Config, name_or_file, CONFIG_DIR, kind="stage1")
