"""`stc eval`: restored videos vs ground truth -> per-video metrics table + Parquet.

Pred and GT are folders (paired by file stem) or single files. Each pair becomes one row
of model.metrics.EVAL_SCHEMA (status ok or error, never a crash); the table is printed
with a mean row over the ok rows, and written atomically to --out as one Parquet file,
with run-level results (means, FVD, config) beside it in OUT.summary.json. With
--workers > 1 and several pairs, pairs are spread over Ray actors (each loads the models
once); otherwise everything runs in this process.

Runtime per clip comes from `PRED/enhance_stats.json` when present (written by the
enhancement step): `{"seconds_per_clip": s}` for all videos and/or
`{"videos": {"STEM": {"seconds_per_clip": s}}}` per video, seconds per 24-frame clip.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from stc.core.config import ConfigError, from_dict, load_config, to_dict, with_sets
from stc.core.fs import atomic_path
from stc.core.names import ENHANCE_STATS, PAIRS_GT_DIR, PAIRS_LQ_DIR
from stc.core.runtime import RayOptions
from stc.manifests.io import write_table
from stc.pipelines.driver import Pipeline, run_pipeline
from stc.pipelines.inputs import VIDEO_EXTENSIONS
from stc.pipelines.folders import PAIRS, folder_kind
from stc.pipelines.options import add_config_args, add_ray_args, print_config, require

# The paper's metrics (Sec. 4.1) first, then stc's extra variants (model.metrics.schema).
TABLE_COLUMNS = (("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("lpips", "LPIPS", "{:.4f}"),
                 ("akd", "AKD", "{:.3f}"), ("ids", "IDS", "{:.4f}"), ("face_cons", "FaceCons", "{:.4f}"),
                 ("flow_score", "FlowScore", "{:.3f}"), ("seconds_per_clip", "s/clip", "{:.3f}"),
                 ("psnr_y", "PSNR-Y", "{:.2f}"), ("ssim_y", "SSIM-Y", "{:.4f}"),
                 ("face_cons_mean", "FConsMean", "{:.4f}"), ("flow_epe", "FlowEPE", "{:.3f}"))


# --- pairing -----------------------------------------------------------------------
def _videos(folder: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS and not f.name.startswith("."):
            out.setdefault(f.stem, []).append(f)
    return out


def pair_inputs(pred: str | Path, gt: str | Path) -> list[dict[str, Any]]:
    """One item {video, pred_path, gt_path[, reason, message]} per stem found on either side.

    Folders are paired by file stem (top level, video extensions); a single file on one
    side is paired with the same stem on the other. Stems present on one side only, or
    twice on a side (a.mp4 and a.mkv), become items carrying the error to report.
    """
    pred, gt = Path(pred), Path(gt)
    for p, what in ((pred, "--pred"), (gt, "--gt")):
        if not p.exists():
            raise FileNotFoundError(f"{what} {p} does not exist; give a video file or a folder of videos")
    preds = _videos(pred) if pred.is_dir() else {pred.stem: [pred]}
    gts = _videos(gt) if gt.is_dir() else {gt.stem: [gt]}
    if pred.is_file() and gt.is_file():
        # Two files are compared whatever their names.
        preds = {gt.stem: [pred]}
    elif pred.is_file():
        gts = {k: v for k, v in gts.items() if k == pred.stem}
    elif gt.is_file():
        preds = {k: v for k, v in preds.items() if k == gt.stem}
    items = []
    for key in sorted(set(preds) | set(gts)):
        ps, gs = preds.get(key, []), gts.get(key, [])
        item = {"video": key, "pred_path": str(ps[0]) if ps else None, "gt_path": str(gs[0]) if gs else None}
        dup = ps if len(ps) > 1 else gs if len(gs) > 1 else None
        if dup:
            item.update(reason="ambiguous", message=f"several videos share the stem {key!r}: "
                        f"{[str(d) for d in dup]}; keep one")
        elif not ps:
            item.update(reason="missing_pred", message=f"no prediction for {gs[0]} in {pred}: expected "
                        f"{key}.* there; run the enhancement on it or remove it from the GT")
        elif not gs:
            item.update(reason="missing_gt", message=f"{ps[0]} has no GT with the stem {key!r} in {gt}; "
                        "add it or remove the pred")
        items.append(item)
    return items


def read_sidecar(pred: str | Path) -> tuple[float | None, dict[str, float]]:
    """(seconds_per_clip for all videos, per-stem overrides) from PRED/enhance_stats.json."""
    pred = Path(pred)
    path = (pred if pred.is_dir() else pred.parent) / ENHANCE_STATS
    if not path.is_file():
        return None, {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        print(f"stc eval: warning: {path} is not readable JSON ({exc}); runtime left empty", file=sys.stderr)
        return None, {}
    overall = data.get("seconds_per_clip")
    per = {k: float(v["seconds_per_clip"]) for k, v in (data.get("videos") or {}).items()
           if isinstance(v, dict) and v.get("seconds_per_clip") is not None}
    return (float(overall) if overall is not None else None), per


# --- workers -----------------------------------------------------------------------
class EvalWorker:
    """Ray Data actor (and the in-process worker): loads the metric models once."""

    def __init__(self, config: dict[str, Any]):
        from stc.model.metrics import EvalConfig, VideoEvaluator

        self.evaluator = VideoEvaluator(from_dict(EvalConfig, config))

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        row, info = self.evaluator(item["video"], item["pred_path"], item["gt_path"],
                                   item.get("seconds_per_clip"))
        return {"rows": [{**row, "_info": info}]}


def _error_row(item: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    from stc.model.metrics.video import error_row

    row = error_row(item["video"], item["pred_path"], item["gt_path"], reason, message)
    return {**row, "_info": {"seconds": 0.0, "fvd": None}}


def check_weights(cfg) -> None:
    """Load every user-given weight file once here, so a wrong path or format stops the run
    with one clear message before any worker starts."""
    if cfg.lpips:
        from stc.model.metrics.lpips import load_lpips

        load_lpips(cfg.lpips, cfg.lpips_backbone)
    if cfg.fvd:
        from stc.model.metrics.fvd import I3DFeatures

        I3DFeatures(cfg.fvd)
    if cfg.raft:
        from stc.model.metrics.flow import TorchScriptFlow

        TorchScriptFlow(cfg.raft)


# --- driver ------------------------------------------------------------------------
def evaluate_dirs(pred: str | Path, gt: str | Path, cfg=None, out: str | Path | None = None,
                  workers: int = 1, address: str | None = None, num_cpus: int | None = None,
                  progress: bool = True, verbose: bool = False
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Evaluate every pair of `pred` and `gt` (folders or files).

    Returns (rows sorted by video, summary). With `out`, writes the rows to that Parquet
    file (EVAL_SCHEMA) and the summary to OUT.summary.json, both atomically.
    """
    from stc.model.metrics import EvalConfig
    from stc.model.metrics.fvd import frechet_distance

    cfg = cfg or EvalConfig()
    if out is not None and Path(out).suffix != ".parquet":
        raise FileNotFoundError(f"--out {out} must be a .parquet file name")
    t0 = time.perf_counter()
    items = pair_inputs(pred, gt)
    if not items:
        raise FileNotFoundError(f"no videos found in {pred} or {gt}")
    overall, per = read_sidecar(pred)
    for it in items:
        it["seconds_per_clip"] = per.get(it["video"], overall)

    todo = [it for it in items if not it.get("reason")]
    results = [_error_row(it, it["reason"], it["message"]) for it in items if it.get("reason")]
    parallel = bool(todo) and workers > 1 and len(todo) > 1
    if parallel:
        check_weights(cfg)
    pipeline = Pipeline(
        name="eval", unit="video", out=Path(out).parent if out else None, worker=EvalWorker,
        worker_kwargs={"config": to_dict(cfg)}, key="video",
        to_rows=lambda item, payload: payload["rows"],
        error_rows=lambda item, msg: [_error_row(item, "internal_error", msg)],
        in_process=not parallel, loading="loading the metric models")
    report = run_pipeline(pipeline, todo, {}, ray=RayOptions(address, num_cpus, verbose),
                          workers=workers, progress=progress, log=lambda m: None)
    results += report.collected

    rows, fvd, seconds = [], {"pred": [], "gt": []}, {}
    for r in results:
        info = r.pop("_info")
        row = r
        rows.append(row)
        seconds[row["video"]] = info["seconds"]
        if info["fvd"]:
            for side in fvd:
                fvd[side] += info["fvd"][side]
    rows.sort(key=lambda r: r["video"])
    summary = summarise(rows)
    summary["eval_seconds"] = dict(sorted(seconds.items()))
    summary["fvd"] = None
    summary["fvd_clips"] = len(fvd["gt"])
    if cfg.fvd:
        if len(fvd["gt"]) >= 2:
            import numpy as np

            summary["fvd"] = frechet_distance(np.array(fvd["pred"]), np.array(fvd["gt"]))
        else:
            summary["fvd_note"] = (f"FVD needs >= 2 clips of {cfg.fvd_clip_frames} frames over all "
                                   f"videos, got {len(fvd['gt'])}")
    summary.update(wall_seconds=round(time.perf_counter() - t0, 3), config=to_dict(cfg),
                   pred=str(pred), gt=str(gt))
    if out:
        write_results(rows, summary, out)
    return rows, summary


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from stc.model.metrics import METRICS

    ok = [r for r in rows if r["status"] == "ok"]
    mean = {}
    for m in METRICS:
        vals = [r[m] for r in ok if r.get(m) is not None and math.isfinite(r[m])]
        mean[m] = sum(vals) / len(vals) if vals else None
    return {"videos": len(rows), "ok": len(ok), "errors": len(rows) - len(ok), "mean": mean}


