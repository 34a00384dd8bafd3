"""Typed Stage I configuration: the 3D-VQGAN, its losses, the data windows and the loop.

Every value says where it comes from:
  [paper ...]   stated in the paper (section or equation of stc_cvpr2025, e.g. Sec. 4.1 is
                "Implementation Details / Model Configuration"),
  [authors]     the authors' public code (Dixin-Lab/BFVR-STC, basicsr/archs/vqgan3D_arch.py),
  [stc]         stc's own choice, with the reason.
The paper states for Stage I only: 256x256 clips of the first 24 frames, D = 256, two
1024-entry codebooks, 250k iterations, DINOv2 ViT-S/14, Adam, batch 4 on 4 GPUs (Sec. 4.1),
H/h = W/w = 8 and T/t = 2 (Sec. 3.3), fusion by addition (Eq. 5) and the objective L_I with
unit weights on L_1, L_per, L_f and the two MPR terms (Sec. 3.2, below Eq. 7). Built-in YAML
files in `model/stage1/configs/` override subsets; load them by name with
`load_stage1_config("stage1-tiny")`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stc.core.config import ConfigError, at_least, checks, fraction, in_range, load_config, positive

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

VGG19_TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
DINOV2_SMALL = "facebook/dinov2-small"


@dataclass
class ModelConfig:
    in_channels: int = 3                 # RGB
    # [stc] width of the first level; the paper gives no channel widths and the authors'
    # options file is not public. 64 is CodeFormer's VQGAN width (nf), the code the authors
    # build on.
    base_channels: int = 64
    # One entry per resolution level; len - 1 down/up-sampling steps. [paper Sec. 3.3] fixes
    # only the result, H/h = W/w = 8 (so 4 levels); the multipliers are [stc]'s choice.
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    # [authors] VQAutoEncoder3D's default res_blocks=2.
    num_res_blocks: int = 2
    # Levels (0 = full resolution) whose residual blocks are followed by self-attention.
    # [authors] attn_resolutions=[32] at 256x256 input, i.e. the 32x32 level 3. The middle
    # of the encoder and decoder always has one [authors].
    attn_levels: tuple[int, ...] = (3,)
    # Per down-sampling step: True halves T as well (spatial-temporal), False only H, W.
    # [paper Sec. 3.3] T/t = 2 (one temporal step); [authors] it is the first step.
    temporal_down: tuple[bool, ...] = (True, False, False)
    latent_dim: int = 256                # [paper Sec. 4.1] D = 256
    # [authors] GroupNorm(32) everywhere (the temporal attention uses 16 there; stc keeps 32).
    norm_groups: int = 32
    codebook_size_s: int = 1024          # [paper Sec. 4.1] N_S = 1024
    codebook_size_t: int = 1024          # [paper Sec. 4.1] N_T = 1024
    # [authors] beta=0.25 (the paper names beta in Eq. 7 without a value; 0.25 is VQ-VAE's).
    beta: float = 0.25
    # z_T = TA(z) + (z_t - z_{t - window}) [paper Eq. 3]; [authors] adjacent frames (1).
    temporal_window: int = 1
    # [paper Eq. 5, Table 4(b)] addition; "conv" (concatenate + 1x1x1 conv) is an ablation.
    fusion: Literal["add", "conv"] = "add"
    # --- Wiring. The defaults are stc's; the `stage1` preset sets the values of the authors'
    # VQAutoEncoder3D (basicsr/archs/vqgan3D_arch.py), so their released weights load.
    # Padding of the spatial-temporal strided conv: "symmetric" (one on every side: the
    # sampling grid is centred on the clip) or "after" (one zero after the end of T, H and W
    # only, [authors Downsample]).
    temporal_down_padding: Literal["symmetric", "after"] = "symmetric"
    # Temporal extent of the kernel of the spatial-only down-sampling: 3 lets it see the
    # neighbouring frames; [authors Downsample2D] 1, a (1, 3, 3) kernel.
    spatial_down_kernel_t: int = 3
    # "mirror": decoder level i at encoder level i's resolution; "shifted": level i at level
    # i + 1's, upsampling after it ([authors Generator]). See Decoder3D.
    decoder_levels: Literal["mirror", "shifted"] = "mirror"
    # SiLU between the last GroupNorm and the last conv of E_h and D_h (the VQGAN of Esser et
    # al. has it); [authors] none.
    out_activation: bool = True
    # Pixel range at the network's ends: "signed" [-1, 1] with a linear output, or "unit"
    # [0, 1] in and one sigmoid out ([authors] infer_bfvr.py feeds /255, the Generator ends
    # in nn.Sigmoid). stc's callers always pass and receive [-1, 1]; VQGAN3D converts.
    pixel_range: Literal["signed", "unit"] = "signed"
    # GroupNorm groups of the temporal attention TA; null = norm_groups. [authors SA2] 16.
    ta_norm_groups: int | None = None

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
        if self.spatial_down_kernel_t not in (1, 3):
            raise ValueError("spatial_down_kernel_t must be 1 or 3")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.temporal_down)


@dataclass
class DataConfig:
    num_frames: int = 24                 # [paper Sec. 4.1] 24 frames per training clip
    size: int = 256                      # [paper Sec. 4.1] resized to 256^2
    # [stc] random horizontal flips: faces are near-symmetric, a free 2x in data.
    hflip: bool = True
    # [stc] fraction of clips (by clip_id hash) held out for validation PSNR.
    val_fraction: float = 0.05
    val_windows: int = 8                 # [stc] windows in the validation batch
    num_workers: int = 2                 # [stc] loader processes (machine, not experiment)


@dataclass
class LossConfig:
    l1: float = 1.0                      # [paper Sec. 3.2, L_I] weight 1
    perceptual: float = 1.0              # [paper Sec. 3.2, L_I] weight 1
    # [stc] lambda_adv: the paper names it without a value; 0.1 times VQGAN's adaptive
    # weight (Esser et al. 2021), which keeps the adversarial gradient at the scale of the
    # reconstruction gradient.
    adversarial: float = 0.1
    adaptive_adv_weight: bool = True     # [stc] VQGAN's adaptive weight, see above
    adv_weight_max: float = 1.0e4        # [stc] VQGAN's clamp of the adaptive weight
    # [stc] generator and discriminator adversarial terms start at this step (VQGAN's
    # disc_start: the auto-encoder first learns to reconstruct).
    disc_start: int = 0
    code: float = 1.0                    # [paper Sec. 3.2, L_I] weight 1 on L_f (Eq. 7)
    # [authors] VectorQuantizerST returns 0.1 * (KL_S + KL_T); the paper's L_I writes weight 1.
    mpr: float = 0.1


@dataclass
class PerceptualConfig:
    # Local torchvision-format VGG19 file (vgg19-dcbb9e9d.pth), an http(s) URL (torch hub cache),
    # or hf://REPO/FILE; null disables the loss only when losses.perceptual is 0.
    # [paper Sec. 3.2] Phi is VGG19.
    weights: str | None = VGG19_TORCHVISION_URL
    # [stc] layer weights of BasicSR's perceptual loss as CodeFormer/GFPGAN configure it;
    # the paper does not say which VGG19 layers.
    layers: dict[str, float] = field(default_factory=lambda: {
        "relu1_2": 0.1, "relu2_2": 0.1, "relu3_4": 1.0, "relu4_4": 1.0, "relu5_4": 1.0})
    # [stc] frames per clip fed to VGG (evenly spaced), to bound memory; null = all.
    max_frames: int | None = None


@dataclass
class DiscriminatorConfig:
    # Local folder saved by `save_pretrained` or a hub id.
    # [paper Sec. 4.1] dinov2_vits14 (facebook/dinov2-small = ViT-S/14).
    backbone: str | None = DINOV2_SMALL
    image_size: int = 224                # [authors] frames interpolated to 224x224
    # [stc] hidden_states indices (0 = patch embeddings) that feed one head each: the paper
    # says "multiple multi-scale heads" on a frozen feature network (Sec. 3.2) without
    # saying where; the authors' code puts three linear heads on the final tokens.
    layers: tuple[int, ...] = (3, 6, 9, 12)
    head_channels: int = 64              # [stc] width of each lightweight head
    max_frames: int | None = None        # [stc] frames per clip scored; null = all
    lr: float = 7.0e-5                   # [stc] same as the generator's


@dataclass
class OptimConfig:
    # [stc] Adam [paper Sec. 4.1] at 7e-5 with betas (0.9, 0.99); the paper gives no
    # learning rate or betas for Stage I and the authors' options file is not public.
    lr: float = 7.0e-5
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0            # [stc] plain Adam, as the paper names it
    grad_clip: float | None = None       # [stc] off


@dataclass
class TrainConfig:
    max_steps: int = 250_000             # [paper Sec. 4.1] 250,000 iterations
    # Per worker. [paper Sec. 4.1] batch 4 on 4 GPUs: `stc train stage1 --workers 4`
    # with 1 each.
    batch_size: int = 1
    seed: int = 0
    # [stc] decay of the weights' moving average; the authors' Stage I is loaded from
    # "params_ema" (so it keeps an EMA), its decay is not public.
    ema_decay: float = 0.999
    amp: Literal["bf16", "none"] = "bf16"   # [stc] bf16 autocast on CUDA only
    log_every: int = 50                  # [stc] bookkeeping intervals
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


# Ranges checked whenever a Stage I config is loaded (stc.core.config.checks): a zero size or
# a negative learning rate is a load-time error naming the key, not a crash hours in.
checks(ModelConfig, at_least(1, "in_channels", "base_channels", "channel_mult", "num_res_blocks",
                             "latent_dim", "norm_groups", "codebook_size_s", "codebook_size_t",
                             "ta_norm_groups"),
       at_least(0, "beta", "attn_levels"))
checks(DataConfig, at_least(1, "num_frames", "size", "val_windows"), fraction("val_fraction"),
       at_least(0, "num_workers"))
checks(LossConfig, at_least(0, "l1", "perceptual", "adversarial", "disc_start", "code", "mpr"),
       positive("adv_weight_max"))
checks(PerceptualConfig, at_least(0, "layers"), at_least(1, "max_frames"))
checks(DiscriminatorConfig, at_least(14, "image_size"), at_least(0, "layers"),
       at_least(1, "head_channels", "max_frames"), positive("lr"))
checks(OptimConfig, positive("lr", "grad_clip"), in_range(0, 1, "betas", open_high=True),
       at_least(0, "weight_decay"))
checks(TrainConfig, at_least(1, "max_steps", "batch_size", "log_every", "val_every", "ckpt_every",
                             "keep_checkpoints"), fraction("ema_decay"))
