"""Typed Stage II configuration: the LQ encoder, the two code-lookup transformers, the data,
the optimiser schedule and the loop.

Every value says where it comes from: [paper Sec./Eq.] stated in the paper, [authors] the
authors' code (Dixin-Lab/BFVR-STC), [stc] stc's choice with the reason. The paper states for
Stage II: 512x512 clips (Sec. 4.1, Supp. Table 8), 50,000 iterations at batch 4 on 4 GPUs,
Adam (Sec. 4.1), L_II = L'_f + lambda_CE (CE_S + CE_T) (Eq. 8), learnable position
embeddings (Sec. 3.3). The warm-up of 2k steps, lr 2e-5 with step decay and EMA weights are
the authors' training code as issue 14 reports it (their options file is not in the public
snapshot stc could read); where a number of that schedule is not known, the value is marked
[stc]. The Stage I model (E_h, C_S, C_T, D_h) is not configured here: it comes from the
Stage I run given on the command line and its config is copied into the Stage II run, so a
Stage II checkpoint is self-contained. Built-ins live in `model/stage2/configs/` (`stage2`,
`stage2-tiny`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stc.core.config import Rule, at_least, checks, fraction, in_range, load_config, positive
from stc.model.stage1.config import ModelConfig, TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TransformerConfig:
    # [stc] The paper gives no transformer sizes and the authors' Stage II code is not
    # public. 9 pre-norm layers with 8 heads as CodeFormer's lookup transformer [58]; width
    # 256 = D, the latent width, rather than CodeFormer's 512, with the common 4x MLP.
    layers: int = 9
    width: int = 256
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # What one attention sequence is: "clip" (all t*h*w tokens of a clip: attention across
    # time too) or "frame" (the h*w tokens of one latent frame; [authors CodeFormer3D]).
    attention: Literal["clip", "frame"] = "clip"
    # Where the learned position embedding goes: "input" (added once to the tokens) or "qk"
    # (added to the queries and keys of every layer, not the values; [authors]).
    position: Literal["input", "qk"] = "input"
    # A linear projection D -> width before the first layer ([authors] none: width = D).
    proj_in: bool = True
    # The motion residual in the temporal branch's input TA(z_l) + R(z_l):
    #   "difference"      R = z_t - z_{t-1}, the adjacent-frame residual of Eq. 3, the same
    #                     one Stage I's quantiser computes for its targets (stc's default:
    #                     the branch then sees at inference what Stage I's temporal codes
    #                     were built from);
    #   "authors_layout"  what the authors' Stage II forward computes: the difference taken
    #                     on a (C, B, t, h, w) buffer viewed as t rows, so its rows mix
    #                     channels of several frames (fixture README Sec. 3, step 3). Only
    #                     for running their released weights as they were trained.
    motion_residual: Literal["difference", "authors_layout"] = "difference"


@dataclass
class Stage2LossConfig:
    # L'_f [paper Eq. 8]: MSE between the LQ encoder's latents and the quantised HQ latents
    # (stop-gradient), weight 1 as written.
    feature: float = 1.0
    # lambda_CE [paper Eq. 8] on CE_S + CE_T; the paper gives no value. [stc] 0.5: CodeFormer's
    # lambda_token, the work [58] the paper follows for these losses.
    ce: float = 0.5


@dataclass
class Stage2DataConfig:
    num_frames: int = 24                 # [paper Sec. 4.1] 24-frame clips (1 s)
    size: int = 512                      # [paper Sec. 4.1, Supp. Table 8] 512^2
    # [stc] pairs (by clip_id hash, as Stage I) held out for validation PSNR and token accuracy.
    val_fraction: float = 0.05
    val_pairs: int = 8                   # [stc]
    num_workers: int = 2                 # [stc] loader processes (machine, not experiment)


@dataclass
class Stage2OptimConfig:
    lr: float = 2.0e-5                   # [authors] 2e-5 (Adam: [paper Sec. 4.1])
    betas: tuple[float, float] = (0.9, 0.99)   # [stc] Stage I's; the paper gives none
    weight_decay: float = 0.0            # [stc] plain Adam
    grad_clip: float | None = None       # [stc] off
    # [authors] linear warm-up over the first 2,000 optimiser steps of a run (BasicSR's
    # warmup_iter: lr * (step + 1) / warmup_steps).
    warmup_steps: int = 2000
    # [authors] step decay; its milestones are not public. [stc] multiply the lr by
    # decay_gamma at these fractions of the curriculum step's iterations.
    decay_at: tuple[float, ...] = (0.5, 0.75)
    decay_gamma: float = 0.5             # [stc] BasicSR's usual MultiStepLR gamma
    # MultiStepLR milestones in optimiser steps of a curriculum step (BasicSR's `milestones`),
    # in addition to `decay_at`. [authors CodeFormer_stage2_bfvr_2.yml] [20000, 35000].
    decay_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if any(m < 1 for m in self.decay_steps):
            raise ValueError(f"decay_steps {list(self.decay_steps)}: steps >= 1")
        if any(not 0 < f < 1 for f in self.decay_at):
            raise ValueError(f"decay_at {list(self.decay_at)}: fractions strictly between 0 and 1")
        if not 0 < self.decay_gamma <= 1:
            raise ValueError("decay_gamma must lie in (0, 1]")


@dataclass
class Stage2TrainConfig(TrainConfig):
    """Stage I's training settings (seed, EMA, bf16, bookkeeping intervals, the same sources)
    with Stage II's schedule."""

    # Per curriculum step it is the step's `iterations` that counts (this is only the default).
    max_steps: int = 50_000              # [paper Sec. 4.1] 50,000 iterations
    # Optimiser batch = batch_size x grad_accum (x workers). [paper Sec. 4.1] batch 4 on
    # 4 GPUs; one process reaches the same batch with batch_size 1 and grad_accum 4.
    # [authors] the authors' Stage II keeps an EMA of the weights (decay [stc] as Stage I's);
    # checkpoints hold both, and the EMA weights are what a run exports.
    grad_accum: int = 4

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")


