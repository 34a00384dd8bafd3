"""A small generic training loop: resume, periodic logging, validation and checkpoints.

`TrainLoop.run()` owns what every stage needs and nothing model-specific:
  - the run folder and its `config.yaml` (a changed config is refused, except the run length),
  - resuming from the newest checkpoint (weights, optimizer and RNG state, step),
  - averaging step scalars over each log window, writing them to TensorBoard (`tb/`) and
    `metrics.jsonl`, printing a progress line,
  - validation every `val_every` steps and checkpoints every `ckpt_every` steps and at the end,
  - a checkpoint on Ctrl-C, so the rerun continues where it stopped.
A stage subclasses it and fills in the hooks below. With several workers (rank/world set,
torch.distributed initialised) every worker runs the loop; only rank 0 writes files, and all
ranks call `report` (Ray Train expects every worker to report).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from stc.core.config import ConfigError, load_config, save_config, to_dict
from stc.core.extras import need
from stc.model.training import checkpoint as ckpt_io
from stc.model.training.media import write_clip


def check_run_config(run_dir: Path, cfg: Any, ignore: tuple[str, ...] = ("train.max_steps",),
                     saved: Path | None = None) -> None:
    """Refuse to continue a run folder started with another config (dotted keys in `ignore`
    may differ: the run length, weight locations). `saved` defaults to RUN/config.yaml."""
    saved = saved or run_dir / ckpt_io.CONFIG_FILE
    if not saved.exists():
        return

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        for key in ignore:
            *parents, leaf = key.split(".")
            node = d
            for p in parents:
                node = node.get(p, {})
            node.pop(leaf, None)
        return d

    old = load_config(type(cfg), saved)
    if strip(to_dict(old)) != strip(to_dict(cfg)):
        raise ConfigError(
            f"{run_dir} was started with a different config ({saved}); to resume it pass the "
            "same config (only the run length may change), or choose a new output folder")


class TrainLoop:
    """Hooks: batches, train_step, validate, checkpoint_weights, checkpoint_state, restore;
    optionally window_stats (extra scalars per log window) and describe (a start line)."""

    def __init__(self, cfg: Any, run_dir: str | Path, rank: int = 0, world: int = 1,
                 log: Callable[[str], None] | None = None,
                 report: Callable[[dict[str, float]], None] | None = None):
        self.cfg = cfg
        self.tc = cfg.train   # max_steps, log_every, val_every, ckpt_every, keep_checkpoints
        self.run_dir = Path(run_dir)
        self.rank, self.world = rank, world
        self.is_main = rank == 0
        self.log = log or (lambda msg: print(msg, flush=True))
        self.report = report
        self.step = 0
        self.resumed_from: Path | None = None

    # ------------------------------------------------------------ hooks
    def batches(self, start_step: int) -> Iterable[Any]:
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, float]:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        return {}

    def window_stats(self) -> dict[str, float]:
        return {}

    def checkpoint_weights(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def checkpoint_state(self) -> dict[str, Any]:
        return {}

    def restore(self, ckpt: Path, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def autocast(self):
        """bf16 autocast on CUDA when the config asks for it (no loss scaling needed); CPU
        runs stay float32. Trainers set `self.device`."""
        import torch

        if self.device.type == "cuda" and self.tc.amp == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        return ""

    def samples(self) -> dict[str, Any]:
        """Clips to show in TensorBoard after a validation: tag -> uint8 [T, H, W, 3]
        (e.g. LQ | restored | GT side by side, `media.side_by_side`)."""
        return {}

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        if not self.is_main:
            return None
        state = {**self.checkpoint_state(), "rng": ckpt_io.rng_state()}
        return ckpt_io.save_checkpoint(self.run_dir, self.step, self.checkpoint_weights(),
                                       state, self.cfg, self.tc.keep_checkpoints)

    def resume(self) -> bool:
        ckpt = ckpt_io.latest_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        state = ckpt_io.load_state(ckpt)
        self.restore(ckpt, state)
        ckpt_io.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.resumed_from = ckpt
        return True

    # ------------------------------------------------------------ logging
    def emit(self, metrics: dict[str, float], writer) -> None:
        if self.report is not None:
            self.report({"step": self.step, **metrics})
        if not self.is_main:
            return
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, self.step)
            if any(k.startswith("val/") for k in metrics):
                for tag, clip in self.samples().items():
                    write_clip(writer, tag, clip, self.step)
            writer.flush()
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")

    def format_line(self, m: dict[str, float]) -> str:
        keys = [k for k in m if k.startswith(("loss/", "val/"))]
        return " | ".join([f"step {self.step}/{self.tc.max_steps}"]
                          + [f"{k} {m[k]:.4g}" for k in keys]
                          + [f"{m.get('time/step_s', 0):.2f} s/step"])

    # ------------------------------------------------------------ the loop
    def run(self) -> dict[str, float]:
        """Train from scratch or resume; returns the last logged metrics."""
        tc = self.tc
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not (self.run_dir / ckpt_io.CONFIG_FILE).exists():
                save_config(self.cfg, self.run_dir / ckpt_io.CONFIG_FILE)
        if self.resume():
            self.log(f"resuming {self.run_dir} from {self.resumed_from} (step {self.step})")
        else:
            self.log(f"starting {self.run_dir} from scratch")
        if self.step >= tc.max_steps:
            self.log(f"already at step {self.step} >= max_steps {tc.max_steps}; nothing to do")
            return {}
        writer = None
        if self.is_main:
            need("tensorboard", "train", "training (its TensorBoard logs)")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)
        info = self.describe()
        self.log(f"{info + '; ' if info else ''}steps {self.step} -> {tc.max_steps}")
        if self.step == 0:
            self.emit(self.validate(), writer)
        sums: dict[str, float] = {}
        n, t0, last = 0, time.perf_counter(), {}
        try:
            for batch in self.batches(self.step):
                for k, v in self.train_step(batch).items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                self.step += 1
                done = self.step >= tc.max_steps
                if self.step % tc.log_every == 0 or done:
                    metrics = {k: v / n for k, v in sums.items()}
                    metrics.update(self.window_stats())
                    metrics["time/step_s"] = (time.perf_counter() - t0) / n
                    if self.step % tc.val_every == 0 or done:
                        metrics.update(self.validate())
                    self.emit(metrics, writer)
                    if self.is_main:
                        self.log(self.format_line(metrics))
                    last, sums, n, t0 = metrics, {}, 0, time.perf_counter()
                elif self.step % tc.val_every == 0:
                    self.emit(self.validate(), writer)
                if self.step % tc.ckpt_every == 0 or done:
                    path = self.save_checkpoint()
                    if path is not None and not done:
                        self.log(f"checkpoint {path}")
                if done:
                    break
        except KeyboardInterrupt:
            if self.step > 0:
                self.log(f"interrupted at step {self.step}; saved {self.save_checkpoint()}")
            raise
        finally:
            if writer is not None:
                writer.close()
        self.log(f"finished at step {self.step}; checkpoint {ckpt_io.latest_checkpoint(self.run_dir)}")
        return last
