"""Curation accuracy against labels: runs `stc curate` on labelled videos and compares
each decision with the label.

    .venv/bin/python benchmarks/curate_accuracy.py ../shared/data/labels.csv \\
        [--videos DIR] [--no-hard-cases] [--detector-only] [--save benchmarks/results]

LABELS.csv has the columns file, expected (kept / rejected / either) and why, and may
have reason: the reason code a rejection must carry (text, side_face, ...). Files are
found relative to --videos, else the CSV's folder, else its videos/ subfolder.

Unless --no-hard-cases, the hard cases of tests/hard_cases.py are built from the
labelled videos first (text drawn onto real frames, mirrored and rotated profile views)
and labelled with their expected reason. --detector-only also curates everything with
`text.recognize: false` (the detector-and-shape rule stc used before the recogniser), to
show what the recogniser changes. The text stage itself is then timed in-process on the
frames it analysed, with and without the recogniser, alternating runs so that load from
other processes hits both alike.

Prints the confusion table per reason and the disagreements on stderr, and one JSON
object on stdout; --save DIR also writes DIR/curate_accuracy.{txt,json} and the review
page of `stc stats` on the run (DIR/review_page.png).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stc.core.config import to_dict  # noqa: E402
from stc.core.video import decode_sampled  # noqa: E402
from stc.curation import text as text_mod  # noqa: E402
from stc.curation.config import CurateConfig  # noqa: E402
from stc.curation.faces import downscale  # noqa: E402
from stc.manifests.clips import CLIP_SCHEMA, REASONS  # noqa: E402
from stc.manifests.io import read_manifest  # noqa: E402

from tests import hard_cases  # noqa: E402

EXPECTED = ("kept", "rejected", "either")
ERROR_REASONS = {r for r, (status, _) in REASONS.items() if status == "error"}


class LabelError(ValueError):
    """The labels file is malformed: the message names the file and the line."""


@dataclasses.dataclass
class Label:
    file: str
    path: Path
    expected: str               # kept / rejected / either
    reason: str                 # expected reason code; "" when only the status is labelled
    why: str
    origin: str                 # the labels file it came from, or "hard_cases"


def read_labels(csv_path: Path, videos: Path | None = None, origin: str | None = None) -> list[Label]:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelError(f"{csv_path}: labels file not found")
    dirs = [videos] if videos else [csv_path.parent, csv_path.parent / "videos"]
    labels = []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "expected"} - set(reader.fieldnames or [])
        if missing:
            raise LabelError(f"{csv_path}: missing column(s) {sorted(missing)}; need file, expected, why")
        for line, rec in enumerate(reader, start=2):
            expected = (rec.get("expected") or "").strip()
            if expected not in EXPECTED:
                raise LabelError(f"{csv_path}:{line}: expected {expected!r} is not one of {EXPECTED}")
            reason = (rec.get("reason") or "").strip()
            if reason == "kept":
                reason = ""
            found = [d / rec["file"] for d in dirs if (d / rec["file"]).is_file()]
            if not found:
                raise LabelError(f"{csv_path}:{line}: {rec['file']} not found in "
                                 f"{', '.join(str(d) for d in dirs)} (use --videos DIR)")
            labels.append(Label(rec["file"], found[0].resolve(), expected, reason,
                                (rec.get("why") or "").strip(), origin or str(csv_path)))
    return labels


def stc_exe() -> str:
    exe = Path(sys.executable).parent / "stc"
    found = str(exe) if exe.exists() else shutil.which("stc")
    if not found:
        sys.exit("the `stc` command is not installed: pip install -e . first")
    return found


def curate(files: list[Path], out: Path, config: Path, workers: int) -> dict[str, Any]:
    """`stc curate` as a user runs it; returns the manifest rows by source path, the wall
    time and the run's own per-step seconds (run_stats.json)."""
    out.mkdir(parents=True, exist_ok=True)
    listing = out.parent / f"{out.name}_inputs.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    cmd = [stc_exe(), "curate", str(listing), "--out", str(out), "--config", str(config),
           "--workers", str(workers), "--num-cpus", str(workers)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        sys.exit(f"stc curate failed ({done.returncode}):\n{done.stderr[-3000:]}")
    df = read_manifest(out / "manifest.parquet", CLIP_SCHEMA)
    stats_file = out / "run_stats.json"
    run_stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in df.to_dict("records"):
        by_source.setdefault(str(Path(r["source_path"]).resolve()), []).append(r)
    return {"rows": by_source, "wall_seconds": wall, "run_stats": run_stats}


