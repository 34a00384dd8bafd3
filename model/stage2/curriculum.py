"""Incremental Stage II training as data (paper Sec. 3.3, Table 7): a curriculum is a list of
steps, each training on one degradation recipe (or existing shards) for some iterations and
starting from the previous step's weights (the first from the Stage I run).

A Stage II run folder:
    curriculum.yaml             the curriculum (a changed one is refused)
    stage2_config.yaml          the Stage II config every step starts from
    stage1.txt                  the Stage I run it started from
    data/                       pairs made by `stc degrade` for steps that name a recipe
    steps/01-<name>/            one TrainLoop run per step (config, checkpoints, tb, metrics)
A step is finished when its newest checkpoint reaches its iterations; a rerun skips finished
steps and resumes the unfinished one from its newest checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stc.core.config import ConfigError, load_config, save_config, to_dict

CURRICULA_DIR = Path(__file__).resolve().parent / "curricula"
CURRICULUM_FILE = "curriculum.yaml"
CONFIG_FILE = "stage2_config.yaml"
STAGE1_FILE = "stage1.txt"


@dataclass
class CurriculumStep:
    name: str
    # A degradation recipe (built-in name or YAML file): its pairs are made under RUN2/data/.
    recipe: str | None = None
    # Or a folder made by `stc degrade` (with `recipe` naming which of its recipes to read).
    pairs: str | None = None
    iterations: int = 50_000
    lr: float | None = None       # None: the Stage II config's optim.lr


@dataclass
class Curriculum:
    name: str = ""
    description: str = ""
    steps: list[CurriculumStep] = field(default_factory=list)
    # Seed of the degradations this curriculum makes (the shards, not the training).
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


def load_curriculum(name_or_file: str | Path) -> Curriculum:
    """A built-in curriculum (`bfvr`, `brightness`, `pixel`) or a YAML file."""
    return load_config(Curriculum, name_or_file, CURRICULA_DIR, kind="curriculum")


def step_dirs(run2: Path, cur: Curriculum) -> list[Path]:
    return [run2 / "steps" / f"{i:02d}-{s.name}" for i, s in enumerate(cur.steps, 1)]


def final_step_dir(path: Path) -> Path | None:
    """The newest step with a checkpoint, when `path` is a Stage II run folder."""
    from stc.model.training.checkpoint import latest_checkpoint

    if not (path / CURRICULUM_FILE).exists():
        return None
    cur = load_config(Curriculum, path / CURRICULUM_FILE)
    done = [d for d in step_dirs(path, cur) if latest_checkpoint(d) is not None]
    if not done:
        raise FileNotFoundError(f"{path}: no curriculum step has a checkpoint yet; train it with "
                                "`stc train stage2` first")
    return done[-1]


def _step_done(step_dir: Path, iterations: int) -> bool:
    from stc.model.training.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(step_dir)
    return ckpt is not None and int(ckpt.name.split("_")[1]) >= iterations


def _check_run(run2: Path, cur: Curriculum, stage1: Path, config) -> None:
    from stc.model.training.loop import check_run_config
    from stc.model.stage2.trainer import NOT_EXPERIMENT

    saved = run2 / CURRICULUM_FILE
    if saved.exists():
        if (run2 / CONFIG_FILE).exists():
            check_run_config(run2, config, NOT_EXPERIMENT, saved=run2 / CONFIG_FILE)
        old = load_config(Curriculum, saved)
        if to_dict(old) != to_dict(cur):
            raise ConfigError(f"{run2} was started with another curriculum ({saved}); give the "
                              "same curriculum to resume it, or choose a new --out")
        first = (run2 / STAGE1_FILE).read_text().strip()
        if Path(first) != stage1.resolve():
            raise ConfigError(f"{run2} started from Stage I run {first}, not {stage1}; "
                              "give the same --stage1 or a new --out")
        return
    run2.mkdir(parents=True, exist_ok=True)
    save_config(config, run2 / CONFIG_FILE)
    (run2 / STAGE1_FILE).write_text(str(stage1.resolve()) + "\n")
    save_config(cur, saved)     # last: its presence marks a started run



def run_curriculum(cur: Curriculum, stage1: str | Path, out: str | Path, config,
                   manifest: str | Path | None = None, max_steps: int | None = None,
                   device: str | None = None, degrade_workers: int | None = None,
                   address: str | None = None, num_cpus: int | None = None,
                   log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train every step of `cur` in turn (skipping finished ones); returns each step's last
    metrics. `max_steps` caps every step's iterations (for trials); `manifest` is the curated
    manifest the recipe steps degrade (default: the one Stage I was trained on)."""
    from stc.model.stage2.trainer import Stage2Trainer
    from stc.model.stage1.vqgan3d import load_stage1

    stage1, run2 = Path(stage1), Path(out)
    _, s1cfg = load_stage1(stage1)
    config.vqgan = s1cfg.model
    config.check_against(s1cfg.model)
    _check_run(run2, cur, stage1, config)

    results = []
    dirs = step_dirs(run2, cur)
    for i, (step, step_dir) in enumerate(zip(cur.steps, dirs)):
        iterations = min(step.iterations, max_steps) if max_steps else step.iterations
        label = f"step {i + 1}/{len(cur.steps)} ({step.name})"
        if _step_done(step_dir, iterations):
            log(f"{label}: finished earlier in {step_dir}, skipping")
            continue
        pairs = Path(step.pairs) if step.pairs else _make_pairs(
            step, cur, run2, manifest, stage1, config, degrade_workers, address, num_cpus, log)
        recipe = _recipe_name(step)
        init_from, kind = (stage1, "stage1") if i == 0 else (dirs[i - 1], "stage2")
        log(f"{label}: training on {recipe} pairs from {pairs}, {iterations} iterations")
        trainer = Stage2Trainer(config, pairs, recipe, step_dir, init_from, kind,
                                max_steps=iterations, lr=step.lr, device=device, log=log)
        results.append(trainer.run())
    log(f"curriculum {cur.name or ''} finished; final model in {final_step_dir(run2)}")
    return results


