"""Stage II training on the generic loop: one curriculum step.

`Stage2Trainer` fills in `model.loop.TrainLoop`. The model starts from a Stage I run (step 1
of a curriculum) or from a Stage II checkpoint (its EMA weights): the previous step's, or
for step 1 the `--init` model (an imported release or another stc run). Either way the
Stage I parts (HQ encoder, codebooks, temporal attention SA2, generator) stay frozen and the
LQ encoder and the transformers train, as the authors' `fix_modules`. Training pairs come either

  - on the fly (`online`, how the authors train): every draw is a new window of a training
    clip degraded afresh by the step's recipe (`stc.model.stage2.data.OnlinePairs`); the
    validation pairs are `stc degrade` shards of the held-out clips, fixed for every
    evaluation; or
  - from `stc degrade` shards (`degrade.loader.PairDataset`), split into training and
    validation clips by clip-id hash.

One optimiser step averages the gradients of `train.grad_accum` micro-batches of
`train.batch_size` (the paper's batch 4 = 1 x 4 on one GPU); the learning rate follows a
linear warm-up and step decay computed from the step alone; an EMA of the weights is kept,
validated and exported. Validation reports the PSNR of the restored clip, the PSNR of the LQ
input (the baseline it must beat) and the token accuracy, for the EMA weights.

Resume restores weights, EMA, optimizer, RNG and step exactly; on-the-fly draws are a
function of the draw number, so a resumed run draws what the uninterrupted one would have.
The pair order of shard training after a resume is a fresh deterministic shuffle (seeded by
the step), not the continuation of the interrupted one.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from stc.core.config import ConfigError, from_dict, to_dict
from stc.core.names import PAIRS_MANIFEST
from stc.core.tensors import to_uint8
from stc.degrade.loader import PairDataset
from stc.manifests.io import read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.model.stage1.data import StepSampler
from stc.model.stage1.losses import psnr
from stc.model.stage1.vqgan3d import load_stage1
from stc.model.stage2.config import Stage2Config
from stc.model.stage2.data import OnlineSource, online_dataset, split_ids
from stc.model.stage2.model import Stage2Model, load_stage2
from stc.model.training.checkpoint import load_weights
from stc.model.training.ema import EMA
from stc.model.training.loop import TrainLoop, check_run_config
from stc.model.training.media import side_by_side
from stc.model.training.ray_train import all_reduce_mean, check_replicas, fit, worker_context
from stc.model.training.schedule import set_lr, warmup_step_decay

NOT_EXPERIMENT = ("train.max_steps", "data.num_workers")


def split_pair_clips(pairs_dir: Path, recipe: str | None, fraction: float) -> tuple[set[str], set[str]]:
    """(train clip ids, validation clip ids) of the ok pairs; at least one clip each when
    there are two or more clips, all clips in both when there is one."""

    df = read_manifest(pairs_dir / PAIRS_MANIFEST, PAIRS_SCHEMA)
    df = df[(df["status"] == "ok") & ((df["recipe"] == recipe) if recipe else True)]
    clips = sorted(set(df["clip_id"]))
    if not clips:
        raise FileNotFoundError(f"{pairs_dir}/pairs.parquet has no ok pairs for recipe {recipe!r}; "
                                "run `stc degrade` with that recipe first")
    return split_ids(clips, fraction)


class Stage2Trainer(TrainLoop):
    def __init__(self, cfg: Stage2Config, pairs_dir: str | Path, recipe: str | None,
                 run_dir: str | Path, init_from: str | Path, init_kind: str = "stage1",
                 max_steps: int | None = None, lr: float | None = None,
                 device: str | torch.device | None = None,
                 log: Callable[[str], None] | None = None,
                 online: OnlineSource | None = None, rank: int = 0, world: int = 1,
                 report: Callable[[dict[str, float]], None] | None = None):
        """`pairs_dir`/`recipe`: the `stc degrade` folder and recipe name to read pairs of:
        training and validation pairs, or with `online` given the validation pairs only.
        `rank`/`world`: this worker of a distributed run (`train_stage2_ray`): it draws its
        own share of the pairs and gradients are averaged over the workers."""
        cfg = copy.deepcopy(cfg)
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        if lr is not None:
            cfg.optim.lr = lr
        super().__init__(cfg, run_dir, rank, world, log, report)
        check_run_config(self.run_dir, cfg, NOT_EXPERIMENT)
        self.pairs_dir, self.recipe, self.online = Path(pairs_dir), recipe, online
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._build(Path(init_from), init_kind)

    def _build(self, init_from: Path, init_kind: str) -> None:
        cfg, dev = self.cfg, self.device
        torch.manual_seed(cfg.train.seed)
        if init_kind == "stage1":
            vqgan, _ = load_stage1(init_from)
            self.model = Stage2Model(cfg, vqgan)
        elif init_kind == "stage2":
            prev, _ = load_stage2(init_from)
            self.model = Stage2Model(cfg)
            try:
                self.model.load_state_dict(prev.state_dict())
            except RuntimeError as exc:
                first = str(exc).splitlines()[1:2] or [str(exc)]
                raise ConfigError(f"{init_from}: its weights do not fit this run's network "
                                  f"({first[0].strip()[:300]}); the network (transformer, vqgan, "
                                  "data.size) must be the one it was trained with") from None
        else:
            raise ValueError(f"init_kind must be 'stage1' or 'stage2', got {init_kind!r}")
        self.model.to(dev)
        self.ema = EMA(self.model, cfg.train.ema_decay)
        o = cfg.optim
        self.opt = torch.optim.Adam(self.model.trainable_parameters(), lr=o.lr, betas=o.betas,
                                    weight_decay=o.weight_decay)
        self.train_set = None
        if self.online is not None:
            self.train_set, self.val_clips = online_dataset(
                self.online, cfg.data.num_frames, cfg.data.size, cfg.train.seed,
                cfg.data.val_fraction)
            self.train_clips = {c.clip_id for c in self.train_set.clips}
        else:
            self.train_clips, self.val_clips = split_pair_clips(self.pairs_dir, self.recipe,
                                                                cfg.data.val_fraction)
        self.init_from = init_from

    def describe(self) -> str:
        trainable = sum(p.numel() for p in self.model.trainable_parameters()) / 1e6
        t = self.cfg.train
        source = (f"recipe {self.recipe} degraded on the fly" if self.online is not None
                  else f"recipe {self.recipe} pairs from {self.pairs_dir}")
        return (f"{source}: {len(self.train_clips)} training clip(s), {len(self.val_clips)} "
                f"validation clip(s) (pairs in {self.pairs_dir}); batch {t.batch_size} x "
                f"{t.grad_accum} accumulated; {trainable:.2f} M trainable parameters; started "
                f"from {self.init_from}; device {self.device}")

    # ---------------------------------------------------------- checkpoints
    def checkpoint_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict()}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def restore(self, ckpt: Path, state: dict[str, Any]) -> None:
        self.model.load_state_dict(load_weights(ckpt, "model", self.device))
        if (Path(ckpt) / "ema.safetensors").exists():
            self.ema.load_state_dict(load_weights(ckpt, "ema", self.device))
        else:   # a checkpoint from before stc kept a Stage II EMA
            self.ema.load_state_dict(self.model.state_dict())
        self.opt.load_state_dict(state["opt"])

    # ---------------------------------------------------------- data
    def dataset(self, clips: set[str], shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        # rank/world always explicit: under Ray Train, RANK is set for validation too.
        return PairDataset(self.pairs_dir, recipe=self.recipe, size=self.cfg.data.size,
                           shuffle=shuffle, seed=seed, clips=clips, rank=rank, world_size=world)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        T = self.cfg.data.num_frames
        if x.shape[2] < T:
            raise ValueError(f"{self.pairs_dir}: pairs hold {x.shape[2]} frames, the config wants "
                             f"data.num_frames {T}; degrade again with --window {T}")
        return x[:, :, :T]

    def _loader(self, dataset, **kwargs):
        workers = self.cfg.data.num_workers
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.cfg.train.batch_size, num_workers=workers, drop_last=True,
            pin_memory=self.device.type == "cuda",
            multiprocessing_context="fork" if workers and sys.platform == "linux" else None,
            **kwargs)

    def _micro_batches(self, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        c = self.cfg
        if self.train_set is not None:
            # Draw numbers of step s: s * batch * accum ... (s + 1) * batch * accum - 1.
            sampler = StepSampler(start_step, c.train.max_steps,
                                  c.train.batch_size * c.train.grad_accum, self.rank, self.world)
            yield from self._loader(self.train_set, sampler=sampler)
            return
        ds = self.dataset(self.train_clips, shuffle=True, seed=c.train.seed, rank=self.rank,
                          world=self.world)
        if len(ds.units) < self.world:      # decided alike on every rank: none waits forever
            raise ValueError(f"{self.pairs_dir}: {len(ds.units)} shard units of training pairs "
                             f"cannot feed {self.world} workers; use fewer workers or more clips")
        epoch = start_step
        while True:
            ds.set_epoch(epoch)
            n = 0
            for lq, hq in self._loader(ds):
                n += 1
                yield self.frames(lq), self.frames(hq)
            if n == 0:
                raise ValueError(f"{self.pairs_dir}: fewer training pairs than one batch of "
                                 f"{c.train.batch_size}; lower train.batch_size")
            epoch += 1

    def batches(self, start_step: int):
        """One item per optimiser step: the list of its `grad_accum` micro-batches."""
        accum, group = self.cfg.train.grad_accum, []
        for micro in self._micro_batches(start_step):
            group.append(micro)
            if len(group) == accum:
                yield group
                group = []

    # ---------------------------------------------------------- one step
    def lr_now(self) -> float:
        o = self.cfg.optim
        return o.lr * warmup_step_decay(self.step, self.tc.max_steps, o.warmup_steps,
                                        o.decay_at, o.decay_gamma, o.decay_steps)

    def train_step(self, micro_batches) -> dict[str, float]:
        self.model.train()
        set_lr(self.opt, self.lr_now())
        self.opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        n = len(micro_batches)
        for batch in micro_batches:
            lq, hq = (x.to(self.device, non_blocking=True) for x in batch)
            with self.autocast():
                tgt = self.model.targets(hq)
                parts = self.model.losses(self.model(lq), tgt)
            (parts["loss/total"] / n).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / n
        all_reduce_mean([p.grad for p in self.model.trainable_parameters() if p.grad is not None],
                        self.world)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.trainable_parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        self.ema.update(self.model)
        sums["lr"] = self.opt.param_groups[0]["lr"]
        return sums

    # ---------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation metrics of the EMA weights on the held-out pairs."""
        if not hasattr(self, "_val"):
            ds = self.dataset(self.val_clips, shuffle=False, seed=0)
            pairs = []
            for lq, hq in ds:
                pairs.append((self.frames(lq[None]), self.frames(hq[None])))
                if len(pairs) >= self.cfg.data.val_pairs:
                    break
            self._val = pairs
        model = self.ema.model.eval()
        sums: dict[str, float] = {}
        self._shown = None
        for lq, hq in self._val:
            lq, hq = lq.to(self.device), hq.to(self.device)
            with self.autocast():
                out = model(lq)
                parts = model.losses(out, model.targets(hq))
                restored = model.decode_logits(out).float().clamp(-1, 1)
            if self._shown is None:       # the first held-out pair, for TensorBoard
                self._shown = side_by_side(*(to_uint8(x[0]) for x in (lq, restored, hq)))
            vals = {"val/psnr": psnr(restored, hq).mean(), "val/psnr_lq": psnr(lq, hq).mean(),
                    "val/ce": parts["loss/ce_s"] + parts["loss/ce_t"],
                    "val/acc_s": parts["train/acc_s"], "val/acc_t": parts["train/acc_t"]}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return {k: v / max(1, len(self._val)) for k, v in sums.items()}

    def samples(self) -> dict[str, Any]:
        shown = getattr(self, "_shown", None)
        return {"val/lq_restored_gt": shown} if shown is not None else {}

    def format_line(self, m: dict[str, float]) -> str:
        parts = [f"step {self.step}/{self.tc.max_steps}", f"loss {m['loss/total']:.4f}",
                 f"ce_s {m['loss/ce_s']:.3f}", f"ce_t {m['loss/ce_t']:.3f}",
                 f"feat {m['loss/feature']:.4f}",
                 f"acc {m['train/acc_s']:.2f}/{m['train/acc_t']:.2f}", f"lr {m['lr']:.2e}"]
        if "val/psnr" in m:
            parts.append(f"val_psnr {m['val/psnr']:.2f} (lq {m['val/psnr_lq']:.2f})")
        parts.append(f"{m['time/step_s']:.2f} s/step")
        return " | ".join(parts)


