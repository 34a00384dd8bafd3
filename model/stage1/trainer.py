"""Stage I training: the 3D-VQGAN, its losses (Eq. 7) and the data, on the generic loop.

`Stage1Trainer` fills in `model.loop.TrainLoop`: it builds the model, EMA, optimizers, the
frozen VGG19 / DINOv2 networks when their losses are on, and the window dataset from the
curated manifest; one `train_step` is a generator update (then a discriminator-heads update
once the adversarial loss is on). Resume is exact: data windows are a function of the step
(model.data), and weights, EMA, optimizer and RNG states come back from the checkpoint.

Run folder: config.yaml, checkpoints/step_N/ (model, ema, disc_heads .safetensors,
state.pt, config.yaml), tb/ (TensorBoard), metrics.jsonl.

With several workers (torch.distributed initialised, e.g. by Ray Train) each draws its own
windows and gradients are averaged by one all-reduce per step.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from stc.core import storage
from stc.core.config import from_dict, to_dict
from stc.core.tensors import to_uint8
from stc.model.stage1.codebook import code_counts, perplexity, utilisation
from stc.model.stage1.config import Stage1Config
from stc.model.stage1.data import StepSampler, WindowDataset, load_clips, split_clips, val_batch
from stc.model.stage1.discriminator import DinoDiscriminator
from stc.model.stage1.losses import adaptive_weight, generator_adv_loss, hinge_d_loss, psnr
from stc.model.stage1.perceptual import PerceptualLoss
from stc.model.stage1.vqgan3d import VQGAN3D
from stc.model.training.checkpoint import load_weights
from stc.model.training.ema import EMA
from stc.model.training.loop import TrainLoop, check_run_config
from stc.model.training.media import side_by_side
from stc.model.training.ray_train import all_reduce_mean, check_replicas, fit, worker_context

# Where pretrained weights live is not part of the experiment: a resumed run may name
# another copy of the same file.
NOT_EXPERIMENT = ("train.max_steps", "perceptual.weights", "discriminator.backbone",
                  "data.num_workers")


class Stage1Trainer(TrainLoop):
    def __init__(self, cfg: Stage1Config, manifest: str | Path, run_dir: str | Path,
                 max_steps: int | None = None, device: str | torch.device | None = None,
                 rank: int = 0, world: int = 1, log: Callable[[str], None] | None = None,
                 report: Callable[[dict[str, float]], None] | None = None,
                 allow_outside: bool = False):
        if max_steps is not None:
            cfg = copy.deepcopy(cfg)
            cfg.train.max_steps = max_steps
        cfg.check_weights()
        super().__init__(cfg, run_dir, rank, world, log, report)
        check_run_config(self.run_dir, cfg, NOT_EXPERIMENT)
        self.manifest = manifest
        self.allow_outside = allow_outside      # clips outside the manifest's folder
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._build()

    # ---------------------------------------------------------- setup
    def _build(self) -> None:
        cfg, dev = self.cfg, self.device
        torch.manual_seed(cfg.train.seed)
        self.model = VQGAN3D(cfg.model).to(dev)
        self.ema = EMA(self.model, cfg.train.ema_decay)
        o = cfg.optim
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=o.betas,
                                      weight_decay=o.weight_decay)
        self.perceptual = None
        if cfg.losses.perceptual > 0:
            p = cfg.perceptual
            self.perceptual = PerceptualLoss.from_weights(p.weights, p.layers, p.max_frames).to(dev)
        self.disc, self.opt_d = None, None
        if cfg.losses.adversarial > 0:
            d = cfg.discriminator
            self.disc = DinoDiscriminator.from_pretrained(
                d.backbone, layers=d.layers, head_channels=d.head_channels,
                image_size=d.image_size, max_frames=d.max_frames).to(dev)
            self.opt_d = torch.optim.Adam(self.disc.heads.parameters(), lr=d.lr, betas=o.betas)

        T = cfg.data.num_frames
        clips = load_clips(self.manifest, min_frames=T, allow_outside=self.allow_outside)
        self.split = split_clips(clips, T, cfg.data.val_fraction, cfg.data.val_windows)
        self.dataset = WindowDataset(self.split.train, T, cfg.data.size, cfg.data.hflip,
                                     seed=cfg.train.seed)
        self.counts_s = torch.zeros(cfg.model.codebook_size_s, dtype=torch.long, device=dev)
        self.counts_t = torch.zeros(cfg.model.codebook_size_t, dtype=torch.long, device=dev)

    def describe(self) -> str:
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        return (f"{len(self.split.train)} training clip(s), {len(self.split.val)} validation "
                f"window(s); {params:.2f} M parameters; device {self.device}")

    # ---------------------------------------------------------- checkpoints
    def checkpoint_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        weights = {"model": self.model.state_dict(), "ema": self.ema.state_dict()}
        if self.disc is not None:
            weights["disc_heads"] = self.disc.head_state_dict()
        return weights

    def checkpoint_state(self) -> dict[str, Any]:
        return {"opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict() if self.opt_d else None}

    def restore(self, ckpt: Path, state: dict[str, Any]) -> None:
        dev = self.device
        self.model.load_state_dict(load_weights(ckpt, "model", dev))
        self.ema.load_state_dict(load_weights(ckpt, "ema", dev))
        self.opt_g.load_state_dict(state["opt_g"])
        if self.disc is not None and state.get("opt_d") is not None:
            self.disc.load_state_dict(load_weights(ckpt, "disc_heads", dev), strict=False)
            self.opt_d.load_state_dict(state["opt_d"])

    # ---------------------------------------------------------- data
    def batches(self, start_step: int):
        c = self.cfg
        sampler = StepSampler(start_step, c.train.max_steps, c.train.batch_size, self.rank,
                              self.world)
        workers = c.data.num_workers
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=c.train.batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", drop_last=True,
            prefetch_factor=2 if workers else None,
            multiprocessing_context="fork" if workers and sys.platform == "linux" else None)

    # ---------------------------------------------------------- one step
    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any, Any]:
        """Generator objective L_I (Eq. 7) on a batch; returns (total, parts, quantised, fake
        DINOv2 features or None)."""
        L = self.cfg.losses
        adv_on = self.disc is not None and self.step >= L.disc_start
        parts: dict[str, torch.Tensor] = {}
        feats_fake = None
        with self.autocast():
            xr, q = self.model(x)
            xr = xr.float()
            l1 = (xr - x).abs().mean()
            rec = L.l1 * l1
            if self.perceptual is not None:
                parts["loss/perceptual"] = self.perceptual(xr, x)
                rec = rec + L.perceptual * parts["loss/perceptual"]
            if adv_on:
                self.disc.train()
                feats_fake = self.disc.features(xr)
                g_adv = generator_adv_loss(self.disc.logits(feats_fake))
        total = rec + L.code * q.losses["code"] + L.mpr * q.losses["mpr"]
        if adv_on:
            lam = (adaptive_weight(rec, g_adv, self.model.last_layer, L.adv_weight_max)
                   if L.adaptive_adv_weight else torch.ones((), device=x.device))
            total = total + L.adversarial * lam * g_adv
            parts["loss/adv_g"], parts["adv_weight"] = g_adv, lam
        parts.update({"loss/total": total, "loss/l1": l1, "loss/code": q.losses["code"],
                      "codebook/err_s": q.losses["err_s"],
                      "codebook/err_fused": q.losses["err_fused"], "loss/mpr_s": q.losses["mpr_s"],
                      "loss/mpr_t": q.losses["mpr_t"], "train/psnr": psnr(xr.detach(), x).mean()})
        return total, parts, q, feats_fake

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        x = x.to(self.device, non_blocking=True)
        self.model.train()
        total, parts, q, feats_fake = self.losses(x)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        params = list(self.model.parameters())
        all_reduce_mean([p.grad for p in params if p.grad is not None], self.world)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.opt_g.step()

        if feats_fake is not None:
            with self.autocast():
                with torch.no_grad():
                    feats_real = self.disc.features(x)
                # The fake features were computed for the generator step; reuse them detached.
                d_loss = hinge_d_loss(self.disc.logits(feats_real),
                                      self.disc.logits([f.detach() for f in feats_fake]))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            heads = list(self.disc.heads.parameters())
            all_reduce_mean([p.grad for p in heads if p.grad is not None], self.world)
            self.opt_d.step()
            parts["loss/d"] = d_loss

        self.ema.update(self.model)
        self.counts_s += code_counts(q.indices_s, self.counts_s.numel())
        self.counts_t += code_counts(q.indices_t, self.counts_t.numel())
        return {k: float(v.detach()) for k, v in parts.items()}

    def window_stats(self) -> dict[str, float]:
        """Codebook utilisation and perplexity over the steps since the last log line."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(self.counts_s)
            dist.all_reduce(self.counts_t)
        stats: dict[str, float] = {"lr": self.opt_g.param_groups[0]["lr"]}
        for name, counts in (("S", self.counts_s), ("T", self.counts_t)):
            stats[f"codebook/{name}_utilisation"] = utilisation(counts)
            stats[f"codebook/{name}_perplexity"] = perplexity(counts)
            counts.zero_()
        return stats

    # ---------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR and L1 of the EMA model on the held-out windows."""
        if not hasattr(self, "_val"):
            self._val = val_batch(self.split, self.cfg.data.num_frames, self.cfg.data.size)
        model = self.ema.model.eval()
        psnrs, l1s = [], []
        bs = self.cfg.train.batch_size
        self._shown = None
        for i in range(0, len(self._val), bs):
            x = self._val[i:i + bs].to(self.device)
            with self.autocast():
                xr, _ = model(x)
            xr = xr.float().clamp(-1, 1)
            if self._shown is None:       # the first held-out window, for TensorBoard
                self._shown = side_by_side(to_uint8(x[0]), to_uint8(xr[0]))
            psnrs.append(psnr(xr, x))
            l1s.append((xr - x).abs().flatten(1).mean(1))
        return {"val/psnr": float(torch.cat(psnrs).mean()), "val/l1": float(torch.cat(l1s).mean())}

    def samples(self) -> dict[str, Any]:
        shown = getattr(self, "_shown", None)
        return {"val/input_reconstruction": shown} if shown is not None else {}

    def format_line(self, m: dict[str, float]) -> str:
        parts = [f"step {self.step}/{self.tc.max_steps}", f"loss {m['loss/total']:.4f}",
                 f"l1 {m['loss/l1']:.4f}", f"psnr {m['train/psnr']:.2f}"]
        if "val/psnr" in m:
            parts.append(f"val_psnr {m['val/psnr']:.2f}")
        parts.append(f"C_S {m['codebook/S_utilisation']:.2f}/{m['codebook/S_perplexity']:.1f}")
        parts.append(f"C_T {m['codebook/T_utilisation']:.2f}/{m['codebook/T_perplexity']:.1f}")
        if "loss/d" in m:
            parts.append(f"d {m['loss/d']:.3f}")
        parts.append(f"{m['time/step_s']:.2f} s/step")
        return " | ".join(parts)


