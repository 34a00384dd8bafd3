"""Training on several GPUs or nodes with Ray Train: `TorchTrainer` running a stage's own loop.

Ray starts the workers and the torch.distributed process group; each worker builds its
stage's trainer with its rank (`worker_context`), draws its own windows and averages
gradients with the others (`all_reduce_mean`, one flat all-reduce per step: what DDP does,
so each rank's batch-level loss terms stay per rank). Worker 0 writes checkpoints,
TensorBoard and metrics.jsonl into the run folder, which must be on storage every node can
reach; rerunning resumes from it exactly like the single-process trainer. Each stage
declares its worker loop next to its trainer (`stage1.trainer.train_stage1_ray`,
`stage2.trainer.train_stage2_ray`), and every loop ends by checking that all ranks hold the
same weights (`check_replicas`).

Checkpoints also go to the cluster's storage through Ray Train: rank 0 reports each new
checkpoint of the run folder with `ray.train.report(checkpoint=...)` (the step folder, the
config and metrics.jsonl), which Ray copies to `storage` (`--storage`: a local folder, or
any fsspec URL, `s3://bucket/prefix`, through `core.storage`'s file systems; RUN/ray/ by
default). When a worker or its node dies, Ray Train restarts the worker group
(`max_failures`) and every rank restores the last reported checkpoint from
`ray.train.get_checkpoint()` into its run folder before resuming: nodes need no shared disk
and a preempted node loses at most the steps since the last report. A rerun of the command
with the same `--storage` resumes from there too, even on a machine without the old run
folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from stc.core import storage as stc_storage
from stc.core.proc import detach_stdin
from stc.core.runtime import init_ray
from stc.model.training import checkpoint as ckpt_io


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
            "report": report,
            "log": lambda msg: _write_line(mark + msg)}


# The worker's run folder and the step of the last checkpoint it reported (set by
# `_checkpointed_loop` in each Ray Train worker process).
_WORKER: dict[str, Any] = {}


def report(metrics: dict[str, Any]) -> None:
    """`ray.train.report` on every rank (Ray Train needs each rank's reports), with the run
    folder's newest checkpoint attached on rank 0 when it has not been reported yet."""
    import ray.train

    run_dir = _WORKER.get("run_dir")
    latest = ckpt_io.latest_checkpoint(run_dir) if run_dir and _WORKER.get("rank") == 0 else None
    if latest is None or latest.name == _WORKER.get("reported"):
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="stc-report-") as tmp:
        bundle = Path(tmp)
        shutil.copytree(latest, bundle / "checkpoints" / latest.name)
        for name in (ckpt_io.CONFIG_FILE, METRICS_FILE):
            if (Path(run_dir) / name).exists():
                shutil.copy2(Path(run_dir) / name, bundle / name)
        # Ray copies the folder to the run's storage before report returns.
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(bundle)))
    _WORKER["reported"] = latest.name


METRICS_FILE = "metrics.jsonl"
_STEP = re.compile(r"^step_(\d{8})$")


def restore_reported(run_dir: Path, rank: int, world: int) -> int | None:
    """Bring the last reported checkpoint (`ray.train.get_checkpoint()`) into `run_dir`
    unless it holds that step or a later one already; rank 0 first, then the others (on a
    shared disk they find it there). metrics.jsonl is cut back to the resumed step, so the
    steps redone are logged once. Returns the step the run resumes from (None: scratch)."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    for turn in ((0,), tuple(range(1, world))):
        if rank in turn and ckpt is not None:
            with ckpt.as_directory() as d:
                _restore_from(Path(d), run_dir, rank)
        _barrier(world)
    latest = ckpt_io.latest_checkpoint(run_dir)
    step = int(_STEP.match(latest.name).group(1)) if latest is not None else None
    if rank == 0 and step is not None:
        _cut_metrics(run_dir / METRICS_FILE, step)
    return step


def _restore_from(bundle: Path, run_dir: Path, rank: int) -> None:
    steps = sorted((bundle / "checkpoints").glob("step_*"))
    if not steps:
        return
    src = steps[-1]
    have = ckpt_io.latest_checkpoint(run_dir)
    if have is not None and have.name >= src.name:
        return                       # this folder is as far or further: resume from it
    run_dir.mkdir(parents=True, exist_ok=True)
    dst = run_dir / "checkpoints" / src.name
    tmp = run_dir / "checkpoints" / f".restore-{src.name}-{rank}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    try:
        tmp.rename(dst)
    except OSError:                  # another rank on the same disk was first
        shutil.rmtree(tmp, ignore_errors=True)
    for name in (ckpt_io.CONFIG_FILE, METRICS_FILE):
        if (bundle / name).exists() and (rank == 0 or not (run_dir / name).exists()):
            shutil.copy2(bundle / name, run_dir / name)


def _cut_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _checkpointed_loop(loop_per_worker: Callable[[dict[str, Any]], None], run_dir: str,
                       config: dict[str, Any]) -> None:
    """A stage's worker loop between a restore from the reported checkpoint and a final
    report of the last one."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_dir = Path(run_dir)
    # Nothing counts as reported yet: the first report after a restart sends the newest
    # checkpoint again (once), whichever of storage or the run folder it came from.
    _WORKER.update(run_dir=run_dir, rank=rank, reported=None)
    restore_reported(run_dir, rank, world)
    loop_per_worker(config)
    report({"final": 1})