def write_results(rows: list[dict[str, Any]], summary: dict[str, Any], out: str | Path) -> None:
    from stc.model.metrics import EVAL_SCHEMA

    out = Path(out)
    write_table(EVAL_SCHEMA.table(rows), out)
    with atomic_path(out.with_suffix(".summary.json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


def format_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    used = [c for c in TABLE_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    width = max([5] + [len(r["video"]) for r in rows])
    head = f"{'video':<{width}}  {'status':<6} {'frames':>6}" + "".join(f" {t:>9}" for _, t, _ in used)
    lines = [head, "-" * len(head)]

    def cells(values: dict[str, Any]) -> str:
        return "".join(f" {(f.format(values[k]) if values.get(k) is not None else '-'):>9}" for k, _, f in used)

    for r in rows:
        lines.append(f"{r['video']:<{width}}  {r['status']:<6} {r.get('frames') or '-':>6}" + cells(r))
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{width}}  {summary['ok']:>2} ok  {'':>6}" + cells(summary["mean"]))
    if summary.get("fvd") is not None:
        lines.append(f"FVD over {summary['fvd_clips']} clips: {summary['fvd']:.3f}")
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"error: {r['video']}: {r['reason']}: {r['message']}")
        elif r.get("message"):
            lines.append(f"warning: {r['video']}: {r['message']}")
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="score restored videos against ground truth (PSNR, SSIM, AKD, IDS, ...)",
        description="Pair pred and GT videos by file stem and compute PSNR, SSIM, AKD, IDS, "
                    "Face-Cons and a flow score per video (LPIPS, FVD, RAFT from local weights).")
    p.add_argument("--pred", help="restored video or folder of videos")
    p.add_argument("--gt", help="ground-truth video or folder (same file stems)")
    p.add_argument("--out", default=None, help="write the rows to this .parquet file (+ .summary.json)")
    p.add_argument("--config", default=None, help="YAML file of EvalConfig fields; flags override it")
    add_config_args(p, "eval config")
    p.add_argument("--lpips", default=None, help="LPIPS weights: lpips state dict or v0.1 linear layers")
    p.add_argument("--lpips-backbone", default=None,
                   help="torchvision alexnet/vgg16 weights, when --lpips holds only the linear layers")
    p.add_argument("--fvd", default=None, help="I3D TorchScript file (e.g. i3d_torchscript.pt) for FVD")
    p.add_argument("--raft", default=None, help="RAFT TorchScript file for the flow score (default: OpenCV DIS)")
    p.add_argument("--color", choices=("y", "rgb"), default=None,
                   help="PSNR/SSIM planes (default rgb; luma is always also in psnr_y/ssim_y)")
    p.add_argument("--face-stride", type=int, default=None,
                   help="face metrics on every k-th frame (1 = all; 0 turns them off; default: "
                        "sampled as curation does, ~2 per second plus the first and last)")
    p.add_argument("--workers", type=int, default=1, help="parallel Ray actors (default 1: in-process)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    add_ray_args(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from stc.model.metrics import EvalConfig

    cfg = to_dict(load_config(EvalConfig, args.config))
    for name in ("lpips", "lpips_backbone", "fvd", "raft", "color", "face_stride"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    cfg = with_sets(from_dict(EvalConfig, cfg, source="stc eval"), args.set)
    if args.print_config:
        print_config(to_dict(cfg))
        return 0
    require(args, "stc eval", "pred", "gt")
    for side in ("pred", "gt"):
        kind = folder_kind(getattr(args, side))
        if kind == PAIRS and (Path(getattr(args, side)) / PAIRS_GT_DIR).is_dir():
            raise ConfigError(f"--{side} {getattr(args, side)} is a pairs folder; give its "
                              f"videos: --pred {Path(getattr(args, side)) / PAIRS_LQ_DIR} (or your "
                              f"restored ones) --gt {Path(getattr(args, side)) / PAIRS_GT_DIR}")
    if cfg.lpips_backbone and not cfg.lpips:
        raise ConfigError("--lpips-backbone needs --lpips (the linear layers)")
    rows, summary = evaluate_dirs(args.pred, args.gt, cfg, args.out, args.workers, args.address,
                                  args.num_cpus, progress=not args.json, verbose=args.verbose)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(rows, summary))
        if args.out:
            print(f"wrote {args.out} and {Path(args.out).with_suffix('.summary.json')}", file=sys.stderr)
    return 0 if summary["ok"] else 1