def _ray_worker_loop(config: dict[str, Any]) -> None:
    ctx = worker_context()
    cfg = from_dict(Stage1Config, config["cfg"])
    trainer = Stage1Trainer(cfg, config["manifest"], config["run_dir"],
                            max_steps=config["max_steps"], device=ctx["device"], rank=ctx["rank"],
                            world=ctx["world"], report=ctx["report"], log=ctx["log"],
                            allow_outside=config.get("allow_outside", False))
    trainer.run()
    check_replicas(trainer.model, trainer.world, config["run_dir"])


def train_stage1_ray(cfg: Stage1Config, manifest: str | Path, run_dir: str | Path,
                     workers: int = 1, gpu: bool = False, max_steps: int | None = None,
                     cpus_per_worker: int | None = None, address: str | None = None,
                     num_cpus: int | None = None, allow_outside: bool = False,
                     storage_path: str | None = None) -> dict[str, Any]:
    """Run Stage I with `workers` Ray Train workers, checkpoints reported to `storage_path` (a
    folder or an fsspec URL; default RUN/ray); returns the last logged metrics."""
    where = storage.location(manifest)       # a URL (s3://...) is passed as it is
    config = {"cfg": to_dict(cfg), "manifest": str(where.resolve() if isinstance(where, Path) else where),
              "run_dir": str(Path(run_dir).resolve()), "max_steps": max_steps,
              "allow_outside": allow_outside}
    # On a storage shared by several runs, each run's checkpoints go under its folder's name.
    name = "stage1" if storage_path is None else f"stage1-{Path(run_dir).resolve().name}"
    return fit(_ray_worker_loop, config, run_dir, name, workers, gpu, cpus_per_worker,
               address, num_cpus, storage=storage_path)
