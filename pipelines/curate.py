"""`stc curate`: raw videos -> cropped, filtered, scored clips and a Parquet manifest.

A declaration on the shared driver (`pipelines.driver`): Ray actors each load dlib and
PP-OCR once; an item is one source video, keyed by its `source_id`; an actor curates a task
of `--part-size` sources, writes their clips and then all their rows as one part of
`OUT/manifest.parquet/` straight to the output, and the driver commits it, so an
interrupted run keeps its work and a rerun skips finished sources. Per-step counts and times go to
`OUT/run_stats.json`, not into the manifest, so the manifest of a rerun is identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from stc.core import storage
from stc.core.config import from_dict, to_dict, with_sets
from stc.core.content_hash import content_hash, identical_groups
from stc.core.names import CLIP_MANIFEST, CURATE_CONFIG, RUN_STATS
from stc.core.paths import record_input_roots, resolved
from stc.core.runtime import RayOptions
from stc.curation.clip import ClipCurator, source_id_for
from stc.curation.config import CurateConfig
from stc.curation.space import curate_bytes
from stc.manifests.clips import CLIP_SCHEMA, FUNNEL, funnel_counts, source_counts
from stc.manifests.io import finished_keys, read_manifest
from stc.pipelines.driver import Pipeline, run_pipeline
from stc.pipelines.inputs import gather_inputs
from stc.pipelines.options import (
    add_config_args,
    add_ray_args,
    add_space_check_arg,
    non_negative_int,
    positive_int,
    print_config,
    print_next,
)


# --- Ray worker --------------------------------------------------------------------
class CurateWorker:
    """Ray actor: loads the models once, curates one source video per item into its rows.

    ffmpeg, PyAV and dlib need real files: an input URL is downloaded to a temp file for
    the length of its item ("fetch"), and for a URL output the item's files (clips, the
    shots file) are written to a temp folder and uploaded ("store") before the rows are
    returned, so a clip exists before the row that names it. Both go with the item: Ray
    ends actors without running their finalizers."""

    def __init__(self, config: dict[str, Any], out_dir: str):
        self.out = storage.location(out_dir)
        self.curator = ClipCurator(from_dict(CurateConfig, config), self.out if isinstance(
            self.out, Path) else tempfile.gettempdir())

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        src = item["source_path"]
        if not storage.is_url(src) and not storage.is_url(self.out):
            rows, timings = self.curator(src, item["source_id"], item["source"])
            return {"rows": _identified(rows, src, item, timings), "timings": timings}
        if not storage.is_url(self.out):
            return self._curate(item)
        with tempfile.TemporaryDirectory(prefix="stc-curate-") as staging:
            self.curator.out_dir = Path(staging)
            result = self._curate(item)
            t0 = time.perf_counter()
            for f in sorted(Path(staging).rglob("*")):
                if f.is_file():
                    storage.upload(f, storage.join(self.out, f.relative_to(staging).as_posix()))
            if "timings" in result:
                result["timings"]["store"] = time.perf_counter() - t0
            return result

    def _curate(self, item: dict[str, Any]) -> dict[str, Any]:
        src = item["source_path"]
        t0 = time.perf_counter()
        try:
            with storage.local_input(src) as local:
                fetch = time.perf_counter() - t0
                rows, timings = self.curator(str(local), item["source_id"], item["source"])
                rows = _identified(rows, local, item, timings)
        except OSError as exc:      # a missing object, no access, the network
            return {"rows": [{"clip_id": item["source_id"], "source_id": item["source_id"],
                              "source_path": src, "source": item["source"], "clip_path": None,
                              "status": "error", "reason": "unreadable",
                              "message": f"{src}: cannot download ({exc}); check the URL and "
                                         "the storage credentials of the worker nodes"}]}
        if str(local) != src:
            # Rows name the input as the user gave it, not the worker's temp copy.
            rows = [{k: v.replace(str(local), src) if isinstance(v, str) else v
                     for k, v in row.items()} for row in rows]
        return {"rows": rows, "timings": {"fetch": fetch, **timings}}


def _identified(rows: list[dict[str, Any]], local: str | Path, item: dict[str, Any],
                timings: dict[str, float]) -> list[dict[str, Any]]:
    """`rows` with the source's content hash and the other inputs that hold its bytes."""
    t0 = time.perf_counter()
    try:
        digest = content_hash(local)
    except OSError:
        digest = None           # unreadable: its row already says so
    timings["hash"] = time.perf_counter() - t0
    dups = json.dumps(item["duplicate_paths"]) if item.get("duplicate_paths") else None
    return [{**r, "source_hash": digest, "duplicate_paths": dups} for r in rows]


