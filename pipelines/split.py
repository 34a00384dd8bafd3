"""`stc split`: identity-disjoint train / val / test splits of a curated manifest.

    stc split CURATED --val 0.05 --test 0.05 --seed 0 [--out CURATED/split.parquet]

Every kept clip's face embedding (`embedding`, with its source's `person_id`, written by
`stc curate`) is clustered across all sources into identities (`curation.identity`); each
identity goes whole to one split, so no person seen in training is evaluated on. The output
is the curated manifest again, with `identity_id` and `split` filled in (null on rows that
are not kept), which `stc train` reads (`--manifest OUT`): Stage I and Stage II train on
`train`, validate on `val`, and never read `test`. `OUT_report.json` beside it has the
counts per split and the near-duplicate clips (the same bytes given twice, two clips of one
identity sharing frames of one source). The same manifest and seed give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from stc.core import storage
from stc.core.fs import write_text_atomic
from stc.curation.identity import KeptClip, assign_splits, identities, near_duplicates
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import (
    locate_manifest,
    manifest_files,
    new_part_name,
    read_table,
    with_source_roots,
    write_index,
    write_table,
)
from stc.manifests.schema import ManifestError
from stc.pipelines.folders import CURATED, expect_folder
from stc.pipelines.options import print_next

SPLIT_MANIFEST = "split.parquet"
# dlib's same-person distance [dlib face_recognition model]: two persons (a source's
# clustered clips, as means) closer than this are one identity. Linking is single linkage,
# which can only merge people: the safe side for a split that must not leak a person.
IDENTITY_DISTANCE = 0.6


def report_path(out: storage.Location) -> storage.Location:
    name = storage.name(out)
    stem = name[:-len(".parquet")] if name.endswith(".parquet") else name
    return storage.join(storage.parent(out), f"{stem}_report.json")


def _kept_clips(rows: list[dict[str, Any]], where: Any) -> list[KeptClip]:
    clips, missing = [], []
    for r in rows:
        if r["status"] != "kept":
            continue
        emb, person = r.get("embedding"), r.get("person_id")
        if emb is None or person is None or len(emb) == 0:
            missing.append(r["clip_id"])
            continue
        clips.append(KeptClip(r["clip_id"], r["source_id"], r.get("source_hash"), person,
                              int(r["start_frame"]), int(r["end_frame"]), np.asarray(emb, np.float64)))
    if missing:
        raise ManifestError(
            f"{where}: {len(missing)} kept clip(s) have no face embedding (e.g. {missing[0]}): "
            "they were curated before stc recorded identities; curate the videos again into a "
            "new folder")
    if not clips:
        raise ManifestError(f"{where} has no kept clip; run `stc curate` first")
    return clips


def split_manifest(manifest: str | Path, val: float, test: float, seed: int,
                   out: str | Path | None = None, distance: float = IDENTITY_DISTANCE
                   ) -> dict[str, Any]:
    """Write the split manifest and its report; returns the report."""
    for name, value in (("--val", val), ("--test", test)):
        if not (0 <= value < 1) or math.isnan(value):
            raise ValueError(f"{name} must be a fraction in [0, 1), got {value}")
    if val + test >= 1:
        raise ValueError(f"--val {val} and --test {test} leave nothing to train on")
    if not distance > 0:
        raise ValueError(f"--distance must be positive, got {distance}")
    expect_folder(manifest, CURATED, "stc split")
    src = locate_manifest(manifest)
    root = storage.parent(src)
    target = storage.location(out) if out is not None else storage.join(root, SPLIT_MANIFEST)
    if str(target) == str(src):
        raise ValueError(f"--out {out} is the curated manifest itself; give another path")
    table = read_table(src, CLIP_SCHEMA)
    rows = table.to_pylist()
    clips = _kept_clips(rows, src)
    ident = identities(clips, distance)
    frames: dict[str, int] = {}
    for c, i in zip(clips, ident):
        frames[i] = frames.get(i, 0) + c.end - c.start
    split_of = assign_splits(frames, val, test, seed)
    by_clip = {c.clip_id: i for c, i in zip(clips, ident)}
    copies = {r["source_id"]: json.loads(r["duplicate_paths"]) for r in rows
              if r["status"] == "kept" and r.get("duplicate_paths")}
    dups = near_duplicates(clips, ident, copies)

    ids = [by_clip.get(r["clip_id"]) for r in rows]
    table = table.set_column(table.schema.get_field_index("identity_id"), "identity_id",
                             pa.array(ids, pa.string()))
    table = table.set_column(table.schema.get_field_index("split"), "split",
                             pa.array([split_of.get(i) if i else None for i in ids], pa.string()))
    if str(storage.parent(target)) != str(root):
        # Written elsewhere: clip paths point into the curated folder, which vouches for them.
        paths = [None if p is None else str(storage.join(root, p))
                 for p in table.column("clip_path").to_pylist()]
        table = table.set_column(table.schema.get_field_index("clip_path"), "clip_path",
                                 pa.array(paths, pa.string()))
        table = with_source_roots(table, [root])
    _replace(target, table)

    per_split = {s: {"identities": 0, "clips": 0, "frames": 0} for s in ("train", "val", "test")}
    for i, n in frames.items():
        per_split[split_of[i]]["identities"] += 1
        per_split[split_of[i]]["frames"] += n
    for i in ident:
        per_split[split_of[i]]["clips"] += 1
    report = {"manifest": str(src), "out": str(target), "seed": seed, "val": val, "test": test,
              "identity_distance": distance, "kept_clips": len(clips),
              "persons": len({c.person for c in clips}), "identities": len(frames),
              "largest_identity_frames": max(frames.values()), "splits": per_split,
              "near_duplicates": dups}
    text = json.dumps(report, indent=1) + "\n"
    rpath = report_path(target)
    if isinstance(rpath, Path):
        write_text_atomic(rpath, text)
    else:
        storage.write_text(rpath, text)
    return report


def _replace(path: storage.Location, table: pa.Table) -> None:
    """Make `table` the manifest at `path`: a new part, then the index switched to it in one
    write, then the old parts removed (a reader sees the old split or the new one)."""
    storage.makedirs(path)
    old = manifest_files(path) if storage.exists(path) else []
    name = new_part_name()
    write_table(table, storage.join(path, name))
    write_index(path, [name], CLIP_SCHEMA.key, schema=CLIP_SCHEMA.name, group=CLIP_SCHEMA.group)
    for p in old:
        if storage.name(p) != name:
            storage.remove(p)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split", help="identity-disjoint train/val/test split of a curated manifest",
        description="Cluster the kept clips' faces into identities across all sources, put "
                    "each identity whole into train, val or test, and report near-duplicate "
                    "clips. Writes the curated manifest with identity_id and split columns.")
    p.add_argument("manifest", metavar="MANIFEST", help="curation output folder or its manifest.parquet")
    p.add_argument("--val", type=float, default=0.05, help="share of frames for val (default 0.05)")
    p.add_argument("--test", type=float, default=0.05, help="share of frames for test (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="which identities go where (default 0)")
    p.add_argument("--out", default=None, metavar="OUT",
                   help=f"split manifest to write (default: MANIFEST's folder/{SPLIT_MANIFEST})")
    p.add_argument("--distance", type=float, default=IDENTITY_DISTANCE,
                   help=f"face distance under which two persons are one identity (default "
                        f"{IDENTITY_DISTANCE}, dlib's)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    r = split_manifest(args.manifest, args.val, args.test, args.seed, args.out, args.distance)
    s = r["splits"]
    parts = ", ".join(f"{k} {s[k]['identities']} ({s[k]['clips']} clips)" for k in ("train", "val", "test"))
    print(f"stc split: {r['kept_clips']} kept clips, {r['identities']} identities -> {parts}; "
          f"{len(r['near_duplicates'])} near-duplicate group(s); wrote {r['out']} and "
          f"{report_path(storage.location(r['out']))}", file=sys.stderr)
    print_next([f"stc train stage1 --manifest {r['out']} --config stage1 --out RUN1",
                f"stc degrade {r['out']} --split test --out PAIRS_TEST --recipe bfvr --seed 0   "
                "(evaluation pairs of the held-out identities)"])
    return 0