def file_outcome(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One labelled file's decision when curation cut it into several clips (shots,
    faces): kept if any clip was kept, else the most common reason."""
    kept = [r for r in rows if r["status"] == "kept"]
    if kept:
        return kept[0]
    common = Counter(r["reason"] for r in rows).most_common(1)[0][0]
    return next(r for r in rows if r["reason"] == common)


# --- scoring -------------------------------------------------------------------------
def label_key(lab: Label) -> str:
    if lab.expected == "rejected" and lab.reason:
        return f"rejected:{lab.reason}"
    return lab.expected


def agrees(lab: Label, row: dict[str, Any]) -> bool:
    if lab.expected == "either":
        return True
    if lab.expected == "kept":
        return row["status"] == "kept"
    return row["status"] != "kept" and (not lab.reason or row["reason"] == lab.reason)


def score(labels: list[Label], rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    results = []
    for lab in labels:
        if not rows.get(str(lab.path)):
            sys.exit(f"{lab.path}: no manifest row; did stc curate see it?")
        results.append((lab, file_outcome(rows[str(lab.path)])))
    confusion: dict[str, Counter] = {}
    for lab, row in results:
        confusion.setdefault(label_key(lab), Counter())[row["reason"]] += 1
    reasons = sorted(({row["reason"] for _, row in results} | {lab.reason for lab, _ in results})
                     - {"kept", ""})
    per_reason = {}
    for r in reasons:
        tp = sum(1 for lab, row in results if lab.reason == r and row["reason"] == r)
        fn = sum(1 for lab, row in results if lab.reason == r and row["reason"] != r)
        # A rejection counts against a reason only where the label says it should not
        # have happened: kept, or rejected for another named reason.
        fp = sum(1 for lab, row in results if row["reason"] == r and lab.reason != r
                 and (lab.expected == "kept" or (lab.expected == "rejected" and lab.reason)))
        tn = sum(1 for lab, row in results if row["reason"] != r and lab.reason != r
                 and lab.expected != "either")
        per_reason[r] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
                         "precision": round(tp / (tp + fp), 3) if tp + fp else None,
                         "recall": round(tp / (tp + fn), 3) if tp + fn else None}
    disagreements = [{"file": lab.file, "expected": label_key(lab), "got": row["reason"],
                      "message": row["message"], "why": lab.why}
                     for lab, row in results if not agrees(lab, row)]
    text_cases = [(lab, row) for lab, row in results if lab.reason == "text"]
    textless = [(lab, row) for lab, row in results if lab.reason != "text" and lab.expected != "either"]
    return {
        "clips": len(results),
        "agree": len(results) - len(disagreements),
        "disagree": len(disagreements),
        "confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
        "per_reason": per_reason,
        "disagreements": disagreements,
        "checks": {
            "textless_rejected_as_text": [lab.file for lab, row in textless if row["reason"] == "text"],
            "text_cases_not_rejected_as_text": [lab.file for lab, row in text_cases if row["reason"] != "text"],
        },
        "rows": [{"file": lab.file, "origin": Path(lab.origin).name, "expected": label_key(lab),
                  "got": row["reason"], "text_score": _num(row.get("text_score")),
                  "text_frames": _num(row.get("text_frames")),
                  "side_fraction": _num(row.get("side_fraction")),
                  "side_ratio_median": _num(row.get("side_ratio_median"))} for lab, row in results],
    }


def _num(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if not np.isfinite(v) else round(v, 4)


# --- text stage cost -----------------------------------------------------------------
def time_text_stage(rows: list[dict[str, Any]], cfg: CurateConfig, repeats: int) -> dict[str, Any]:
    """Seconds per clip of the text step's model work (detect, shape, read, persist) on
    exactly the frames and crop each row's text stage analysed, recogniser on and off.
    Decoding is left out: it is the same either way and not part of the text step.

    On a shared machine the on and off passes see different loads, so the recogniser's
    own time is also measured directly inside each "on" pass (its share of that pass is
    what load cannot skew)."""
    on = text_mod.TextDetector(cfg.text)
    off = text_mod.TextDetector(dataclasses.replace(cfg.text, recognize=False))
    reading = {"seconds": 0.0, "lines": 0}
    backend_read = on._ocr.read     # instrumented here, in the benchmark only

    def timed_read(lines):
        t0 = time.perf_counter()
        try:
            return backend_read(lines)
        finally:
            reading["seconds"] += time.perf_counter() - t0
            reading["lines"] += len(lines)

    on._ocr.read = timed_read
    inputs = []
    for row in rows:
        frames = json.loads(row["text_evidence"])["frames"]
        got: dict[int, np.ndarray] = {}
        decode_sampled(row["source_path"], set(frames), lambda i, img: got.__setitem__(i, img))
        regions = []
        for i in frames:
            small, s = downscale(got[i], cfg.face.detect_max_side)
            c = [int(round(v * s)) for v in (row["crop_x0"], row["crop_y0"], row["crop_x1"], row["crop_y1"])]
            regions.append((i, np.ascontiguousarray(small[c[1]:c[3], c[0]:c[2]])))
        inputs.append(regions)
    n = max(1, len(inputs))
    seconds: dict[str, list[float]] = {"recognizer_on": [], "recognizer_off": []}
    read_share, lines = [], 0
    for rep in range(repeats):
        # Alternate the order so drift in machine load does not favour one side.
        order = [("recognizer_on", on), ("recognizer_off", off)][:: 1 if rep % 2 == 0 else -1]
        for name, det in order:
            reading.update(seconds=0.0, lines=0)
            t0 = time.perf_counter()
            for regions in inputs:
                text_mod.summarise([det.frame(i, r) for i, r in regions], det.cfg)
            total = time.perf_counter() - t0
            seconds[name].append(total / n)
            if name == "recognizer_on":
                read_share.append(reading["seconds"] / total)
                lines = reading["lines"]
    med = {k: float(np.median(v)) for k, v in seconds.items()}
    share = float(np.median(read_share))
    return {"clips": len(inputs), "frames": sum(len(r) for r in inputs), "repeats": repeats,
            "lines_read_per_clip": round(lines / n, 2),
            "seconds_per_clip": {k: round(v, 4) for k, v in med.items()},
            "all_runs": {k: [round(x, 4) for x in v] for k, v in seconds.items()},
            "recognizer_share_of_text_step": round(share, 4),
            "recognizer_seconds_per_clip": round(share * med["recognizer_on"], 4),
            "on_minus_off_seconds_per_clip": round(med["recognizer_on"] - med["recognizer_off"], 4)}


def step_seconds(run: dict[str, Any]) -> dict[str, float] | None:
    steps = (run.get("run_stats") or {}).get("steps")
    if not isinstance(steps, dict):
        return None
    return {k: float(v["seconds"]) for k, v in steps.items() if isinstance(v, dict) and "seconds" in v}


# --- report --------------------------------------------------------------------------
def format_report(name: str, s: dict[str, Any]) -> str:
    got_cols = sorted({g for v in s["confusion"].values() for g in v})
    w = max([len(k) for k in s["confusion"]] + [18])
    errors = [r for r in s["rows"] if r["got"] in ERROR_REASONS]
    lines = [f"== {name}: {s['agree']}/{s['clips']} decisions agree with the labels"
             + (f"  (WARNING: {len(errors)} clips ended in error: see their messages)" if errors else ""),
             "", "confusion (rows: label, columns: stc's reason)",
             f"{'label':<{w}} " + " ".join(f"{c:>14}" for c in got_cols)]
    for k, v in s["confusion"].items():
        lines.append(f"{k:<{w}} " + " ".join(f"{v.get(c, 0):>14}" for c in got_cols))
    lines += ["", f"{'reason':<16} {'tp':>4} {'fp':>4} {'fn':>4} {'tn':>4} {'precision':>10} {'recall':>8}"]
    for r, m in s["per_reason"].items():
        lines.append(f"{r:<16} {m['tp']:>4} {m['fp']:>4} {m['fn']:>4} {m['tn']:>4} "
                     f"{'-' if m['precision'] is None else m['precision']:>10} "
                     f"{'-' if m['recall'] is None else m['recall']:>8}")
    lines += ["", f"disagreements ({len(s['disagreements'])}):"]
    for d in s["disagreements"]:
        lines.append(f"  {d['file']}: expected {d['expected']}, got {d['got']}: {d['message'][:160]}")
    if not s["disagreements"]:
        lines.append("  none")
    c = s["checks"]
    lines += ["", f"textless clips rejected as text: {c['textless_rejected_as_text'] or 'none'}",
              f"text clips not rejected as text: {c['text_cases_not_rejected_as_text'] or 'none'}"]
    return "\n".join(lines)


def render_review(curated: Path, dest: Path) -> None:
    """The review page of `stc stats` on the run, rejected clips, as the README picture."""
    with tempfile.TemporaryDirectory(prefix="stc-review-") as tmp:
        done = subprocess.run([stc_exe(), "stats", str(curated), "--out", tmp],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            sys.exit(f"stc stats failed:\n{done.stderr[-3000:]}")
        page = Path(tmp) / "review_rejected.png"
        if not page.exists():
            print(f"no rejected clip in {curated}: no review page to save", file=sys.stderr)
            return
        shutil.copyfile(page, dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", type=Path, help="CSV: file, expected (kept/rejected/either), why[, reason]")
    ap.add_argument("--videos", type=Path, help="folder the CSV's files are in")
    ap.add_argument("--no-hard-cases", action="store_true", help="only the labelled files")
    ap.add_argument("--config", default="default", help="curate config (built-in name or YAML)")
    ap.add_argument("--detector-only", action="store_true",
                    help="also curate with text.recognize: false and compare")
    ap.add_argument("--timing-repeats", type=int, default=5,
                    help="text stage timing runs per setting (0: skip)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--work", type=Path, help="keep the curated output here (default: a temp folder)")
    ap.add_argument("--save", type=Path, help="write curate_accuracy.{txt,json} and review_page.png here")
    args = ap.parse_args()

    try:
        labels = read_labels(args.labels, args.videos)
    except LabelError as exc:
        sys.exit(str(exc))
    base_cfg = CurateConfig.load(args.config)
    work = args.work or Path(tempfile.mkdtemp(prefix="stc-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.no_hard_cases:
        videos = args.videos or next(d for d in (args.labels.parent, args.labels.parent / "videos")
                                     if any(d.glob("*.mp4")))
        built = hard_cases.build_all(videos, work / "hard_cases")
        csv_path = hard_cases.write_labels([c for c, _ in built], work / "hard_cases" / "labels.csv")
        labels += read_labels(csv_path, origin="hard_cases")
    files = [lab.path for lab in labels]

    settings = {"recognizer": base_cfg}
    if args.detector_only:
        settings["detector_only"] = dataclasses.replace(
            base_cfg, text=dataclasses.replace(base_cfg.text, recognize=False))
    out: dict[str, Any] = {
        "benchmark": "curate_accuracy", "labels": str(args.labels), "config": args.config,
        "hard_cases": not args.no_hard_cases, "workers": args.workers,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "clips": len(files),
    }
    report = []
    for name, cfg in settings.items():
        cfg_file = work / f"{name}.yaml"
        cfg_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        run = curate(files, work / name, cfg_file, args.workers)
        s = score(labels, run["rows"])
        s["wall_seconds"] = round(run["wall_seconds"], 2)
        s["step_seconds"] = step_seconds(run)
        out[name] = s
        report.append(format_report(name, s))
        if name == "recognizer":
            analysed = [r for rs in run["rows"].values() for r in rs
                        if isinstance(r.get("text_evidence"), str)]
    if args.timing_repeats > 0 and not analysed:
        print("no clip reached the text stage: nothing to time", file=sys.stderr)
    elif args.timing_repeats > 0:
        t = time_text_stage(analysed, base_cfg, args.timing_repeats)
        steps = out["recognizer"]["step_seconds"]
        if steps:
            # The text step's share of the curation, from the run itself, scales the
            # recogniser's share of the text step into a share of the whole curation.
            text_share = steps.get("text", 0.0) / max(1e-9, sum(steps.values()))
            t["text_step_share_of_curation"] = round(text_share, 4)
            t["throughput_drop_fraction"] = round(text_share * t["recognizer_share_of_text_step"], 4)
        out["text_stage_timing"] = t
        sec = t["seconds_per_clip"]
        report.append(
            f"\n== text stage, {t['clips']} clips, {t['frames']} frames, median of {t['repeats']} runs:"
            f"\n  recogniser on  {sec['recognizer_on']:.3f} s/clip ({t['lines_read_per_clip']} lines read)"
            f"\n  recogniser off {sec['recognizer_off']:.3f} s/clip"
            f"\n  recogniser's own time: {100 * t['recognizer_share_of_text_step']:.1f}% of the text step"
            f" ({t['recognizer_seconds_per_clip']:.3f} s/clip)"
            + (f"\n  text step: {100 * t['text_step_share_of_curation']:.1f}% of curation worker time, so the"
               f" recogniser costs {100 * t['throughput_drop_fraction']:.1f}% of curation throughput"
               if "throughput_drop_fraction" in t else ""))
    text = "\n\n".join(report)
    print(text, file=sys.stderr)
    print(json.dumps(out, indent=2))
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "curate_accuracy.txt").write_text(text + "\n")
        (args.save / "curate_accuracy.json").write_text(json.dumps(out, indent=2) + "\n")
        render_review(work / "recognizer", args.save / "review_page.png")


if __name__ == "__main__":
    main()
