"""Starting Ray and the options every Ray pipeline shares."""

from __future__ import annotations

import argparse
import logging
import os


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", default=None,
                       help="address of an existing Ray cluster (default: start a local one)")
    group.add_argument("--num-cpus", type=int, default=None,
                       help="CPUs for the local Ray cluster (default: all)")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address`, or start a local Ray cluster once per process."""
    # Local clusters need no token; a cluster started elsewhere keeps its own auth settings.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING,
                  log_to_driver=True, configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    from ray.data import DataContext

    # Ray Data narrates every execution at INFO; our pipelines report for themselves.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    # Our pipelines print one progress bar of their own, counted in clips.
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False


def ray_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def map_with_actors(items: list[dict], worker_cls: type, constructor_kwargs: dict,
                    workers: int | None = None, num_cpus: float = 1, num_gpus: float = 0):
    """Run `worker_cls(**constructor_kwargs)(item)` over `items` on a pool of Ray actors
    and yield the result rows as they finish (not in input order).

    Actors load their models once; one item per block lets a slow video hold up only
    its own actor. Results should be flat dicts of strings/numbers (JSON-encode
    anything nested) so Ray never has to infer Arrow types from a block of nulls.
    """
    import ray

    size = max(1, min(workers or ray_cpus(), len(items)))
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(worker_cls, fn_constructor_kwargs=constructor_kwargs,
                compute=ray.data.ActorPoolStrategy(size=size), num_cpus=num_cpus,
                num_gpus=num_gpus or None)
    yield from ds.iter_rows()
