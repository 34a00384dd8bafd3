"""The one driver behind every Ray pipeline (`stc curate`, `degrade`, `enhance`, `eval`).

A pipeline declares what differs (its worker, its manifest, how a worker's result becomes
rows, its settings); the driver does the rest the same way for all of them:

  lock the output folder -> remove stale temp files and uncommitted parts -> refuse
  changed settings -> skip the inputs already finished -> send the rest to Ray actors (or
  this process) in tasks of `part_items` inputs -> each task writes its inputs' rows (and
  their side files: clips, shards) itself, as one part, straight to the output storage,
  and returns a small status record -> the driver adds the part names to the manifest's
  index (`manifests.io.ManifestCommit`) every `commit_seconds` and at the end -> compact
  -> write the run's stats -> a clear error, with every committed row kept, on Ctrl-C, a
  full disk or a dead cluster.

The driver never touches a row or a byte of output: its work per input is one status
record, so it is not what limits a large cluster. Every row carries its provenance
(`manifests.io.PROVENANCE`: node, worker, seconds, stage seconds, stc version).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

import yaml
from tqdm import tqdm

from stc.core import storage
from stc.core.config import ConfigError
from stc.core.fs import (
    DISK_FULL_TEXT,
    DiskFull,
    command_line,
    disk_full_error,
    is_disk_full,
)
from stc.core.runtime import RayOptions, cpu_seconds, init_ray, map_items, ray_cpus
from stc.core.space import check_free_space, folder_bytes
from stc.core.storage import Location
from stc.manifests.io import ManifestCommit, compact, open_commit, write_part
from stc.manifests.schema import ManifestSchema


class SettingsChanged(ConfigError):
    """An output folder was started with other settings; mixing them would corrupt it."""


def check_settings(path: Location, settings: Mapping[str, Any], allow_change: bool = False,
                   hint: str = "use another output folder") -> None:
    """The one rule for every pipeline: the first run records its settings in `path` (a
    local file or an object); a later run with different settings is refused (unless
    `allow_change`, which records the new ones)."""
    current = json.loads(json.dumps(settings))    # plain types, as YAML gives them back
    if storage.exists(path):
        previous = yaml.safe_load(storage.read_text(path))
        if previous == current:
            return
        if not allow_change:
            changed = sorted(_diff(previous, current))
            raise SettingsChanged(
                f"{storage.parent(path)} was made with other settings ({path}; changed: "
                f"{', '.join(changed[:8]) or 'all'}); rows made under both would mix them. "
                f"{hint[0].upper() + hint[1:]}")
    storage.write_text(path, yaml.safe_dump(current, sort_keys=False))


def _diff(a: Any, b: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            yield from _diff(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".") or "value"


@dataclass
class Pipeline:
    """What one pipeline declares; `run_pipeline` does the rest."""

    name: str                                   # "curate": messages, bar, stats
    unit: str                                   # what an item is: "video", "clip", "pair"
    out: Location | None                        # output folder or URL, locked for the run
    worker: type                                # worker(**worker_kwargs)(item) -> payload
    worker_kwargs: dict[str, Any]
    key: str                                    # item field that names it in `done`
    # In the worker: payload -> manifest rows (may write side files first, e.g. shards);
    # error -> rows. Rows name their item by the `key` field (provenance is joined on it).
    to_rows: Callable[[dict[str, Any], Any], list[dict[str, Any]]]
    error_rows: Callable[[dict[str, Any], str], list[dict[str, Any]]]
    # In the worker, after a task's last item: the rows still buffered (shards to cut).
    finish_part: Callable[[], list[dict[str, Any]]] | None = None
    # In the worker: a task's rows -> numbers the driver sums into `RunReport.tally`.
    tally: Callable[[list[dict[str, Any]]], Mapping[str, float]] | None = None
    manifest: Location | None = None            # rows go here as parts...
    schema: ManifestSchema | None = None
    settings: dict[str, Any] | None = None      # ...refused when changed (`check_settings`)
    settings_file: Location | None = None
    settings_hint: str = "use another output folder"
    stats_file: Location | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    in_process: bool = False                    # no Ray: one worker in this process
    loading: str = "loading models"             # what the bar says until the first result
    prepare: Callable[[], None] | None = None   # run under the lock, before any item
    part_items: int | None = None               # inputs per task and part (None: auto)
    # Bytes the given inputs will write (None: cannot tell); checked against the free
    # space of a local `out` before any worker starts (`core.space`).
    estimate_bytes: Callable[[list[dict[str, Any]]], float | None] | None = None
    commit_seconds: float = 2.0                 # the index is rewritten at most this often


@dataclass
class RunReport:
    inputs: int = 0
    todo: int = 0
    skipped: int = 0
    statuses: Counter = field(default_factory=Counter)
    rows: int = 0
    finished: int = 0
    failed_items: int = 0
    nodes: Counter = field(default_factory=Counter)
    step_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    step_items: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0
    # Seconds workers spent on items (startup and model loading excluded): against the
    # wall time it says how busy the workers were, what a scale model needs.
    item_seconds: float = 0.0
    item_cpu_seconds: float = 0.0          # their CPU time, ffmpeg children included
    collected: list[dict[str, Any]] = field(default_factory=list)   # rows, when not in a manifest
    extra: dict[str, Any] = field(default_factory=dict)             # the pipeline's extra_stats
    tally: Counter = field(default_factory=Counter)                 # summed `Pipeline.tally`
    per_node: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    parts: int = 0                          # parts the workers wrote and the driver committed
    part_items: int = 0
    run_id: str = ""
    # The driver process's own CPU seconds from the first task sent to the last commit:
    # what each input costs the one process a cluster cannot multiply.
    driver_cpu_seconds: float = 0.0
    estimated_bytes: float | None = None    # what the pipeline expected this run to write
    start_bytes: int | None = None          # the output folder's bytes when it started
    written_bytes: int | None = None        # and what it grew by

    @property
    def all_failed(self) -> bool:
        """Every input of this run failed (exit non-zero): nothing useful was made."""
        return self.todo > 0 and self.failed_items == self.todo

    def stats(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs, "processed": self.todo, "skipped_finished": self.skipped,
            "failed_inputs": self.failed_items, "rows": self.rows,
            "wall_seconds": round(self.wall_seconds, 3),
            "item_seconds": round(self.item_seconds, 3),
            "item_cpu_seconds": round(self.item_cpu_seconds, 3),
            "this_run_status": dict(self.statuses),
            "nodes": dict(self.nodes),
            "per_node": {n: {"items": c["items"], "failed": c["failed"],
                             "seconds": round(c["seconds"], 3),
                             "cpu_seconds": round(c["cpu_seconds"], 3)}
                         for n, c in self.per_node.items()},
            "run_id": self.run_id, "parts": self.parts, "part_items": self.part_items,
            "driver_cpu_seconds": round(self.driver_cpu_seconds, 4),
            "estimated_bytes": round(self.estimated_bytes) if self.estimated_bytes else None,
            "written_bytes": self.written_bytes,
            "driver_cpu_seconds_per_input": round(self.driver_cpu_seconds / self.todo, 6)
            if self.todo else None,
            "steps": {s: {"items": self.step_items[s], "seconds": round(self.step_seconds[s], 3),
                          "seconds_per_item": round(self.step_seconds[s] / self.step_items[s], 4)}
                      for s in self.step_items},
        }


def pending(items: list[dict[str, Any]], key: str, done: Mapping[str, str],
            retry_errors: bool = False) -> list[dict[str, Any]]:
    """The items not finished yet (and, with `retry_errors`, those that ended in error)."""
    return [it for it in items if it[key] not in done
            or (retry_errors and done[it[key]] == "error")]


def run_pipeline(p: Pipeline, items: list[dict[str, Any]], done: Mapping[str, str] | None = None,
                 *, retry_errors: bool = False, allow_settings_change: bool = False,
                 ray: RayOptions | None = None, workers: int | None = None,
                 progress: bool = True, space_check: bool = True,
                 extra_stats: Callable[[RunReport], dict] | None = None,
                 log: Callable[[str], None] | None = None) -> RunReport:
    """Run pipeline `p` over `items`, skipping the keys in `done` (key -> status).
    `space_check`: refuse to start when `p.estimate_bytes` says the output will not fit."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    report = RunReport(inputs=len(items), run_id=uuid.uuid4().hex[:16])
    with storage.output_lock(p.out, command_line()) if p.out is not None \
            else contextlib.nullcontext():
        if p.out is not None:
            storage.clean_stale_temps(p.out)
        todo = pending(items, p.key, done or {}, retry_errors)
        if todo and p.out is not None and not storage.is_url(p.out):
            report.start_bytes = folder_bytes(p.out)
            # Before settings are recorded or a part is touched: a refusal leaves the
            # folder as it was.
            if p.estimate_bytes is not None:
                report.estimated_bytes = p.estimate_bytes(todo)
            if space_check and report.estimated_bytes is not None:
                check_free_space(p.out, report.estimated_bytes,
                                 f"stc {p.name} of {len(todo)} {p.unit}(s)")
        # Under the lock, before any worker starts: parts of a killed run are removed.
        commit = open_commit(p.manifest, p.schema) \
            if p.manifest is not None and p.schema is not None else None
        if p.settings is not None and p.settings_file is not None:
            check_settings(p.settings_file, p.settings, allow_settings_change, p.settings_hint)
        if p.prepare is not None:
            p.prepare()
        report.todo, report.skipped = len(todo), len(items) - len(todo)
        where = f" in {p.manifest}" if p.manifest else ""
        log(f"stc {p.name}: {len(items)} {p.unit}s, {report.skipped} already done{where}, "
            f"{len(todo)} to process")
        t0 = time.perf_counter()
        if todo:
            _execute(p, todo, report, ray or RayOptions(), workers, progress, commit)
        report.wall_seconds = time.perf_counter() - t0
        if commit is not None and todo:
            compact(p.manifest, p.schema, commit=commit)
        if report.start_bytes is not None:
            report.written_bytes = folder_bytes(p.out) - report.start_bytes
        # Computed once, after the last row: the caller's summary reuses it.
        report.extra = extra_stats(report) if extra_stats else {}
        if p.stats_file is not None and todo:
            storage.write_text(p.stats_file, json.dumps({**report.stats(), **report.extra},
                                                        indent=2))
    return report


