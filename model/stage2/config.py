"""Typed Stage II configuration: the LQ encoder and the two code-lookup transformers.

Defaults follow the paper (Sec. 3.3 / 5.1): 9 transformer layers of width 256, 512x512 clips
of 24 frames, L_II = L'_f + lambda_CE (CE_S + CE_T). The Stage I model (E_h, C_S, C_T, D_h)
is not configured here: it comes from the Stage I run given on the command line and its
config is copied into the Stage II run, so a Stage II checkpoint is self-contained.
Built-ins live in `model/stage2/configs/` (`stage2`, `stage2-tiny`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stc.core.config import load_config
from stc.model.stage1.config import ModelConfig, OptimConfig, TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TransformerConfig:
    layers: int = 9
    width: int = 256
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0


@dataclass
class Stage2LossConfig:
    # L'_f: MSE between the LQ encoder's latents and the quantised HQ latents (stop-gradient).
    feature: float = 1.0
    # lambda_CE on CE_S + CE_T against the indices E_h and the codebooks give the HQ clip.
    ce: float = 0.5


@dataclass
class Stage2DataConfig:
    num_frames: int = 24
    size: int = 512
    # Pairs (by clip_id hash) held out for validation PSNR and token accuracy.
    val_fraction: float = 0.05
    val_pairs: int = 8
    num_workers: int = 2


@dataclass
class Stage2Config:
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    losses: Stage2LossConfig = field(default_factory=Stage2LossConfig)
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1.0e-4))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100_000))
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
