"""`stc degrade`: curated clips -> paired LQ-HQ shards, on the shared Ray driver.

    stc degrade CURATED_DIR --out DIR --recipe bfvr --seed 0 [--window 24] [--size 512]

reads the `status == kept` rows of `CURATED_DIR/manifest.parquet`, cuts each clip into
T-frame windows, degrades every window with the recipe (`degrade/recipes/*.yaml` by
name, or a YAML file) and writes

* `DIR/shards/RECIPE-seedSEED/shard-*.parquet`: the pairs (see `degrade.shards`), or with
  `--format webdataset` `shard-*.tar` WebDataset shards (see `degrade.webdataset`), or with
  `--format mp4` one video per pair in `DIR/lq/` and `DIR/gt/` under the same name, to
  watch and to score with `stc eval --pred DIR/lq --gt DIR/gt` (see `degrade.mp4pairs`),
* `DIR/pairs.parquet/`: the pairs manifest (`manifests.pairs.PAIRS_SCHEMA`), one row per
  pair and one error row per clip that gave none,
* `DIR/runs/RECIPE-seedSEED.yaml` (the resolved recipe and window options) and
  `DIR/runs/RECIPE-seedSEED.stats.json` (the last run's summary).

CURATED_DIR and DIR may be URLs (s3://..., gs://...; `core.storage`): workers download a
clip to a temp file to decode it, and PUT their shards and manifest parts themselves.

Several recipes and seeds can share one DIR (one run at a time: the folder is locked).
A task is `--part-size` clips (default: auto); its actor degrades them, packs their pairs
into shards of up to `--shard-mb`, writes the shards, then all of the task's manifest rows
as one part, and the driver commits the part (`pipelines.driver`): a clip is done only when
all its pairs are durable. kill -9 loses at most the tasks not committed yet; a rerun skips
the clips that have rows for this recipe and seed (error rows too, unless --retry-errors)
and deletes shards and parts a killed run wrote but never committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from stc.core import storage
from stc.core.config import ConfigError, check_config, from_dict, to_dict, with_sets
from stc.core.fs import OutsideRoot
from stc.core.names import CURATE_CONFIG, PAIRS_GT_DIR, PAIRS_LQ_DIR, PAIRS_MANIFEST, RUNS_DIR
from stc.core.runtime import RayOptions
from stc.core.video import VideoError
from stc.degrade.pixel_flicker import check_model
from stc.degrade.recipe import Recipe, load_recipe
from stc.degrade.shards import ShardWriter
from stc.degrade.space import clip_pair_bytes, lq_kind
from stc.degrade.mp4pairs import Mp4PairWriter, to_mp4_pair
from stc.degrade.webdataset import TarShardWriter, to_sample
from stc.degrade.windows import WindowOptions, degrade_clip, software_versions
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestPaths, locate_manifest, manifest_files, read_manifest, read_table
from stc.manifests.pairs import PAIRS_SCHEMA, pair_id
from stc.pipelines.driver import Pipeline, run_pipeline
from stc.pipelines.folders import CURATED, expect_folder
from stc.pipelines.options import (
    add_config_args,
    add_ray_args,
    add_space_check_arg,
    non_negative_int,
    positive_float,
    positive_int,
    print_config,
    print_next,
    require,
    seed_int,
)


# --format: how pairs are stored. Each writer has ShardWriter's add/flush contract.
SHARD_WRITERS = {"parquet": ShardWriter, "webdataset": TarShardWriter, "mp4": Mp4PairWriter}
# What a worker makes of a clip's rows for a format (none: the raw streams, as degraded).
SAMPLE_MAKERS = {"webdataset": to_sample, "mp4": to_mp4_pair}


def resolve_manifest(path: storage.Location) -> tuple[storage.Location, storage.Location]:
    """(manifest path, folder clip paths are relative to) for `DIR` or `DIR/manifest.parquet`
    (local or a URL)."""
    p = locate_manifest(path)
    return p, storage.parent(p)


class DegradeWorker:
    """Ray actor: degrades whole clips, returning every pair of a clip at once. A clip URL
    is downloaded to a temp file for the length of its item (PyAV decodes files)."""

    def __init__(self, recipe: dict[str, Any], seed: int, opts: dict[str, Any], device: str,
                 format: str = "parquet"):
        self.recipe = from_dict(Recipe, recipe)
        self.opts = from_dict(WindowOptions, opts)
        self.seed, self.device, self.format = seed, device, format

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if item.get("refused"):     # outside the manifest's folder: never opened
            return {"rows": [self._error(item, "outside_root", item["refused"])]}
        src = item["clip_path"]
        try:
            with storage.local_input(src) as local:
                rows = degrade_clip(item, Path(local), self.recipe, self.seed, self.opts,
                                    self.device)
        except OSError as exc:      # a missing object, no access, the network
            return {"rows": [self._error(item, "unreadable", f"{src}: cannot download ({exc}); "
                                         "check the URL and the storage credentials")]}
        if str(local) != src:       # messages name the clip as the manifest does
            rows = [{**r, "message": r["message"].replace(str(local), src)} if r.get("message")
                    else r for r in rows]
        make = SAMPLE_MAKERS.get(self.format)
        if make is not None:
            try:
                rows = [make(r) if r["status"] == "ok" else r for r in rows]
            except VideoError as exc:
                return {"rows": [self._error(item, "degrade_failed", str(exc))]}
        return {"rows": rows}

    def _error(self, item: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
        # The shape of `degrade_clip`'s own error rows: one per clip, window 0.
        return {"clip_id": item["clip_id"], "recipe": self.recipe.name, "seed": self.seed,
                "pair_id": pair_id(self.recipe.name, self.seed, item["clip_id"], 0),
                "status": "error", "reason": reason, "message": message, "window": 0}


def settings_of(recipe, opts) -> dict[str, Any]:
    return {"recipe": to_dict(recipe), "window": to_dict(opts)}


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _manifest_row(r: dict[str, Any], settings: str, source: str, software: str) -> dict[str, Any]:
    row = {k: v for k, v in r.items() if k not in ("hq", "lq", "lq_stream_width",
                                                    "lq_stream_height", "lq_up_interp",
                                                    "container")}
    row.update(settings_hash=settings, source_clip=source, software=software)
    if r["status"] == "ok":
        row.update(hq_bytes=len(r["hq"]), lq_bytes=len(r["lq"]))
    return row


def _previous(pairs_path: storage.Location, recipe: str, seed: int) -> tuple[dict[str, str], set[str]]:
    """(clip_id -> status of the clips done for this recipe and seed, shard files they use)."""
    if not manifest_files(pairs_path):
        return {}, set()
    rows = [r for r in read_table(pairs_path, PAIRS_SCHEMA)
            .select(["clip_id", "recipe", "seed", "status", "lq_path_or_shard"]).to_pylist()
            if r["recipe"] == recipe and r["seed"] == seed]
    status: dict[str, str] = {}
    for r in rows:   # a clip is ok when any of its rows is: error rows are per clip
        status[r["clip_id"]] = "ok" if "ok" in (r["status"], status.get(r["clip_id"])) else r["status"]
    return status, {r["lq_path_or_shard"] for r in rows if r["lq_path_or_shard"]}


def run_degrade(manifest: str | Path, out: str | Path, recipe: str | Path = "bfvr", seed: int = 0,
                opts=None, device: str = "auto", address: str | None = None,
                num_cpus: int | None = None, workers: int | None = None,
                retry_errors: bool = False, limit: int = 0, shard_mb: float = 256,
                progress: bool = True, verbose: bool = False,
                format: str = "parquet", allow_outside: bool = False,
                sets: list[str] | None = None, part_items: int | None = None,
                split: str | None = None, space_check: bool = True) -> dict[str, Any]:
    """Degrade the kept clips of `manifest` into `out` (folders or URLs) as `format` shards
    (parquet, webdataset); returns the run summary. `split`: only the clips `stc split` put
    there (e.g. test, for evaluation pairs). `space_check`: refuse to start when the pairs
    would not fit the free space (`degrade.space`)."""
    if format not in SHARD_WRITERS:
        raise ConfigError(f"--format must be one of {sorted(SHARD_WRITERS)}, got {format!r}")
    if not (math.isfinite(shard_mb) and shard_mb > 0):
        raise ConfigError(f"--shard-mb must be a size in MB above 0, got {shard_mb}")
    opts = opts or WindowOptions()
    check_config(opts)
    rec = with_sets(load_recipe(recipe), sets, "--set (recipe)")
    expect_folder(manifest, CURATED, "stc degrade")
    mpath, root = resolve_manifest(manifest)
    storage.require_finished(root, "stc degrade")
    if not manifest_files(mpath):
        raise FileNotFoundError(f"curated manifest {mpath} not found; run `stc curate` first "
                                "and give its output folder (or its manifest.parquet)")
    if limit < 0:
        raise ConfigError(f"--limit must be 0 (all) or more, got {limit}")
    clips = read_manifest(mpath, CLIP_SCHEMA)
    kept = clips[clips["status"] == "kept"]
    if split:
        kept = kept[kept["split"] == split]
        if kept.empty:
            raise FileNotFoundError(f"{mpath} has no kept clip in split {split!r}; give the "
                                    "manifest `stc split` wrote (its --out)")
    if limit:
        kept = kept.iloc[:limit]
    if kept.empty:
        raise FileNotFoundError(f"{mpath} has no kept clips ({len(clips)} rows); nothing to degrade")

    out = storage.location(out)
    pairs_path = storage.join(out, PAIRS_MANIFEST)
    settings = settings_of(rec, opts)
    digest = settings_hash(settings)
    done, used_shards = _previous(pairs_path, rec.name, seed)
    paths = ManifestPaths(mpath, root, allow_outside)
    items = []
    for r in kept.itertuples():
        item = {"clip_id": r.clip_id, "source": str(r.clip_path),
                "clip_fps": float(r.clip_fps) if r.clip_fps == r.clip_fps and r.clip_fps else 25.0}
        try:
            item["clip_path"] = str(paths(r.clip_path))
        except OutsideRoot as exc:      # becomes an error row; the file is never opened
            item.update(clip_path=str(r.clip_path), refused=str(exc))
        items.append(item)
    if rec.uses_diffusion and any(it["clip_id"] not in done for it in items):
        for i, step in enumerate(rec.steps):
            if step.kind == "pixel_flicker":
                check_model(step.pixel_flicker.model, f"steps.{i}.pixel_flicker.model")
    run_name = f"{rec.name}-seed{seed}"
    software = software_versions()
    shards = SHARD_WRITERS[format](out, rec.name, seed, max_bytes=int(shard_mb * (1 << 20)))

    def remove_orphans() -> None:
        # Shards a killed run wrote before recording their pairs: never read, made again.
        for pattern in sorted({w.pattern for w in SHARD_WRITERS.values()}):
            for f in storage.glob(shards.dir, pattern):
                if storage.relative(f, out) not in used_shards:
                    storage.remove(f)

    # to_rows and finish_part run in the workers: each has its own copy of `shards` and
    # writes its own shards, packing the clips of a task up to --shard-mb.
    def to_rows(item: dict[str, Any], payload: dict[str, Any]) -> list[dict[str, Any]]:
        rows, extra = [], []
        for r in payload["rows"]:
            mrow = _manifest_row(r, digest, item["source"], software)
            if r["status"] == "ok":
                extra += shards.add(r, extra=mrow)
            else:
                rows.append(mrow)
        return rows + _placed(extra)

    def finish_part() -> list[dict[str, Any]]:
        # At the task's end: its last shard is durable before its rows are.
        return _placed(shards.flush())

    def error_rows(item: dict[str, Any], message: str) -> list[dict[str, Any]]:
        # Keyed like the worker's own error rows, so the pairs of a retry replace it.
        return [{"pair_id": pair_id(rec.name, seed, item["clip_id"], 0), "clip_id": item["clip_id"],
                 "recipe": rec.name, "seed": seed, "window": 0, "status": "error",
                 "reason": "internal_error", "message": f"{item['clip_path']}: {message}",
                 "settings_hash": digest, "source_clip": item["source"], "software": software}]

    pipeline = Pipeline(
        name=f"degrade {rec.name}", unit="clip", out=out, worker=DegradeWorker,
        worker_kwargs={"recipe": settings["recipe"], "seed": seed, "opts": settings["window"],
                       "device": device, "format": format},
        key="clip_id", to_rows=to_rows, error_rows=error_rows, finish_part=finish_part,
        tally=_tally, manifest=pairs_path, schema=PAIRS_SCHEMA, part_items=part_items,
        # The storage format is a setting too (one folder, one format), recorded only when
        # not the default so that folders made before --format existed still resume.
        settings={**settings, "seed": seed, **({"format": format} if format != "parquet" else {})},
        settings_file=storage.join(out, RUNS_DIR, f"{run_name}.yaml"),
        settings_hint=f"use another --out, another --seed, or give the changed recipe another "
                      f"name than {rec.name!r}",
        stats_file=storage.join(out, RUNS_DIR, f"{run_name}.stats.json"),
        num_gpus=1 if rec.uses_diffusion and device != "cpu" and _gpus(address) else 0,
        loading="loading the diffusion model" if rec.uses_diffusion else "starting workers",
        prepare=remove_orphans,
        estimate_bytes=lambda todo: _pairs_bytes(todo, kept, _clip_crf(root), opts,
                                                 lq_kind(rec, format)))
    def run_stats(report) -> dict[str, Any]:
        counts = report.tally
        pairs = read_manifest(pairs_path, PAIRS_SCHEMA) if manifest_files(pairs_path) else None
        mine = pairs[(pairs.recipe == rec.name) & (pairs.seed == seed)] if pairs is not None else None
        n = counts["pairs"]
        return {
            "recipe": rec.name, "seed": seed, "settings_hash": digest,
            "kept_clips": len(kept), "new_pairs": n, "new_error_clips": counts["error_clips"],
            "new_frames": counts["frames"],
            "bytes_per_pair": round((counts["hq_bytes"] + counts["lq_bytes"]) / n) if n else None,
            "lq_bytes_per_pair": round(counts["lq_bytes"] / n) if n else None,
            "total_pairs": int((mine.status == "ok").sum()) if mine is not None else 0,
            "total_error_rows": int((mine.status == "error").sum()) if mine is not None else 0,
            "manifest": str(pairs_path),
        }

    report = run_pipeline(pipeline, items, done, retry_errors=retry_errors,
                          ray=RayOptions(address, num_cpus, verbose), workers=workers,
                          progress=progress, space_check=space_check, extra_stats=run_stats)
    summary = {**report.stats(), **report.extra,
               "processed_clips": report.todo, "skipped_clips": report.skipped,
               "all_failed": report.all_failed or (report.todo > 0 and report.tally["pairs"] == 0)}
    print(f"stc degrade: {summary['new_pairs']} new pairs, {summary['new_error_clips']} new error "
          f"rows; {summary['total_pairs']} pairs of {rec.name} seed {seed} in {pairs_path}",
          file=sys.stderr)
    return summary


def _clip_crf(root: storage.Location) -> float | None:
    """The CRF `stc curate` encoded the clips at (its recorded config), if it says."""
    path = storage.join(root, CURATE_CONFIG)
    try:
        cfg = yaml.safe_load(storage.read_text(path)) if storage.exists(path) else None
        return float(cfg["encode"]["crf"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None


def _pairs_bytes(todo: list[dict[str, Any]], kept, clip_crf: float | None,
                 opts: WindowOptions, lq: str) -> float | None:
    """What the pairs of the clips in `todo` will take (local clips; None otherwise)."""
    if any(storage.is_url(it["clip_path"]) for it in todo):
        return None
    rows = {r.clip_id: r for r in kept.itertuples()}

    def number(v, default: float) -> float:
        return float(v) if v == v and v else default        # NaN / None / 0 -> default

    return sum(clip_pair_bytes(it["clip_path"], int(number(rows[it["clip_id"]].clip_num_frames, 0)),
                               int(number(rows[it["clip_id"]].clip_size, opts.size)),
                               clip_crf, opts, lq) for it in todo)


def _placed(extra: list[tuple[str, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Manifest rows of pairs whose shard exists: (shard path, row in it, row)."""
    return [{**mrow, "lq_path_or_shard": rel, "shard_row": i} for rel, i, mrow in extra]