def _ray_worker_loop(config: dict[str, Any]) -> None:
    ctx = worker_context()
    trainer = Stage2Trainer(from_dict(Stage2Config, config["cfg"]), config["pairs_dir"],
                            config["recipe"], config["run_dir"], config["init_from"],
                            config["init_kind"], max_steps=config["max_steps"], lr=config["lr"],
                            device=ctx["device"], log=ctx["log"], online=config["online"],
                            rank=ctx["rank"], world=ctx["world"], report=ctx["report"])
    trainer.run()
    check_replicas(trainer.model, trainer.world, config["run_dir"])


def train_stage2_ray(cfg: Stage2Config, pairs_dir: str | Path, recipe: str | None,
                     run_dir: str | Path, init_from: str | Path, init_kind: str = "stage1",
                     max_steps: int | None = None, lr: float | None = None,
                     online: OnlineSource | None = None, workers: int = 1, gpu: bool = False,
                     cpus_per_worker: int | None = None, address: str | None = None,
                     num_cpus: int | None = None) -> dict[str, Any]:
    """One curriculum step on `workers` Ray Train workers (the paper trains Stage II on 4
    GPUs); the arguments are `Stage2Trainer`'s. Returns the last logged metrics."""
    config = {"cfg": to_dict(cfg), "pairs_dir": str(Path(pairs_dir).resolve()), "recipe": recipe,
              "run_dir": str(Path(run_dir).resolve()), "init_from": str(Path(init_from).resolve()),
              "init_kind": init_kind, "max_steps": max_steps, "lr": lr, "online": online}
    return fit(_ray_worker_loop, config, run_dir, "stage2", workers, gpu, cpus_per_worker,
               address, num_cpus)
