"""`stc train STAGE`: train the models from curated manifests.

    stc train stage1 --manifest DIR/manifest.parquet --config stage1 --out RUN [--max-steps N]
    stc train stage2 --curriculum bfvr --stage1 RUN --out RUN2 [--config stage2] [--max-steps N]

Rerunning the same command on the same RUN resumes from its newest checkpoint. With
`--workers N` the same loop runs under Ray Train (`--gpu` for one GPU per worker). Each stage
is one `_add_STAGE(subparsers)` below; torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stc.core.config import load_config
from stc.pipelines.options import add_ray_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train Stage I (3D-VQGAN) or Stage II (curricula)",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    _add_stage1(stages)
    _add_stage2(stages)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True,
                   help="curated manifest: DIR or DIR/manifest.parquet (from `stc curate`)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, TensorBoard); "
                   "rerun with the same folder to resume")
    p.add_argument("--max-steps", type=int, default=None,
                   help="train until this many steps in total (default: the config's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    ray = p.add_argument_group("Ray Train (several GPUs or nodes)")
    ray.add_argument("--workers", type=int, default=None,
                     help="run under Ray Train with this many workers (default: one process, no Ray)")
    ray.add_argument("--gpu", action="store_true", help="one GPU per Ray worker")
    ray.add_argument("--cpus-per-worker", type=int, default=None)
    add_ray_args(p)


def _add_stage1(stages) -> None:
    p = stages.add_parser("stage1", help="3D-VQGAN with spatial-temporal codebooks (Stage I)",
                          description="Train the Stage I HQ auto-encoder and its codebooks.")
    _add_common(p)
    p.add_argument("--config", default=None,
                   help="built-in name (stage1, stage1-tiny) or a YAML file; default: the run's "
                        "saved config when resuming, else stage1")
    p.add_argument("--vgg", default=None,
                   help="VGG19 weights for the perceptual loss (torchvision .pth file, URL or "
                        "hf://REPO/FILE); overrides perceptual.weights")
    p.add_argument("--dinov2", default=None,
                   help="DINOv2 backbone for the discriminator (local folder or hub id); "
                        "overrides discriminator.backbone")
    p.set_defaults(func=run_stage1)


def _stage1_config(args: argparse.Namespace):
    from stc.model.stage1.config import Stage1Config, load_stage1_config

    saved_path = Path(args.out) / "config.yaml"
    saved = load_config(Stage1Config, saved_path) if saved_path.exists() else None
    if args.config is None and saved is not None:
        cfg = saved
    else:
        cfg = load_stage1_config(args.config or "stage1")
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
    cfg = _stage1_config(args)
    cfg.check_weights()
    # Stage II makes its pairs from the clips Stage I saw unless told otherwise.
    from stc.model.stage2.runs import record_manifest

    record_manifest(args.out, args.manifest)
    if args.workers:
        from stc.model.stage1.trainer import train_stage1_ray

        train_stage1_ray(cfg, args.manifest, args.out, workers=args.workers, gpu=args.gpu,
                         max_steps=args.max_steps, cpus_per_worker=args.cpus_per_worker,
                         address=args.address, num_cpus=args.num_cpus)
    else:
        from stc.model.stage1.trainer import Stage1Trainer

        Stage1Trainer(cfg, args.manifest, args.out, max_steps=args.max_steps,
                      device=args.device).run()
    print(f"stc train stage1: run folder {args.out} (TensorBoard: tensorboard --logdir "
          f"{Path(args.out) / 'tb'})", file=sys.stderr)
    return 0


def _add_stage2(stages) -> None:
    p = stages.add_parser(
        "stage2", help="LQ encoder + code-lookup transformers (Stage II), by curriculum",
        description="Train Stage II on top of a Stage I run, one curriculum step after another "
                    "(each starts from the previous step's weights). Steps that name a "
                    "degradation recipe get their pairs made by `stc degrade` under RUN2/data/. "
                    "Rerunning the same command resumes mid-curriculum.")
    p.add_argument("--curriculum", required=True,
                   help="built-in curriculum (bfvr, brightness, pixel) or a YAML file")
    p.add_argument("--stage1", required=True, help="Stage I run folder (or checkpoint)")
    p.add_argument("--out", required=True, help="Stage II run folder; rerun it to resume")
    p.add_argument("--config", default=None,
                   help="built-in name (stage2, stage2-tiny) or a YAML file; default: the run's "
                        "saved config when resuming, else stage2")
    p.add_argument("--manifest", default=None,
                   help="curated manifest whose clips the recipe steps degrade (default: the one "
                        "the Stage I run was trained on)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap every step's iterations at N (for trials)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--degrade-workers", type=int, default=None,
                   help="Ray actors for making pairs (default: one per CPU)")
    add_ray_args(p)
    p.set_defaults(func=run_stage2)


def run_stage2(args: argparse.Namespace) -> int:
    from stc.model.stage2.config import load_stage2_config
    from stc.model.stage2.curriculum import run_curriculum
    from stc.model.stage2.runs import load_curriculum, saved_stage2_config
    from stc.pipelines.degrade import run_degrade

    def make_pairs(recipe, manifest, out, opts, seed):
        run_degrade(manifest, out, recipe, seed, opts, address=args.address,
                    num_cpus=args.num_cpus, workers=args.degrade_workers)

    saved = saved_stage2_config(args.out)
    cfg = saved if args.config is None and saved is not None else load_stage2_config(args.config or "stage2")
    run_curriculum(load_curriculum(args.curriculum), args.stage1, args.out, cfg,
                   manifest=args.manifest, max_steps=args.max_steps, device=args.device,
                   make_pairs=make_pairs, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"stc train stage2: run folder {args.out} (TensorBoard: tensorboard --logdir "
          f"{Path(args.out) / 'steps'})", file=sys.stderr)
    return 0
