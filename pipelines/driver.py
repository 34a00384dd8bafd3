"""The one driver behind every Ray pipeline (`stc curate`, `degrade`, `enhance`, `eval`).

A pipeline declares what differs (its worker, its manifest, how a worker's result becomes
rows, its settings); the driver does the rest the same way for all of them:

  lock the output folder -> remove stale temp files -> refuse changed settings -> skip the
  inputs already finished -> run the rest on Ray actors (or in this process) with one
  progress bar -> write each input's rows as one atomic part as it finishes -> write the
  run's stats -> a clear error, with every finished row kept, on Ctrl-C, a full disk or
  a dead cluster.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
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
from stc.core.runtime import RayOptions, cpu_seconds, init_ray, map_items
from stc.core.storage import Location
from stc.manifests.io import ManifestWriter, compact
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
    # payload -> manifest rows (may write side files first, e.g. shards); error -> rows
    to_rows: Callable[[dict[str, Any], Any], list[dict[str, Any]]]
    error_rows: Callable[[dict[str, Any], str], list[dict[str, Any]]]
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
                 progress: bool = True, extra_stats: Callable[[], dict] | None = None,
                 log: Callable[[str], None] | None = None) -> RunReport:
    """Run pipeline `p` over `items`, skipping the keys in `done` (key -> status)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    report = RunReport(inputs=len(items))
    with storage.output_lock(p.out, command_line()) if p.out is not None \
            else contextlib.nullcontext():
        if p.out is not None:
            storage.clean_stale_temps(p.out)
        if p.settings is not None and p.settings_file is not None:
            check_settings(p.settings_file, p.settings, allow_settings_change, p.settings_hint)
        if p.prepare is not None:
            p.prepare()
        todo = pending(items, p.key, done or {}, retry_errors)
        report.todo, report.skipped = len(todo), len(items) - len(todo)
        where = f" in {p.manifest}" if p.manifest else ""
        log(f"stc {p.name}: {len(items)} {p.unit}s, {report.skipped} already done{where}, "
            f"{len(todo)} to process")
        t0 = time.perf_counter()
        if todo:
            _execute(p, todo, report, ray or RayOptions(), workers, progress)
        report.wall_seconds = time.perf_counter() - t0
        if p.manifest is not None and p.schema is not None and todo:
            compact(p.manifest, p.schema)
        # Computed once, after the last row: the caller's summary reuses it.
        report.extra = extra_stats() if extra_stats else {}
        if p.stats_file is not None and todo:
            storage.write_text(p.stats_file, json.dumps({**report.stats(), **report.extra},
                                                        indent=2))
    return report


def _execute(p: Pipeline, todo: list[dict[str, Any]], report: RunReport, ray_opts: RayOptions,
             workers: int | None, progress: bool) -> None:
    bar = tqdm(total=len(todo), unit=p.unit, desc=f"{p.name}", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    bar.set_postfix_str(p.loading + "...")
    writer = ManifestWriter(p.manifest, p.schema) if p.manifest is not None else None
    resume = command_line()
    try:
        if p.in_process or (workers == 1 and len(todo) == 1):
            results = _in_process(p, todo)
        else:
            init_ray(ray_opts.address, ray_opts.num_cpus, ray_opts.verbose)
            results = map_items(todo, p.worker, p.worker_kwargs, workers, p.num_cpus, p.num_gpus)
        for item, result in results:
            if result["ok"]:
                payload = result["payload"]
                rows = p.to_rows(item, payload)
                timings = payload.get("timings") if isinstance(payload, dict) else None
                for step, seconds in (timings or {}).items():
                    report.step_seconds[step] += seconds
                    report.step_items[step] += 1
                # A worker that turns its failures into rows (curate) failed all the same.
                if rows and all(r.get("status") == "error" for r in rows):
                    report.failed_items += 1
            else:
                rows = p.error_rows(item, result["error"])
                report.failed_items += 1
            if result.get("node"):
                report.nodes[result["node"]] += 1
            report.item_seconds += result.get("seconds") or 0.0
            report.item_cpu_seconds += result.get("cpu_seconds") or 0.0
            if writer is not None:
                writer.add_item(rows)
            else:
                report.collected.extend(rows)
            report.rows += len(rows)
            report.finished += 1
            for r in rows:
                report.statuses[r.get("status", "ok")] += 1
            bar.update(1)
            # Redraw on the first result so "loading..." does not linger until the next one.
            bar.set_postfix(dict(report.statuses), refresh=report.finished == 1)
            if _out_of_space(result, rows):
                raise disk_full_error(_local_disk(p), _bytes_needed(p, report, len(todo)), resume)
    except DiskFull:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            if writer is not None:
                writer.discard()      # the rows of the input whose write failed: redone on resume
            raise disk_full_error(_local_disk(p), _bytes_needed(p, report, len(todo)), resume) from exc
        raise _stopped(p, writer, exc, resume) from exc
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - the cluster or a callback broke mid-run
        raise _stopped(p, writer, exc, resume) from exc
    finally:
        bar.close()


def _out_of_space(result: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """The input failed because the disk filled up: a worker's exception, or an error row
    that says so (curate writes its clip in the worker and reports ffmpeg's ENOSPC as a row;
    going on would only fail every input after it the same way)."""
    if not result["ok"]:
        return DISK_FULL_TEXT in result["error"]
    return any(r.get("status") == "error" and DISK_FULL_TEXT in str(r.get("message") or "")
               for r in rows)


def _stopped(p: Pipeline, writer, exc: BaseException, resume: str) -> RuntimeError:
    saved = f"the {writer.rows_written} rows finished are saved in {p.manifest}" if writer \
        else "finished outputs are kept"
    return RuntimeError(f"the {p.name} pipeline stopped ({type(exc).__name__}: {exc}); {saved}: "
                        f"rerun `{resume}` to resume")


def _local_disk(p: Pipeline) -> Location:
    """The disk that filled up: the output folder, or for a URL output the local temp
    folder workers stage files in."""
    return tempfile.gettempdir() if storage.is_url(p.out) else p.out


def _bytes_needed(p: Pipeline, report: RunReport, total: int) -> float | None:
    """What the inputs left would take, at the folder's bytes per finished input."""
    if not report.finished or p.out is None or storage.is_url(p.out):
        return None
    used = sum(f.stat().st_size for f in Path(p.out).rglob("*") if f.is_file())
    return used / report.finished * max(1, total - report.finished)


def _in_process(p: Pipeline, todo: list[dict[str, Any]]):
    worker = p.worker(**p.worker_kwargs)
    for item in todo:
        t0, c0 = time.perf_counter(), cpu_seconds()
        try:
            result = {"ok": True, "payload": worker(item)}
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a bad item is a row, never a stopped run
            if is_disk_full(exc):
                raise
            result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        result["seconds"] = time.perf_counter() - t0
        result["cpu_seconds"] = cpu_seconds() - c0
        yield item, result
