"""Stage I on several GPUs or nodes with Ray Train: `TorchTrainer` running the same loop.

Ray starts the workers and the torch.distributed process group; each worker builds a
`Stage1Trainer` with its rank, draws its own windows and averages gradients with the others
(see model.trainer). Worker 0 writes checkpoints, TensorBoard and metrics.jsonl into the run
folder, which must be on storage every node can reach; rerunning resumes from it exactly
like the single-process trainer. Ray's own run records go to RUN/ray/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stc.core.config import from_dict, to_dict
from stc.core.runtime import init_ray
from stc.model.stage1.config import Stage1Config
from stc.model.stage1.trainer import Stage1Trainer


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    cfg = from_dict(Stage1Config, config["cfg"])
    trainer = Stage1Trainer(
        cfg, config["manifest"], config["run_dir"], max_steps=config["max_steps"],
        device=ray.train.torch.get_device(), rank=ctx.get_world_rank(),
        world=ctx.get_world_size(), report=lambda metrics: ray.train.report(metrics))
    trainer.run()


def train_stage1_ray(cfg: Stage1Config, manifest: str | Path, run_dir: str | Path,
                     workers: int = 1, gpu: bool = False, max_steps: int | None = None,
                     cpus_per_worker: int | None = None, address: str | None = None,
                     num_cpus: int | None = None) -> dict[str, Any]:
    """Run Stage I with `workers` Ray Train workers; returns the last logged metrics."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(address, num_cpus)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": cpus_per_worker} if cpus_per_worker else None
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "manifest": str(Path(manifest).resolve()),
                           "run_dir": str(run_dir), "max_steps": max_steps},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name="stage1", storage_path=str(run_dir / "ray")),
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
