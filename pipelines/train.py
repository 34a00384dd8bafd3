"""`stc train STAGE`: train the models from curated manifests.

    stc train stage1 --manifest DIR/manifest.parquet --config stage1 --out RUN [--max-steps N]
    stc train stage2 --curriculum bfvr --stage1 RUN --out RUN2 [--config stage2] [--max-steps N]
    stc train stage2 --curriculum finetune-bfvr --init RUN --manifest CURATED --out RUN2

Rerunning the same command on the same RUN resumes from its newest checkpoint. With
`--workers N` the same loop runs under Ray Train (`--gpu` for one GPU per worker); the
console then shows worker 0's progress lines and RUN/stc.log keeps everything Ray says.
torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import sys
from pathlib import Path
from typing import Iterator

import yaml

from stc.core import storage
from stc.core.config import ConfigError, load_config, to_dict, with_sets
from stc.core.names import LOG_FILE
from stc.core.runtime import init_ray
from stc.manifests.io import locate_manifest
from stc.pipelines.folders import CURATED, STAGE1, STAGE2, STAGE2_STEP, expect_folder
from stc.pipelines.options import (
    add_config_args,
    add_ray_args,
    positive_int,
    print_config,
    print_next,
    require,
)

DESCRIPTION = """Train the two stages of the model from a curated folder.

  stc train stage1 --manifest CURATED --config stage1 --out RUN1 [--max-steps N]
  stc train stage2 --curriculum bfvr --stage1 RUN1 --out RUN2 [--config stage2]
  stc train stage2 --curriculum finetune-bfvr --init IMPORTED --manifest CURATED --out RUN2

Rerun the same command on the same --out to resume from its newest checkpoint. With
--workers N a stage runs under Ray Train (--gpu: one GPU per worker)."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train Stage I (3D-VQGAN) or Stage II (curricula)",
                                   description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    _add_stage1(stages)
    _add_stage2(stages)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest",
                   help="curated manifest: DIR or DIR/manifest.parquet (from `stc curate`)")
    p.add_argument("--out", help="run folder (checkpoints, TensorBoard); "
                   "rerun with the same folder to resume")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="train until this many steps in total (default: the config's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--allow-outside", action="store_true",
                   help="read clips the manifest names outside its own folder (refused by "
                        "default: a manifest from elsewhere must not make stc read other files)")
    _add_ray_train(p)
    add_ray_args(p)


