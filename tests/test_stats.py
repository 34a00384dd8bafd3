"""`stc stats` and manifests.stats/report on manifests the tests write row by row.

The expected numbers come from the rows written here (how many per reason, how many
carry each value), never from a previous run of the code under test.
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from stc.audit.stats import bin_edges, counts_in, flatten_params, load_clip_manifest, tail_rows
from stc.core.config import to_dict
from stc.core.video import probe
from stc.curation.config import CurateConfig
from stc.manifests.clips import CLIP_SCHEMA, REASONS
from stc.manifests.io import ManifestWriter
from stc.manifests.pairs import PAIRS_SCHEMA, pair_id
from stc.pipelines.cli import main
from stc.pipelines.stats import run_stats

# reason -> rows per source; 18 inputs in all, every funnel stage loses someone.
REASON_PLAN = {
    "hdtf": {"kept": 6, "no_face": 1, "side_face": 1, "unreadable": 1, "crop_too_small": 1,
             "blurry": 1},
    "talk": {"kept": 3, "no_face": 1, "side_face": 1, "text": 1, "too_short": 1,
             "encode_failed": 1},
}
EXPECTED_FUNNEL = {"inputs": 19, "decodable": 17, "face": 15, "crop": 14, "frontal": 12,
                   "quality": 11, "no_text": 10, "kept": 9}
T = 8  # frames per pair window


def _stages_passed(reason: str) -> int:
    """How many analysis stages a row of this reason has values for (0: none)."""
    return {"unreadable": 0, "too_short": 1, "no_face": 1, "crop_too_small": 2,
            "side_face": 3, "blurry": 3, "text": 4, "encode_failed": 5, "kept": 5}[reason]


def clip_row(clip_id: str, source: str, reason: str, rng: np.random.Generator,
             clip_path: str | None = None) -> dict:
    status = REASONS[reason][0]
    row = {"clip_id": clip_id, "source_path": f"/nonexistent/{source}/{clip_id}.mp4",
           "source": source, "status": status, "reason": reason,
           "message": "" if status == "kept" else f"{clip_id}: {reason}"}
    passed = _stages_passed(reason)
    if passed >= 1:
        w, h = [(512, 512), (640, 360), (388, 512)][rng.integers(3)]
        fps = float(rng.choice([20.0, 25.0, 30.0]))
        n = int(rng.integers(10, 400))
        row.update(fps=fps, num_frames=n, width=w, height=h, duration=n / fps, codec="h264",
                   rotation=0, sampled_frames=8, face_frame_fraction=float(rng.uniform(0.5, 1)),
                   max_faces=1, multi_face_fraction=0.0)
        if reason != "no_face":
            row["face_size_median"] = float(rng.uniform(60, 300))
    if passed >= 2:
        side = int(rng.integers(200, min(w, h) + 1))
        row.update(crop_x0=0, crop_y0=0, crop_x1=side, crop_y1=side,
                   face_proportion=float(rng.uniform(0.1, 0.5)))
    if passed >= 3:
        ratio = float(rng.uniform(0.3, 3.5))
        row.update(landmark_frames=8, side_fraction=float(rng.uniform(0, 1)), side_ratio_median=ratio,
                   side_ratio_min=ratio / 2, side_ratio_max=ratio * 2)
    if passed >= 4 or reason == "blurry":
        row.update(quality_frames=8, effective_resolution=float(rng.uniform(150, 300)),
                   sharpness=0.05 if reason == "blurry" else float(rng.uniform(0.08, 0.2)),
                   blockiness=float(rng.uniform(0, 1.5)))
    if passed >= 4:
        score = float(rng.uniform(0.6, 1)) if reason == "text" else float(rng.choice([0.0, 0.3]))
        row.update(ocr_frames=3, has_text=reason == "text", text_score=score,
                   text_boxes=int(score > 0), text_area_fraction=score / 10)
    if status == "kept":
        row.update(motion_intensity=float(rng.uniform(0.001, 0.1)), motion_sum=int(rng.integers(1, 10**6)),
                   clip_size=512, clip_num_frames=row["num_frames"], clip_fps=row["fps"],
                   clip_path=clip_path or f"clips/{clip_id}.mp4")
    return row


def write_clip_manifest(out: Path, plan: dict = REASON_PLAN, seed: int = 0,
                        video: Path | None = None, missing: tuple[str, ...] = ()) -> list[dict]:
    """A curation output folder `out` (manifest in parts + curate config); returns the rows.

    Without `video` no clip file exists. With it, every kept clip but those in `missing`
    is a copy of it (frame counts set to match) and the first rejected row's source_path
    points at it, so frame strips and encoders have something to decode."""

    rng = np.random.default_rng(seed)
    rows = []
    for source, reasons in plan.items():
        for reason, count in reasons.items():
            for i in range(count):
                rows.append(clip_row(f"{source}_{reason}_{i}", source, reason, rng))
    if video is not None:
        frames = probe(video).num_frames
        (out / "clips").mkdir(parents=True, exist_ok=True)
        for r in rows:
            if r["status"] == "kept" and r["clip_id"] not in missing:
                (out / r["clip_path"]).write_bytes(video.read_bytes())
                r["num_frames"] = r["clip_num_frames"] = frames
        next(r for r in rows if r["status"] == "rejected")["source_path"] = str(video)
    with ManifestWriter(out / "manifest.parquet", CLIP_SCHEMA, flush_every=5) as w:
        for r in rows:
            w.add(r)
    (out / "curate_config.yaml").write_text(yaml.safe_dump(to_dict(CurateConfig.load(None))))
    return rows


def write_pairs_manifest(path: Path, clip_ids: list[str], seed: int = 0) -> list[dict]:
    """Pairs of two recipes, one with a per-frame step, plus error rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, clip_id in enumerate(clip_ids):
        recipe = "bfvr" if k % 2 == 0 else "bfvr+brightness"
        if k == len(clip_ids) - 1:
            rows.append({"pair_id": pair_id(recipe, 0, clip_id, 0), "clip_id": clip_id, "recipe": recipe,
                         "seed": 0, "status": "error", "reason": "too_short", "message": "short",
                         "window": 0})
            continue
        for window in range(3):
            scale = float(rng.uniform(2, 4))
            steps = [{"step": "bfvr", "sigma": float(rng.uniform(2, 5)), "kernel_size": 41,
                      "scale": scale, "lowres_width": int(512 / scale), "lowres_height": int(512 / scale),
                      "noise": float(rng.uniform(0, 5)), "crf": int(rng.integers(18, 26)),
                      "preset": "medium", "down_interp": str(rng.choice(["area", "bicubic"])),
                      "up_interp": "bicubic"}]
            if recipe == "bfvr+brightness":
                hit = rng.random(T) < 0.3
                steps.append({"step": "brightness", "prob": 0.3, "frames": [int(i) for i in np.flatnonzero(hit)],
                              "alphas": [float(rng.uniform(0.5, 1.5)) if h else 1.0 for h in hit]})
            rows.append({"pair_id": pair_id(recipe, 0, clip_id, window), "clip_id": clip_id,
                         "recipe": recipe, "seed": 0, "status": "ok", "reason": "ok", "message": "",
                         "window": window, "start_frame": window * T, "num_frames": T, "fps": 25.0,
                         "width": 512, "height": 512, "lq_path_or_shard": "shards/s-000.tar",
                         "shard_row": window, "params": json.dumps(steps)})
    with ManifestWriter(path, PAIRS_SCHEMA, flush_every=7) as w:
        for r in rows:
            w.add(r)
    return rows


