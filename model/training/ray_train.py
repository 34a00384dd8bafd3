"""Training on several GPUs or nodes with Ray Train: `TorchTrainer` running a stage's own loop.

Ray starts the workers and the torch.distributed process group; each worker builds its
stage's trainer with its rank (`worker_context`), draws its own windows and averages
gradients with the others (`all_reduce_mean`, one flat all-reduce per step: what DDP does,
so each rank's batch-level loss terms stay per rank). Worker 0 writes checkpoints,
TensorBoard and metrics.jsonl into the run folder, which must be on storage every node can
reach; rerunning resumes from it exactly like the single-process trainer. Ray's own run
records go to RUN/ray/. Each stage declares its worker loop next to its trainer
(`stage1.trainer.train_stage1_ray`, `stage2.trainer.train_stage2_ray`), and every loop ends
by checking that all ranks hold the same weights (`check_replicas`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from stc.core.proc import detach_stdin
from stc.core.runtime import init_ray


class ReplicasDiverged(RuntimeError):
    """The ranks of a distributed run hold different weights: their updates were not the same."""


def all_reduce_mean(tensors: list, world: int) -> None:
    """Average tensors across workers in one flat all-reduce (no-op for one worker)."""
    if world <= 1 or not tensors:
        return
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def replicas_agree(tensors: Iterable, world: int) -> bool:
    """True when every rank holds bit-identical `tensors` (a digest compared by all-reduce)."""
    tensors = list(tensors)
    if world <= 1:
        return True
    import torch
    import torch.distributed as dist

    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    device = tensors[0].device if tensors else torch.device("cpu")
    lo = torch.tensor([int.from_bytes(digest.digest()[:7], "big")], dtype=torch.int64,
                      device=device)
    hi = lo.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(lo.item() == hi.item())


def check_replicas(model, world: int, run_dir: str | Path) -> None:
    """Raise on every rank when the ranks' weights differ (a gradient left out of the
    all-reduce, a rank-local buffer update): such a run's checkpoint is rank 0's alone."""
    if not replicas_agree(model.state_dict().values(), world):
        raise ReplicasDiverged(f"{run_dir}: the {world} training workers ended with different "
                               "weights; this is a bug in the stage's distributed step, please "
                               "report it (the checkpoint holds worker 0's weights)")


# Worker output reaches the driver mixed with Ray's own; the driver (`stc train --workers`)
# shows only the lines that carry this mark, and logs the rest to RUN/stc.log.
CONSOLE_MARK = "stc| "


def worker_context() -> dict[str, Any]:
    """rank, world size, torch device, metric reporter and progress logger of the current
    Ray Train worker (only rank 0's progress lines are marked for the console)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    mark = CONSOLE_MARK if rank == 0 else f"[rank {rank}] "
    return {"rank": rank, "world": ctx.get_world_size(),
            "device": ray.train.torch.get_device(),
            "report": lambda metrics: ray.train.report(metrics),
            "log": lambda msg: _write_line(mark + msg)}


def _write_line(text: str) -> None:
    # Not print(): Ray Train patches print in workers to log each line a second time.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fit(loop_per_worker: Callable[[dict[str, Any]], None], loop_config: dict[str, Any],
        run_dir: str | Path, name: str, workers: int = 1, gpu: bool = False,
        cpus_per_worker: int | None = None, address: str | None = None,
        num_cpus: int | None = None) -> dict[str, Any]:
    """Run `loop_per_worker(loop_config)` on `workers` Ray Train workers; returns the last
    logged metrics of the run folder."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(address, num_cpus)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": cpus_per_worker} if cpus_per_worker else None
    trainer = TorchTrainer(
        functools.partial(_without_stdin, loop_per_worker), train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=str(run_dir / "ray")),
    )
    trainer.fit()
    # What ran it, beside the run's own records: a resumed run may use another count.
    (run_dir / "ray_train.json").write_text(json.dumps(
        {"name": name, "workers": workers, "gpu": gpu, "cpus_per_worker": cpus_per_worker}))
    # Ray Train 2 keeps metrics only alongside Ray checkpoints (we write our own), so the
    # record of the run is worker 0's metrics.jsonl.
    return last_metrics(run_dir)


def _without_stdin(loop_per_worker: Callable[[dict[str, Any]], None], config: dict[str, Any]) -> None:
    detach_stdin()          # on any cluster: nothing a worker starts reads a terminal
    loop_per_worker(config)


def last_metrics(run_dir: str | Path) -> dict[str, Any]:
    """The last logged training metrics of a run folder ({} before the first log line)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss/total" in r]
    return rows[-1] if rows else {}
