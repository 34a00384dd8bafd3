"""`stc degrade`: curated clips -> paired LQ-HQ shards, with Ray Data.

    stc degrade CURATED_DIR --out DIR --recipe bfvr --seed 0 [--window 24] [--size 512]

reads the `status == kept` rows of `CURATED_DIR/manifest.parquet`, cuts each clip into
T-frame windows, degrades every window with the recipe (`degrade/recipes/*.yaml` by
name, or a YAML file) and writes

* `DIR/shards/RECIPE-seedSEED/shard-NNNNNN.parquet`: the pairs (see `degrade.shards`),
* `DIR/pairs.parquet/`: the pairs manifest (`manifests.pairs.PAIRS_SCHEMA`), one row per
  pair and one error row per clip that gave none,
* `DIR/runs/RECIPE-seedSEED.yaml` (the resolved recipe and window options) and
  `DIR/runs/RECIPE-seedSEED.stats.json` (the last run's summary).

Several recipes and seeds can share one DIR. Actors return whole clips to the driver,
which writes shards as they fill and records a pair in the manifest only once its shard
exists: an interrupted run keeps every shard written, and a rerun skips the clips that
already have rows for this recipe and seed (error rows too, unless --retry-errors). Pairs
of a shard written just before a crash but not yet in the manifest are never read (the
loader reads only what the manifest lists) and are made again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from stc.core.config import ConfigError, from_dict, to_dict
from stc.core.runtime import add_ray_args, init_ray, map_with_actors
from stc.degrade.recipe import Recipe, load_recipe
from stc.degrade.shards import ShardWriter
from stc.degrade.windows import WindowOptions, degrade_clip, software_versions
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import (
    ManifestWriter,
    atomic_path,
    locate_manifest,
    manifest_files,
    read_manifest,
    read_table,
)
from stc.manifests.pairs import PAIRS_SCHEMA

MANIFEST_NAME = "pairs.parquet"


def resolve_manifest(path: str | Path) -> tuple[Path, Path]:
    """(manifest path, folder clip paths are relative to) for `DIR` or `DIR/manifest.parquet`."""

    p = locate_manifest(path)
    return p, p.parent


class DegradeWorker:
    """Ray Data actor: degrades whole clips; returns a clip's rows pickled in one row
    (they carry megabytes of bytes, which JSON would inflate)."""

    def __init__(self, recipe: dict[str, Any], seed: int, opts: dict[str, Any], device: str):
        self.recipe = from_dict(Recipe, recipe)
        self.opts = from_dict(WindowOptions, opts)
        self.seed, self.device = seed, device

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        rows = degrade_clip(item, Path(item["clip_path"]), self.recipe, self.seed, self.opts,
                            self.device)
        return {"clip_id": item["clip_id"], "result": pickle.dumps(rows)}


def settings_of(recipe, opts) -> dict[str, Any]:
    return {"recipe": to_dict(recipe), "window": to_dict(opts)}


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _manifest_row(r: dict[str, Any], settings: str, source: str, software: str) -> dict[str, Any]:
    row = {k: v for k, v in r.items() if k not in ("hq", "lq", "lq_stream_width",
                                                    "lq_stream_height", "lq_up_interp")}
    row.update(settings_hash=settings, source_clip=source, software=software)
    if r["status"] == "ok":
        row.update(hq_bytes=len(r["hq"]), lq_bytes=len(r["lq"]))
    return row


def _previous(pairs_path: Path, recipe: str, seed: int, current: str) -> dict[str, str]:
    """clip_id -> status of the clips already done for this recipe and seed; refuses a
    folder where they were made with other settings (the shards would mix them)."""

    if not manifest_files(pairs_path):
        return {}
    rows = [r for r in read_table(pairs_path, PAIRS_SCHEMA)
            .select(["clip_id", "recipe", "seed", "status", "settings_hash"]).to_pylist()
            if r["recipe"] == recipe and r["seed"] == seed]
    other = {r["settings_hash"] for r in rows} - {current}
    if other:
        raise ConfigError(
            f"{pairs_path} already holds recipe {recipe!r} seed {seed} made with other settings "
            f"(hash {sorted(other)}, now {current}; see {pairs_path.parent}/runs/): use another "
            "--out, another --seed, or give the changed recipe another name")
    status: dict[str, str] = {}
    for r in rows:   # a clip is ok when any of its rows is: error rows are per clip
        status[r["clip_id"]] = "ok" if "ok" in (r["status"], status.get(r["clip_id"])) else r["status"]
    return status


def run_degrade(manifest: str | Path, out: str | Path, recipe: str | Path = "bfvr", seed: int = 0,
                opts=None, device: str = "auto", address: str | None = None,
                num_cpus: int | None = None, workers: int | None = None,
                retry_errors: bool = False, limit: int = 0, shard_mb: float = 256,
                progress: bool = True) -> dict[str, Any]:
    """Degrade the kept clips of `manifest` into `out`; returns the run summary."""
    import yaml
    from tqdm import tqdm

    opts = opts or WindowOptions()
    rec = load_recipe(recipe)
    mpath, root = resolve_manifest(manifest)
    if not manifest_files(mpath):
        raise FileNotFoundError(f"curated manifest {mpath} not found; run `stc curate` first "
                                "and give its output folder (or its manifest.parquet)")
    clips = read_manifest(mpath, CLIP_SCHEMA)
    kept = clips[clips["status"] == "kept"]
    if limit:
        kept = kept.iloc[:limit]
    if kept.empty:
        raise FileNotFoundError(f"{mpath} has no kept clips ({len(clips)} rows); nothing to degrade")

    out = Path(out)
    pairs_path = out / MANIFEST_NAME
    settings = settings_of(rec, opts)
    digest = settings_hash(settings)
    done = _previous(pairs_path, rec.name, seed, digest)
    todo = [{"clip_id": r.clip_id, "clip_path": str(root / r.clip_path), "source": str(r.clip_path),
             "clip_fps": float(r.clip_fps) if r.clip_fps == r.clip_fps and r.clip_fps else 25.0}
            for r in kept.itertuples()
            if r.clip_id not in done or (retry_errors and done[r.clip_id] == "error")]
    if rec.uses_diffusion and todo:
        from stc.degrade.pixel_flicker import check_model

        for step in rec.steps:
            if step.kind == "pixel_flicker":
                check_model(step.pixel_flicker.model)
    run_name = f"{rec.name}-seed{seed}"
    with atomic_path(out / "runs" / f"{run_name}.yaml") as tmp:
        tmp.write_text(yaml.safe_dump({**settings, "seed": seed}, sort_keys=False))
    print(f"stc degrade: {rec.name} seed {seed}: {len(kept)} kept clips, {len(kept) - len(todo)} "
          f"already in {pairs_path}, {len(todo)} to process", file=sys.stderr)

    counts: Counter = Counter()
    t0 = time.perf_counter()
    if todo:
        import ray

        init_ray(address, num_cpus)
        gpus = int(ray.cluster_resources().get("GPU", 0)) if rec.uses_diffusion and device != "cpu" else 0
        results = map_with_actors(
            todo, DegradeWorker,
            {"recipe": settings["recipe"], "seed": seed, "opts": settings["window"], "device": device},
            workers or gpus or None, num_cpus=1, num_gpus=1 if gpus else 0)
        software = software_versions()
        source = {t["clip_id"]: t["source"] for t in todo}
        shards = ShardWriter(out, rec.name, seed, max_bytes=int(shard_mb * (1 << 20)))

        def record(writer: ManifestWriter, written) -> None:
            for rel, i, row in written:
                writer.add({**row, "lq_path_or_shard": rel, "shard_row": i})
            if written:
                writer.flush()

        bar = tqdm(total=len(todo), unit="clip", desc=f"degrade {rec.name}", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        with ManifestWriter(pairs_path, PAIRS_SCHEMA) as writer:
            try:
                for result in results:
                    for r in pickle.loads(result["result"]):
                        mrow = _manifest_row(r, digest, source[r["clip_id"]], software)
                        if r["status"] == "ok":
                            counts["pairs"] += 1
                            counts["frames"] += r["num_frames"]
                            counts["hq_bytes"] += len(r["hq"])
                            counts["lq_bytes"] += len(r["lq"])
                            record(writer, shards.add(r, extra=mrow))
                        else:
                            counts["error_clips"] += 1
                            writer.add(mrow)
                    counts["clips"] += 1
                    bar.update(1)
                    bar.set_postfix(pairs=counts["pairs"], errors=counts["error_clips"], refresh=False)
            except Exception as exc:
                raise RuntimeError(
                    f"the Ray pipeline stopped ({type(exc).__name__}: {exc}); finished shards are "
                    f"recorded in {pairs_path}: rerun the same command to resume") from exc
            finally:
                bar.close()
                record(writer, shards.flush())

    pairs = read_manifest(pairs_path, PAIRS_SCHEMA) if manifest_files(pairs_path) else None
    mine = pairs[(pairs.recipe == rec.name) & (pairs.seed == seed)] if pairs is not None else None
    summary = {
        "recipe": rec.name, "seed": seed, "settings_hash": digest,
        "kept_clips": len(kept), "processed_clips": len(todo), "skipped_clips": len(kept) - len(todo),
        "new_pairs": counts["pairs"], "new_error_clips": counts["error_clips"],
        "new_frames": counts["frames"],
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "bytes_per_pair": round((counts["hq_bytes"] + counts["lq_bytes"]) / counts["pairs"])
        if counts["pairs"] else None,
        "lq_bytes_per_pair": round(counts["lq_bytes"] / counts["pairs"]) if counts["pairs"] else None,
        "total_pairs": int((mine.status == "ok").sum()) if mine is not None else 0,
        "total_error_rows": int((mine.status == "error").sum()) if mine is not None else 0,
        "manifest": str(pairs_path),
    }
    if todo:
        with atomic_path(out / "runs" / f"{run_name}.stats.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    print(f"stc degrade: {summary['new_pairs']} new pairs, {summary['new_error_clips']} new error "
          f"rows; {summary['total_pairs']} pairs of {rec.name} seed {seed} in {pairs_path}",
          file=sys.stderr)
    return summary


# --- CLI ---------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade", help="degrade curated clips into paired LQ-HQ shards",
        description="Cut the kept clips of a curated manifest into T-frame windows, degrade "
                    "each with a recipe (BFVR, brightness or pixel flicker) and write Parquet "
                    "shards of LQ-HQ pairs plus DIR/pairs.parquet.")
    p.add_argument("manifest", metavar="MANIFEST",
                   help="curated output folder (or its manifest.parquet)")
    p.add_argument("--out", required=True, help="output folder (pairs.parquet/, shards/, runs/)")
    p.add_argument("--recipe", default="bfvr",
                   help="built-in recipe (bfvr, bfvr-nonoise, brightness, pixel) or a YAML file")
    p.add_argument("--seed", type=int, default=0, help="run seed: same seed, same bytes (default 0)")
    p.add_argument("--window", type=int, default=24, help="T, frames per pair (0 = whole clip; default 24)")
    p.add_argument("--stride", type=int, default=0, help="frames between window starts (default: T)")
    p.add_argument("--max-windows", type=int, default=0, help="pairs per clip at most (default: all)")
    p.add_argument("--size", type=int, default=512, help="HQ and LQ frame size (default 512)")
    p.add_argument("--hq-crf", type=int, default=10, help="libx264 CRF of the stored HQ (0 = -qp 0; default 10)")
    p.add_argument("--device", default="auto",
                   help="device of the pixel-flicker model: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel actors (default: one per CPU, or per GPU for pixel flicker)")
    p.add_argument("--retry-errors", action="store_true", help="process clips with error rows again")
    p.add_argument("--limit", type=int, default=0, help="only the first N kept clips (default: all)")
    p.add_argument("--shard-mb", type=float, default=256, help="shard size cap in MB (default 256)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    add_ray_args(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        opts = WindowOptions(window=args.window, stride=args.stride, max_windows=args.max_windows,
                             size=args.size, hq_crf=args.hq_crf)
    except ValueError as exc:
        raise ConfigError(f"bad window options: {exc}") from None
    summary = run_degrade(args.manifest, args.out, args.recipe, args.seed, opts, device=args.device,
                          address=args.address, num_cpus=args.num_cpus, workers=args.workers,
                          retry_errors=args.retry_errors, limit=args.limit, shard_mb=args.shard_mb)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0