def _recipe_name(step: CurriculumStep) -> str | None:
    if not step.recipe:
        return None
    from stc.degrade.recipe import load_recipe

    return load_recipe(step.recipe).name


def _make_pairs(step: CurriculumStep, cur: Curriculum, run2: Path, manifest, stage1: Path,
                config, workers, address, num_cpus, log) -> Path:
    """Pairs for a recipe step under RUN2/data/, made by the degradation pipeline (a rerun
    skips clips already degraded)."""
    from stc.degrade.windows import WindowOptions
    from stc.pipelines.degrade import run_degrade

    if manifest is None:
        manifest = _stage1_manifest(stage1)
    data = run2 / "data"
    log(f"making {step.recipe} pairs from {manifest} into {data}")
    opts = WindowOptions(window=config.data.num_frames, size=config.data.size)
    run_degrade(manifest, data, step.recipe, cur.degrade_seed, opts, address=address,
                num_cpus=num_cpus, workers=workers)
    return data


MANIFEST_FILE = "manifest.txt"


def record_manifest(stage1_run: str | Path, manifest: str | Path) -> None:
    """Note in a Stage I run folder which curated manifest it trains on."""
    run = Path(stage1_run)
    run.mkdir(parents=True, exist_ok=True)
    (run / MANIFEST_FILE).write_text(str(Path(manifest).expanduser().resolve()) + "\n")


def _stage1_manifest(stage1: Path) -> Path:
    for candidate in (stage1 / MANIFEST_FILE, stage1.parent.parent / MANIFEST_FILE):
        if candidate.exists():
            return Path(candidate.read_text().strip())
    raise ConfigError(f"{stage1} does not record its curated manifest ({MANIFEST_FILE}); pass "
                      "--manifest DIR/manifest.parquet (the clips the recipe steps degrade)")


def saved_stage2_config(run2: str | Path):
    """The Stage II config a run started with, or None for a new run."""
    from stc.model.stage2.config import Stage2Config

    path = Path(run2) / CONFIG_FILE
    return load_config(Stage2Config, path) if path.exists() else None