@pytest.fixture(scope="module")
def audit_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    rows = write_clip_manifest(root / "cur")
    kept = [r["clip_id"] for r in rows if r["status"] == "kept"]
    pairs = write_pairs_manifest(root / "pairs.parquet", kept)
    other = write_clip_manifest(root / "other", {"vox": {"kept": 5, "side_face": 2}}, seed=1)
    return root, rows, pairs, other


def _present(rows: list[dict], key) -> int:
    return sum(1 for r in rows if (key(r) if callable(key) else r.get(key)) is not None)


# --- pure computations -----------------------------------------------------------------
def test_flatten_params_is_generic():
    scalars, lists = flatten_params(json.dumps([
        {"step": "blur", "sigma": 2.5, "kernel": {"size": 41, "kind": "iso"}, "fast": True},
        {"step": "flicker", "alphas": [1.0, 0.5, 1.5], "frames": [], "tags": ["a"]},
        {"step": "blur", "sigma": 4.0},
    ]))
    assert scalars["blur#0.sigma"] == 2.5 and scalars["blur#2.sigma"] == 4.0
    assert scalars["blur#0.kernel.size"] == 41.0 and scalars["blur#0.kernel.kind"] == "iso"
    assert scalars["blur#0.fast"] == "True"
    assert scalars["flicker.alphas.n"] == 3.0 and scalars["flicker.alphas.mean"] == 1.0
    assert scalars["flicker.frames.n"] == 0.0 and "flicker.frames.mean" not in scalars
    assert scalars["flicker.tags.n"] == 1.0 and "flicker.tags" not in lists
    assert lists == {"flicker.alphas": [1.0, 0.5, 1.5]}
    assert flatten_params(None) == ({}, {})


