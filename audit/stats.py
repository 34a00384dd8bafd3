"""Dataset audit numbers: the filter funnel, metric histograms and degradation parameter
distributions, as plain JSON-ready dicts (codebook usage numbers live with the model, in
`model.codebook`).

Pure pandas/NumPy, no plotting: `manifests.report` draws these dicts, `stc stats` writes
them as JSON and the notebooks call the same functions, so a plot, the JSON summary and
a notebook cell can never disagree about a number. Histograms of the same metric share
bin edges across statuses, sources and manifests, so their bars line up.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from stc.core.names import CURATE_CONFIG, PAIRS_MANIFEST, SHOTS_DIR
from stc.core.fs import OutsideRoot
from stc.core.paths import allowed_path, recorded_input_roots
from stc.manifests.clips import (
    CLIP_SCHEMA,
    FUNNEL,
    REASONS,
    STATUSES,
    funnel_counts,
    funnel_stage,
)
from stc.manifests.io import locate_manifest, read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.manifests.schema import ManifestError

DEFAULT_BINS = 20


# --- loading -------------------------------------------------------------------------
@dataclass
class ClipManifest:
    """A curated manifest as read for an audit."""

    path: Path                  # the manifest itself (folder of parts or one file)
    root: Path                  # the folder clip_path is relative to
    df: pd.DataFrame
    config: dict[str, Any]      # the curate config saved beside it ({} when absent)
    name: str                   # short name for legends: the output folder's name
    allow_outside: bool = False  # paths outside the run and its recorded inputs are read too

    @functools.cached_property
    def input_roots(self) -> list[str]:
        """The inputs this manifest's run recorded (and signed), read once."""
        return recorded_input_roots(self.root)

    def vetted(self, row: Mapping[str, Any]) -> tuple[str | None, str | None, list[str]]:
        """(source file, clip file, why refused) of a row, by the one path policy
        (`core.paths`): the clip inside the run folder, the source there or inside the
        inputs the run recorded; a refused path is None and says why."""
        roots = [self.root, *self.input_roots]
        found: list[str | None] = []
        refused: list[str] = []
        for col, allowed in (("source_path", roots), ("clip_path", [self.root])):
            text = row.get(col)
            if not isinstance(text, str) or not text:
                found.append(None)
                continue
            try:
                found.append(str(allowed_path(text, allowed, what=col, where=self.path,
                                              allow_outside=self.allow_outside)))
            except OutsideRoot as exc:
                found.append(None)
                refused.append(str(exc))
        return found[0], found[1], refused


def load_clip_manifest(path: str | Path, name: str | None = None,
                       allow_outside: bool = False) -> ClipManifest:
    """Read a curated manifest and the curate config saved next to it (for thresholds)."""
    import yaml

    p = locate_manifest(path)
    df = read_manifest(p, CLIP_SCHEMA)
    cfg_path = p.parent / CURATE_CONFIG
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    return ClipManifest(p, p.parent, df, config or {}, name or p.parent.name, allow_outside)


def load_pairs_manifest(path: str | Path) -> pd.DataFrame:
    p = Path(path).expanduser()
    if p.is_dir() and not any(p.glob("part-*.parquet")):
        p = locate_manifest(p, PAIRS_MANIFEST)
    return read_manifest(p, PAIRS_SCHEMA)


# --- numbers -------------------------------------------------------------------------
def _num(x: float) -> float | None:
    """A JSON-friendly float: 6 significant digits, NaN as null."""
    x = float(x)
    return None if not math.isfinite(x) else float(f"{x:.6g}")


def finite(values: Iterable[Any]) -> np.ndarray:
    a = pd.to_numeric(pd.Series(list(values) if not isinstance(values, pd.Series) else values),
                      errors="coerce").to_numpy(dtype=float)
    return a[np.isfinite(a)]


