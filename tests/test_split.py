"""`stc split`: identity-disjoint splits across sources, near-duplicates, and training that
reads them (issue 22 item 3).

Four inputs built from the shared clips, so who is in every clip is known by construction:
A | B | A joined by hard cuts, A alone again in a second source, the same bytes under a
second name, and D alone. Curated once for real (Ray, TransNetV2, dlib, x264), then split.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from stc.curation.identity import assign_splits
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestWriter, read_table
from stc.manifests.schema import ManifestError
from stc.model.stage1.data import load_clips, split_clips
from stc.model.stage2.data import online_clips
from stc.pipelines.cli import main
from stc.pipelines.curate import run_curate
from stc.pipelines.split import split_manifest

from . import raw_footage


@pytest.fixture(scope="module")
def corpus(shared_videos, tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("split")
    src = tmp / "videos"
    src.mkdir()
    aba = raw_footage.joined(shared_videos, src / "aba.mp4", [
        ("hdtf_4.mp4", 50, 1.0), ("hdtf_3.mp4", 50, 1.0), ("hdtf_4.mp4", 60, 1.2)])
    raw_footage.ping_pong(shared_videos, src / "solo_a.mp4", "hdtf_4.mp4", 40, 60, scale=1.1)
    shutil.copyfile(src / "solo_a.mp4", src / "solo_a_copy.mp4")
    raw_footage.ping_pong(shared_videos, src / "solo_d.mp4", "hdtf_6.mp4", 40, 60, scale=1.1)
    cfg = tmp / "cur.yaml"
    cfg.write_text("crop: {size: 128}\nencode: {preset: ultrafast}\n")
    out = tmp / "cur"
    run_curate([str(src)], out, config=str(cfg), progress=False)

    def person(r) -> str:
        """Who is in a clip, by construction."""
        name = r["source_path"].rsplit("/", 1)[-1]
        if name == "aba.mp4":
            return "ABA"[r["shot_index"]]
        return {"solo_a.mp4": "A", "solo_a_copy.mp4": "A", "solo_d.mp4": "D"}[name]

    assert aba.cuts == [50, 100]
    return {"out": out, "src": src, "person": person, "tmp": tmp}


def _kept(table):
    return [r for r in table.to_pylist() if r["status"] == "kept"]


def test_person_a_in_shots_1_and_3_and_b_in_shot_2_get_their_person_ids(corpus):
    table = read_table(corpus["out"] / "manifest.parquet", CLIP_SCHEMA)
    rows = [r for r in table.to_pylist() if r["source_path"].endswith("/aba.mp4")]
    clips = sorted((r for r in rows if r["person_id"]), key=lambda r: r["start_frame"])
    assert [r["shot_index"] for r in clips] == [0, 1, 2], [(r["clip_id"], r["message"]) for r in rows]
    assert [r["status"] for r in clips] == ["kept"] * 3
    a1, b, a3 = (r["person_id"] for r in clips)
    assert a1 == a3 != b and a1.startswith(clips[0]["source_id"] + "_p")
    for r in clips:
        assert len(r["embedding"]) == 128 and r["identity_faces"] >= 3
        assert r["person_distance"] < 0.3


def test_split_is_identity_disjoint_and_reports_the_copy(corpus, capsys):
    out = corpus["out"]
    assert main(["split", str(out), "--val", "0.2", "--test", "0.2", "--seed", "3"]) == 0
    err = capsys.readouterr().err
    assert "stc split:" in err and "identities" in err and "stc train stage1 --manifest" in err
    table = read_table(out / "split.parquet", CLIP_SCHEMA)
    kept = _kept(table)
    people = {corpus["person"](r) for r in kept}
    assert people == set("ABD"), [(r["clip_id"], r["reason"]) for r in table.to_pylist()]
    # One identity per person, across sources and shots, and no identity shared by two.
    ids = {p: {r["identity_id"] for r in kept if corpus["person"](r) == p} for p in people}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({next(iter(v)) for v in ids.values()}) == len(people)
    # Each identity is in exactly one split; every split is used.
    split_of = {}
    for r in kept:
        assert split_of.setdefault(r["identity_id"], r["split"]) == r["split"]
    assert set(split_of.values()) == {"train", "val", "test"}
    assert all(r["split"] is None and r["identity_id"] is None for r in table.to_pylist()
               if r["status"] != "kept")
    # The same bytes given twice: curated once, reported as a near-duplicate.
    report = json.loads((out / "split_report.json").read_text())
    same = [d for d in report["near_duplicates"] if d["kind"] == "same_bytes"]
    assert any(str(corpus["src"] / "solo_a_copy.mp4") in d.get("copies", []) for d in same), same
    assert report["identities"] == 3 and report["kept_clips"] == len(kept)
    assert sum(s["clips"] for s in report["splits"].values()) == len(kept)


def test_same_seed_same_split_and_elsewhere_keeps_clip_paths(corpus):
    out, tmp = corpus["out"], corpus["tmp"]
    a = split_manifest(out, 0.2, 0.2, seed=7, out=tmp / "a.parquet")
    b = split_manifest(out, 0.2, 0.2, seed=7, out=tmp / "b.parquet")
    ta, tb = read_table(tmp / "a.parquet", CLIP_SCHEMA), read_table(tmp / "b.parquet", CLIP_SCHEMA)
    assert ta.equals(tb) and a["splits"] == b["splits"]
    # Written outside the curated folder, its clip paths still open (the curated folder
    # vouches for them), and training reads the split.
    clips = load_clips(tmp / "a.parquet", min_frames=8)
    want = {r["clip_id"]: r["split"] for r in _kept(ta)}
    assert {c.clip_id: c.split for c in clips} == want
    split = split_clips(clips, 8, 0.5, 4)
    assert {c.clip_id for c, _ in split.train} == {k for k, v in want.items() if v == "train"}
    assert {c.clip_id for c, _ in split.val} == {k for k, v in want.items() if v == "val"}
    train, val = online_clips(tmp / "a.parquet", 8, 0.5)
    assert {c.split for c in train} == {"train"} and {c.split for c in val} == {"val"}


def test_split_refuses_a_manifest_without_embeddings_and_bad_fractions(tmp_path):
    cur = tmp_path / "old"
    with ManifestWriter(cur / "manifest.parquet", CLIP_SCHEMA) as w:
        w.add_item([{"clip_id": "s_s000_t00_00", "source_id": "s", "source_path": "s.mp4",
                     "status": "kept", "reason": "kept", "clip_path": "clips/x.mp4",
                     "shot_index": 0, "track_index": 0, "start_frame": 0, "end_frame": 30}])
    with pytest.raises(ManifestError, match="no face embedding"):
        split_manifest(cur, 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="nothing to train on"):
        split_manifest(cur, 0.5, 0.5, 0)
    assert main(["split", str(tmp_path / "missing")]) == 2


def test_assign_splits_keeps_shares_and_order_independent():
    rng = np.random.default_rng(0)
    sizes = {f"id{i:03d}": int(rng.integers(50, 500)) for i in range(200)}
    out = assign_splits(sizes, 0.1, 0.05, seed=1)
    total = sum(sizes.values())
    share = {s: sum(n for i, n in sizes.items() if out[i] == s) / total for s in ("val", "test")}
    assert 0.08 < share["val"] <= 0.1 and 0.03 < share["test"] <= 0.05
    shuffled = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
    assert assign_splits(shuffled, 0.1, 0.05, seed=1) == out
    assert assign_splits(sizes, 0.1, 0.05, seed=2) != out
