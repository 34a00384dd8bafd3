"""Stage II training on the generic loop: one curriculum step, from paired shards.

`Stage2Trainer` fills in `model.loop.TrainLoop`. The model starts from a Stage I run (step 1
of a curriculum) or from the previous step's Stage II checkpoint; the Stage I parts stay
frozen. Pairs come from `degrade.loader.PairDataset`; clips are held out for validation by
a hash of their clip_id (as Stage I does), and validation reports the PSNR of the restored
clip, the PSNR of the LQ input (the baseline it must beat) and the token accuracy.

Resume restores weights, optimizer, RNG and step exactly; the pair order after a resume is a
fresh deterministic shuffle (seeded by the step), not the continuation of the interrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from stc.degrade.loader import PairDataset
from stc.manifests.io import read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.model.stage1.data import hash_fraction
from stc.model.stage1.losses import psnr
from stc.model.stage1.vqgan3d import load_stage1
from stc.model.stage2.config import Stage2Config
from stc.model.stage2.model import Stage2Model, load_stage2
from stc.model.training.checkpoint import load_weights
from stc.model.training.loop import TrainLoop, check_run_config

NOT_EXPERIMENT = ("train.max_steps", "data.num_workers")


def split_pair_clips(pairs_dir: Path, recipe: str | None, fraction: float) -> tuple[set[str], set[str]]:
    """(train clip ids, validation clip ids) of the ok pairs; at least one clip each when
    there are two or more clips, all clips in both when there is one."""

    df = read_manifest(pairs_dir / "pairs.parquet", PAIRS_SCHEMA)
    df = df[(df["status"] == "ok") & ((df["recipe"] == recipe) if recipe else True)]
    clips = sorted(set(df["clip_id"]))
    if not clips:
        raise FileNotFoundError(f"{pairs_dir}/pairs.parquet has no ok pairs for recipe {recipe!r}; "
                                "run `stc degrade` with that recipe first")
    if len(clips) == 1:
        return set(clips), set(clips)
    val = {c for c in clips if hash_fraction(c) < fraction}
    if not val:
        val = {min(clips, key=hash_fraction)}
    if val == set(clips):
        val.pop()
    return set(clips) - val, val


class Stage2Trainer(TrainLoop):
    def __init__(self, cfg: Stage2Config, pairs_dir: str | Path, recipe: str | None,
                 run_dir: str | Path, init_from: str | Path, init_kind: str = "stage1",
                 max_steps: int | None = None, lr: float | None = None,
                 device: str | torch.device | None = None,
                 log: Callable[[str], None] | None = None):
        cfg = copy.deepcopy(cfg)
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        if lr is not None:
            cfg.optim.lr = lr
        super().__init__(cfg, run_dir, log=log)
        check_run_config(self.run_dir, cfg, NOT_EXPERIMENT)
        self.pairs_dir, self.recipe = Path(pairs_dir), recipe
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
            self.model.load_state_dict(prev.state_dict())
        else:
            raise ValueError(f"init_kind must be 'stage1' or 'stage2', got {init_kind!r}")
        self.model.to(dev)
        o = cfg.optim
        self.opt = torch.optim.Adam(self.model.trainable_parameters(), lr=o.lr, betas=o.betas,
                                    weight_decay=o.weight_decay)
        self.train_clips, self.val_clips = split_pair_clips(self.pairs_dir, self.recipe,
                                                            cfg.data.val_fraction)
        self.init_from = init_from

    def describe(self) -> str:
        trainable = sum(p.numel() for p in self.model.trainable_parameters()) / 1e6
        return (f"recipe {self.recipe} from {self.pairs_dir}: {len(self.train_clips)} training "
                f"clip(s), {len(self.val_clips)} validation clip(s); {trainable:.2f} M trainable "
                f"parameters; started from {self.init_from}; device {self.device}")

    def autocast(self):
        if self.device.type == "cuda" and self.cfg.train.amp == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---------------------------------------------------------- checkpoints
    def checkpoint_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"model": self.model.state_dict()}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def restore(self, ckpt: Path, state: dict[str, Any]) -> None:
        self.model.load_state_dict(load_weights(ckpt, "model", self.device))
        self.opt.load_state_dict(state["opt"])

    # ---------------------------------------------------------- data
    def dataset(self, clips: set[str], shuffle: bool, seed: int):
        return PairDataset(self.pairs_dir, recipe=self.recipe, size=self.cfg.data.size,
                           shuffle=shuffle, seed=seed, clips=clips)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        T = self.cfg.data.num_frames
        if x.shape[2] < T:
            raise ValueError(f"{self.pairs_dir}: pairs hold {x.shape[2]} frames, the config wants "
                             f"data.num_frames {T}; degrade again with --window {T}")
        return x[:, :, :T]

    def batches(self, start_step: int):
        c = self.cfg
        ds = self.dataset(self.train_clips, shuffle=True, seed=c.train.seed)
        workers = c.data.num_workers
        epoch = start_step
        while True:
            ds.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                ds, batch_size=c.train.batch_size, num_workers=workers, drop_last=True,
                pin_memory=self.device.type == "cuda",
                multiprocessing_context="fork" if workers and sys.platform == "linux" else None)
            n = 0
            for lq, hq in loader:
                n += 1
                yield self.frames(lq), self.frames(hq)
            if n == 0:
                raise ValueError(f"{self.pairs_dir}: fewer training pairs than one batch of "
                                 f"{c.train.batch_size}; lower train.batch_size")
            epoch += 1

    # ---------------------------------------------------------- one step
    def train_step(self, batch) -> dict[str, float]:
        lq, hq = (x.to(self.device, non_blocking=True) for x in batch)
        self.model.train()
        with self.autocast():
            tgt = self.model.targets(hq)
            parts = self.model.losses(self.model(lq), tgt)
        self.opt.zero_grad(set_to_none=True)
        parts["loss/total"].backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.trainable_parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        return {k: float(v.detach()) for k, v in parts.items()}

    # ---------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if not hasattr(self, "_val"):
            ds = self.dataset(self.val_clips, shuffle=False, seed=0)
            pairs = []
            for lq, hq in ds:
                pairs.append((self.frames(lq[None]), self.frames(hq[None])))
                if len(pairs) >= self.cfg.data.val_pairs:
                    break
            self._val = pairs
        self.model.eval()
        sums: dict[str, float] = {}
        for lq, hq in self._val:
            lq, hq = lq.to(self.device), hq.to(self.device)
            with self.autocast():
                out = self.model(lq)
                parts = self.model.losses(out, self.model.targets(hq))
                restored = self.model.decode_logits(out).float().clamp(-1, 1)
            vals = {"val/psnr": psnr(restored, hq).mean(), "val/psnr_lq": psnr(lq, hq).mean(),
                    "val/ce": parts["loss/ce_s"] + parts["loss/ce_t"],
                    "val/acc_s": parts["train/acc_s"], "val/acc_t": parts["train/acc_t"]}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return {k: v / max(1, len(self._val)) for k, v in sums.items()}

    def format_line(self, m: dict[str, float]) -> str:
        parts = [f"step {self.step}/{self.tc.max_steps}", f"loss {m['loss/total']:.4f}",
                 f"ce_s {m['loss/ce_s']:.3f}", f"ce_t {m['loss/ce_t']:.3f}",
                 f"feat {m['loss/feature']:.4f}",
                 f"acc {m['train/acc_s']:.2f}/{m['train/acc_t']:.2f}"]
        if "val/psnr" in m:
            parts.append(f"val_psnr {m['val/psnr']:.2f} (lq {m['val/psnr_lq']:.2f})")
        parts.append(f"{m['time/step_s']:.2f} s/step")
        return " | ".join(parts)
