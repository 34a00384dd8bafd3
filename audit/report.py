"""Draw the audit numbers of `manifests.stats` and write the report: PNG figures, one
self-contained HTML page (figures embedded as base64) and the JSON summary.

Every plot is drawn from the summary dict, never from the manifest again, so what a
figure shows is exactly what the JSON says; the review page (`audit.review`) also
decodes the frames its evidence refers to. Matplotlib runs on the Agg backend (no
display needed): figures are plain `Figure` objects, never pyplot state, so importing this
module in a notebook leaves its inline backend alone, and a notebook shows them with
`display(fig)`. PNGs carry no software/date metadata, so a rerun writes the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from stc.audit.review import review_figure, source_figure
from stc.core.fs import atomic_path
from stc.manifests.clips import FUNNEL

STATUS_COLORS = {"kept": "#2e7d32", "rejected": "#ef6c00", "error": "#c62828"}
THRESHOLD_COLOR = "#1565c0"
STAGE_LABELS = {
    "inputs": "inputs", "decodable": "decodable", "face": "one big face", "crop": "crop ≥ min",
    "frontal": "frontal", "no_text": "no text", "kept": "kept",
}
DPI = 100


def _colors(n: int) -> list:
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _centers_widths(edges: list[float]) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(edges, dtype=float)
    return (e[:-1] + e[1:]) / 2, np.diff(e)


def _corner(ax, text: str) -> None:
    ax.text(0.98, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=8,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.8", "alpha": 0.9})


def _empty(ax, title: str, why: str = "no values") -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_funnel(ax, funnel: Mapping[str, int], drops: Mapping[str, Mapping[str, int]],
                title: str = "filter funnel") -> None:
    """Horizontal bars, one per stage, with what each stage removed and why."""
    stages = list(FUNNEL)
    n = [funnel[s] for s in stages]
    total = max(n[0], 1)
    y = np.arange(len(stages))[::-1]
    colors = ["0.55"] + ["#90a4ae"] * (len(stages) - 2) + [STATUS_COLORS["kept"]]
    ax.barh(y, n, color=colors, height=0.7)
    for yi, stage, count in zip(y, stages, n):
        ax.text(count + total * 0.01, yi, f"{count}  ({100 * count / total:.0f}%)",
                va="center", fontsize=9)
        reasons = drops.get(stage, {})
        if reasons:
            why = ", ".join(f"{r} ({k})" for r, k in sorted(reasons.items(), key=lambda t: -t[1]))
            ax.text(total * 1.22, yi, f"−{sum(reasons.values())}  {why}", va="center",
                    fontsize=9, color=STATUS_COLORS["rejected"])
    ax.set_yticks(y, [STAGE_LABELS.get(s, s) for s in stages], fontsize=9)
    ax.set_xlim(0, total * 2.3)
    ax.set_xticks([t for t in MaxNLocator(5, integer=True).tick_values(0, total) if 0 <= t <= total])
    ax.set_xlabel("clips reaching the stage")
    ax.set_title(title, fontsize=11, loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_metric(ax, m: Mapping[str, Any]) -> None:
    """A histogram of one clip metric, bars stacked by status, thresholds as lines."""
    s = m["summary"]
    if not s.get("n"):
        _empty(ax, m["label"])
        return
    x, w = _centers_widths(m["edges"])
    bottom = np.zeros(len(x))
    for status, counts in m["by_status"].items():
        c = np.asarray(counts, dtype=float)
        ax.bar(x, c, width=w * 0.92, bottom=bottom, color=STATUS_COLORS.get(status, "0.5"),
               label=status)
        bottom += c
    for t in m["thresholds"]:
        ax.axvline(t["value"], color=THRESHOLD_COLOR, ls="--", lw=1.2)
    # Headroom above the bars keeps the corner box and threshold labels off the data.
    ax.set_ylim(0, max(bottom.max(), 1) * 1.6)
    lo, hi = ax.get_xlim()
    for t in m["thresholds"]:
        right = (t["value"] - lo) / ((hi - lo) or 1) > 0.6
        ax.text(t["value"], 0.66, f" {t['label']} {_fmt(t['value'])} ", ha="right" if right else "left",
                va="bottom", fontsize=8, color=THRESHOLD_COLOR, transform=ax.get_xaxis_transform())
    ax.set_title(m["label"], fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.xaxis.set_major_locator(_x_locator(m["edges"]))
    miss = f", {m['missing']} n/a" if m["missing"] else ""
    _corner(ax, f"n={s['n']}{miss}\nmedian {_fmt(s['median'])}\n[{_fmt(s['min'])}, {_fmt(s['max'])}]")
    ax.tick_params(labelsize=8)


def plot_groups(ax, m: Mapping[str, Any], fractions: bool = True) -> None:
    """One metric for several groups on shared edges: outlined histograms, one per group."""
    groups = m["groups"]
    if not any(g["summary"].get("n") for g in groups.values()):
        _empty(ax, m["label"])
        return
    edges = np.asarray(m["edges"], dtype=float)
    for color, (name, g) in zip(_colors(len(groups)), groups.items()):
        h = np.asarray(g["fractions" if fractions else "counts"], dtype=float)
        if not g["summary"].get("n"):
            continue
        ax.stairs(h, edges, color=color, lw=1.8, fill=False,
                  label=f"{name} (n={g['summary']['n']}, med {_fmt(g['summary']['median'])})")
        ax.stairs(h, edges, color=color, alpha=0.15, fill=True)
        ax.axvline(g["summary"]["median"], color=color, ls=":", lw=1.2)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.45)   # room for the legend above the bars
    values = {(g["summary"]["min"], g["summary"]["max"]) for g in groups.values() if g["summary"].get("n")}
    if len(values) == 1 and len({v for pair in values for v in pair}) == 1:
        ax.text(0.5, 0.45, f"every clip: {_fmt(next(iter(values))[0])}", transform=ax.transAxes,
                ha="center", fontsize=10, color="0.3")
    ax.xaxis.set_major_locator(_x_locator(m["edges"]))
    ax.set_title(m["label"], fontsize=10)
    ax.set_ylabel("fraction of clips" if fractions else "clips", fontsize=8)
    ax.legend(fontsize=7, loc="upper right", frameon=True)
    ax.tick_params(labelsize=8)


def _x_locator(edges: list[float]) -> MaxNLocator:
    """Integer ticks when the bins are one per integer (fps, CRF, counts)."""
    e = np.asarray(edges, dtype=float)
    unit = len(e) > 1 and np.allclose(np.diff(e), 1) and abs(e[0] % 1 - 0.5) < 1e-9
    return MaxNLocator(6, integer=bool(unit))


def plot_param(ax, name: str, p: Mapping[str, Any], colors: Mapping[str, Any] | None = None) -> None:
    """A drawn degradation parameter, bars stacked by recipe (one colour per recipe)."""
    x, w = _centers_widths(p["edges"])
    colors = colors or dict(zip(p["by_recipe"], _colors(len(p["by_recipe"]))))
    bottom = np.zeros(len(x))
    shown = 0
    for recipe, counts in p["by_recipe"].items():
        c = np.asarray(counts, dtype=float)
        if not c.any():
            continue
        ax.bar(x, c, width=w * 0.92, bottom=bottom, color=colors[recipe], label=recipe)
        bottom += c
        shown += 1
    s = p["summary"]
    ax.set_ylim(0, max(bottom.max(), 1) * 1.5)  # room for the legend and the corner box
    ax.xaxis.set_major_locator(_x_locator(p["edges"]))
    ax.set_title(name, fontsize=10)
    _corner(ax, f"n={s['n']}\nmedian {_fmt(s['median'])}\n[{_fmt(s['min'])}, {_fmt(s['max'])}]")
    if shown > 1:
        ax.legend(fontsize=7, loc="upper left")
    ax.tick_params(labelsize=8)


def plot_categorical(ax, name: str, counts: Mapping[str, int]) -> None:
    items = sorted(counts.items(), key=lambda t: -t[1])[:12]
    y = np.arange(len(items))[::-1]
    ax.barh(y, [c for _, c in items], color="#78909c")
    ax.set_yticks(y, [k[:28] for k, _ in items], fontsize=8)
    ax.set_title(name, fontsize=10)


def code_usage_figure(counts: Mapping[str, Any], title: str = "codebook usage"):
    """Per codebook: how often each code is used (by index) and the usage sorted by rank
    (log scale), the view of the paper's Figs. 5/12. `counts`: name -> per-code counts."""
    fig = Figure(figsize=(14, 3.3 * len(counts) + 0.6))
    axes = fig.subplots(len(counts), 2, squeeze=False)
    for (ax_i, ax_r), (name, c) in zip(axes, counts.items()):
        c = np.asarray(c, dtype=float)
        total, used = c.sum(), int((c > 0).sum())
        p = c / total if total else c
        ax_i.bar(np.arange(len(c)), p, width=1.0, color="#1565c0")
        ax_i.set_title(f"{name}: usage by code index ({used}/{len(c)} codes used)", fontsize=10)
        ax_i.set_xlim(-0.5, len(c) - 0.5)
        ax_i.set_ylabel("fraction of tokens", fontsize=8)
        ranked = np.sort(p)[::-1]
        ax_r.plot(np.arange(1, len(c) + 1), np.where(ranked > 0, ranked, np.nan), color="#1565c0")
        ax_r.axhline(1 / len(c), color="0.5", ls="--", lw=1)
        ax_r.text(len(c), 1 / len(c), " uniform", va="bottom", ha="right", fontsize=8, color="0.4")
        if ranked.any():
            ax_r.set_yscale("log")
        ax_r.set_title(f"{name}: usage by rank", fontsize=10)
        ax_r.set_xlabel("code rank", fontsize=8)
    fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    _margins(fig, left=0.8, top=0.6, bottom=0.55, hspace=0.5)
    return fig


