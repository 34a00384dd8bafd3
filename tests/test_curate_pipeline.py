"""`stc curate` end to end on Ray: every input becomes one row, broken files included,
and a rerun skips finished work and leaves the manifest as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pandas as pd
import pytest

from stc.core.video import encode_frames, probe, read_frames
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import manifest_files, read_manifest
from stc.pipelines.cli import main as stc_main
from stc.pipelines.curate import run_curate
from stc.pipelines.inputs import gather_inputs

from .conftest import noise_video


def broken_inputs(folder: Path) -> dict[str, Path]:
    """A zero-byte file, a text file named .mp4 and a truncated mp4."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.mp4"
    empty.touch()
    text = folder / "notes.mp4"
    text.write_text("not a video, just text\n" * 20)
    good = noise_video(folder / "whole.tmp", frames=40)
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    return {"empty": empty, "text_file": text, "truncated": truncated}


def by_stem(df):
    return {Path(p).stem: row for p, row in zip(df["source_path"], df.to_dict("records"))}


def test_inputs_from_folders_globs_and_lists(tmp_path):
    a = noise_video(tmp_path / "set_a" / "one.mp4", frames=4)
    b = noise_video(tmp_path / "set_b" / "two.mp4", frames=4)
    (tmp_path / "set_b" / "readme.txt").write_text("not listed: wrong extension")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{b}\nset_a/one.mp4\n")
    assert gather_inputs([str(tmp_path / "set_a")]) == [(str(a.resolve()), "set_a")]
    assert [p for p, _ in gather_inputs([str(tmp_path / "set_*" / "*.mp4")])] == sorted([str(a), str(b)])
    assert dict(gather_inputs([str(listing)])) == {str(a): "list", str(b): "list"}
    pq_list = tmp_path / "inputs.parquet"
    pd.DataFrame({"path": [str(a)], "source": ["studio"]}).to_parquet(pq_list)
    assert gather_inputs([str(pq_list)]) == [(str(a), "studio")]


def test_generated_and_broken_inputs_each_get_a_row(tmp_path, ray_session):
    inputs = tmp_path / "in"
    broken_inputs(inputs)
    noise_video(inputs / "faceless.mp4", frames=30)
    noise_video(inputs / "short.mp4", frames=5)
    missing = tmp_path / "gone.mp4"
    out = tmp_path / "out"
    summary = run_curate([str(inputs), str(missing)], out, config="fast", progress=False)
    df = read_manifest(out / "manifest.parquet", CLIP_SCHEMA)
    rows = by_stem(df)
    assert len(df) == 6 == summary["inputs"]
    for name in ("empty", "text_file", "truncated", "gone"):
        key = {"text_file": "notes"}.get(name, name)
        reason = "truncated" if name == "truncated" else "unreadable"
        assert rows[key]["status"] == "error" and rows[key]["reason"] == reason, key
        assert rows[key]["source_path"] in rows[key]["message"]
    assert rows["faceless"]["status"] == "rejected" and rows["faceless"]["reason"] == "no_face"
    assert rows["faceless"]["face_frame_fraction"] == 0.0 and rows["faceless"]["num_frames"] == 30
    assert rows["short"]["reason"] == "too_short"
    assert summary["funnel"]["inputs"] == 6 and summary["funnel"]["decodable"] == 1
    assert summary["funnel"]["face"] == 0
    stats = json.loads((out / "run_stats.json").read_text())
    assert stats["steps"]["probe"]["items"] == 6 and stats["steps"]["faces"]["items"] == 2


@pytest.fixture(scope="module")
def real_run(shared_videos, tmp_path_factory, ray_session):
    """One curation run over real clips plus made-up and broken ones."""
    tmp = tmp_path_factory.mktemp("real")
    inputs = tmp / "in"
    broken_inputs(inputs)
    # The shared clips have no burnt-in text, so the text case draws a caption onto
    # real frontal frames.
    frames = read_frames(shared_videos / "hdtf_2.mp4", 0, 48)
    for f in frames:
        cv2.putText(f, "BREAKING NEWS 2026", (20, 470), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 3)
    encode_frames(frames, inputs / "captioned.mp4", fps=25, crf=12, preset="ultrafast")
    noise_video(inputs / "faceless.mp4", frames=30)
    # hdtf_3: frontal throughout (hdtf_1 turns its head, and its turned runs are cut out).
    real = [shared_videos / "hdtf_3.mp4", shared_videos / "talkshow_2.mp4"]
    args = [str(inputs)] + [str(p) for p in real]
    out = tmp / "out"
    summary = run_curate(args, out, progress=False)
    return {"args": args, "out": out, "summary": summary,
            "df": read_manifest(out / "manifest.parquet", CLIP_SCHEMA)}


def test_real_frontal_clip_is_kept_with_a_face_filling_crop(real_run):
    rows = by_stem(real_run["df"])
    row = rows["hdtf_3"]
    assert row["status"] == "kept", row["message"]
    assert row["source"] == "videos" and row["num_frames"] == 200 and row["fps"] == 25.0
    assert row["clip_size"] == 512 and row["clip_num_frames"] == 200
    assert row["crop_x1"] - row["crop_x0"] == row["crop_y1"] - row["crop_y0"] >= 400
    assert 0.15 < row["face_proportion"] < 0.6
    assert row["side_fraction"] <= 0.5 and 0.4 <= row["side_ratio_median"] <= 2.5
    assert not row["has_text"] and row["ocr_frames"] == 5
    assert 0 < row["motion_intensity"] < 0.5 and row["motion_sum"] > 0
    clip = real_run["out"] / row["clip_path"]
    info = probe(clip)
    assert (info.width, info.height, info.num_frames, info.codec) == (512, 512, 200, "h264")