def test_bin_edges_integer_constant_and_continuous():
    fps = np.array([20.0, 25.0, 25.0, 30.0])
    edges = bin_edges([fps])
    assert edges[0] == 19.5 and edges[-1] == 30.5 and np.all(np.diff(edges) == 1)
    zeros = bin_edges([np.zeros(5)])
    assert zeros[0] < 0 < zeros[1] and zeros[1] - zeros[0] < 0.1
    v = np.random.default_rng(0).uniform(0, 1, 101)
    e = bin_edges([v, v * 2], bins=10)
    assert len(e) == 11 and e[-1] == pytest.approx(max(v.max(), 2 * v.max()))
    assert sum(counts_in(v, e)) == 101                       # the maximum lands in the last bin
    assert sum(counts_in([np.nan, 0.5, None], e)) == 1


def test_tail_rows_order_and_missing(audit_inputs):
    root, rows, _, _ = audit_inputs
    df = load_clip_manifest(root / "cur").df
    low, high = tail_rows(df, "motion_intensity", 2)
    motion = sorted(r["motion_intensity"] for r in rows if r.get("motion_intensity") is not None)
    assert list(low["_value"]) == motion[:2] and list(high["_value"]) == motion[::-1][:2]


# --- the CLI end to end ----------------------------------------------------------------
def _cli_args(root: Path, manifest: Path, out: Path) -> list[str]:
    return ["stats", str(manifest), "--pairs", str(root / "pairs.parquet"),
            "--compare", str(root / "other"), "--out", str(out)]


@pytest.fixture(scope="module")
def report(audit_inputs, tmp_path_factory):
    root = audit_inputs[0]
    out = tmp_path_factory.mktemp("report")
    assert main(_cli_args(root, root / "cur", out)) == 0
    return out


def test_stc_stats_report(audit_inputs, report):
    from PIL import Image

    root, rows, pairs, other = audit_inputs
    out = report
    s = json.loads((out / "summary.json").read_text())
    c = s["clips"]

    # funnel, statuses, reasons, sources: exactly the rows written
    assert c["rows"] == len(rows) == 19
    assert c["funnel"] == EXPECTED_FUNNEL
    reasons = Counter(r["reason"] for r in rows)
    assert c["reasons"] == dict(reasons)
    assert c["status"] == {st: sum(1 for r in rows if r["status"] == st) for st in ("kept", "rejected", "error")}
    assert c["sources"] == {src: sum(n.values()) for src, n in REASON_PLAN.items()}
    assert c["funnel_drops"]["face"] == {"no_face": 2}
    assert c["funnel_drops"]["decodable"] == {"unreadable": 1, "too_short": 1}
    assert c["source_funnel"]["talk"]["inputs"] == 8 and c["source_funnel"]["hdtf"]["kept"] == 6

    # every histogram sums to the rows carrying that value, also split by status
    derived = {"short_side": lambda r: r.get("width"), "crop_side": lambda r: r.get("crop_x1"),
               "side_ratio": "side_ratio_median", "face_size": "face_size_median"}
    for name, m in c["metrics"].items():
        n = _present(rows, derived.get(name, name))
        assert sum(m["counts"]) == m["summary"].get("n", 0) == n, name
        assert m["summary"].get("n", 0) + m["missing"] == len(rows), name
        assert [sum(x) for x in zip(*m["by_status"].values())] == m["counts"], name
        assert len(m["edges"]) == len(m["counts"]) + 1
    assert c["metrics"]["motion_intensity"]["summary"]["n"] == 9
    sr = c["metrics"]["side_ratio"]["thresholds"]
    assert [(t["key"], t["value"]) for t in sr] == [("side_face.alpha_min", 0.4), ("side_face.alpha_max", 2.5)]
    per_src = c["per_source"]["motion_intensity"]["groups"]
    assert {k: sum(g["counts"]) for k, g in per_src.items()} == {"hdtf": 6, "talk": 3}
    assert sum(per_src["talk"]["fractions"]) == pytest.approx(1.0, abs=1e-4)

    # pairs: every drawn numeric value is a distribution, fixed ones are constants
    p = s["pairs"]
    ok = [r for r in pairs if r["status"] == "ok"]
    assert p["status"] == {"ok": len(ok), "error": len(pairs) - len(ok)}
    assert sum(p["numeric"]["bfvr.sigma"]["counts"]) == len(ok)
    assert p["numeric"]["bfvr.sigma"]["by_recipe"].keys() == {"bfvr", "bfvr+brightness"}
    bright = [r for r in ok if r["recipe"] == "bfvr+brightness"]
    alphas = p["numeric"]["brightness.alphas (all frames)"]
    assert sum(alphas["counts"]) == len(bright) * T
    assert p["constants"]["bfvr.kernel_size"] == 41 and p["constants"]["bfvr.preset"] == "medium"
    assert p["constants"]["brightness.alphas.n"] == T
    assert sum(p["categorical"]["bfvr.down_interp"].values()) == len(ok)
    assert sum(p["numeric"]["bfvr.crf"]["counts"]) == len(ok)

    # comparison: kept clips of both manifests on shared edges
    cmp = s["compare"]["metrics"]["motion_intensity"]
    assert {k: g["summary"]["n"] for k, g in cmp["groups"].items()} == {"cur": 9, "other": 5}

    # files: valid PNGs, all embedded in one self-contained HTML page
    html = (out / "report.html").read_text()
    assert "<img" in html and "src=\"http" not in html
    for key in ("overview", "funnel", "per_source", "compare", "params"):
        png = out / s["files"][key]
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 500
        assert base64.b64encode(png.read_bytes()).decode() in html, key


