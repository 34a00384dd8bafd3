"""Ray for stc: starting or joining a cluster, and a pool of actors that maps items.

Every Ray pipeline runs its items through `map_items`: one actor per worker loads its
models once; an item that raises becomes an error result naming the exception, and an actor
that dies (a segfault in a native library, say) is replaced and its item reported, so one
bad video never stops a run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from stc.core.proc import children_without_stdin, detach_stdin

# A local cluster binds to the loopback address only: with auth off it must not be
# reachable from the network. A real cluster is joined with --address and keeps its own
# network and auth settings (README: "Running on a cluster").
LOCAL_HOST = "127.0.0.1"


class RayUnavailable(RuntimeError):
    """The Ray cluster could not be started or joined."""


@dataclass
class RayOptions:
    address: str | None = None      # None: start (or reuse) a local cluster
    num_cpus: int | None = None     # CPUs of a local cluster (None: all)
    verbose: bool = False           # Ray's own messages on the console, not only in its logs

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"--num-cpus must be at least 1, got {self.num_cpus}")


def init_ray(address: str | None = None, num_cpus: int | None = None,
             verbose: bool = False) -> None:
    """Connect to `address`, or start a local Ray cluster on 127.0.0.1 once per process."""
    RayOptions(address, num_cpus, verbose)          # validates
    # Local clusters need no token; a cluster started elsewhere keeps its own auth settings.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's "accelerator env var" and metrics exporter warnings are for Ray developers.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    loopback = not address or _is_loopback(address)
    if loopback:
        # Ray 2.x turns `_node_ip_address="127.0.0.1"` back into the machine's public address
        # and its servers listen on every interface; only with "clusters off" (its Windows and
        # macOS default) does it take the loopback address and bind its servers to it. Set
        # before `import ray` for the processes it starts, and on the imported constant for
        # a process that imported ray already. The same holds for joining a cluster whose
        # nodes were started on 127.0.0.1 (`--address 127.0.0.1:PORT`): Ray would rewrite
        # that address to the public one, where such a cluster does not listen.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    if ray.is_initialized():
        return
    if loopback:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs: dict[str, Any] = dict(include_dashboard=False,
                                  logging_level=logging.INFO if verbose else logging.ERROR,
                                  log_to_driver=verbose, configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": a new private cluster, never one a `ray start` on this machine left
            # in /tmp/ray/ray_current_cluster (Ray joins that when given no address). Its
            # processes get no terminal as stdin (`core.proc`): one that touched it from
            # outside the foreground group was stopped, and the run hung.
            with children_without_stdin():
                ray.init(address="local", num_cpus=num_cpus, _node_ip_address=LOCAL_HOST,
                         **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types for one cause
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise RayUnavailable(f"could not start or join {where} ({type(exc).__name__}: {exc}); "
                             "check the address, or run `ray stop` to clear a stale local one") \
            from exc
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def ray_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ray_log_dir() -> Path | None:
    """Where this Ray session writes its own logs (worker output included)."""
    import ray

    try:
        return Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    except Exception:  # noqa: BLE001 - a joined cluster may not expose it
        return None


class _Actor:
    """Hosts one pipeline worker: builds it once, runs items, turns exceptions into results."""

    def __init__(self, worker_cls: type, kwargs: dict[str, Any]):
        import ray

        detach_stdin()          # on any cluster: nothing this worker starts reads a terminal
        self.node = ray.get_runtime_context().get_node_id()
        self.error: str | None = None
        try:
            self.worker = worker_cls(**kwargs)
        except Exception as exc:  # noqa: BLE001 - reported by ready(), before any item
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> str | None:
        return self.error

    def run(self, item: dict[str, Any]) -> dict[str, Any]:
        t0, c0 = time.perf_counter(), cpu_seconds()
        try:
            result = {"ok": True, "payload": self.worker(item)}
        except Exception as exc:  # noqa: BLE001 - a bad item is a row, never a stopped run
            result = {"ok": False, "error": _short(exc)}
        return {**result, "node": self.node, "seconds": time.perf_counter() - t0,
                "cpu_seconds": cpu_seconds() - c0}


def cpu_seconds(children: bool = True) -> float:
    """CPU time of this process and (`children`) of the children it waited for (ffmpeg
    encodes): what an item costs whatever else the machine runs, unlike its wall time."""
    import resource

    if not children:
        return time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _short(exc: BaseException, limit: int = 500) -> str:
    # Messages of numpy/dlib errors can embed whole arrays; a row keeps a readable head.
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + " ... (truncated)"


def _killed_for_memory(exc: BaseException) -> bool:
    from ray.exceptions import OutOfMemoryError

    return isinstance(exc, OutOfMemoryError) or "low on memory" in str(exc)


def out_of_memory(exc: BaseException) -> str:
    """Ray's out-of-memory report (a page of process tables) as its one telling line."""
    first = next((ln.strip() for ln in str(exc).splitlines() if "memory" in ln.lower()), "")
    return f"killed by Ray for lack of memory ({first[:300]})" if first else \
        "killed by Ray for lack of memory"


