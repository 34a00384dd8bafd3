"""Training on several GPUs or nodes with Ray Train: `TorchTrainer` running a stage's own loop.

Ray starts the workers and the torch.distributed process group; each worker builds its
stage's trainer with its rank (`worker_context`), draws its own windows and averages
gradients with the others. Worker 0 writes checkpoints, TensorBoard and metrics.jsonl into
the run folder, which must be on storage every node can reach; rerunning resumes from it
exactly like the single-process trainer. Ray's own run records go to RUN/ray/. Each stage
declares its worker loop next to its trainer (`stage1.trainer.train_stage1_ray`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from stc.core.runtime import init_ray


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
        loop_per_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=str(run_dir / "ray")),
    )
    trainer.fit()
    # Ray Train 2 keeps metrics only alongside Ray checkpoints (we write our own), so the
    # record of the run is worker 0's metrics.jsonl.
    return last_metrics(run_dir)


def last_metrics(run_dir: str | Path) -> dict[str, Any]:
    """The last logged training metrics of a run folder ({} before the first log line)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss/total" in r]
    return rows[-1] if rows else {}
