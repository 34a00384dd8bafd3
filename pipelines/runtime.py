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

    ctx = DataContext.get_current()
    # Our pipelines print one progress bar of their own, counted in clips.
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False


def ray_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
