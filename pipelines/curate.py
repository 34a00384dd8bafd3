"""`stc curate`: raw videos -> cropped, filtered, scored clips and a Parquet manifest.

Ray Data fans the inputs out to a pool of actors (each loads dlib and PP-OCR once); the
driver writes every finished row to `OUT/manifest.parquet/` as results arrive, so an
interrupted run keeps its work and a rerun skips it. Per-step counts and times go to
`OUT/run_stats.json`, not into the manifest, so the manifest of a rerun is identical.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from stc.core.config import from_dict, to_dict
from stc.core.runtime import add_ray_args, init_ray, map_with_actors
from stc.curation.clip import ClipCurator, clip_id_for
from stc.curation.config import CurateConfig
from stc.manifests.clips import CLIP_SCHEMA, CURATE_CONFIG_NAME, FUNNEL, funnel_counts
from stc.manifests.io import ManifestWriter, atomic_path, finished_keys, read_manifest

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts"}
MANIFEST_NAME = "manifest.parquet"
STATS_NAME = "run_stats.json"


# --- inputs ------------------------------------------------------------------------
def gather_inputs(inputs: Iterable[str]) -> list[tuple[str, str]]:
    """(path, source) for every video named by the inputs, in a stable order.

    An input is a folder (searched recursively for video extensions), a glob, a .txt
    list (one path per line, '#' comments), a .parquet list (column `path` or
    `source_path`, optional `source`), or a file. `source` is the folder or list the
    video came from, for per-source statistics. Files are kept whatever their
    extension when named directly: a broken one becomes an error row, not a silent skip.
    """
    found: dict[str, str] = {}

    def add(path: Path, source: str) -> None:
        key = str(path.expanduser().resolve())
        found.setdefault(key, source)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS:
                    add(f, p.resolve().name)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    q = Path(line)
                    add(q if q.is_absolute() else p.parent / q, p.stem)
        elif p.suffix == ".parquet" and p.exists():
            import pandas as pd

            df = pd.read_parquet(p)
            col = "path" if "path" in df.columns else "source_path" if "source_path" in df.columns else None
            if col is None:
                raise FileNotFoundError(f"{p}: an input list needs a 'path' or 'source_path' column")
            sources = df["source"] if "source" in df.columns else [p.stem] * len(df)
            for path, source in zip(df[col], sources):
                add(Path(path), str(source))
        elif p.exists():
            add(p, p.resolve().parent.name)
        elif any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            for m in matches:
                if Path(m).is_file():
                    add(Path(m), Path(m).resolve().parent.name)
        else:
            # A missing path still gets its error row: the user asked for it.
            add(p, p.parent.name)
    return sorted(found.items())


# --- Ray worker --------------------------------------------------------------------
class CurateWorker:
    """Ray Data actor: loads the models once, curates one input per row."""

    def __init__(self, config: dict[str, Any], out_dir: str):
        self.curator = ClipCurator(from_dict(CurateConfig, config), out_dir)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        row, timings = self.curator(item["source_path"], item["clip_id"], item["source"])
        # JSON strings keep Ray from inferring Arrow types from a block of nulls.
        return {"row": json.dumps(row), "timings": json.dumps(timings)}


# --- driver ------------------------------------------------------------------------
def _check_config(out: Path, cfg, allow_change: bool) -> None:
    import yaml

    path = out / CURATE_CONFIG_NAME
    current = to_dict(cfg)
    if path.exists():
        previous = yaml.safe_load(path.read_text())
        if previous != current and not allow_change:
            raise FileNotFoundError(
                f"{out} was curated with a different config ({path}); rows made under both "
                "would mix thresholds. Use a new --out, or --allow-config-change to continue anyway"
            )

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(current, sort_keys=False))


def run_curate(inputs: list[str], out: str | Path, config: str | None = None,
               address: str | None = None, num_cpus: int | None = None,
               workers: int | None = None, retry_errors: bool = False,
               allow_config_change: bool = False, progress: bool = True) -> dict[str, Any]:
    """Curate `inputs` into `out`; returns the run summary (also written to run_stats.json)."""
    from tqdm import tqdm

    out = Path(out)
    cfg = CurateConfig.load(config)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, cfg, allow_config_change)
    manifest_path = out / MANIFEST_NAME

    items = [{"source_path": p, "source": s, "clip_id": clip_id_for(p)} for p, s in gather_inputs(inputs)]
    if not items:
        raise FileNotFoundError(f"no videos found in {inputs}; give folders, globs, .txt or .parquet lists")
    done = finished_keys(manifest_path, CLIP_SCHEMA)
    todo = [it for it in items if it["clip_id"] not in done
            or (retry_errors and done[it["clip_id"]] == "error")]
    skipped = len(items) - len(todo)
    print(f"stc curate: {len(items)} inputs, {skipped} already in {manifest_path}, "
          f"{len(todo)} to process", file=sys.stderr)

    step_time: dict[str, float] = defaultdict(float)
    step_count: Counter = Counter()
    statuses: Counter = Counter()
    t0 = time.perf_counter()
    if todo:
        init_ray(address, num_cpus)
        results = map_with_actors(todo, CurateWorker, {"config": to_dict(cfg), "out_dir": str(out)},
                                  workers)
        bar = tqdm(total=len(todo), unit="video", desc="curate", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        with ManifestWriter(manifest_path, CLIP_SCHEMA) as writer:
            try:
                for result in results:
                    row = json.loads(result["row"])
                    writer.add(row)
                    statuses[row["status"]] += 1
                    for step, seconds in json.loads(result["timings"]).items():
                        step_time[step] += seconds
                        step_count[step] += 1
                    bar.update(1)
                    bar.set_postfix(statuses, refresh=False)
            except Exception as exc:
                bar.close()
                writer.flush()
                raise RuntimeError(
                    f"the Ray pipeline stopped ({type(exc).__name__}: {exc}); the {writer.rows_written} "
                    f"rows finished are saved in {manifest_path}: rerun the same command to resume"
                ) from exc
        bar.close()

    manifest = read_manifest(manifest_path, CLIP_SCHEMA)
    funnel = funnel_counts(list(manifest["reason"]))
    summary = {
        "inputs": len(items),
        "processed": len(todo),
        "skipped_finished": skipped,
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "this_run_status": dict(statuses),
        "status": manifest["status"].value_counts().to_dict(),
        "reasons": manifest["reason"].value_counts().to_dict(),
        "funnel": funnel,
        "steps": {s: {"clips": step_count[s], "seconds": round(step_time[s], 3),
                      "seconds_per_clip": round(step_time[s] / step_count[s], 4)}
                  for s in step_count},
        "input_frames": int(manifest["num_frames"].fillna(0).sum()),
        "manifest": str(manifest_path),
    }
    if todo:
        with atomic_path(out / STATS_NAME) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    if progress:
        print(format_funnel(funnel, FUNNEL), file=sys.stderr)
    return summary


def format_funnel(funnel: dict[str, int], order: Iterable[str]) -> str:
    order = list(order)
    total = funnel[order[0]] or 1
    lines = ["", f"{'stage':<10} {'clips':>7} {'kept %':>7} {'dropped':>8}"]
    prev = None
    for stage in order:
        n = funnel[stage]
        dropped = "" if prev is None else str(prev - n)
        lines.append(f"{stage:<10} {n:>7} {100 * n / total:>6.1f}% {dropped:>8}")
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
    p.add_argument("--workers", type=int, default=None, help="parallel curation actors (default: CPUs)")
    p.add_argument("--retry-errors", action="store_true", help="process error rows again")
    p.add_argument("--allow-config-change", action="store_true",
                   help="continue an output folder made with another config")
    p.add_argument("--print-config", action="store_true", help="print the full config and exit")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    add_ray_args(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(CurateConfig.load(args.config)), sort_keys=False))
        return 0
    if not args.inputs or not args.out:
        print("stc curate: error: give INPUT... and --out DIR", file=sys.stderr)
        return 2
    summary = run_curate(args.inputs, args.out, args.config, args.address, args.num_cpus,
                         args.workers, args.retry_errors, args.allow_config_change)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0