def input_roots(inputs: list[str], items: list[dict[str, Any]]) -> list[str]:
    """What this run may later read `source_path`s from (`core.paths`): the folders given,
    and every input file outside them (listed, globbed, or behind a link)."""
    folders = [str(storage.location(i)) if storage.is_url(i) else str(Path(i).expanduser().resolve())
               for i in inputs if storage.is_url(i) and storage.isdir(i) or Path(i).is_dir()]
    files = [it["source_path"] for it in items]
    files += [d for it in items for d in it.get("duplicate_paths") or []]
    return folders + [f for f in files if not any(
        f == d or f.startswith(d.rstrip("/") + "/") for d in folders)]


def merge_identical(items: list[dict[str, Any]], done: Mapping[str, str]) -> list[dict[str, Any]]:
    """Byte-identical inputs are one source: the first in sorted order (or the one a former
    run finished, so a rerun resumes) is curated and names the others in `duplicate_paths`."""
    by_path = {it["source_path"]: it for it in items}
    dropped: set[str] = set()
    for group in identical_groups(list(by_path)):
        keep = next((p for p in group if by_path[p]["source_id"] in done), group[0])
        by_path[keep]["duplicate_paths"] = sorted(str(p) for p in group if p != keep)
        dropped |= {p for p in group if p != keep}
    return [it for it in items if it["source_path"] not in dropped]


def _error_rows(item: dict[str, Any], message: str) -> list[dict[str, Any]]:
    # Only reached when the worker itself died (the curator turns every exception into a row).
    return [{"clip_id": item["source_id"], "source_id": item["source_id"],
             "source_path": item["source_path"], "source": item["source"], "clip_path": None,
             "status": "error",
             "reason": "internal_error", "message": f"{item['source_path']}: {message}"}]


# --- driver ------------------------------------------------------------------------
def run_curate(inputs: list[str], out: str | Path, config: str | None = None,
               address: str | None = None, num_cpus: int | None = None,
               workers: int | None = None, retry_errors: bool = False,
               allow_config_change: bool = False, progress: bool = True,
               limit: int | None = None, verbose: bool = False,
               sets: list[str] | None = None, part_items: int | None = None,
               space_check: bool = True) -> dict[str, Any]:
    """Curate `inputs` into `out` (a folder or a URL); returns the run summary (also written
    to run_stats.json). `sets`: `a.b=value` overrides of the config. `space_check`: refuse
    to start when the clips would not fit the free space (`curation.space`)."""
    out = storage.location(out)
    cfg = with_sets(CurateConfig.load(config), sets)
    manifest_path = storage.join(out, CLIP_MANIFEST)
    # What this run writes is never its input, wherever --out lies.
    inside_out = (lambda p: False) if storage.is_url(out) else \
        (lambda p, o=str(resolved(out)) + "/": not storage.is_url(p) and p.startswith(o))
    items = [{"source_path": p, "source": s, "source_id": source_id_for(p)}
             for p, s in gather_inputs(inputs) if not inside_out(p)]
    if not items:
        raise FileNotFoundError(f"no videos found in {inputs}; give folders, globs, .txt or .parquet lists")
    done = finished_keys(manifest_path, CLIP_SCHEMA, by="source_id")
    items = merge_identical(items, done)
    if limit is not None:
        items = items[:limit]
    pipeline = Pipeline(
        name="curate", unit="video", out=out, worker=CurateWorker,
        worker_kwargs={"config": to_dict(cfg), "out_dir": str(out)}, key="source_id",
        to_rows=lambda item, payload: payload["rows"], error_rows=_error_rows,
        manifest=manifest_path, schema=CLIP_SCHEMA,
        settings=to_dict(cfg), settings_file=storage.join(out, CURATE_CONFIG),
        settings_hint="use a new --out, or --allow-config-change to continue anyway",
        stats_file=storage.join(out, RUN_STATS), loading="loading dlib and PP-OCR",
        part_items=part_items, prepare=lambda: record_input_roots(out, input_roots(inputs, items)),
        estimate_bytes=lambda todo: curate_bytes(todo, cfg))
    report = run_pipeline(pipeline, items, done,
                          retry_errors=retry_errors, allow_settings_change=allow_config_change,
                          ray=RayOptions(address, num_cpus, verbose), workers=workers,
                          progress=progress, space_check=space_check,
                          extra_stats=lambda report: _manifest_stats(manifest_path))
    summary = {**report.stats(), **report.extra}
    summary["all_failed"] = report.all_failed
    if progress:
        print(format_funnel(summary["funnel"], FUNNEL, summary["sources"]), file=sys.stderr)
    return summary