def _tally(rows: list[dict[str, Any]]) -> dict[str, int]:
    """What a task made, for the run summary (summed by the driver)."""
    ok = [r for r in rows if r["status"] == "ok"]
    return {"pairs": len(ok), "frames": sum(r["num_frames"] for r in ok),
            "hq_bytes": sum(r["hq_bytes"] for r in ok), "lq_bytes": sum(r["lq_bytes"] for r in ok),
            "error_clips": len(rows) - len(ok)}


def _gpus(address: str | None) -> bool:
    import torch

    return torch.cuda.is_available() if address is None else True


# --- CLI ---------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade", help="degrade curated clips into LQ-HQ pairs (shards, or mp4 files to watch)",
        description="Cut the kept clips of a curated manifest into T-frame windows, degrade "
                    "each with a recipe (BFVR, brightness or pixel flicker) and write Parquet "
                    "shards of LQ-HQ pairs plus DIR/pairs.parquet.")
    p.add_argument("manifest", metavar="MANIFEST", nargs="?",
                   help="curated output folder (or its manifest.parquet)")
    p.add_argument("--out", help="output folder (pairs.parquet/, shards/, runs/)")
    p.add_argument("--recipe", default="bfvr",
                   help="built-in recipe (bfvr, bfvr-nonoise, brightness, pixel) or a YAML file")
    add_config_args(p, "recipe")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="run seed, 0 to 2^63-1: same seed, same bytes (default 0)")
    p.add_argument("--window", type=int, default=24, help="T, frames per pair (0 = whole clip; default 24)")
    p.add_argument("--stride", type=int, default=0, help="frames between window starts (default: T)")
    p.add_argument("--max-windows", type=int, default=0, help="pairs per clip at most (default: all)")
    p.add_argument("--size", type=int, default=512, help="HQ and LQ frame size (default 512)")
    p.add_argument("--hq-crf", type=int, default=10, help="libx264 CRF of the stored HQ (0 = -qp 0; default 10)")
    p.add_argument("--device", default="auto",
                   help="device of the pixel-flicker model: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="parallel actors (default: one per CPU, or per GPU for pixel flicker)")
    p.add_argument("--retry-errors", action="store_true", help="process clips with error rows again")
    p.add_argument("--limit", type=non_negative_int, default=0,
                   help="only the first N kept clips (default 0: all)")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="only the kept clips of this split (a manifest from `stc split`)")
    p.add_argument("--shard-mb", type=positive_float, default=256,
                   help="shard size cap in MB, above 0 (default 256)")
    p.add_argument("--part-size", type=positive_int, default=None,
                   help="clips per task: each task packs its pairs into shards and writes one "
                        "manifest part (default: auto, up to 32)")
    p.add_argument("--format", default="parquet", choices=list(SHARD_WRITERS),
                   help="how pairs are stored: parquet shards (default, for training), "
                        "webdataset tar shards (KEY.hq.mp4, KEY.lq.mp4, KEY.json per pair) for "
                        "streaming elsewhere, or mp4: DIR/lq/KEY.mp4 and DIR/gt/KEY.mp4 per pair "
                        "to watch and to score with `stc eval --pred DIR/lq --gt DIR/gt`")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    p.add_argument("--allow-outside", action="store_true",
                   help="read clips the manifest names outside its own folder (refused by "
                        "default: a manifest from elsewhere must not make stc read other files)")
    add_space_check_arg(p)
    add_ray_args(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        opts = WindowOptions(window=args.window, stride=args.stride, max_windows=args.max_windows,
                             size=args.size, hq_crf=args.hq_crf)
    except ValueError as exc:
        raise ConfigError(f"bad window options: {exc}") from None
    if args.print_config:
        rec = with_sets(load_recipe(args.recipe), args.set, "--set (recipe)")
        print_config(settings_of(rec, opts))
        return 0
    if not args.manifest:
        raise ConfigError("stc degrade needs MANIFEST (a curated folder) and --out "
                          "(see stc degrade --help)")
    require(args, "stc degrade", "out")
    summary = run_degrade(args.manifest, args.out, args.recipe, args.seed, opts, device=args.device,
                          address=args.address, num_cpus=args.num_cpus, workers=args.workers,
                          retry_errors=args.retry_errors, limit=args.limit, shard_mb=args.shard_mb,
                          verbose=args.verbose, format=args.format,
                          allow_outside=args.allow_outside, sets=args.set,
                          part_items=args.part_size, split=args.split,
                          space_check=args.space_check)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif summary["total_pairs"]:
        out = args.out.rstrip("/")
        steps = [f"stc stats {args.manifest} --pairs {out} --out {out}/report   (example pairs "
                 "per recipe, parameter histograms)"]
        if args.format == "mp4":
            steps.append(f"stc eval --pred {out}/{PAIRS_LQ_DIR} --gt {out}/{PAIRS_GT_DIR}   "
                         "(the LQ's own scores: the baseline to beat)")
            steps.append(f"stc enhance {out}/{PAIRS_LQ_DIR} -o PRED --checkpoint RUN2 --aligned "
                         f"&& stc eval --pred PRED --gt {out}/{PAIRS_GT_DIR}")
        else:
            steps.append(f"stc train stage2 --curriculum FILE.yaml ...   (a curriculum step "
                         f"with `pairs: {out}` trains on these pairs)")
        print_next(steps)
    return 1 if summary["all_failed"] else 0
