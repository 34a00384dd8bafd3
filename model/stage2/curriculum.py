"""Incremental Stage II training as data (paper Sec. 3.3, Table 7): a curriculum is a list of
steps, each training on one degradation recipe (or existing shards) for some iterations and
starting from the previous step's weights (the first from the Stage I run).

The run folder's layout is in `stc.model.stage2.runs`; in short:
    curriculum.yaml             the curriculum (a changed one is refused)
    stage2_config.yaml          the Stage II config every step starts from
    stage1.txt                  the Stage I run it started from
    data/                       pairs made by `stc degrade` for steps that name a recipe
    steps/01-<name>/            one TrainLoop run per step (config, checkpoints, tb, metrics)
A step is finished when its newest checkpoint reaches its iterations; a rerun skips finished
steps and resumes the unfinished one from its newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from stc.core.config import ConfigError, load_config, save_config, to_dict
from stc.degrade.recipe import load_recipe
from stc.degrade.windows import WindowOptions
from stc.model.stage1.vqgan3d import load_stage1
from stc.model.stage2.runs import (
    CONFIG_FILE,
    CURRICULUM_FILE,
    STAGE1_FILE,
    Curriculum,
    CurriculumStep,
    final_step_dir,
    stage1_manifest,
    step_dirs,
)
from stc.model.stage2.trainer import NOT_EXPERIMENT, Stage2Trainer
from stc.model.training.checkpoint import latest_checkpoint
from stc.model.training.loop import check_run_config

# make_pairs(recipe, manifest, out_dir, window_options, seed): writes pairs of `recipe` for the
# clips of `manifest` into `out_dir`. The pipeline layer passes `stc degrade`'s runner, so the
# model never imports the pipelines above it.
MakePairs = Callable[[str, Path, Path, WindowOptions, int], None]


def _step_done(step_dir: Path, iterations: int) -> bool:
    ckpt = latest_checkpoint(step_dir)
    return ckpt is not None and int(ckpt.name.split("_")[1]) >= iterations


def _check_run(run2: Path, cur: Curriculum, stage1: Path, config) -> None:
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
                   device: str | None = None, make_pairs: MakePairs | None = None,
                   log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train every step of `cur` in turn (skipping finished ones); returns each step's last
    metrics. `max_steps` caps every step's iterations (for trials); `manifest` is the curated
    manifest the recipe steps degrade (default: the one Stage I was trained on), through
    `make_pairs` (needed only when a step names a recipe)."""

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
            step, cur, run2, manifest, stage1, config, make_pairs, log)
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
    return load_recipe(step.recipe).name


def _make_pairs(step: CurriculumStep, cur: Curriculum, run2: Path, manifest, stage1: Path,
                config, make_pairs: MakePairs | None, log) -> Path:
    """Pairs for a recipe step under RUN2/data/, made by `make_pairs` (the degradation
    pipeline, whose rerun skips clips already degraded)."""
    if make_pairs is None:
        raise ConfigError(f"step {step.name!r} names recipe {step.recipe!r}: pass make_pairs "
                          "(`stc train stage2` passes `stc degrade`) or give the step `pairs`")
    if manifest is None:
        manifest = stage1_manifest(stage1)
    data = run2 / "data"
    log(f"making {step.recipe} pairs from {manifest} into {data}")
    opts = WindowOptions(window=config.data.num_frames, size=config.data.size)
    make_pairs(step.recipe, Path(manifest), data, opts, cur.degrade_seed)
    return data


