"""`stc stats`: audit a curated manifest (and optionally its pairs, or a second dataset)
as PNG figures, one self-contained HTML page and a JSON summary.

Nothing here computes: numbers come from `audit.stats`, example pairs from `audit.pairs`
and figures from `audit.report`, the same functions the notebooks in notebooks/ call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stc.audit.pairs import example_pairs
from stc.audit.report import write_report
from stc.audit.stats import audit
from stc.pipelines.folders import CURATED, PAIRS, expect_folder
from stc.pipelines.options import print_next


def run_stats(manifest: str | Path, out: str | Path, pairs: str | Path | None = None,
              compare: str | Path | None = None, names: tuple[str, str] | None = None,
              bins: int = 20, examples: int = 4, allow_outside: bool = False
              ) -> tuple[dict[str, Any], dict[str, Path]]:
    """Audit `manifest` into `out`; returns (summary, written files). With `pairs`, a strip
    of `examples` pairs per recipe."""

    if bins < 2:
        raise ValueError(f"--bins must be at least 2, got {bins}")
    expect_folder(manifest, CURATED, "stc stats")
    for other in (compare,) if compare else ():
        expect_folder(other, CURATED, "stc stats --compare")
    if pairs:
        expect_folder(pairs, PAIRS, "stc stats --pairs")
    summary = audit(manifest, pairs, compare, names, bins, allow_outside)
    shown = example_pairs(pairs, examples, allow_outside) if pairs and examples else None
    return summary, write_report(summary, out, shown)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats", help="audit a curated manifest: funnel, histograms, HTML/PNG/JSON report",
        description="Filter funnel with reasons; histograms of face proportion, side ratio, "
                    "text score, motion, fps, duration and resolution (per source when several); "
                    "with --pairs the distribution of every drawn degradation parameter; with "
                    "--compare the kept clips of two datasets side by side.")
    p.add_argument("manifest", metavar="MANIFEST",
                   help="curation output folder or its manifest.parquet")
    p.add_argument("--pairs", metavar="PAIRS", help="pairs manifest (stc degrade output or its .parquet)")
    p.add_argument("--compare", metavar="OTHER_MANIFEST", help="a second curated manifest to compare with")
    p.add_argument("--names", nargs=2, metavar=("NAME", "OTHER"),
                   help="legend names (default: the manifests' folder names)")
    p.add_argument("--bins", type=int, default=20, help="histogram bins (default 20)")
    p.add_argument("--examples", type=int, default=4,
                   help="with --pairs: example pairs shown per recipe (default 4; 0: none)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="report folder: report.html, summary.json, *.png")
    p.add_argument("--json", action="store_true", help="also print the summary JSON on stdout")
    p.add_argument("--allow-outside", action="store_true",
                   help="draw videos the manifest names outside its folder and outside the "
                        "inputs its run recorded (a manifest from elsewhere: refused by default)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    summary, files = run_stats(args.manifest, args.out, args.pairs, args.compare,
                               tuple(args.names) if args.names else None, args.bins,
                               args.examples, args.allow_outside)
    c = summary["clips"]
    print(f"stc stats: {c['rows']} rows, {c['status'].get('kept', 0)} kept; wrote "
          f"{', '.join(sorted(p.name for p in files.values()))} to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_next([f"open {files['html']}   (the whole report in one page)"])
    return 0