@dataclass
class Stage2Config:
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    losses: Stage2LossConfig = field(default_factory=Stage2LossConfig)
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    optim: Stage2OptimConfig = field(default_factory=Stage2OptimConfig)
    train: Stage2TrainConfig = field(default_factory=Stage2TrainConfig)
    # Filled from the Stage I run when a Stage II run starts; kept so the run loads alone.
    vqgan: ModelConfig = field(default_factory=ModelConfig)

    def check_against(self, vqgan: ModelConfig) -> None:
        d = self.data
        if d.size % vqgan.spatial_factor or d.num_frames % vqgan.temporal_factor:
            raise ValueError(
                f"data.size {d.size} / data.num_frames {d.num_frames} must be divisible by the "
                f"Stage I factors {vqgan.spatial_factor} / {vqgan.temporal_factor}")

    def token_grid(self) -> tuple[int, int, int]:
        """(t, h, w) of the latents of one training clip."""
        v, d = self.vqgan, self.data
        return (d.num_frames // v.temporal_factor, d.size // v.spatial_factor,
                d.size // v.spatial_factor)


def load_stage2_config(name_or_file: str | Path | None = None) -> Stage2Config:
    """A built-in config by name (`stage2`, `stage2-tiny`), a YAML file, or the defaults."""
    return load_config(Stage2Config, name_or_file, CONFIG_DIR, kind="stage2")


# Ranges checked whenever a Stage II config is loaded (stc.core.config.checks).
checks(TransformerConfig, at_least(1, "layers", "width", "heads"), positive("mlp_ratio"),
       in_range(0, 1, "dropout", open_high=True),
       Rule(("width", "heads"), lambda w, h: w % h == 0, "divisible by"))
checks(Stage2LossConfig, at_least(0, "feature", "ce"))
checks(Stage2DataConfig, at_least(1, "num_frames", "size", "val_pairs"), fraction("val_fraction"),
       at_least(0, "num_workers"))
checks(Stage2OptimConfig, positive("lr", "grad_clip"), in_range(0, 1, "betas", open_high=True),
       at_least(0, "weight_decay"))
checks(Stage2TrainConfig, at_least(1, "max_steps", "log_every", "val_every", "ckpt_every",
                                   "keep_checkpoints"), fraction("ema_decay"))