class WorkersFailed(RuntimeError):
    """The pipeline's workers could not be built (a missing model, a bad config)."""


def map_items(items: list[dict[str, Any]], worker_cls: type, constructor_kwargs: dict[str, Any],
              workers: int | None = None, num_cpus: float = 1, num_gpus: float = 0,
              name: str | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Run `worker_cls(**constructor_kwargs)(item)` over `items` on a pool of Ray actors and
    yield (item, result) as items finish (not in input order).

    result is {"ok": True, "payload": ..., "node", "seconds"} or {"ok": False, "error": ...}.
    One item in flight per actor keeps memory bounded and lets a slow video hold up only
    its own actor.
    """
    import ray
    from ray.exceptions import ObjectLostError, OutOfMemoryError, RayActorError

    if not items:
        return
    # SPREAD: on a cluster, actors go to every node rather than filling the driver's node
    # first (Ray's default packs), so a run uses all nodes' disks, memory and network.
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or None, max_restarts=0,
                        scheduling_strategy="SPREAD")(_Actor)
    size = max(1, min(workers or ray_cpus(), len(items)))

    def start():
        return remote.remote(worker_cls, constructor_kwargs)

    actors = [start() for _ in range(size)]
    try:
        errors = [e for e in ray.get([a.ready.remote() for a in actors]) if e]
    except OutOfMemoryError as exc:
        for a in actors:
            ray.kill(a)
        raise WorkersFailed(f"{name or worker_cls.__name__} could not start: {out_of_memory(exc)}; "
                            "use fewer --workers (each loads its own models) or free memory, "
                            "then rerun the same command") from None
    if errors:
        for a in actors:
            ray.kill(a)
        raise WorkersFailed(f"{name or worker_cls.__name__} could not start: {errors[0]}")
    queue = iter(items)
    pending: dict[Any, tuple[Any, dict[str, Any]]] = {}

    def submit(actor) -> None:
        item = next(queue, None)
        if item is None:
            # Nothing left for it: its CPUs go back now, so a replacement for a worker that
            # died (on a cluster that lost a node, maybe with nowhere else to go) can start.
            if actor is not None:
                ray.kill(actor)
            return
        if actor is None:
            actor = start()
            actors.append(actor)
        pending[actor.run.remote(item)] = (actor, item)

    for a in actors:
        submit(a)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            actor, item = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (RayActorError, ObjectLostError, OutOfMemoryError) as exc:
                # Its process, or the node under it, died: a replacement takes the next item.
                why = out_of_memory(exc) + "; use fewer --workers or free memory" \
                    if _killed_for_memory(exc) else _short(exc, 200)
                result = {"ok": False, "node": None, "seconds": 0.0, "died": True,
                          "error": f"the worker process died on this input ({why})"}
                ray.kill(actor)
                actor = None
            yield item, result
            submit(actor)
    finally:
        for a in actors:
            ray.kill(a)
