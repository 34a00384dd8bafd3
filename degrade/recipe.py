"""Recipes: an ordered list of degradation steps, read from YAML, with reproducible seeding.

A recipe file names its steps in order; each step is a mapping with exactly one key
(`bfvr`, `brightness`, `pixel_flicker`) whose value overrides that degradation's
defaults, e.g.

    name: bfvr-nonoise
    steps:
      - bfvr: {noise: [0, 0]}

Built-ins live in `degrade/recipes/` and are found by name (`--recipe bfvr`); any other
`.yaml` path works the same way.

Randomness: every draw of window `w`, step `s` of clip `c` comes from
`SeedSequence(sha256(f"{seed}/{c}/{recipe}"), spawn_key=(w, s))`, so a clip's result
depends only on the run seed, its id, the recipe name and its own frames, never on which
worker ran it, in which order, or how big the cluster is.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stc.core.config import load_config
from stc.degrade.bfvr import BFVR, BFVRConfig
from stc.degrade.brightness import BrightnessConfig, BrightnessFlicker, flicker
from stc.degrade.pixel_flicker import PixelFlicker, PixelFlickerConfig
from stc.degrade.video import Video

BUILTIN_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class Step:
    bfvr: BFVRConfig | None = None
    brightness: BrightnessConfig | None = None
    pixel_flicker: PixelFlickerConfig | None = None

    def __post_init__(self) -> None:
        given = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
        if len(given) != 1:
            names = [f.name for f in dataclasses.fields(self)]
            raise ValueError(f"each step needs exactly one of {names}, got {given or 'none'}")

    @property
    def kind(self) -> str:
        return next(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def build(self, device: str = "auto"):
        config = getattr(self, self.kind)
        if self.kind == "pixel_flicker":
            return PixelFlicker(config, device=device)
        return {"bfvr": BFVR, "brightness": BrightnessFlicker}[self.kind](config)


@dataclass
class Recipe:
    name: str = "bfvr"
    description: str = ""
    steps: list[Step] = field(default_factory=lambda: [Step(bfvr=BFVRConfig())])

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty string without '/'")
        if not self.steps:
            raise ValueError("a recipe needs at least one step")

    @property
    def uses_diffusion(self) -> bool:
        return any(s.kind == "pixel_flicker" for s in self.steps)

    @property
    def replayable(self) -> bool:
        """Every step is a pure function of the frames and its recorded parameters, so the
        LQ can be stored as those parameters and rebuilt from the HQ (see `replay`)."""
        return all(s.kind == "brightness" for s in self.steps)

    def run(self, frames: np.ndarray, fps: float, seed: int, clip_id: str,
            window: int, device: str = "auto") -> tuple[Video, list[dict[str, Any]]]:
        """Degrade one window (uint8 [T, H, W, 3]); returns the LQ and every drawn value.

        `device` only places the diffusion model (pixel flicker); it is a property of the
        machine, not of the recipe, so it is not part of the recipe's settings.
        """
        video = Video.from_frames(frames, fps)
        entropy = clip_entropy(seed, clip_id, self.name)
        params = []
        for s, step in enumerate(self.steps):
            rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(window, s)))
            op = step.build(device)
            if step.kind == "bfvr":
                p = op.draw(rng, video.width, video.height)
            else:
                p = op.draw(rng, len(frames))
            video = op.apply(video, p, rng)
            params.append({"step": step.kind, **dataclasses.asdict(p)})
        return video, params


def replay(frames: np.ndarray, params: list[dict[str, Any]]) -> np.ndarray:
    """The LQ of a replayable recipe from its input frames and recorded `params`."""
    for p in params:
        if p["step"] != "brightness":
            raise ValueError(f"a {p['step']} step cannot be replayed from its parameters")
        frames = flicker(frames, p["frames"], p["alphas"])
    return frames


def clip_entropy(seed: int, clip_id: str, recipe_name: str) -> int:
    digest = hashlib.sha256(f"{seed}/{clip_id}/{recipe_name}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_recipe(name_or_file: str | Path) -> Recipe:
    """A built-in recipe by name or a YAML file; errors name the file and the bad key."""
    return load_config(Recipe, name_or_file, BUILTIN_DIR, kind="degradation recipe")