def _manifest_stats(manifest_path: storage.Location) -> dict[str, Any]:
    manifest = read_manifest(manifest_path, CLIP_SCHEMA)
    per_source = manifest.drop_duplicates("source_id")
    return {
        "status": manifest["status"].value_counts().to_dict(),
        "reasons": manifest["reason"].value_counts().to_dict(),
        "funnel": funnel_counts(list(manifest["reason"])),
        "sources": source_counts(manifest),
        "input_frames": int(per_source["num_frames"].fillna(0).sum()),
        "manifest": str(manifest_path),
    }


def format_funnel(funnel: dict[str, int], order: Iterable[str],
                  sources: dict[str, int] | None = None) -> str:
    """The funnel as a table: the sources, then the rows (clips, and one row per source
    that gave no clip) stage by stage."""
    order = list(order)
    total = funnel[order[0]] or 1
    lines = [""]
    if sources:
        lines.append(f"{sources['sources']} source(s): {sources['with_clips']} gave clips, "
                     f"{sources['with_kept']} a kept clip; {sources['clips']} clip(s) cut")
    lines.append(f"{'stage':<10} {'rows':>7} {'kept %':>7} {'dropped':>8}")
    prev = None
    for stage in order:
        n = funnel[stage]
        dropped = "" if prev is None else str(prev - n)
        label = "all rows" if stage == order[0] else stage     # clips, and clipless sources
        lines.append(f"{label:<10} {n:>7} {100 * n / total:>6.1f}% {dropped:>8}")
        prev = n
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curate", help="crop, filter and score raw face videos into a clip manifest",
        description="Crop each video to its face region, drop side-face and text videos, "
                    "score motion, and write clips plus OUT/manifest.parquet.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="video files, folders, globs, .txt or .parquet lists")
    p.add_argument("--out", help="output folder (clips/, manifest.parquet/, run_stats.json)")
    p.add_argument("--config", default=None,
                   help="YAML file or built-in name (default, fast); missing keys keep the paper's defaults")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="parallel curation actors (default: CPUs)")
    p.add_argument("--limit", type=non_negative_int, default=None,
                   help="only the first N inputs, in sorted order (default: all)")
    p.add_argument("--retry-errors", action="store_true", help="process error rows again")
    p.add_argument("--part-size", type=positive_int, default=None,
                   help="inputs per task: each task writes its inputs' rows as one manifest "
                        "part (default: auto, up to 32)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="continue an output folder made with another config")
    add_config_args(p)
    add_space_check_arg(p)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    add_ray_args(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.print_config:
        print_config(to_dict(with_sets(CurateConfig.load(args.config), args.set)))
        return 0
    if not args.inputs or not args.out:
        print("stc curate: error: give INPUT... and --out DIR", file=sys.stderr)
        return 2
    summary = run_curate(args.inputs, args.out, args.config, args.address, args.num_cpus,
                         args.workers, args.retry_errors, args.allow_config_change,
                         limit=args.limit, verbose=args.verbose, sets=args.set,
                         part_items=args.part_size, space_check=args.space_check)
    if args.json:
        print(json.dumps(summary, indent=2))
    if summary["all_failed"]:
        print(f"stc curate: every input of this run failed; see the `message` column of "
              f"{summary['manifest']}", file=sys.stderr)
        return 1
    if not args.json:
        out = str(args.out).rstrip("/")
        kept = summary["status"].get("kept", 0)
        print(f"stc curate: {kept} kept clip(s) in {out}", file=sys.stderr)
        steps = [f"stc stats {out} --out {out}/report   (funnel, histograms, a page to review "
                 "the clips)"]
        if kept:
            steps += [f"stc degrade {out} --out PAIRS --format mp4   (LQ-HQ pairs to watch; "
                      "parquet, the default, to train on)",
                      f"stc train stage1 --manifest {out} --out RUN1"]
        print_next(steps)
    return 0