def _execute(p: Pipeline, todo: list[dict[str, Any]], report: RunReport, ray_opts: RayOptions,
             workers: int | None, progress: bool, commit: ManifestCommit | None) -> None:
    bar = tqdm(total=len(todo), unit=p.unit, desc=f"{p.name}", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    bar.set_postfix_str(p.loading + "...")
    resume = command_line()
    spec = PartSpec(p.worker, p.worker_kwargs, p.to_rows, p.error_rows, p.finish_part, p.tally,
                    str(p.manifest) if p.manifest is not None else None, p.schema, p.key,
                    report.run_id)
    last_commit = float("-inf")
    c0 = cpu_seconds(children=False)
    try:
        local = p.in_process or (workers == 1 and len(todo) == 1)
        if not local:
            init_ray(ray_opts.address, ray_opts.num_cpus, ray_opts.verbose)
        pool = 1 if local else max(1, min(workers or ray_cpus(), len(todo)))
        size = report.part_items = p.part_items or auto_part_items(len(todo), pool)
        tasks = [{"items": todo[i:i + size]} for i in range(0, len(todo), size)]
        # A task whose worker process died is split and run again item by item (one bad
        # video must not take the others of its task down); a lone item that kills its
        # worker twice becomes the error row.
        while tasks:
            retry: list[dict[str, Any]] = []
            results = _in_process(spec, tasks) if local else \
                map_items(tasks, PartWorker, {"spec": spec}, pool, p.num_cpus, p.num_gpus,
                          name=p.worker.__name__)
            for task, result in results:
                if not result["ok"] and DISK_FULL_TEXT in result["error"]:
                    raise disk_full_error(_local_disk(p), _bytes_needed(p, report, len(todo)), resume)
                if not result["ok"]:
                    # Split, and each item once more on its own: a node that went away is
                    # not the video's fault; the third death of its worker is.
                    if len(task["items"]) > 1 or not task.get("again"):
                        retry += [{"items": [it], "again": len(task["items"]) == 1}
                                  for it in task["items"]]
                        continue
                    result = {"ok": True, "node": result.get("node"),
                              "payload": _error_part(spec, task["items"][0], result["error"])}
                status = result["payload"]
                if status.get("write_error"):
                    raise _write_failed(p, report, len(todo), status["write_error"], resume)
                _record(report, status, commit)
                bar.update(len(status["items"]))
                # Redraw on the first result so "loading..." does not linger until the next one.
                bar.set_postfix(dict(report.statuses), refresh=report.finished == len(status["items"]))
                if commit is not None and time.monotonic() - last_commit >= p.commit_seconds:
                    commit.commit()
                    last_commit = time.monotonic()
                if status.get("disk_full"):
                    raise disk_full_error(_local_disk(p), _bytes_needed(p, report, len(todo)), resume)
            tasks = retry
    except DiskFull:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(_local_disk(p), _bytes_needed(p, report, len(todo)), resume) from exc
        raise _stopped(p, report, exc, resume) from exc
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - the cluster or a callback broke mid-run
        raise _stopped(p, report, exc, resume) from exc
    finally:
        bar.close()
        # Whatever stopped the run, the parts workers finished are committed: real work.
        if commit is not None:
            with contextlib.suppress(Exception):
                commit.commit()
        report.driver_cpu_seconds = cpu_seconds(children=False) - c0


def auto_part_items(todo: int, pool: int, most: int = 32) -> int:
    """Inputs per task when the pipeline does not say: at least ~4 tasks per worker (so the
    tail of a run stays balanced), at most `most` (what a task redoes when killed)."""
    return max(1, min(most, todo // (4 * pool)))


def _record(report: RunReport, status: dict[str, Any], commit: ManifestCommit | None) -> None:
    """Add one task's status record to the report and its part to the commit."""
    if status.get("part") and commit is not None:
        commit.add([status["part"]])
        report.parts += 1
    report.collected.extend(status.get("rows") or [])
    report.rows += status["rows_written"]
    report.statuses.update(status["statuses"])
    report.tally.update(status.get("tally") or {})
    for it in status["items"]:
        report.finished += 1
        report.failed_items += bool(it["failed"])
        node = it.get("node")
        if node:
            report.nodes[node] += 1
            c = report.per_node[node]
            c["items"] += 1
            c["failed"] += bool(it["failed"])
            c["seconds"] += it["seconds"]
            c["cpu_seconds"] += it["cpu_seconds"]
        report.item_seconds += it["seconds"]
        report.item_cpu_seconds += it["cpu_seconds"]
        for step, seconds in (it.get("timings") or {}).items():
            report.step_seconds[step] += seconds
            report.step_items[step] += 1


@dataclass
class PartSpec:
    """What a worker needs of a `Pipeline` to run tasks and write their parts."""

    worker: type
    worker_kwargs: dict[str, Any]
    to_rows: Callable
    error_rows: Callable
    finish_part: Callable | None
    tally: Callable | None
    manifest: str | None
    schema: ManifestSchema | None
    key: str
    run_id: str


def _stc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stc")
    except PackageNotFoundError:
        return "unknown"


def _where() -> dict[str, Any]:
    """This process's place in the cluster, for the provenance of its rows."""
    here = {"prov_node_id": "local", "prov_node_ip": None, "prov_host": socket.gethostname(),
            "prov_worker_id": f"pid-{os.getpid()}", "prov_pid": os.getpid()}
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            here["prov_node_id"] = ctx.get_node_id()
            here["prov_worker_id"] = ctx.get_actor_id() or ctx.get_worker_id()
            here["prov_node_ip"] = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - provenance must never fail a task
        pass
    return here


class PartWorker:
    """Runs in a Ray actor (or this process): a task's items through the pipeline's worker,
    their rows into one part written straight to the output, and back a small status."""

    def __init__(self, spec: PartSpec):
        self.spec = spec
        self.worker = spec.worker(**spec.worker_kwargs)
        self.where = {**_where(), "prov_run_id": spec.run_id, "prov_stc_version": _stc_version()}

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        s = self.spec
        rows: list[dict[str, Any]] = []
        items, prov = [], {}
        try:
            for item in task["items"]:
                started = datetime.now(timezone.utc)
                t0, c0 = time.perf_counter(), cpu_seconds()
                try:
                    payload = self.worker(item)
                    ok, error = True, None
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as exc:  # noqa: BLE001 - a bad item is a row, never a stopped run
                    if is_disk_full(exc):
                        raise
                    ok, error = False, f"{type(exc).__name__}: {str(exc)[:500]}"
                seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                item_rows = s.to_rows(item, payload) if ok else s.error_rows(item, error)
                timings = payload.get("timings") if ok and isinstance(payload, dict) else None
                failed = not ok or bool(item_rows) and all(r.get("status") == "error"
                                                           for r in item_rows)
                items.append({"key": item[s.key], "failed": failed, "seconds": seconds,
                              "cpu_seconds": cpu, "timings": timings,
                              "node": self.where["prov_node_id"]})
                prov[item[s.key]] = {"prov_started_at": started, "prov_seconds": seconds,
                                     "prov_cpu_seconds": cpu,
                                     "prov_step_seconds": json.dumps(timings or {}, sort_keys=True)}
                rows += item_rows
            if s.finish_part is not None:
                rows += s.finish_part()
            status = self._status(rows, items)
            if s.manifest is not None and rows:
                status["part"], _ = write_part(
                    s.manifest, s.schema, rows,
                    [{**self.where, **prov.get(r.get(s.key), {})} for r in rows])
            elif s.manifest is None:
                status["rows"] = rows
            return status
        except OSError as exc:          # the output storage failed: the run must stop
            return {"write_error": f"{type(exc).__name__}: {exc}", "items": items}

    def _status(self, rows: list[dict[str, Any]], items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"items": items, "rows_written": len(rows),
                "statuses": Counter(r.get("status", "ok") for r in rows),
                "tally": dict(self.spec.tally(rows)) if self.spec.tally else {},
                "disk_full": any(r.get("status") == "error"
                                 and DISK_FULL_TEXT in str(r.get("message") or "") for r in rows)}


def _error_part(spec: PartSpec, item: dict[str, Any], error: str) -> dict[str, Any]:
    """The status of an item whose worker process died on it: its error rows, written by the
    driver (rare, and small)."""
    rows = spec.error_rows(item, error)
    status = {"items": [{"key": item[spec.key], "failed": True, "seconds": 0.0,
                         "cpu_seconds": 0.0, "timings": None, "node": None}],
              "rows_written": len(rows), "statuses": Counter(r.get("status", "ok") for r in rows),
              "tally": dict(spec.tally(rows)) if spec.tally else {}, "disk_full": False}
    if spec.manifest is not None:
        where = {"prov_run_id": spec.run_id, "prov_stc_version": _stc_version(),
                 "prov_step_seconds": "{}"}
        status["part"], _ = write_part(spec.manifest, spec.schema, rows, [where] * len(rows))
    else:
        status["rows"] = rows
    return status


def _stopped(p: Pipeline, report: RunReport, exc: BaseException | str,
             resume: str) -> RuntimeError:
    saved = f"the {report.rows} rows finished are saved in {p.manifest}" \
        if p.manifest is not None else "finished outputs are kept"
    what = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return RuntimeError(f"the {p.name} pipeline stopped ({what}); {saved}: "
                        f"rerun `{resume}` to resume")


def _write_failed(p: Pipeline, report: RunReport, total: int, error: str,
                  resume: str) -> Exception:
    if DISK_FULL_TEXT in error:
        return disk_full_error(_local_disk(p), _bytes_needed(p, report, total), resume)
    return _stopped(p, report, f"a worker could not write its output: {error}", resume)


def _local_disk(p: Pipeline) -> Location:
    """The disk that filled up: the output folder, or for a URL output the local temp
    folder workers stage files in."""
    return tempfile.gettempdir() if storage.is_url(p.out) else p.out


def _bytes_needed(p: Pipeline, report: RunReport, total: int) -> float | None:
    """What the inputs left would take: at the bytes this run wrote per input finished
    well, or before any finished, the pipeline's own estimate for the rest.

    Inputs that failed (for lack of space, mostly: once the disk is full every input in
    flight fails at once) wrote nothing and are to be redone: counted as finished they made
    the estimate several times too low. Only this run's bytes count: the outputs of earlier
    runs (a resumed run, other recipes in one degrade folder) are not this run's rate."""
    if p.out is None or storage.is_url(p.out):
        return None
    ok = report.finished - report.failed_items
    if ok <= 0:
        return report.estimated_bytes
    written = folder_bytes(p.out) - (report.start_bytes or 0)
    return max(0, written) / ok * max(1, total - ok)


def _in_process(spec: PartSpec, tasks: list[dict[str, Any]]):
    worker = PartWorker(spec)
    for task in tasks:
        yield task, {"ok": True, "payload": worker(task)}