def describe(values: np.ndarray) -> dict[str, float | int | None]:
    """Count, mean, spread and quantiles of finite values."""
    v = finite(values)
    if not len(v):
        return {"n": 0}
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"n": int(len(v)), "mean": _num(v.mean()), "std": _num(v.std()), "min": _num(v.min()),
            "p05": _num(q[0]), "p25": _num(q[1]), "median": _num(q[2]), "p75": _num(q[3]),
            "p95": _num(q[4]), "max": _num(v.max())}


def bin_edges(samples: Iterable[np.ndarray], bins: int = DEFAULT_BINS) -> np.ndarray:
    """Shared edges for several samples of one quantity.

    Integer quantities with a small range (fps, CRF, frame counts) get one bin per
    integer, so a bar means a value rather than an arbitrary slice between two of them.
    """
    v = np.concatenate([finite(s) for s in samples] or [np.empty(0)])
    if not len(v):
        return np.array([0.0, 1.0])
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        # One value (every text score 0, say): a narrow bar, not a unit-wide one.
        half = 0.5 if lo == round(lo) and abs(lo) >= 1 else max(abs(lo) * 0.05, 0.01)
        return np.array([lo - half, hi + half])
    if np.all(v == np.round(v)) and hi - lo <= 2 * bins:
        return np.arange(lo - 0.5, hi + 1.5)
    return np.histogram_bin_edges(v, bins=bins, range=(lo, hi))


def counts_in(values: Iterable[Any], edges: np.ndarray) -> list[int]:
    # np.histogram closes the last bin on the right, so every finite value in range counts.
    return [int(c) for c in np.histogram(finite(values), bins=edges)[0]]


# --- curated clips -------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One audited quantity of the curated manifest."""

    name: str
    label: str
    column: str | None = None
    derive: Callable[[pd.DataFrame], pd.Series] | None = None
    # (dotted key in the curate config, legend label): drawn as lines on the histogram
    thresholds: tuple[tuple[str, str], ...] = ()
    log: bool = False           # log-scaled x axis reads better for heavy tails

    def values(self, df: pd.DataFrame) -> pd.Series:
        s = self.derive(df) if self.derive else df[self.column]
        return pd.to_numeric(s, errors="coerce")


def _short_side(df: pd.DataFrame) -> pd.Series:
    return np.minimum(pd.to_numeric(df["width"]), pd.to_numeric(df["height"]))


def _crop_side(df: pd.DataFrame) -> pd.Series:
    w = pd.to_numeric(df["crop_x1"]) - pd.to_numeric(df["crop_x0"])
    h = pd.to_numeric(df["crop_y1"]) - pd.to_numeric(df["crop_y0"])
    return np.minimum(w, h)


CLIP_METRICS: tuple[Metric, ...] = (
    Metric("face_proportion", "face proportion (face box area / crop area)", "face_proportion"),
    Metric("side_ratio", "side ratio α (median over frames)", "side_ratio_median",
           thresholds=(("side_face.alpha_min", "α min"), ("side_face.alpha_max", "α max"))),
    Metric("side_fraction", "side-face fraction of frames", "side_fraction",
           thresholds=(("side_face.max_side_fraction", "max"),)),
    Metric("text_score", "text: best recogniser score of a line box", "text_score",
           thresholds=(("text.min_rec_score", "min rec score"),)),
    Metric("effective_resolution", "quality: face detail (px)", "effective_resolution",
           thresholds=(("quality.min_effective_resolution", "min"),)),
    Metric("sharpness", "quality: face sharpness", "sharpness",
           thresholds=(("quality.min_sharpness", "min"),)),
    Metric("blockiness", "quality: 8x8 block-edge excess (grey levels)", "blockiness",
           thresholds=(("quality.max_blockiness", "max"),)),
    Metric("motion_intensity", "motion intensity (changed-pixel fraction)", "motion_intensity"),
    Metric("fps", "frame rate (fps)", "fps"),
    Metric("duration", "duration (s)", "duration"),
    Metric("short_side", "resolution: short side (px)", derive=_short_side),
    Metric("face_size", "face box side (input px)", "face_size_median",
           thresholds=(("face.min_face_size", "min"),)),
    Metric("crop_side", "crop side (input px)", derive=_crop_side,
           thresholds=(("crop.min_crop_side", "min"),)),
)
METRICS_BY_NAME = {m.name: m for m in CLIP_METRICS}


