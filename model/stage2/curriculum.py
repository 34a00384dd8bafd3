"""Incremental Stage II training as data (paper Supp. Sec. 7.2, Table 7): a curriculum is a
list of steps, each training on one degradation recipe (or existing shards) for some
iterations and starting from the previous step's weights (the first from the Stage I run,
or with `--init` from a trained or imported Stage II model: `stc.model.stage2.finetune`).

A recipe step trains on the fly by default (`data: online`): every draw is a new window
degraded afresh (stc.model.stage2.data), and `stc degrade` makes only the held-out clips'
pairs, once, as the fixed validation set. `data: pairs` makes every clip's pairs with
`stc degrade` and trains on them; `pairs: DIR` trains on pairs made earlier.

The run folder's layout is in `stc.model.stage2.runs`; in short:
    curriculum.yaml             the curriculum (a changed one is refused)
    stage2_config.yaml          the Stage II config every step starts from
    stage1.txt                  the Stage I run it started from (init.txt: the --init model)
    manifest.txt                the curated manifest its recipe steps degrade
    data/                       pairs made by `stc degrade`: the validation pairs of online
                                steps, every pair of `data: pairs` steps
    val_clips.parquet           the held-out clips (a curated-manifest subset) for data/
    steps/01-<name>/            one TrainLoop run per step (config, checkpoints, tb, metrics)
A step is finished when its newest checkpoint reaches its iterations; a rerun skips finished
steps and resumes the unfinished one from its newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from stc.core.config import ConfigError, load_config, save_config, to_dict
from stc.degrade.recipe import load_recipe
from stc.degrade.windows import WindowOptions
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import locate_manifest, read_table, with_source_roots, write_table
from stc.model.stage1.vqgan3d import load_stage1
from stc.model.stage2.data import OnlineSource, check_online, online_clips, val_windows_per_clip
from stc.model.stage2.finetune import init_manifest, load_init, network_differs
from stc.model.stage2.runs import (
    CONFIG_FILE,
    CURRICULUM_FILE,
    INIT_FILE,
    INIT_PROVENANCE_FILE,
    MANIFEST_FILE,
    STAGE1_FILE,
    Curriculum,
    CurriculumStep,
    final_step_dir,
    record_manifest,
    stage1_manifest,
    step_dirs,
)
from stc.model.stage2.trainer import NOT_EXPERIMENT, Stage2Trainer, train_stage2_ray
from stc.model.training.checkpoint import latest_checkpoint
from stc.model.training.loop import check_run_config

# make_pairs(recipe, manifest, out_dir, window_options, seed): writes pairs of `recipe` for the
# clips of `manifest` into `out_dir`. The pipeline layer passes `stc degrade`'s runner, so the
# model never imports the pipelines above it.
MakePairs = Callable[[str, Path, Path, WindowOptions, int], None]


def _step_done(step_dir: Path, iterations: int) -> bool:
    ckpt = latest_checkpoint(step_dir)
    return ckpt is not None and int(ckpt.name.split("_")[1]) >= iterations


def _check_run(run2: Path, cur: Curriculum, origin_file: str, origin: Path, config,
               provenance: dict | None = None) -> None:
    """Start RUN2 (config, curriculum, where its first step starts from: `origin_file` is
    stage1.txt or init.txt), or refuse to resume it with another curriculum or origin."""
    saved = run2 / CURRICULUM_FILE
    if saved.exists():
        if (run2 / CONFIG_FILE).exists():
            check_run_config(run2, config, NOT_EXPERIMENT, saved=run2 / CONFIG_FILE)
        old = load_config(Curriculum, saved)
        if to_dict(old) != to_dict(cur):
            raise ConfigError(f"{run2} was started with another curriculum ({saved}); give the "
                              "same curriculum to resume it, or choose a new --out")
        flag = {STAGE1_FILE: "--stage1", INIT_FILE: "--init"}
        if not (run2 / origin_file).exists():
            other = INIT_FILE if origin_file == STAGE1_FILE else STAGE1_FILE
            raise ConfigError(f"{run2} was started with {flag[other]} "
                              f"{(run2 / other).read_text().strip()}; resume it the same way "
                              "or choose a new --out")
        first = (run2 / origin_file).read_text().strip()
        if Path(first) != origin.resolve():
            raise ConfigError(f"{run2} started from {first}, not {origin}; give the same "
                              f"{flag[origin_file]} or a new --out")
        return
    run2.mkdir(parents=True, exist_ok=True)
    save_config(config, run2 / CONFIG_FILE)
    (run2 / origin_file).write_text(str(origin.resolve()) + "\n")
    if provenance is not None:
        import json

        (run2 / INIT_PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    save_config(cur, saved)     # last: its presence marks a started run


def run_curriculum(cur: Curriculum, stage1: str | Path | None, out: str | Path, config,
                   manifest: str | Path | None = None, max_steps: int | None = None,
                   device: str | None = None, make_pairs: MakePairs | None = None,
                   log: Callable[[str], None] = print,
                   allow_outside: bool = False, workers: int | None = None,
                   ray_options: dict | None = None,
                   init: str | Path | None = None) -> list[dict[str, float]]:
    """Train every step of `cur` in turn (skipping finished ones); returns each step's last
    metrics. The first step starts from the Stage I run `stage1`, or with `init` from that
    Stage II model (`stc.model.stage2.finetune`; `config` must then have its network, as
    `finetune.init_config` makes it). `max_steps` caps every step's iterations (for
    trials); `manifest` is the curated manifest the recipe steps degrade (default: the one
    Stage I was trained on), through `make_pairs` (needed only when a step names a recipe).
    With `workers`, each step runs on that many Ray Train workers (`train_stage2_ray`;
    `ray_options`: its gpu, cpus_per_worker, address, num_cpus)."""

    run2 = Path(out)
    if (stage1 is None) == (init is None):
        raise ConfigError("Stage II starts from a Stage I run (--stage1) or from a Stage II "
                          "model (--init): give exactly one")
    if init is not None:
        start = load_init(init)
        changed = [d for d in network_differs(start, config)
                   if not d.startswith("transformer.motion_residual")]
        if changed:
            raise ConfigError(f"--init {init}: its weights only fit its own network, but the "
                              f"config changes {'; '.join(changed[:4])}; drop those settings "
                              "(the network comes from the --init run)")
        origin, kind = Path(init), "stage2"
    else:
        origin, kind = Path(stage1), "stage1"
        _, s1cfg = load_stage1(origin)
        config.vqgan = s1cfg.model
        config.check_against(s1cfg.model)

    for step in cur.steps:   # refuse what cannot run before anything is made
        if step.online:
            check_online(load_recipe(step.recipe))
    if manifest is None and any(not s.pairs for s in cur.steps):
        manifest = stage1_manifest(origin) if kind == "stage1" else init_manifest(origin)
    if kind == "stage2":
        _check_run(run2, cur, INIT_FILE, origin, config, start.provenance)
    else:
        _check_run(run2, cur, STAGE1_FILE, origin, config)
    if manifest is not None and not (run2 / MANIFEST_FILE).exists():
        record_manifest(run2, manifest)     # so a run that --inits from this one finds it

    results = []
    dirs = step_dirs(run2, cur)
    for i, (step, step_dir) in enumerate(zip(cur.steps, dirs)):
        iterations = min(step.iterations, max_steps) if max_steps else step.iterations
        label = f"step {i + 1}/{len(cur.steps)} ({step.name})"
        if _step_done(step_dir, iterations):
            log(f"{label}: finished earlier in {step_dir}, skipping")
            continue
        online = None
        if step.pairs:
            pairs = Path(step.pairs)
        elif step.online:
            pairs = _make_pairs(step, cur, run2, _val_manifest(run2, manifest, config, allow_outside),
                                config, make_pairs, log, per_clip=True)
            online = OnlineSource(Path(manifest), step.recipe, cur.degrade_seed, stream=i,
                                  allow_outside=allow_outside)
        else:
            pairs = _make_pairs(step, cur, run2, Path(manifest), config, make_pairs, log)
        recipe = _recipe_name(step)
        init_from, init_kind = (origin, kind) if i == 0 else (dirs[i - 1], "stage2")
        how = "degraded on the fly" if online else f"pairs from {pairs}"
        log(f"{label}: training on {recipe} {how}, {iterations} iterations")
        if workers:
            results.append(train_stage2_ray(config, pairs, recipe, step_dir, init_from, init_kind,
                                            max_steps=iterations, lr=step.lr, online=online,
                                            workers=workers, **(ray_options or {})))
            continue
        trainer = Stage2Trainer(config, pairs, recipe, step_dir, init_from, init_kind,
                                max_steps=iterations, lr=step.lr, device=device, log=log,
                                online=online)
        results.append(trainer.run())
    log(f"curriculum {cur.name or ''} finished; final model in {final_step_dir(run2)}")
    return results


def _recipe_name(step: CurriculumStep) -> str | None:
    if not step.recipe:
        return None
    return load_recipe(step.recipe).name


VAL_MANIFEST = "val_clips.parquet"


def _val_manifest(run2: Path, manifest: str | Path, config, allow_outside: bool = False) -> Path:
    """RUN2/val_clips.parquet: the rows of the curated manifest's held-out clips (those the
    on-the-fly steps never draw), with absolute clip paths, for `stc degrade`."""
    d = config.data
    _, val = online_clips(manifest, d.num_frames, d.val_fraction, allow_outside)
    path = locate_manifest(manifest)
    table = read_table(path, CLIP_SCHEMA)
    table = table.filter(pc.is_in(table.column("clip_id"),
                                  value_set=pa.array(sorted(c.clip_id for c in val))))
    root = path.parent
    paths = [str((root / p).resolve()) for p in table.column("clip_path").to_pylist()]
    table = table.set_column(table.schema.get_field_index("clip_path"), "clip_path",
                             pa.array(paths, pa.string()))
    out = run2 / VAL_MANIFEST
    # The clips stay in the curated folder: recorded, so `stc degrade` may read them there.
    write_table(with_source_roots(table, [root.resolve()]), out)
    return out


def _make_pairs(step: CurriculumStep, cur: Curriculum, run2: Path, manifest: Path, config,
                make_pairs: MakePairs | None, log, per_clip: bool = False) -> Path:
    """Pairs of `manifest`'s clips for a recipe step under RUN2/data/, made by `make_pairs`
    (the degradation pipeline, whose rerun skips clips already degraded). With `per_clip`,
    only as many windows per clip as the validation needs."""
    if make_pairs is None:
        raise ConfigError(f"step {step.name!r} names recipe {step.recipe!r}: pass make_pairs "
                          "(`stc train stage2` passes `stc degrade`) or give the step `pairs`")
    data = run2 / "data"
    d = config.data
    opts = WindowOptions(window=d.num_frames, size=d.size)
    if per_clip:
        n_val = len(read_table(manifest, CLIP_SCHEMA))
        opts.max_windows = val_windows_per_clip(d.val_pairs, n_val)
    what = "validation pairs" if per_clip else "pairs"
    log(f"making {step.recipe} {what} from {manifest} into {data}")
    make_pairs(step.recipe, Path(manifest), data, opts, cur.degrade_seed)
    return data
