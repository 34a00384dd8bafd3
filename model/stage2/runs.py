"""The Stage II run folder and the curriculum it trains (paper Sec. 3.3, Table 7).

A Stage II run folder:
    curriculum.yaml             the curriculum (a changed one is refused)
    stage2_config.yaml          the Stage II config every step starts from
    stage1.txt                  the Stage I run it started from, or
    init.txt                    the Stage II model it started from (`--init`; its origin,
                                e.g. an import's provenance, in init_provenance.json)
    manifest.txt                the curated manifest its recipe steps degrade
    data/                       `stc degrade` pairs: validation pairs of online steps,
                                training pairs of `data: pairs` steps
    val_clips.parquet           the held-out clips those validation pairs come from
    steps/01-<name>/            one TrainLoop run per step (config, checkpoints, tb, metrics)

Kept apart from `curriculum` (which trains) so that loading a finished model needs only this
layout, not the trainer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stc.core import storage
from stc.core.config import ConfigError, load_config
from stc.model.stage2.config import Stage2Config
from stc.model.training.checkpoint import latest_checkpoint

CURRICULA_DIR = Path(__file__).resolve().parent / "curricula"
CURRICULUM_FILE = "curriculum.yaml"
CONFIG_FILE = "stage2_config.yaml"
STAGE1_FILE = "stage1.txt"
INIT_FILE = "init.txt"
INIT_PROVENANCE_FILE = "init_provenance.json"


@dataclass
class CurriculumStep:
    name: str
    # A degradation recipe (built-in name or YAML file).
    recipe: str | None = None
    # How a recipe step gets its training pairs:
    #   online  a fresh degradation of a freshly drawn window at every draw, in the data
    #           loader (stc.model.stage2.data), as the authors train; `stc degrade` makes
    #           only the held-out clips' pairs, under RUN2/data/, for validation;
    #   pairs   `stc degrade` makes pairs of every clip once under RUN2/data/ and the step
    #           trains on those (for recipes too slow to run per draw, e.g. pixel flicker).
    data: Literal["online", "pairs"] = "online"
    # Or a folder made by `stc degrade` to train on (with `recipe` naming which of its
    # recipes to read); implies data: pairs.
    pairs: str | None = None
    iterations: int = 50_000
    lr: float | None = None       # None: the Stage II config's optim.lr

    @property
    def online(self) -> bool:
        return self.data == "online" and not self.pairs


@dataclass
class Curriculum:
    name: str = ""
    description: str = ""
    steps: list[CurriculumStep] = field(default_factory=list)
    # Seed of the degradations this curriculum makes: the on-the-fly draws and the shards.
    degrade_seed: int = 0

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError(f"curriculum {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ConfigError(f"curriculum {self.name!r}: step names must be unique, got {names}")
        for s in self.steps:
            if not s.recipe and not s.pairs:
                raise ConfigError(f"curriculum {self.name!r}, step {s.name!r}: give a recipe or pairs")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", s.name):
                raise ConfigError(f"step name {s.name!r}: letters, digits, '_', '.', '-' only")
            if s.data not in ("online", "pairs"):
                raise ConfigError(f"step {s.name!r}: data must be 'online' or 'pairs', got {s.data!r}")


def load_curriculum(name_or_file: str | Path) -> Curriculum:
    """A built-in curriculum (`bfvr`, `brightness`, `pixel`) or a YAML file."""
    return load_config(Curriculum, name_or_file, CURRICULA_DIR, kind="curriculum")


def step_dirs(run2: Path, cur: Curriculum) -> list[Path]:
    return [run2 / "steps" / f"{i:02d}-{s.name}" for i, s in enumerate(cur.steps, 1)]


def final_step_dir(path: Path) -> Path | None:
    """The newest step with a checkpoint, when `path` is a Stage II run folder."""

    if not (path / CURRICULUM_FILE).exists():
        return None
    cur = load_config(Curriculum, path / CURRICULUM_FILE)
    done = [d for d in step_dirs(path, cur) if latest_checkpoint(d) is not None]
    if not done:
        raise FileNotFoundError(f"{path}: no curriculum step has a checkpoint yet; train it with "
                                "`stc train stage2` first")
    return done[-1]


MANIFEST_FILE = "manifest.txt"


def record_manifest(stage1_run: str | Path, manifest: str | Path) -> None:
    """Note in a Stage I run folder which curated manifest it trains on."""
    run = Path(stage1_run)
    run.mkdir(parents=True, exist_ok=True)
    where = storage.location(manifest)      # a URL (s3://...) is kept as given
    (run / MANIFEST_FILE).write_text(f"{where.resolve() if isinstance(where, Path) else where}\n")


def stage1_manifest(stage1: Path) -> Path:
    for candidate in (stage1 / MANIFEST_FILE, stage1.parent.parent / MANIFEST_FILE):
        if candidate.exists():
            return storage.location(candidate.read_text().strip())
    raise ConfigError(f"{stage1} does not record its curated manifest ({MANIFEST_FILE}); pass "
                      "--manifest DIR/manifest.parquet (the clips the recipe steps degrade)")


def saved_stage2_config(run2: str | Path):
    """The Stage II config a run started with, or None for a new run."""

    path = Path(run2) / CONFIG_FILE
    return load_config(Stage2Config, path) if path.exists() else None