# --- figures -------------------------------------------------------------------------
def _margins(fig, left: float = 0.6, right: float = 0.2, top: float = 0.8, bottom: float = 0.45,
             wspace: float = 0.22, hspace: float = 0.42) -> None:
    """Fixed margins in inches: tight_layout measures every text and doubled the time of
    a report, and these figures have known contents."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        wspace=wspace, hspace=hspace)


def _grid(n: int, cols: int = 4, cell: tuple[float, float] = (4.6, 3.2)):
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(cell[0] * cols, cell[1] * rows + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def overview_figure(clips: Mapping[str, Any], name: str):
    """Funnel and every clip metric on one page: the report at a glance."""
    metrics = list(clips["metrics"].values())
    cols = 4
    rows = 1 + math.ceil(max(len(metrics) - 2, 0) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.2 * rows + 1.0))
    gs = fig.add_gridspec(rows, cols)
    plot_funnel(fig.add_subplot(gs[0, :2]), clips["funnel"], clips["funnel_drops"])
    slots = [(0, 2), (0, 3)] + [(r, c) for r in range(1, rows) for c in range(cols)]
    for (r, c), m in zip(slots, metrics):
        plot_metric(fig.add_subplot(gs[r, c]), m)
    st = clips["status"]
    handles = [Rectangle((0, 0), 1, 1, color=STATUS_COLORS[s]) for s in STATUS_COLORS]
    fig.legend(handles, [f"{s} ({st.get(s, 0)})" for s in STATUS_COLORS], loc="upper right",
               ncol=3, fontsize=10, frameon=False)
    fig.suptitle(f"{name}: {clips['rows']} inputs, {st.get('kept', 0)} kept "
                 f"({clips['kept_frames']:,} frames, {clips['kept_hours'] * 60:.1f} min), "
                 f"{len(clips['sources'])} source(s)   ·   dashed lines: curate thresholds",
                 x=0.01, ha="left", fontsize=13)
    _margins(fig, left=1.1)
    return fig


def funnel_figure(clips: Mapping[str, Any], name: str):
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    plot_funnel(ax, clips["funnel"], clips["funnel_drops"], title=f"{name}: filter funnel")
    _margins(fig, left=1.1, top=0.35, bottom=0.5)
    return fig


def groups_figure(compare: Mapping[str, Any], title: str, first: str = "motion_intensity"):
    names = sorted(compare, key=lambda k: (k != first, list(compare).index(k)))
    fig, axes = _grid(len(names))
    for ax, k in zip(axes, names):
        plot_groups(ax, compare[k])
    fig.suptitle(title, x=0.01, ha="left", fontsize=13)
    _margins(fig)
    return fig


def params_figure(pairs: Mapping[str, Any]):
    numeric, categorical = pairs["numeric"], pairs["categorical"]
    n = len(numeric) + len(categorical)
    if not n:
        return None
    fig, axes = _grid(n)
    colors = dict(zip(pairs["recipes"], _colors(len(pairs["recipes"]))))
    for ax, (k, p) in zip(axes, numeric.items()):
        plot_param(ax, k, p, colors)
    for ax, (k, c) in zip(axes[len(numeric):], categorical.items()):
        plot_categorical(ax, k, c)
    ok = pairs["status"].get("ok", 0)
    fig.suptitle(f"degradation parameters of {ok} pairs from {pairs['clips']} clips "
                 f"(recipes: {', '.join(f'{r} {k}' for r, k in pairs['recipes'].items())})",
                 x=0.01, ha="left", fontsize=13)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    fig.legend(handles, list(colors), loc="upper right", ncol=len(colors), fontsize=10, frameon=False)
    _margins(fig)
    return fig


def pairs_strip_figure(recipe: str, examples: list[Mapping[str, Any]]):
    """A strip of example pairs of one recipe: LQ above GT (HQ), one column per pair (the
    middle frame of each window), titled by clip and window."""
    n = len(examples)
    if not n:
        return None
    h, w = examples[0]["hq"].shape[:2]
    cell = 2.4
    fig = Figure(figsize=(cell * n + 0.6, cell * 2 * h / w + 0.9))
    axes = fig.subplots(2, n, squeeze=False)
    for j, e in enumerate(examples):
        for i, (key, label) in enumerate((("lq", "LQ"), ("hq", "GT"))):
            ax = axes[i][j]
            ax.imshow(e[key], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=11)
        axes[0][j].set_title(f"{e['clip_id'][:18]}\nwindow {e['window']}", fontsize=8)
    fig.suptitle(f"recipe {recipe}: example pairs (middle frame of each window)", x=0.01,
                 ha="left", fontsize=12)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.84, bottom=0.02, wspace=0.04, hspace=0.04)
    return fig


def save_png(fig, path: str | Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return Path(path)


# --- HTML ----------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1900px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left} img{max-width:100%;border:1px solid #eee}
.muted{color:#777;font-size:12px}
"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


REVIEW_GROUPS = {"rejected": "rejected clips", "tails": "kept clips at the tails of each metric"}


def _review_html(review: Mapping[str, Any], images: Mapping[str, Path]) -> list[str]:
    if not any(review.get(g) for g in REVIEW_GROUPS):
        return []
    parts = ["<h2>Review</h2>",
             "<p class=muted>The frames each decision looked at, with its evidence: text boxes "
             "coloured by verdict with what the recogniser read, and the side-face landmarks "
             "(nose tip 30, eye corners 36 and 45) with that frame's alpha.</p>"]
    for group, label in REVIEW_GROUPS.items():
        entries = review.get(group) or []
        if not entries:
            continue
        parts.append(f"<h3>{html.escape(label.capitalize())} ({len(entries)})</h3>")
        if f"review_{group}" in images:
            parts.append(_img(images[f"review_{group}"], f"review: {label}"))
        parts.append(_table(["clip", "status", "reason", "picked as", "message"],
                            [[e["clip_id"], e["status"], e["reason"], "; ".join(e["why"]), e["message"]]
                             for e in entries]))
    parts += _sources_html(review.get("sources") or [], images)
    return parts


def _sources_html(sources: list[Mapping[str, Any]], images: Mapping[str, Path]) -> list[str]:
    """Per source: transitions, identities, turned runs, quality figures, text boxes."""
    if not sources:
        return []
    parts = ["<h3>Per source: the evidence behind each decision</h3>"]
    if "review_sources" in images:
        parts.append(_img(images["review_sources"], "review: per source"))
    rows = []
    for src in sources:
        trans = "; ".join(f"{t['type']} {t['start']}-{t['end']}" for t in src["transitions"]) or "-"
        for c in src["clips"] or [{}]:
            text = c.get("text") or {}
            rows.append([
                src["source_id"], trans, c.get("clip_id", "-"),
                f"{c.get('start_frame')}-{c.get('end_frame')}" if c else "-",
                "-" if c.get("person_id") is None else c["person_id"],
                f"{c.get('status', '')}/{c.get('reason', '')}" if c else src.get("message", ""),
                "; ".join(f"{r['start']}-{r['end']}{' cut' if r.get('trimmed') else ''}"
                          for r in c.get("turned_runs") or []) or "-",
                " / ".join(_fmt(c.get(k)) for k in ("effective_resolution", "sharpness", "blockiness")),
                ", ".join(f"{v}: {n}" for v, n in (text.get("verdicts") or {}).items()) or "-",
                "; ".join(text.get("read") or []) + (f" (+{text['static']} unread at one place)"
                                                     if text.get("static") else ""),
            ])
    parts.append(_table(["source", "transitions", "clip", "frames", "person", "decision",
                         "turned runs", "detail px / sharpness / blockiness", "text boxes",
                         "text judged"], rows))
    return parts


def html_page(summary: Mapping[str, Any], images: Mapping[str, Path]) -> str:
    clips = summary["clips"]
    parts = [f"<h1>Dataset audit: {html.escape(summary['name'])}</h1>",
             f"<p class=muted>manifest {html.escape(summary['manifest'])}</p>"]
    st = clips["status"]
    parts.append(_table(["rows", "kept", "rejected", "error", "kept frames", "kept minutes", "sources"],
                        [[clips["rows"], st.get("kept", 0), st.get("rejected", 0), st.get("error", 0),
                          clips["kept_frames"], _fmt(clips["kept_hours"] * 60), len(clips["sources"])]]))
    if "overview" in images:
        parts.append(_img(images["overview"], "overview"))
    parts.append("<h2>Filter funnel</h2>")
    prev, rows = None, []
    for stage in FUNNEL:
        n = clips["funnel"][stage]
        why = ", ".join(f"{r}: {k}" for r, k in clips["funnel_drops"].get(stage, {}).items())
        rows.append([STAGE_LABELS.get(stage, stage), n, "" if prev is None else prev - n, why])
        prev = n
    parts.append(_table(["stage", "clips", "dropped", "reasons"], rows))
    if "funnel" in images:
        parts.append(_img(images["funnel"], "filter funnel"))
    if len(clips["sources"]) > 1:
        parts.append(_table(["source"] + list(FUNNEL),
                            [[s] + [f[k] for k in FUNNEL] for s, f in clips["source_funnel"].items()]))
    parts.append("<h2>Metrics</h2>")
    mrows = []
    for k, m in clips["metrics"].items():
        s, ks = m["summary"], m["kept_summary"]
        mrows.append([m["label"], s.get("n", 0), m["missing"], _fmt(s.get("min")), _fmt(s.get("p05")),
                      _fmt(s.get("median")), _fmt(s.get("p95")), _fmt(s.get("max")),
                      _fmt(ks.get("median")),
                      ", ".join(f"{t['label']} {_fmt(t['value'])}" for t in m["thresholds"])])
    parts.append(_table(["metric", "n", "n/a", "min", "p5", "median", "p95", "max", "kept median",
                         "thresholds"], mrows))
    parts.append(_table(["resolution", "inputs"], [[k, v] for k, v in clips["resolutions"].items()]))
    if "per_source" in images:
        parts.append("<h2>Per source</h2>" + _img(images["per_source"], "per source"))
    if summary.get("compare"):
        cmp = summary["compare"]
        parts.append(f"<h2>Comparison (kept clips): {html.escape(' vs '.join(cmp['manifests']))}</h2>")
        if "compare" in images:
            parts.append(_img(images["compare"], "compare"))
        names = list(cmp["manifests"])
        parts.append(_table(["metric"] + [f"{n} median" for n in names] + [f"{n} n" for n in names],
                            [[m["label"]] + [_fmt(m["groups"][n]["summary"].get("median")) for n in names]
                             + [m["groups"][n]["summary"].get("n", 0) for n in names]
                             for m in cmp["metrics"].values()]))
    parts += _review_html(summary.get("review") or {}, images)
    pairs = summary.get("pairs")
    if pairs:
        parts.append("<h2>Degradation pairs</h2>")
        parts.append(_table(["rows", "ok", "error", "clips", "pairs per clip (median)", "recipes"],
                            [[pairs["rows"], pairs["status"].get("ok", 0), pairs["status"].get("error", 0),
                              pairs["clips"], _fmt(pairs["pairs_per_clip"].get("median")),
                              ", ".join(f"{r}: {n}" for r, n in pairs["recipes"].items())]]))
        if pairs["reasons"]:
            parts.append(_table(["reason", "pairs"], [[k, v] for k, v in pairs["reasons"].items()]))
        strips = [k for k in images if k.startswith("pairs_strip_")]
        if strips:
            parts.append("<p>Example pairs of each recipe (LQ above GT):</p>")
            parts += [_img(images[k], k[len("pairs_strip_"):]) for k in strips]
        if "params" in images:
            parts.append(_img(images["params"], "degradation parameters"))
        parts.append(_table(["parameter", "n", "min", "median", "max"],
                            [[k, p["summary"].get("n", 0), _fmt(p["summary"].get("min")),
                              _fmt(p["summary"].get("median")), _fmt(p["summary"].get("max"))]
                             for k, p in pairs["numeric"].items()]))
        if pairs["constants"]:
            parts.append("<p>Parameters with one value in every pair:</p>")
            parts.append(_table(["parameter", "value"], [[k, v] for k, v in pairs["constants"].items()]))
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>stc stats: "
            f"{html.escape(summary['name'])}</title><style>{_CSS}</style></head><body>{body}</body></html>")


def write_report(summary: dict[str, Any], out: str | Path,
                 examples: Mapping[str, list[Mapping[str, Any]]] | None = None) -> dict[str, Path]:
    """Write the figures, `report.html` and `summary.json` into `out`; returns the paths.
    `examples` (recipe -> `audit.pairs.example_pairs` entries) become one strip per recipe."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clips, name = summary["clips"], summary["name"]
    images: dict[str, Path] = {
        "overview": save_png(overview_figure(clips, name), out / "overview.png"),
        "funnel": save_png(funnel_figure(clips, name), out / "funnel.png"),
    }
    if clips.get("per_source"):
        images["per_source"] = save_png(
            groups_figure(clips["per_source"], f"{name}: per source (all rows; each source "
                                               "normalised to its own count)"),
            out / "per_source.png")
    if summary.get("compare"):
        images["compare"] = save_png(
            groups_figure(summary["compare"]["metrics"],
                          f"kept clips: {' vs '.join(summary['compare']['manifests'])} "
                          "(each normalised to its own count; dotted: medians)"),
            out / "compare.png")
    if summary.get("pairs"):
        fig = params_figure(summary["pairs"])
        if fig is not None:
            images["params"] = save_png(fig, out / "pairs_params.png")
    for recipe, chosen in (examples or {}).items():
        fig = pairs_strip_figure(recipe, chosen)
        if fig is not None:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in recipe)
            images[f"pairs_strip_{recipe}"] = save_png(fig, out / f"pairs_{safe}.png")
    for group, label in REVIEW_GROUPS.items():
        fig = review_figure((summary.get("review") or {}).get(group) or [], f"{name}: review, {label}")
        if fig is not None:
            images[f"review_{group}"] = save_png(fig, out / f"review_{group}.png")
    fig = source_figure((summary.get("review") or {}).get("sources") or [],
                        f"{name}: per source, the evidence behind each decision")
    if fig is not None:
        images["review_sources"] = save_png(fig, out / "review_sources.png")
    summary["files"] = {k: p.name for k, p in images.items()}
    summary["files"].update(html="report.html", json="summary.json")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(html_page(summary, images), encoding="utf-8")
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return {**images, "html": out / "report.html", "json": out / "summary.json"}