def config_value(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def thresholds_for(metric: Metric, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, label in metric.thresholds:
        v = config_value(config, key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append({"key": key, "label": label, "value": float(v)})
    return out


def metric_stats(df: pd.DataFrame, metric: Metric, bins: int = DEFAULT_BINS,
                 config: Mapping[str, Any] | None = None,
                 edges: np.ndarray | None = None) -> dict[str, Any]:
    """Histogram of one metric over all rows, split by status with the same edges."""
    values = metric.values(df)
    edges = bin_edges([values], bins) if edges is None else edges
    by_status = {s: counts_in(values[df["status"] == s], edges) for s in STATUSES}
    return {
        "label": metric.label,
        "rows": int(len(df)),
        "missing": int(len(df) - len(finite(values))),
        "summary": describe(values),
        "kept_summary": describe(values[df["status"] == "kept"]),
        "edges": [_num(e) for e in edges],
        "counts": counts_in(values, edges),
        "by_status": {s: c for s, c in by_status.items() if any(c)},
        "thresholds": thresholds_for(metric, config or {}),
        "log": metric.log,
    }


def funnel_drops(reasons: Iterable[str]) -> dict[str, dict[str, int]]:
    """stage -> {reason: rows that failed there}, stages in funnel order."""
    drops: dict[str, dict[str, int]] = {stage: {} for stage in FUNNEL[1:]}
    for reason in reasons:
        stage = funnel_stage(reason)
        if stage:
            drops[stage][reason] = drops[stage].get(reason, 0) + 1
    return drops


def compare_groups(groups: Mapping[str, pd.DataFrame], bins: int = DEFAULT_BINS,
                   metrics: Iterable[Metric] = CLIP_METRICS,
                   kept_only: bool = False) -> dict[str, Any]:
    """Each metric for several groups (sources, manifests) on shared edges.

    `fractions` normalise each group by its own size, so a small dataset and a large
    one can be read on the same axis (paper Fig. 7).
    """
    groups = {k: (g[g["status"] == "kept"] if kept_only else g) for k, g in groups.items()}
    out: dict[str, Any] = {}
    for m in metrics:
        values = {k: m.values(g) for k, g in groups.items()}
        edges = bin_edges(values.values(), bins)
        per = {}
        for k, v in values.items():
            c = counts_in(v, edges)
            total = sum(c)
            per[k] = {"rows": int(len(v)), "summary": describe(v), "counts": c,
                      "fractions": [_num(x / total) if total else 0.0 for x in c]}
        out[m.name] = {"label": m.label, "edges": [_num(e) for e in edges], "groups": per,
                       "log": m.log}
    return out


def clip_summary(manifest: ClipManifest | pd.DataFrame, bins: int = DEFAULT_BINS,
                 config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything `stc stats` reports about one curated manifest."""
    if isinstance(manifest, ClipManifest):
        df, config = manifest.df, manifest.config if config is None else config
    else:
        df = manifest
    config = config or {}
    reasons = [str(r) for r in df["reason"]]
    unknown = sorted(set(reasons) - set(REASONS))
    if unknown:
        raise ManifestError(f"manifest rows carry unknown reason(s) {unknown}")
    sources = df["source"].fillna("(none)").astype(str)
    source_names = sorted(sources.unique())
    res = df.dropna(subset=["width", "height"])
    resolutions = (res["width"].astype(int).astype(str) + "x" + res["height"].astype(int).astype(str))
    summary: dict[str, Any] = {
        "rows": int(len(df)),
        "status": {s: int((df["status"] == s).sum()) for s in STATUSES},
        "reasons": {r: int(n) for r, n in pd.Series(reasons, dtype=object).value_counts().items()},
        "funnel": funnel_counts(reasons),
        "funnel_drops": funnel_drops(reasons),
        "sources": {s: int((sources == s).sum()) for s in source_names},
        "source_funnel": {s: funnel_counts([r for r, src in zip(reasons, sources) if src == s])
                          for s in source_names},
        "resolutions": {k: int(v) for k, v in resolutions.value_counts().head(10).items()},
        "kept_frames": int(pd.to_numeric(df.loc[df["status"] == "kept", "clip_num_frames"])
                           .fillna(0).sum()),
        # A source gives several clips: the hours are the kept clips' own, not their sources'.
        "kept_hours": _num((pd.to_numeric(df.loc[df["status"] == "kept", "clip_num_frames"])
                            / pd.to_numeric(df.loc[df["status"] == "kept", "clip_fps"]))
                           .fillna(0).sum() / 3600),
        "metrics": {m.name: metric_stats(df, m, bins, config) for m in CLIP_METRICS},
        "per_source": None,
    }
    if len(source_names) > 1:
        summary["per_source"] = compare_groups(
            {s: df[sources == s] for s in source_names}, bins)
    return summary


def tail_rows(df: pd.DataFrame, metric: Metric | str, n: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `n` rows with the lowest and the highest values of a metric (NaN excluded)."""
    m = METRICS_BY_NAME[metric] if isinstance(metric, str) else metric
    v = m.values(df)
    ok = df.assign(_value=v)[np.isfinite(v.to_numpy(dtype=float))]
    ok = ok.sort_values(["_value", "clip_id"], kind="stable")
    return ok.head(n), ok.tail(n).iloc[::-1]


# --- review: the rows a person should look at, with their evidence -------------------
REVIEW_PER_REASON = 3   # rejected rows shown per reason
REVIEW_TAIL = 1         # kept rows shown at each end of each metric


def _evidence(value: Any) -> dict | None:
    """A JSON evidence column as a dict (None when absent or unreadable: a review page
    must still draw the frames of a row whose evidence is damaged)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _plain(v: Any) -> Any:
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return None if v is pd.NA or v is pd.NaT else v


def _review_entry(row: Mapping[str, Any], manifest: ClipManifest, why: list[str]) -> dict[str, Any]:
    crop = [row.get(k) for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]
    crop = [int(c) for c in crop] if all(pd.notna(c) for c in crop) else None
    source, clip, refused = manifest.vetted(row)
    return {
        "clip_id": row["clip_id"], "status": row["status"], "reason": row["reason"],
        "message": row.get("message") or "", "why": why,
        "source_path": source, "clip_path": clip, "refused": refused,
        "clip_size": _plain(row.get("clip_size")), "crop": crop,
        # source frame the written clip starts at: evidence frames are source frames
        "start_frame": _plain(row.get("start_frame")) or 0,
        "end_frame": _plain(row.get("end_frame")),
        "num_frames": _plain(row.get("num_frames")),
        "side_ratio_median": _plain(row.get("side_ratio_median")),
        "side_fraction": _plain(row.get("side_fraction")),
        "text_score": _plain(row.get("text_score")),
        "text": _evidence(row.get("text_evidence")),
        "side_face": _evidence(row.get("side_face_evidence")),
        **{k: _plain(row.get(k)) for k in ("effective_resolution", "sharpness", "blockiness",
                                            "person_id", "shot_index", "track_index")},
        "turned_runs": _evidence_list(row.get("turned_runs")),
    }


def _evidence_list(value: Any) -> list:
    """A JSON list column ([] when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return []
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return []
    return parsed if isinstance(parsed, list) else []


REVIEW_SOURCES = 12     # sources drawn on the per-source evidence page


def _transitions(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The transitions a shots file records, as {type, start, end}: entries may be dicts
    (type or kind, start, end or span) or lists [start, end, type, ...]."""
    out = []
    for t in doc.get("transitions") or []:
        if isinstance(t, Mapping):
            span = t.get("span") or [t.get("start"), t.get("end")]
            kind = t.get("type") or t.get("kind") or "transition"
        elif isinstance(t, (list, tuple)) and len(t) >= 2:
            span, kind = t[:2], next((x for x in t[2:] if isinstance(x, str)), "transition")
        else:
            continue
        if all(isinstance(v, (int, float)) for v in span[:2]):
            out.append({"type": str(kind), "start": int(span[0]), "end": int(span[1])})
    return out


def _text_summary(text: Mapping[str, Any] | None) -> dict[str, Any]:
    """Boxes per verdict, and the strings judged text (the text behind the decision)."""
    boxes = (text or {}).get("boxes") or []
    verdicts: dict[str, int] = {}
    for b in boxes:
        verdicts[b.get("verdict", "?")] = verdicts.get(b.get("verdict", "?"), 0) + 1
    # What the recogniser read on the boxes judged text by reading (a static box's reading
    # is whatever the recogniser made of a script it does not know).
    read = sorted({b.get("text") or "" for b in boxes
                   if b.get("verdict") == "text" and b.get("by") != "static"} - {""})
    static = sum(1 for b in boxes if b.get("verdict") == "text" and b.get("by") == "static")
    return {"verdicts": verdicts, "read": read[:6], "static": static,
            "text_frames": sorted({int(b["frame"]) for b in boxes if b.get("verdict") == "text"})}


def source_evidence(manifest: ClipManifest, limit: int = REVIEW_SOURCES) -> list[dict[str, Any]]:
    """Per source (those with a rejected clip first, then by id; at most `limit`): its
    shots and transitions (from OUT/shots/<source_id>.json), and per clip its span, status,
    identity, turned runs, quality figures and the text boxes its decision rests on."""
    df = manifest.df
    if len(df) == 0:
        return []
    order = []
    for sid, group in df.groupby("source_id", sort=True):
        order.append((not (group["status"] == "rejected").any(), str(sid), group))
    out = []
    for _, sid, group in sorted(order, key=lambda t: t[:2])[:limit]:
        doc: dict[str, Any] = {}
        shots_path = manifest.root / SHOTS_DIR / f"{sid}.json"
        if shots_path.is_file():
            try:
                doc = json.loads(shots_path.read_text())
            except (OSError, json.JSONDecodeError):
                doc = {}
        clips = []
        for row in group.sort_values(["start_frame", "clip_id"], kind="stable").to_dict("records"):
            if row["clip_id"] == row["source_id"] and _plain(row.get("start_frame")) is None:
                continue
            clips.append({
                "clip_id": row["clip_id"], "status": row["status"], "reason": row["reason"],
                **{k: _plain(row.get(k)) for k in ("start_frame", "end_frame", "shot_index",
                                                    "track_index", "person_id",
                                                    "person_distance", "identity_id", "split",
                                                    "effective_resolution", "sharpness",
                                                    "blockiness", "turned_frames")},
                "turned_runs": _evidence_list(row.get("turned_runs")),
                "text": _text_summary(_evidence(row.get("text_evidence"))),
            })
        first = group.iloc[0]
        out.append({
            "source_id": sid, "source_path": _plain(first.get("source_path")),
            "num_frames": _plain(doc.get("num_frames")) or _plain(first.get("num_frames")),
            "fps": _plain(doc.get("fps")) or _plain(first.get("fps")),
            "shots": [list(s_[:2]) for s_ in doc.get("shots") or [] if len(s_) >= 2],
            "transitions": _transitions(doc),
            "identity_changes": [int(f) for f in doc.get("identity_changes") or []],
            "person_changes": [{k: _plain(ch.get(k)) for k in ("start", "end", "kind")}
                               for ch in doc.get("person_changes") or [] if isinstance(ch, dict)],
            "clips": clips,
            "message": "" if clips else str(first.get("message") or ""),
        })
    return out


def review_rows(manifest: ClipManifest, per_reason: int = REVIEW_PER_REASON,
                tail: int = REVIEW_TAIL) -> dict[str, list[dict[str, Any]]]:
    """{"rejected": [...], "tails": [...]}: up to `per_reason` rejected rows of every
    reason, and the kept rows at both ends of every metric, each with why it was picked
    and its parsed evidence. Errors are left out: they have no frames to show."""
    df = manifest.df
    rejected = []
    bad = df[df["status"] == "rejected"].sort_values(["reason", "clip_id"], kind="stable")
    for _, group in bad.groupby("reason", sort=True):
        # Spread over the group, not its first rows: neighbours by clip id are often
        # variants of one source.
        picks = np.unique(np.linspace(0, len(group) - 1, min(per_reason, len(group))).round().astype(int))
        for row in group.iloc[picks].to_dict("records"):
            rejected.append(_review_entry(row, manifest, [f"rejected: {row['reason']}"]))
    kept = df[df["status"] == "kept"]
    picked: dict[str, tuple[dict, list[str]]] = {}
    for m in CLIP_METRICS:
        low, high = tail_rows(kept, m, tail)
        for end, rows in (("lowest", low), ("highest", high)):
            for row in rows.to_dict("records"):
                entry = picked.setdefault(row["clip_id"], (row, []))
                entry[1].append(f"{end} {m.name} {row['_value']:.4g}")
    tails = [_review_entry(row, manifest, why) for row, why in
             (picked[k] for k in sorted(picked))]
    return {"rejected": rejected, "tails": tails, "sources": source_evidence(manifest)}


# --- degradation parameters ----------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def flatten_params(params: str | list | None) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """(scalars, per-frame lists) of one pair's drawn parameters.

    Generic on purpose: whatever a recipe step records becomes `STEP.KEY`. A step kind
    that appears twice in one recipe gets `STEP#INDEX`; nested objects become
    `STEP.KEY.SUB`; a numeric list (one value per frame, or frame indices) becomes
    `KEY.n` and `KEY.mean` scalars plus its values, pooled across pairs by the caller.
    """
    steps = json.loads(params) if isinstance(params, str) else params
    if not steps:
        return {}, {}
    if not isinstance(steps, list):
        steps = [steps]
    kinds = [s.get("step", f"step{i}") if isinstance(s, Mapping) else f"step{i}"
             for i, s in enumerate(steps)]
    scalars: dict[str, Any] = {}
    lists: dict[str, list[float]] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif _is_number(value):
            scalars[prefix] = float(value)
        elif isinstance(value, (str, bool)):
            scalars[prefix] = str(value)
        elif isinstance(value, (list, tuple)):
            nums = [float(x) for x in value if _is_number(x)]
            scalars[f"{prefix}.n"] = float(len(value))
            if nums and len(nums) == len(value):
                scalars[f"{prefix}.mean"] = float(np.mean(nums))
                lists[prefix] = nums

    for i, (kind, step) in enumerate(zip(kinds, steps)):
        name = kind if kinds.count(kind) == 1 else f"{kind}#{i}"
        if isinstance(step, Mapping):
            walk(name, {k: v for k, v in step.items() if k != "step"})
        else:
            walk(name, step)
    return scalars, lists


def param_table(pairs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Flattened parameters of the ok pairs: one row per pair (with `recipe`), and for
    each per-frame list a long table (pair_id, recipe, value)."""
    ok = pairs[pairs["status"] == "ok"]
    rows, pooled = [], {}
    for pid, recipe, params in zip(ok["pair_id"], ok["recipe"], ok["params"]):
        try:
            scalars, lists = flatten_params(params)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ManifestError(f"pair {pid}: params is not the JSON list of steps ({exc})") from exc
        rows.append({"pair_id": pid, "recipe": recipe, **scalars})
        for k, vals in lists.items():
            pooled.setdefault(k, []).append(pd.DataFrame(
                {"pair_id": pid, "recipe": recipe, "value": vals}))
    table = pd.DataFrame(rows, columns=["pair_id", "recipe"] if not rows else None)
    return table, {k: pd.concat(v, ignore_index=True) for k, v in sorted(pooled.items())}


def _numeric_param(values: pd.Series, recipes: pd.Series, bins: int) -> dict[str, Any]:
    edges = bin_edges([values], bins)
    by_recipe = {r: counts_in(values[recipes == r], edges) for r in sorted(recipes.unique())}
    return {"summary": describe(values), "edges": [_num(e) for e in edges],
            "counts": counts_in(values, edges), "by_recipe": by_recipe}


def pairs_summary(pairs: pd.DataFrame, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Counts of the pairs manifest and the distribution of every drawn parameter.

    Parameters that never vary (a fixed kernel size, a preset) go to `constants` rather
    than to a histogram of one bar.
    """
    table, pooled = param_table(pairs)
    ok = pairs[pairs["status"] == "ok"]
    per_clip = ok.groupby("clip_id").size() if len(ok) else pd.Series(dtype=float)
    out: dict[str, Any] = {
        "rows": int(len(pairs)),
        "status": {str(k): int(v) for k, v in pairs["status"].value_counts().items()},
        "reasons": {str(k): int(v) for k, v in pairs["reason"].value_counts().items()},
        "recipes": {str(k): int(v) for k, v in ok["recipe"].value_counts().sort_index().items()},
        "clips": int(ok["clip_id"].nunique()),
        "pairs_per_clip": describe(per_clip),
        "numeric": {}, "categorical": {}, "constants": {},
    }
    recipes = table["recipe"] if len(table) else pd.Series(dtype=str)
    for col in sorted(c for c in table.columns if c not in ("pair_id", "recipe")):
        s = table[col]
        present = s.dropna()
        if present.empty:
            continue
        if present.map(_is_number).all():
            v = pd.to_numeric(s, errors="coerce")
            fv = finite(v)
            if len(fv) and fv.min() == fv.max():
                out["constants"][col] = _num(fv[0])
            else:
                out["numeric"][col] = {"label": col, **_numeric_param(v, recipes, bins)}
        else:
            counts = present.astype(str).value_counts()
            if len(counts) == 1:
                out["constants"][col] = str(counts.index[0])
            else:
                out["categorical"][col] = {str(k): int(n) for k, n in counts.items()}
    for key, long in pooled.items():
        name = f"{key} (all frames)"
        fv = finite(long["value"])
        if len(fv) and fv.min() == fv.max():
            out["constants"][name] = _num(fv[0])
        else:
            out["numeric"][name] = {"label": name, **_numeric_param(long["value"], long["recipe"], bins)}
    return out


# --- the whole audit -----------------------------------------------------------------
def audit(manifest: str | Path, pairs: str | Path | None = None,
          compare: str | Path | None = None, names: tuple[str, str] | None = None,
          bins: int = DEFAULT_BINS, allow_outside: bool = False) -> dict[str, Any]:
    """The summary `stc stats` writes: clips, optionally pairs and a comparison of the
    kept clips of two manifests."""
    a = load_clip_manifest(manifest, names[0] if names else None, allow_outside)
    summary: dict[str, Any] = {"name": a.name, "manifest": str(a.path), "bins": bins,
                               "clips": clip_summary(a, bins), "review": review_rows(a),
                               "pairs": None, "compare": None}
    if pairs is not None:
        summary["pairs_manifest"] = str(pairs)
        summary["pairs"] = pairs_summary(load_pairs_manifest(pairs), bins)
    if compare is not None:
        b = load_clip_manifest(compare, names[1] if names else None)
        if b.name == a.name:
            b.name = f"{b.name} (2)"
        summary["compare"] = {
            "manifests": {a.name: str(a.path), b.name: str(b.path)},
            "metrics": compare_groups({a.name: a.df, b.name: b.df}, bins, kept_only=True),
        }
    return summary