def _add_ray_train(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("Ray Train (several GPUs or nodes)")
    ray.add_argument("--workers", type=positive_int, default=None,
                     help="run under Ray Train with this many workers, gradients averaged over "
                          "them (default: one process, no Ray)")
    ray.add_argument("--gpu", action="store_true", help="one GPU per Ray worker")
    ray.add_argument("--cpus-per-worker", type=positive_int, default=None)


def refuse_url_out(out: str | None, command: str) -> None:
    """A run folder is a local or mounted path: TensorBoard, the log and the trainer's own
    checkpoints are files. Object storage is for Ray Train's checkpoints (--storage)."""
    if out and storage.is_url(out):
        raise ConfigError(
            f"{command} --out {out}: a training run folder must be a local or mounted path "
            "(checkpoints, TensorBoard and the log are written there as files); nothing was "
            "written. To keep checkpoints on object storage, train under Ray Train with "
            f"--workers N --storage {out} and a local --out")


def _add_stage1(stages) -> None:
    p = stages.add_parser("stage1", help="3D-VQGAN with spatial-temporal codebooks (Stage I)",
                          description="Train the Stage I HQ auto-encoder and its codebooks.")
    _add_common(p)
    p.add_argument("--config", default=None,
                   help="built-in name (stage1, stage1-tiny) or a YAML file; default: the run's "
                        "saved config when resuming, else stage1")
    add_config_args(p)
    p.add_argument("--vgg", default=None,
                   help="VGG19 weights for the perceptual loss (torchvision .pth file, URL or "
                        "hf://REPO/FILE); overrides perceptual.weights")
    p.add_argument("--dinov2", default=None,
                   help="DINOv2 backbone for the discriminator (local folder or hub id); "
                        "overrides discriminator.backbone")
    p.add_argument("--storage", default=None,
                   help="with --workers: where Ray Train keeps the checkpoints it is given, a "
                        "folder or a URL (s3://bucket/prefix, gs://...); a worker or node that "
                        "dies resumes from there, and so does a rerun on another machine "
                        "(default: RUN/ray)")
    p.set_defaults(func=run_stage1)


def _stage1_config(args: argparse.Namespace):
    from stc.model.stage1.config import Stage1Config, load_stage1_config

    saved_path = Path(args.out) / "config.yaml" if args.out else None
    saved = load_config(Stage1Config, saved_path) if saved_path and saved_path.exists() else None
    if args.config is None and saved is not None:
        cfg = saved
    else:
        cfg = load_stage1_config(args.config or "stage1")
    cfg = with_sets(cfg, args.set)
    # Weight locations are not part of the experiment: keep the run's unless overridden.
    if args.vgg:
        cfg.perceptual.weights = args.vgg
    elif saved is not None:
        cfg.perceptual.weights = saved.perceptual.weights
    if args.dinov2:
        cfg.discriminator.backbone = args.dinov2
    elif saved is not None:
        cfg.discriminator.backbone = saved.discriminator.backbone
    return cfg


def run_stage1(args: argparse.Namespace) -> int:
    if args.print_config:
        print_config(to_dict(_stage1_config(args)))
        return 0
    require(args, "stc train stage1", "manifest", "out")
    refuse_url_out(args.out, "stc train stage1")
    if args.storage and not args.workers:
        raise ConfigError("stc train stage1 --storage needs --workers N: it is where Ray Train "
                          "keeps its checkpoints (one process writes them to --out only)")
    expect_folder(args.manifest, CURATED, "stc train stage1 --manifest")
    storage.require_finished(storage.parent(locate_manifest(args.manifest)), "stc train stage1")
    expect_folder(args.out, STAGE1, "stc train stage1 --out", "a new folder or a Stage I run")
    cfg = _stage1_config(args)
    cfg.check_weights()
    # Stage II makes its pairs from the clips Stage I saw unless told otherwise.
    from stc.model.stage2.runs import record_manifest

    record_manifest(args.out, args.manifest)
    if args.workers:
        from stc.model.stage1.trainer import train_stage1_ray

        with ray_train_console(args.out, args.address, args.num_cpus, args.verbose):
            train_stage1_ray(cfg, args.manifest, args.out, workers=args.workers, gpu=args.gpu,
                             max_steps=args.max_steps, cpus_per_worker=args.cpus_per_worker,
                             address=args.address, num_cpus=args.num_cpus,
                             allow_outside=args.allow_outside, storage_path=args.storage)
    else:
        from stc.model.stage1.trainer import Stage1Trainer

        Stage1Trainer(cfg, args.manifest, args.out, max_steps=args.max_steps,
                      device=args.device, allow_outside=args.allow_outside).run()
    print(f"stc train stage1: run folder {args.out}", file=sys.stderr)
    stage2 = stage2_config_for(args.config)
    print_next([f"tensorboard --logdir {Path(args.out) / 'tb'}   (losses, codebook use, "
                "reconstructions)",
                f"stc train stage2 --curriculum bfvr --stage1 {args.out} --out RUN2"
                + (f" --config {stage2}" if stage2 else "")])
    return 0


def stage2_config_for(stage1: str | None) -> str | None:
    """The Stage II config the next step needs for a Stage I config: the shipped one of the
    same size (stage1-tiny -> stage2-tiny), none for the paper's (stage2 is the default),
    and for any other file a placeholder to fill in (the paper-size default would not fit
    a small Stage I, and at paper size asks for tens of GB)."""
    from stc.model.stage2.config import CONFIG_DIR

    name = Path(stage1).stem if stage1 else "stage1"
    if name == "stage1":
        return None
    if name.startswith("stage1") and (CONFIG_DIR / f"stage2{name[len('stage1'):]}.yaml").exists():
        return f"stage2{name[len('stage1'):]}"
    return "STAGE2.yaml"


def _add_stage2(stages) -> None:
    p = stages.add_parser(
        "stage2", help="LQ encoder + code-lookup transformers (Stage II), by curriculum",
        description="Train Stage II on top of a Stage I run (--stage1), or fine-tune a trained "
                    "or imported Stage II model (--init), one curriculum step after another "
                    "(each starts from the previous step's weights). A recipe step degrades "
                    "every drawn window afresh in the data loader (data: online) and validates "
                    "on `stc degrade` pairs of the held-out clips under RUN2/data/; a step with "
                    "data: pairs trains on `stc degrade` pairs of every clip. Rerunning the "
                    "same command resumes mid-curriculum.")
    p.add_argument("--curriculum",
                   help="built-in curriculum (bfvr, brightness, pixel, brightness-after-nonoise, "
                        "pixel-after-nonoise; finetune-bfvr for --init) or a YAML file")
    p.add_argument("--stage1", help="Stage I run folder (or checkpoint)")
    p.add_argument("--init", default=None,
                   help="instead of --stage1: fine-tune this Stage II model, an imported "
                        "release (`stc weights import`) or a Stage II run; its network is kept, "
                        "only the LQ encoder and the transformers train")
    p.add_argument("--out", help="Stage II run folder; rerun it to resume")
    p.add_argument("--config", default=None,
                   help="built-in name (stage2, stage2-tiny) or a YAML file; default: the run's "
                        "saved config when resuming, else the --init model's, else stage2 "
                        "(with --init only its training settings count)")
    add_config_args(p, "Stage II config")
    p.add_argument("--manifest", default=None,
                   help="curated manifest whose clips the recipe steps degrade (default: the one "
                        "the Stage I run was trained on)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="cap every step's iterations at N (for trials)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--degrade-workers", type=positive_int, default=None,
                   help="Ray actors for making pairs (default: one per CPU)")
    p.add_argument("--allow-outside", action="store_true",
                   help="read clips the manifest names outside its own folder (refused by "
                        "default: a manifest from elsewhere must not make stc read other files)")
    _add_ray_train(p)
    add_ray_args(p)
    p.set_defaults(func=run_stage2)


def run_stage2(args: argparse.Namespace) -> int:
    from stc.model.stage2.config import load_stage2_config
    from stc.model.stage2.curriculum import run_curriculum
    from stc.model.stage2.runs import load_curriculum, saved_stage2_config
    from stc.pipelines.degrade import run_degrade

    def make_pairs(recipe, manifest, out, opts, seed):
        run_degrade(manifest, out, recipe, seed, opts, address=args.address,
                    num_cpus=args.num_cpus, workers=args.degrade_workers,
                    allow_outside=args.allow_outside)

    saved = saved_stage2_config(args.out) if args.out else None
    if args.config is None and saved is not None:
        cfg = saved
    elif args.init:
        from stc.model.stage2.finetune import init_config, load_init

        expect_folder(args.init, (STAGE2, STAGE2_STEP), "stc train stage2 --init")
        cfg = init_config(load_init(args.init),
                          load_stage2_config(args.config) if args.config else None)
    else:
        cfg = load_stage2_config(args.config or "stage2")
    cfg = with_sets(cfg, args.set)
    if args.print_config:
        print_config(to_dict(cfg))
        return 0
    if args.stage1 and args.init:
        raise ConfigError("stc train stage2: give --stage1 (train from a Stage I run) or --init "
                          "(fine-tune a Stage II model), not both")
    require(args, "stc train stage2", "curriculum", "out", *(() if args.init else ("stage1",)))
    refuse_url_out(args.out, "stc train stage2")
    if args.stage1:
        expect_folder(args.stage1, STAGE1, "stc train stage2 --stage1")
    expect_folder(args.out, (STAGE2,), "stc train stage2 --out", "a new folder or a Stage II run")
    if args.manifest:
        expect_folder(args.manifest, CURATED, "stc train stage2 --manifest")
    ray_options = {"gpu": args.gpu, "cpus_per_worker": args.cpus_per_worker,
                   "address": args.address, "num_cpus": args.num_cpus}
    with (ray_train_console(args.out, args.address, args.num_cpus, args.verbose) if args.workers
          else contextlib.nullcontext()):
        run_curriculum(load_curriculum(args.curriculum), args.stage1, args.out, cfg,
                       init=args.init, manifest=args.manifest, max_steps=args.max_steps, device=args.device,
                       make_pairs=make_pairs, log=lambda m: print(m, file=sys.stderr, flush=True),
                       allow_outside=args.allow_outside, workers=args.workers,
                       ray_options=ray_options)
    print(f"stc train stage2: run folder {args.out}", file=sys.stderr)
    print_next([f"tensorboard --logdir {Path(args.out) / 'steps'}   (losses; LQ | restored | GT "
                "at eval steps)",
                f"stc enhance VIDEO.mp4 -o OUT.mp4 --checkpoint {args.out}",
                f"stc enhance PAIRS/lq -o PRED --checkpoint {args.out} --aligned && "
                "stc eval --pred PRED --gt PAIRS/gt"])
    return 0


# --- Ray Train on the console -----------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _ConsoleSplit(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr while Ray Train runs: every line goes, without
    colour codes, to the run's log file; only worker 0's progress lines (marked by
    `ray_train.CONSOLE_MARK`) go on to the console, without Ray's "(RayTrainWorker pid=..)"
    prefix."""

    def __init__(self, console, log, mark: str):
        self.console, self.log, self.mark, self.buf = console, log, mark, ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            plain = _ANSI.sub("", line)
            self.log.write(plain + "\n")
            if self.mark in plain:
                self.console.write(plain.split(self.mark, 1)[1] + "\n")
                self.console.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()

    def isatty(self) -> bool:
        return False


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _ANSI.sub("", super().format(record))


def _ray_loggers() -> list[logging.Logger]:
    names = [n for n in list(logging.root.manager.loggerDict) if n == "ray" or n.startswith("ray.")]
    return [logging.getLogger(n) for n in set(names) | {"ray"}]


@contextlib.contextmanager
def ray_train_console(run_dir: str | Path, address: str | None, num_cpus: int | None,
                      verbose: bool) -> Iterator[None]:
    """Ray Train's own state lines and every worker's output into RUN/stc.log; worker 0's
    progress on the console. --verbose leaves Ray's console output as it is."""
    if verbose:
        init_ray(address, num_cpus, verbose=True)
        yield
        return
    from stc.model.training.ray_train import CONSOLE_MARK

    path = Path(run_dir) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(_PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        saved: dict[logging.Logger, tuple] = {}

        def capture_ray_loggers() -> None:
            # Ray adds its console handlers while it starts; catch the ones made since.
            for lg in _ray_loggers():
                if lg not in saved:
                    saved[lg] = (lg.handlers[:], lg.propagate)
                lg.handlers, lg.propagate = [handler], False

        import ray

        ours = not ray.is_initialized()
        out, err = sys.stdout, sys.stderr
        sys.stdout = _ConsoleSplit(out, log, CONSOLE_MARK)
        sys.stderr = _ConsoleSplit(err, log, CONSOLE_MARK)
        try:
            capture_ray_loggers()
            # Worker output must reach this process to be split, and Ray's INFO lines too,
            # so the log file says what Ray Train did.
            init_ray(address, num_cpus, verbose=True)
            capture_ray_loggers()
            yield
        finally:
            if ours:
                # Ray keeps streaming its actors' last lines after the run; stop it while
                # they still land in the log file.
                ray.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = out, err
            for lg, (handlers, propagate) in saved.items():
                lg.handlers, lg.propagate = handlers, propagate
    print(f"stc train: Ray's own log of this run (workers, training state): {path}",
          file=sys.stderr)