def test_real_side_face_and_drawn_text_are_rejected(real_run):
    rows = by_stem(real_run["df"])
    side = rows["talkshow_2"]
    assert side["status"] == "rejected" and side["reason"] == "side_face", side["message"]
    assert side["side_fraction"] > 0.5 and pd.isna(side["clip_path"])
    text = rows["captioned"]
    assert text["status"] == "rejected" and text["reason"] == "text", text["message"]
    assert text["has_text"] and text["text_score"] >= 0.6 and text["text_boxes"] >= 1
    assert rows["faceless"]["reason"] == "no_face"
    assert {rows[k]["reason"] for k in ("empty", "notes")} == {"unreadable"}
    assert rows["truncated"]["reason"] == "truncated"
    assert not (real_run["out"] / "clips" / f"{side['clip_id']}.mp4").exists()


def test_rerun_skips_finished_work_and_keeps_the_manifest(real_run, capsys):
    out = real_run["out"]
    parts_before = {p.name: p.read_bytes() for p in manifest_files(out / "manifest.parquet")}
    clips_before = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    rc = stc_main(["curate", *real_run["args"], "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["processed"] == 0 and summary["skipped_finished"] == len(real_run["df"])
    assert {p.name: p.read_bytes() for p in manifest_files(out / "manifest.parquet")} == parts_before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == clips_before
    again = read_manifest(out / "manifest.parquet", CLIP_SCHEMA)
    assert again.equals(real_run["df"])


def test_same_input_gives_the_same_clip_bytes(real_run, tmp_path):
    # Two fresh runs over the captioned clip, with text filtering off so it is written.
    src = by_stem(real_run["df"])["captioned"]["source_path"]
    cfg = tmp_path / "notext.yaml"
    cfg.write_text("text: {max_height_fraction: 0.01}\n")     # no box is a text line
    rows = []
    for name in ("a", "b"):
        run_curate([src], tmp_path / name, config=str(cfg), progress=False)
        rows.append(read_manifest(tmp_path / name / "manifest.parquet", CLIP_SCHEMA).iloc[0])
    assert rows[0]["status"] == "kept" and rows[0]["clip_id"] == rows[1]["clip_id"]
    assert (tmp_path / "a" / rows[0]["clip_path"]).read_bytes() == (tmp_path / "b" / rows[1]["clip_path"]).read_bytes()
    assert rows[0]["motion_intensity"] == rows[1]["motion_intensity"] > 0


def test_changed_config_on_the_same_output_is_refused(real_run, tmp_path):
    cfg = tmp_path / "other.yaml"
    cfg.write_text("side_face: {max_side_fraction: 0.9}\n")
    rc = stc_main(["curate", real_run["args"][1], "--out", str(real_run["out"]), "--config", str(cfg)])
    assert rc == 2


def test_cli_help_and_print_config():
    out = subprocess.run([sys.executable, "-m", "stc.pipelines.cli", "curate", "--print-config",
                          "--config", "fast"], capture_output=True, text=True, check=True).stdout
    assert "size: 128" in out and "alpha_min: 0.4" in out
    helptext = subprocess.run([sys.executable, "-m", "stc.pipelines.cli", "--help"], capture_output=True,
                              text=True, check=True).stdout
    assert "curate" in helptext


def test_a_redone_source_replaces_all_its_old_rows(tmp_path):
    """All rows of a source are one group: a retried source that now gives two clips
    leaves no trace of its old source-level error row, and resume is keyed by source."""
    from stc.manifests.io import ManifestWriter, finished_keys

    def clip(sid, n, status="kept", reason="kept"):
        return {"clip_id": f"{sid}_s000_t00_{n:02d}", "source_id": sid, "source_path": f"/v/{sid}.mp4",
                "status": status, "reason": reason, "message": "", "clip_path": f"clips/{sid}_{n}.mp4",
                "shot_index": 0, "track_index": 0, "start_frame": 100 * n, "end_frame": 100 * n + 50}

    path = tmp_path / "manifest.parquet"
    w = ManifestWriter(path, CLIP_SCHEMA)
    w.add_item([{"clip_id": "a", "source_id": "a", "source_path": "/v/a.mp4", "status": "error",
                 "reason": "unreadable", "message": "/v/a.mp4: gone", "clip_path": None}])
    w.add_item([clip("b", 0), clip("b", 1, "error", "encode_failed")])
    assert finished_keys(path, CLIP_SCHEMA, by="source_id") == {"a": "error", "b": "error"}
    w.add_item([clip("a", 0), clip("a", 1)])          # the retry of source a
    df = read_manifest(path, CLIP_SCHEMA)
    assert sorted(df["clip_id"]) == ["a_s000_t00_00", "a_s000_t00_01", "b_s000_t00_00", "b_s000_t00_01"]
    assert finished_keys(path, CLIP_SCHEMA, by="source_id") == {"a": "kept", "b": "error"}
