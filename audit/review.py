"""The review page of `stc stats`: frame strips of the clips a person should check, with
the evidence each curation decision was made on drawn over the frames.

For every row picked by `stats.review_rows` (rejected clips, and kept clips at the tails
of each metric) the frames the decision looked at are decoded again and drawn side by
side: the text stage's analysed frames with every detector box (colour = verdict) and
what the recogniser read, and the landmarks the side-face rule reads (nose tip 30, outer
eye corners 36 and 45) with that frame's alpha. Coordinates in the manifest are input
pixels; a row whose source video is gone is drawn from its written clip instead.

`source_figure` draws the per-source evidence (`stats.source_evidence`) as timelines: the
source's shots and the transitions between them (type and span), then one lane per clip
with its identity (`person_id`, else its track), status and reason, the turned runs of its
track (cut out, or short ones left in), the frames where text was found, and its quality
figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon, Rectangle

from stc.core.video import VideoError, decode_sampled, probe

FRAMES = 6                   # tiles per row
TILE = 150                   # tile height, px
GAP = 4                      # px between tiles
DPI = 100
LABEL_CHARS = 26             # recognised strings are cut to this on a tile
# Box verdicts of curation.text, from "counted as text" to "never a candidate line".
VERDICT_STYLE = {
    "text": ("#ff1744", 1.8, "-", "text (read, persistent)"),
    "lone": ("#ff9100", 1.4, "-", "read on one frame only"),
    "unread": ("#ffea00", 1.1, "--", "line, not read"),
    "not_a_line": ("#b0bec5", 0.9, ":", "box, not a line"),
}
SIDE_COLOR, FRONTAL_COLOR = "#ff1744", "#00e676"
STATUS_COLOR = {"kept": "#43a047", "rejected": "#e53935", "error": "#757575"}
TRANSITION_COLOR = "#8e24aa"
TURNED_COLOR = "#ff9100"
IDENTITY_COLOR = "#1e88e5"
LANE = 0.26                  # inches per timeline lane


def _printable(s: str) -> str:
    """The recogniser also reads CJK, which matplotlib's bundled font cannot draw:
    such characters are shown as escapes rather than as empty boxes."""
    return "".join(c if ord(c) < 0x250 else f"\\u{ord(c):04x}" for c in s)


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def frames_to_show(entry: Mapping[str, Any], n: int = FRAMES) -> list[int]:
    """The text stage's analysed frames when it ran; else up to `n` of the frames the
    side-face rule judged, spread over the clip; else `n` frames spread over the video."""
    text = entry.get("text") or {}
    if text.get("frames"):
        return sorted({int(i) for i in text["frames"]})[:n]
    frames = [int(i) for i in (entry.get("side_face") or {}).get("frames") or []]
    if not frames:
        start = int(entry.get("start_frame") or 0)
        frames = list(range(start, int(entry.get("end_frame") or entry.get("num_frames") or 0)))
    if not frames:
        return []
    picks = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    return sorted({frames[i] for i in picks})


def _decode(path: str | Path, indices: list[int]) -> dict[int, np.ndarray]:
    got: dict[int, np.ndarray] = {}
    decode_sampled(path, set(indices), lambda i, img: got.__setitem__(i, img), include_last=False)
    return got


View = tuple[dict[int, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def load_view(entry: Mapping[str, Any], indices: list[int]) -> View:
    """(frame index -> image of the region the decision saw, input px -> image px).

    The region is the crop box when there is one (the clip's content), else the whole
    frame. The source video is preferred, since the evidence is in its pixels; a kept row
    whose source is gone is drawn from its written clip, which is the crop box scaled.
    """
    crop, src, clip = entry.get("crop"), entry.get("source_path"), entry.get("clip_path")
    if src and Path(src).is_file():
        frames = _decode(src, indices)
        if not frames:
            raise VideoError(f"{src}: none of frames {indices} could be decoded")
        if crop is None:
            return frames, lambda p: np.asarray(p, float)
        x0, y0, x1, y1 = crop
        return ({i: np.ascontiguousarray(f[y0:y1, x0:x1]) for i, f in frames.items()},
                lambda p: np.asarray(p, float) - (x0, y0))
    if clip and crop is not None and Path(clip).is_file():
        x0, y0, x1, y1 = crop
        size = probe(clip).width
        start = int(entry.get("start_frame") or 0)
        frames = {i + start: f for i, f in _decode(clip, [i - start for i in indices if i >= start]).items()}
        return frames, lambda p: (np.asarray(p, float) - (x0, y0)) * (size / (x1 - x0))
    if entry.get("refused"):
        raise FileNotFoundError("; ".join(entry["refused"]))
    raise FileNotFoundError(f"neither the source ({src}) nor a written clip is on disk")


def _draw_text_boxes(ax, boxes: list[Mapping[str, Any]], place: Callable[[np.ndarray], np.ndarray],
                     left: float, right: float) -> None:
    # Least telling first, so a text box is drawn on top of the grey candidates it beat.
    order = list(VERDICT_STYLE)[::-1]
    for b in sorted(boxes, key=lambda b: order.index(b["verdict"]) if b["verdict"] in order else 0):
        color, lw, ls, _ = VERDICT_STYLE.get(b["verdict"], VERDICT_STYLE["not_a_line"])
        pts = place(np.asarray(b["poly"], float))
        ax.add_patch(Polygon(pts, closed=True, fill=False, ec=color, lw=lw, ls=ls))
        if b.get("rec") is None:
            continue
        # Starting at the box's left edge, or ending at its right edge when that leaves
        # more room inside the tile; cut to fit (~5 px a character at 6.5 pt).
        x0, x1 = pts[:, 0].min(), pts[:, 0].max()
        from_left = right - x0 >= x1 - left
        room = max(4, min(LABEL_CHARS, int(((right - x0) if from_left else (x1 - left)) / 5.2) - 5))
        label = f"{_short(_printable(b['text']), room) or '∅'} {b['rec']:.2f}"
        # Above the box, or below it when the box touches the top of the tile.
        above = pts[:, 1].min() > 14
        ax.text(x0 if from_left else x1, pts[:, 1].min() - 2 if above else pts[:, 1].max() + 2, label,
                color=color, fontsize=6.5, va="bottom" if above else "top",
                ha="left" if from_left else "right", clip_on=True,
                bbox={"fc": "black", "ec": "none", "alpha": 0.75, "pad": 0.6})


def _draw_landmarks(ax, pts6: list[float], alpha: float | None, side: bool,
                    place: Callable[[np.ndarray], np.ndarray], corner: tuple[float, float]) -> None:
    p = place(np.asarray(pts6, float).reshape(3, 2))   # rows: 30 (nose tip), 36, 45
    color = SIDE_COLOR if side else FRONTAL_COLOR
    ax.plot(p[1:, 0], p[1:, 1], color="#40c4ff", lw=0.9)
    ax.plot(p[1:, 0], p[1:, 1], "o", ms=3.2, color="#40c4ff", mec="black", mew=0.4)
    ax.plot([p[0, 0]], [p[0, 1]], "o", ms=4, color=color, mec="black", mew=0.5)
    ax.text(*corner, f"α {'∞' if alpha is None else f'{alpha:.2f}'}{' side' if side else ''}",
            color=color, fontsize=7, va="top", ha="left", fontweight="bold",
            bbox={"fc": "black", "ec": "none", "alpha": 0.6, "pad": 0.8})


def draw_row(ax, entry: Mapping[str, Any], frames: int = FRAMES, tile: int = TILE) -> None:
    """One reviewed clip: its frames side by side with the evidence drawn on them."""
    ax.set_xticks([])
    ax.set_yticks([])
    indices = frames_to_show(entry, frames)
    try:
        if not indices:
            raise ValueError("the row has no frame count and no analysed frames")
        images, to_view = load_view(entry, indices)
    except (FileNotFoundError, VideoError, ValueError) as exc:
        ax.text(0.5, 0.5, _short(f"no frames: {exc}", 140), ha="center", va="center", fontsize=8,
                color="0.4", transform=ax.transAxes)
        return
    import cv2

    text = entry.get("text") or {}
    side = entry.get("side_face") or {}
    marks = {int(f): k for k, f in enumerate(side.get("frames") or [])}
    x = 0.0
    for i in sorted(images):
        img = images[i]
        h, w = img.shape[:2]
        s = tile / h
        tw = max(1, round(w * s))
        ax.imshow(cv2.resize(img, (tw, tile), interpolation=cv2.INTER_AREA),
                  extent=(x, x + tw, tile, 0), interpolation="nearest")

        def place(p, x=x, s=s):
            return to_view(p) * s + (x, 0)

        _draw_text_boxes(ax, [b for b in text.get("boxes") or [] if int(b["frame"]) == i], place, x, x + tw)
        if i in marks:
            k = marks[i]
            _draw_landmarks(ax, side["points"][k], side["alpha"][k], bool(side["side"][k]), place,
                            (x + 3, 3))
        ax.text(x + tw - 3, tile - 3, f"#{i}", color="white", fontsize=6.5, ha="right", va="bottom",
                bbox={"fc": "black", "ec": "none", "alpha": 0.5, "pad": 0.5})
        x += tw + GAP
    ax.set_xlim(0, max(x - GAP, 1))
    ax.set_ylim(tile, 0)
    ax.set_anchor("W")      # a short strip sits under its title, not centred
    for sp in ax.spines.values():
        sp.set_visible(False)


def _title(entry: Mapping[str, Any], chars: int) -> str:
    facts = []
    if entry.get("side_ratio_median") is not None:
        facts.append(f"α median {entry['side_ratio_median']:.2f}")
    if entry.get("side_fraction") is not None:
        facts.append(f"side {entry['side_fraction']:.0%}")
    if entry.get("text_score") is not None:
        facts.append(f"text score {entry['text_score']:.2f}")
    head = _short(f"{entry['clip_id']}   {entry['status']}/{entry['reason']}   [{'; '.join(entry['why'])}]",
                  chars)
    msg = entry.get("message") or ""
    src = entry.get("source_path") or ""
    if src and msg.startswith(src):
        msg = msg[len(src):].lstrip(": ")   # the clip id in the header names the source
    second = _short("   ".join(x for x in (", ".join(facts), _printable(msg)) if x), chars)
    return f"{head}\n{second}" if second else head


def review_figure(entries: list[Mapping[str, Any]], title: str, frames: int = FRAMES,
                  tile: int = TILE) -> Figure | None:
    """One row per entry; None when there is nothing to review."""
    if not entries:
        return None
    row_h = tile / DPI + 0.48          # strip plus two title lines, inches
    width = max(frames * (tile + GAP) / DPI, 8.0)
    top = 0.75
    fig = Figure(figsize=(width + 0.3, row_h * len(entries) + top))
    for k, entry in enumerate(entries):
        y1 = 1 - (top + k * row_h + 0.42) / fig.get_figheight()
        ax = fig.add_axes((0.15 / fig.get_figwidth(), y1 - (tile / DPI) / fig.get_figheight(),
                           width / fig.get_figwidth(), (tile / DPI) / fig.get_figheight()))
        # ~5.3 px per character of the 7.5 pt title
        ax.set_title(_title(entry, int(width * DPI / 5.3)), fontsize=7.5, loc="left", pad=2)
        draw_row(ax, entry, frames, tile)
    handles = [Line2D([], [], color=c, lw=lw, ls=ls, label=lab) for c, lw, ls, lab in VERDICT_STYLE.values()]
    handles += [Line2D([], [], color="#40c4ff", marker="o", ls="-", ms=4, label="eye corners 36, 45"),
                Line2D([], [], color=FRONTAL_COLOR, marker="o", ls="", ms=4, label="nose tip 30: frontal"),
                Line2D([], [], color=SIDE_COLOR, marker="o", ls="", ms=4, label="nose tip 30: side face")]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 1 - 0.3 / fig.get_figheight()),
               ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, x=0.01, y=1 - 0.05 / fig.get_figheight(), ha="left", va="top", fontsize=11)
    return fig


def _clip_label(c: Mapping[str, Any]) -> str:
    who = (f"person {c['person_id']}" if c.get("person_id") is not None
           else f"shot {c.get('shot_index')} track {c.get('track_index')}")
    if c.get("person_distance") is not None:
        who += f" (face {c['person_distance']:.2f} from its mean)"
    if c.get("split"):
        who += f" {c['identity_id']} in {c['split']}"
    facts = [f"{c['status']}/{c['reason']}"]
    if c.get("effective_resolution") is not None:
        facts.append(f"detail {c['effective_resolution']:.0f}px sharp {c['sharpness']:.3f} "
                     f"block {c['blockiness']:.2f}")
    trimmed = [r for r in c.get("turned_runs") or [] if r.get("trimmed")]
    if trimmed:
        facts.append("turned cut " + ",".join(f"{r['start']}-{r['end']}" for r in trimmed[:3]))
    if c.get("turned_frames"):
        facts.append(f"{c['turned_frames']} turned frame(s) left")
    text = c.get("text") or {}
    if text.get("text_frames"):
        said = ", ".join(_short(_printable(t), 16) for t in text.get("read") or [])
        unread = f"{text['static']} unread line box(es)" if text.get("static") else ""
        facts.append("text: " + "; ".join(x for x in (said, unread) if x))
    return f"{who}: " + "   ".join(facts)


def source_figure(sources: list[Mapping[str, Any]], title: str) -> Figure | None:
    """One timeline per source (see the module docstring); None when there is none."""
    sources = [src for src in sources if src.get("num_frames")]
    if not sources:
        return None
    heights = [(2 + max(1, len(src["clips"]))) * LANE + 0.35 for src in sources]
    width, top = 11.0, 0.6
    fig = Figure(figsize=(width, sum(heights) + top))
    y = top
    for src, h in zip(sources, heights):
        n = int(src["num_frames"])
        ax = fig.add_axes((0.02, 1 - (y + h - 0.12) / fig.get_figheight(), 0.96,
                           (h - 0.42) / fig.get_figheight()))
        y += h
        lanes = len(src["clips"]) + 1
        ax.set_xlim(0, n)
        ax.set_ylim(lanes, 0)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=6.5, pad=1)
        fps = src.get("fps") or 0
        ax.set_title(_short(f"{src['source_id']}   {n} frames"
                            + (f" at {fps:g} fps" if fps else "")
                            + f"   {len(src['shots'])} shot(s), {len(src['transitions'])} transition(s)"
                            + (f"   {src['message']}" if src.get("message") else ""), 170),
                     fontsize=7.5, loc="left", pad=2)
        # Lane 0: shots in alternating greys, transitions over them with their type.
        for k, (a, b) in enumerate(src["shots"]):
            ax.add_patch(Rectangle((a, 0.15), b - a, 0.7, fc="0.78" if k % 2 else "0.62", ec="none"))
        for t in src["transitions"]:
            ax.add_patch(Rectangle((t["start"], 0.05), max(t["end"] - t["start"], n / 400), 0.9,
                                   fc=TRANSITION_COLOR, ec="none", alpha=0.85))
            ax.text(t["start"], 0.5, f" {t['type']} {t['start']}-{t['end']}", fontsize=6,
                    color="white", va="center", ha="left", clip_on=True,
                    bbox={"fc": TRANSITION_COLOR, "ec": "none", "pad": 0.4, "alpha": 0.9})
        # Where a track was split because its face became someone else (no cut was found).
        for f in src.get("identity_changes") or []:
            ax.plot([f, f], [0.0, lanes], color=IDENTITY_COLOR, lw=1.0, ls="--")
        # The frames cut out around such a change (a dissolve the detector missed).
        for ch in src.get("person_changes") or []:
            if ch["end"] > ch["start"]:
                ax.add_patch(Rectangle((ch["start"], 0.0), ch["end"] - ch["start"], lanes,
                                       fc=IDENTITY_COLOR, ec="none", alpha=0.15))
                ax.text(ch["start"], lanes - 0.2, f" person change ({ch['kind']}) {ch['start']}-{ch['end']}",
                        fontsize=6, color=IDENTITY_COLOR, va="bottom", ha="left", clip_on=True)
        # One lane per clip.
        for k, c in enumerate(src["clips"], start=1):
            a, b = c.get("start_frame"), c.get("end_frame")
            if a is None or b is None:
                continue
            ax.add_patch(Rectangle((a, k + 0.2), b - a, 0.6, ec="none",
                                   fc=STATUS_COLOR.get(c["status"], "0.5")))
            for r in c.get("turned_runs") or []:
                ax.add_patch(Rectangle((r["start"], k + 0.1), r["end"] - r["start"], 0.8,
                                       fc=TURNED_COLOR if r.get("trimmed") else "none",
                                       ec=TURNED_COLOR, hatch=None if r.get("trimmed") else "////",
                                       lw=0.6, alpha=0.8))
            for f in (c.get("text") or {}).get("text_frames") or []:
                ax.plot([f, f], [k + 0.1, k + 0.9], color=VERDICT_STYLE["text"][0], lw=1.2)
            ax.text(a + n / 300, k + 0.5, _short(_clip_label(c), 150), fontsize=6.2, va="center",
                    ha="left", color="black", clip_on=False,
                    bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 0.3})
        for sp in ("top", "right", "left"):
            ax.spines[sp].set_visible(False)
    handles = [Rectangle((0, 0), 1, 1, fc="0.62", label="shot"),
               Rectangle((0, 0), 1, 1, fc=TRANSITION_COLOR, label="transition (type, span)"),
               Rectangle((0, 0), 1, 1, fc=STATUS_COLOR["kept"], label="kept clip"),
               Rectangle((0, 0), 1, 1, fc=STATUS_COLOR["rejected"], label="rejected clip"),
               Rectangle((0, 0), 1, 1, fc=TURNED_COLOR, label="turned run, cut out"),
               Rectangle((0, 0), 1, 1, fc="none", ec=TURNED_COLOR, hatch="////",
                         label="turned run left in (short, or the clip went as side_face)"),
               Line2D([], [], color=VERDICT_STYLE["text"][0], lw=1.2, label="frame with text"),
               Line2D([], [], color=IDENTITY_COLOR, lw=1.0, ls="--", label="face became another person"),
               Rectangle((0, 0), 1, 1, fc=IDENTITY_COLOR, alpha=0.15, label="frames cut out around it")]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 1 - 0.25 / fig.get_figheight()),
               ncol=5, fontsize=7, frameon=False)
    fig.suptitle(title, x=0.01, y=1 - 0.03 / fig.get_figheight(), ha="left", va="top", fontsize=11)
    return fig