def _write_line(text: str) -> None:
    # Not print(): Ray Train patches print in workers to log each line a second time.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def storage_of(where: str | Path) -> tuple[str, Any]:
    """(storage_path, pyarrow file system) for Ray Train: a local folder as it is, a URL
    through the fsspec file system stc uses everywhere (same credentials, same endpoint)."""
    if not stc_storage.is_url(where):
        path = Path(stc_storage.location(where)).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = stc_storage._fs(str(where))
    return path.rstrip("/"), PyFileSystem(FSSpecHandler(fs))


def latest_reported(storage_path: str, filesystem: Any, name: str):
    """The newest checkpoint Ray Train stored for run `name` under `storage_path` (None
    when there is none): a rerun resumes from it."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    fs = filesystem or pafs.LocalFileSystem()
    base = f"{storage_path}/{name}"
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except (OSError, FileNotFoundError):
        return None
    found = {}
    for info in infos:
        m = re.search(r"/checkpoints/(step_\d{8})/" + re.escape(ckpt_io.TRAIN_STATE_META) + "$",
                      info.path)
        if m:
            found[m.group(1)] = info.path.split("/checkpoints/")[0]
    if not found:
        return None
    return Checkpoint(path=found[max(found)], filesystem=filesystem)


def fit(loop_per_worker: Callable[[dict[str, Any]], None], loop_config: dict[str, Any],
        run_dir: str | Path, name: str, workers: int = 1, gpu: bool = False,
        cpus_per_worker: int | None = None, address: str | None = None,
        num_cpus: int | None = None, storage: str | Path | None = None,
        max_failures: int = 3) -> dict[str, Any]:
    """Run `loop_per_worker(loop_config)` on `workers` Ray Train workers, checkpoints reported
    to `storage` (default RUN/ray) and restored from there after a failure (up to
    `max_failures` restarts); returns the last logged metrics of the run folder."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if stc_storage.is_url(run_dir):
        raise ValueError(f"{run_dir}: the run folder is a local or mounted path; object "
                         "storage is given as `storage`")
    init_ray(address, num_cpus)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    storage_path, filesystem = storage_of(storage if storage is not None else run_dir / "ray")
    resources = {"CPU": cpus_per_worker} if cpus_per_worker else None
    loop = functools.partial(_without_stdin, functools.partial(_checkpointed_loop, loop_per_worker,
                                                                str(run_dir)))
    trainer = TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        resume_from_checkpoint=latest_reported(storage_path, filesystem, name),
    )
    result = trainer.fit()
    # What ran it, beside the run's own records: a resumed run may use another count.
    (run_dir / "ray_train.json").write_text(json.dumps(
        {"name": name, "workers": workers, "gpu": gpu, "cpus_per_worker": cpus_per_worker,
         "storage": str(storage) if storage is not None else None,
         "checkpoint": result.checkpoint.path if result.checkpoint is not None else None}))
    # Ray Train 2 keeps metrics only alongside its checkpoints, so the record of the run is
    # worker 0's metrics.jsonl.
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