def test_stc_stats_same_input_same_bytes(audit_inputs, report, tmp_path):
    root = audit_inputs[0]
    # the same manifest named by its parquet folder instead of the curation folder
    assert main(_cli_args(root, root / "cur" / "manifest.parquet", tmp_path)) == 0
    files = sorted(p.name for p in report.iterdir())
    assert files == sorted(p.name for p in tmp_path.iterdir()) and "report.html" in files
    for name in files:
        assert (report / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_stc_stats_clear_errors(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "not found" in err
    # a pairs manifest is not a clip manifest: the message says what it is and what is needed
    write_pairs_manifest(tmp_path / "pairs.parquet", ["a", "b"])
    assert main(["stats", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "r")]) == 2
    assert "is a pairs folder; stc stats needs a curated folder" in capsys.readouterr().err


def test_empty_manifest_still_reports(tmp_path):
    """A manifest folder with only rejected rows (nothing kept) draws 'no values' panels."""

    write_clip_manifest(tmp_path / "cur", {"x": {"unreadable": 2}})
    s, files = run_stats(tmp_path / "cur", tmp_path / "r")
    assert s["clips"]["funnel"]["inputs"] == 2 and s["clips"]["funnel"]["kept"] == 0
    assert s["clips"]["metrics"]["motion_intensity"]["summary"] == {"n": 0}
    assert files["overview"].stat().st_size > 0
    assert not math.isnan(s["clips"]["kept_hours"])


def test_review_page_shows_each_sources_evidence(tmp_path):
    """Per source: transitions (type, span) from shots/<id>.json, identities, turned runs,
    quality figures and the text boxes behind each decision, in summary.json, the HTML
    table and the timeline figure."""
    from PIL import Image

    sid = "raw-0123456789"
    base = {"source_id": sid, "source_path": f"/nonexistent/{sid}.mp4", "source": "raw",
            "fps": 25.0, "num_frames": 300, "width": 1280, "height": 720}
    text = {"frames": [110, 130, 150], "boxes": [
        {"frame": f, "poly": [[500, 600], [780, 600], [780, 640], [500, 640]], "det": 0.8,
         "text": "", "rec": 0.0, "strokes": 11.2, "verdict": "text", "by": "static"}
        for f in (110, 130, 150)] + [
        {"frame": 110, "poly": [[60, 40], [160, 40], [160, 70], [60, 70]], "det": 0.9,
         "text": "NEWS 24", "rec": 0.99, "strokes": 12.0, "verdict": "text", "by": "read"}]}
    turned = [{"start": 37, "end": 60, "frames": [48], "why": ["side"], "trimmed": True}]
    rows = [
        {**base, "clip_id": f"{sid}_s000_t00_00", "status": "kept", "reason": "kept", "message": "",
         "shot_index": 0, "track_index": 0, "start_frame": 0, "end_frame": 37,
         "clip_path": "clips/a.mp4", "effective_resolution": 206.0, "sharpness": 0.13,
         "blockiness": 1.1, "quality_frames": 3, "turned_frames": 0, "turned_runs": json.dumps(turned),
         "person_id": f"{sid}_p00"},
        {**base, "clip_id": f"{sid}_s000_t00_01", "status": "kept", "reason": "kept", "message": "",
         "shot_index": 0, "track_index": 0, "start_frame": 60, "end_frame": 100,
         "clip_path": "clips/b.mp4", "effective_resolution": 172.0, "sharpness": 0.12,
         "blockiness": 1.3, "quality_frames": 3, "turned_frames": 0, "turned_runs": json.dumps(turned),
         "person_id": f"{sid}_p00"},
        {**base, "clip_id": f"{sid}_s001_t00_00", "status": "rejected", "reason": "text",
         "message": "text", "shot_index": 1, "track_index": 0, "start_frame": 115, "end_frame": 160,
         "effective_resolution": 190.0, "sharpness": 0.11, "blockiness": 0.9, "quality_frames": 3,
         "text_evidence": json.dumps(text), "turned_runs": "[]", "person_id": f"{sid}_p01"},
        {**base, "clip_id": f"{sid}_s002_t00_00", "status": "rejected", "reason": "blurry",
         "message": "blurry", "shot_index": 2, "track_index": 0, "start_frame": 175, "end_frame": 300,
         "effective_resolution": 150.0, "sharpness": 0.04, "blockiness": 0.3, "quality_frames": 4,
         "turned_runs": "[]", "person_id": f"{sid}_p00"},
    ]
    known = set(CLIP_SCHEMA.arrow.names)
    out = tmp_path / "cur"
    with ManifestWriter(out / "manifest.parquet", CLIP_SCHEMA) as w:
        for r in rows:
            w.add({k: v for k, v in r.items() if k in known})
    (out / "curate_config.yaml").write_text(yaml.safe_dump(to_dict(CurateConfig.load(None))))
    (out / "shots").mkdir()
    (out / "shots" / f"{sid}.json").write_text(json.dumps({
        "source_id": sid, "num_frames": 300, "fps": 25.0,
        "shots": [[0, 100, None], [115, 160, 0.9], [175, 300, 0.8]],
        "transitions": [{"type": "dissolve", "start": 100, "end": 115, "score": 0.9},
                        {"type": "fade", "start": 160, "end": 175, "score": 0.8}]}))
    s, files = run_stats(out, tmp_path / "report")

    src = next(x for x in s["review"]["sources"] if x["source_id"] == sid)
    assert src["transitions"] == [{"type": "dissolve", "start": 100, "end": 115},
                                  {"type": "fade", "start": 160, "end": 175}]
    assert src["shots"] == [[0, 100], [115, 160], [175, 300]]
    clips = {c["clip_id"]: c for c in src["clips"]}
    assert [c["start_frame"] for c in src["clips"]] == [0, 60, 115, 175]
    first = clips[f"{sid}_s000_t00_00"]
    assert first["turned_runs"] == turned and first["effective_resolution"] == 206.0
    txt = clips[f"{sid}_s001_t00_00"]["text"]
    assert txt["verdicts"] == {"text": 4} and txt["read"] == ["NEWS 24"] and txt["static"] == 3
    assert txt["text_frames"] == [110, 130, 150]
    if "person_id" in known:
        assert {c["person_id"] for c in src["clips"]} == {f"{sid}_p00", f"{sid}_p01"}

    html = (tmp_path / "report" / "report.html").read_text()
    for needle in ("dissolve 100-115", "fade 160-175", "37-60 cut", "NEWS 24",
                   "+3 unread at one place", "rejected/blurry", "206 / 0.13 / 1.1"):
        assert needle in html, needle
    # The timeline: the transitions in their colour over the shot lane, the cut-out turned
    # run in orange, kept and rejected clips in green and red.
    with Image.open(files["review_sources"]) as im:
        px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    for color in ("#8e24aa", "#ff9100", "#43a047", "#e53935"):
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(px - rgb).sum(axis=1) < 30).sum() > 100, color
