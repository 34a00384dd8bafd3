"""Pixel flicker: chosen frames re-rendered by Stable Diffusion's x4 upscaler.

Each frame is chosen independently with probability `prob`; a chosen frame is
downscaled by 4 and upscaled back by `StableDiffusionUpscalePipeline`
(stable-diffusion-x4-upscaler, from a local folder or a hub id the user gives), so its
fine texture is re-invented while the content stays: the per-frame inconsistency the
pixel-flicker videos show. Frames go through the pipeline in batches, on the GPU when
there is one; every frame has its own torch generator seeded from the clip's draw, so a
frame's result does not depend on which batch it landed in (up to GPU batch numerics).
torch and diffusers are imported only when a pipeline is loaded.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stc.core.config import at_least, checks, in_range
from stc.core.extras import need
from stc.degrade.video import Video


@dataclass
class PixelFlickerConfig:
    model: str = "stabilityai/stable-diffusion-x4-upscaler"   # local folder or hub id
    prob: float = 0.3
    prompt: str = "a high quality photo of a face"
    negative_prompt: str = ""
    steps: int = 20
    noise_level: int = 20
    guidance_scale: float = 9.0
    batch_size: int = 4
    dtype: str = "auto"         # auto: float16 on cuda, float32 otherwise
    factor: int = 4             # the x4 upscaler's factor

    def __post_init__(self) -> None:
        if not 0 <= self.prob <= 1:
            raise ValueError(f"prob must lie in [0, 1], got {self.prob}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.dtype not in ("auto", "float16", "bfloat16", "float32"):
            raise ValueError(f"dtype {self.dtype!r} is not one of auto, float16, bfloat16, float32")


@dataclass
class PixelFlickerParams:
    model: str
    prob: float
    prompt: str
    steps: int
    noise_level: int
    guidance_scale: float
    frames: list[int] = field(default_factory=list)   # indices of re-rendered frames
    seeds: list[int] = field(default_factory=list)    # torch seed of each re-rendered frame


_PIPELINES: dict[tuple[str, str, str], object] = {}


def _device_dtype(config: PixelFlickerConfig, device: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = config.dtype
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    return device, getattr(torch, dtype)


def _diffusers():
    """diffusers' upscale pipeline class, never reaching the network: weights come from a
    local folder or the local Hugging Face cache only (a hub id the cache lacks used to cost
    five retries, ~30 s, before its error)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # their import-time notes (e.g. torchvision missing, a slower image processor used) are
    # not the user's business on every run
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    need("transformers", "pixel", "the pixel-flicker recipe")
    return need("diffusers", "pixel", "the pixel-flicker recipe").StableDiffusionUpscalePipeline


def check_model(model: str, key: str = "pixel_flicker.model") -> None:
    """Fail at once, before any worker starts, when `model` names no upscale pipeline here;
    `key` is where the recipe sets it, for the message."""
    pipeline_cls = _diffusers()
    try:
        with warnings.catch_warnings():    # hub deprecation notes, not the user's concern
            warnings.simplefilter("ignore")
            pipeline_cls.load_config(model, local_files_only=True)
    except (OSError, ValueError) as exc:
        where = "a local folder without model_index.json" if Path(model).expanduser().is_dir() \
            else "not a local folder, and not in the local Hugging Face cache (stc never downloads)"
        raise FileNotFoundError(
            f"{key} {model!r} is {where} ({type(exc).__name__}); point it at a folder saved "
            "with save_pretrained (e.g. a copy of stabilityai/stable-diffusion-x4-upscaler): "
            f"--set {key}=DIR"
        ) from None


def load_pipeline(config: PixelFlickerConfig, device: str = "auto"):
    """The upscale pipeline for `config.model` on `device`, loaded once per process."""
    device, dtype = _device_dtype(config, device)
    key = (config.model, device, str(dtype))
    if key not in _PIPELINES:
        try:
            pipe = _diffusers().from_pretrained(config.model, local_files_only=True,
                                                **_dtype_kwarg(dtype))
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"cannot load the upscale pipeline {config.model!r} ({exc}); give pixel_flicker.model "
                "as a local folder saved with save_pretrained or a hub id you can download"
            ) from exc
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        _PIPELINES[key] = pipe
    return _PIPELINES[key]


def _dtype_kwarg(dtype) -> dict:
    """`dtype=` on diffusers that renamed it, `torch_dtype=` on older ones."""
    try:
        from diffusers.utils import deprecation_utils

        if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE"):
            return {"dtype": dtype}
    except ImportError:
        pass
    return {"torch_dtype": dtype}


class PixelFlicker:
    name = "pixel_flicker"

    def __init__(self, config: PixelFlickerConfig | None = None, device: str = "auto"):
        self.config = config or PixelFlickerConfig()
        self.device = device     # "auto": cuda when available, else cpu

    def draw(self, rng: np.random.Generator, num_frames: int) -> PixelFlickerParams:
        c = self.config
        hit = np.flatnonzero(rng.random(num_frames) < c.prob)
        seeds = rng.integers(0, 2**63 - 1, len(hit))
        return PixelFlickerParams(model=c.model, prob=c.prob, prompt=c.prompt, steps=c.steps,
                                  noise_level=c.noise_level, guidance_scale=c.guidance_scale,
                                  frames=[int(i) for i in hit], seeds=[int(s) for s in seeds])

    def rerender(self, frames: np.ndarray, seeds: list[int]) -> np.ndarray:
        """frames [N, H, W, 3] uint8 -> the same size after down-4 / pipeline up-4."""
        import cv2
        import torch
        from PIL import Image

        c = self.config
        pipe = load_pipeline(c, self.device)
        h, w = frames.shape[1:3]
        lw, lh = max(1, w // c.factor), max(1, h // c.factor)
        out = []
        for b in range(0, len(frames), c.batch_size):
            chunk = frames[b:b + c.batch_size]
            low = np.stack([cv2.resize(f, (lw, lh), interpolation=cv2.INTER_AREA) for f in chunk])
            # PIL images: every diffusers version normalises them the same way.
            image = [Image.fromarray(f) for f in low]
            gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds[b:b + len(chunk)]]
            n = len(chunk)
            with torch.inference_mode():
                result = pipe(prompt=[c.prompt] * n, image=image,
                              negative_prompt=[c.negative_prompt] * n if c.guidance_scale > 1 else None,
                              num_inference_steps=c.steps, noise_level=c.noise_level,
                              guidance_scale=c.guidance_scale, generator=gens, output_type="np")
            imgs = np.clip(np.rint(np.asarray(result.images, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
            for img in imgs:
                if img.shape[:2] != (h, w):
                    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
                out.append(img)
        return np.stack(out) if out else frames[:0]

    def apply(self, video: Video, p: PixelFlickerParams, rng: np.random.Generator) -> Video:
        frames = video.frames.copy()
        if p.frames:
            frames[p.frames] = self.rerender(frames[p.frames], p.seeds)
        return Video.from_frames(frames, video.fps)


# Checked when a recipe is loaded (stc.core.config.checks); the x4 upscaler takes noise
# levels up to 350.
checks(PixelFlickerConfig, in_range(0, 350, "noise_level"), at_least(0, "guidance_scale"),
       at_least(1, "factor"))
