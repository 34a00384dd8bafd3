"""The manifest contract and the typed config loader."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import pyarrow.parquet as pq
import pytest

from stc.core.config import ConfigError, from_dict, load_config, to_dict
from stc.curation.config import CurateConfig
from stc.manifests.clips import CLIP_SCHEMA, FUNNEL, funnel_counts
from stc.manifests.io import (
    ManifestWriter,
    atomic_path,
    finished_keys,
    manifest_files,
    read_manifest,
)
from stc.manifests.schema import ManifestError


@dataclass
class Inner:
    threshold: float = 0.5
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    steps: int = 3
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=lambda: [1, 2])


def test_config_partial_override_keeps_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner: {threshold: 2}\nsteps: 7\n")
    cfg = load_config(Outer, path)
    assert cfg == Outer(name="x", steps=7, inner=Inner(threshold=2.0), sizes=[1, 2])
    assert isinstance(cfg.inner.threshold, float)
    assert to_dict(cfg)["inner"] == {"threshold": 2.0, "mode": "a"}


@pytest.mark.parametrize("data, needle", [
    ({"inner": {"treshold": 1}}, "inner: unknown key(s) ['treshold']"),
    ({"steps": "many"}, "steps: expected an integer"),
    ({"steps": True}, "steps: expected an integer"),
    ({"inner": {"mode": "c"}}, "inner.mode: 'c' is not one of ['a', 'b']"),
    ({"sizes": [1, "x"]}, "sizes[1]: expected an integer"),
])
def test_config_errors_name_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data, source="my.yaml")
    assert needle in str(err.value) and str(err.value).startswith("my.yaml: ")


def test_builtin_config_by_name_and_unknown_name():
    fast = CurateConfig.load("fast")
    assert fast.crop.size == 128 and fast.side_face.alpha_min == 0.4
    default = CurateConfig.load("default")
    assert default == CurateConfig()  # the shipped YAML restates the dataclass defaults
    with pytest.raises(ConfigError, match="built-in names: .*default.*fast"):
        CurateConfig.load("nope")


def _row(clip_id, status="kept", reason="kept", **kw):
    row = {"clip_id": clip_id, "source_path": f"/v/{clip_id}.mp4", "status": status, "reason": reason,
           "message": "", "clip_path": f"clips/{clip_id}.mp4" if status == "kept" else None}
    row.update(kw)
    return row


def test_writer_parts_resume_and_latest_wins(tmp_path):
    path = tmp_path / "manifest.parquet"
    with ManifestWriter(path, CLIP_SCHEMA, flush_every=2) as w:
        for i, cid in enumerate(["c", "a", "b"]):
            w.add(_row(cid, fps=25.0, num_frames=10 + i))
    # Names no other writer can produce (time, pid, random bits), in write order.
    names = [p.name for p in manifest_files(path)]
    assert len(names) == 2 and names == sorted(names)
    assert all(re.fullmatch(r"part-\d{20}-\d+-[0-9a-f]+\.parquet", n) for n in names), names
    meta = pq.read_schema(manifest_files(path)[0]).metadata
    assert meta[b"stc.schema"] == b"curated_clips"
    assert meta[b"stc.schema_version"] == str(CLIP_SCHEMA.version).encode()
    # A second writer's parts come after the first's; a retried key replaces the old row.
    with ManifestWriter(path, CLIP_SCHEMA) as w:
        w.add(_row("a", status="error", reason="unreadable", message="bad"))
    df = read_manifest(path, CLIP_SCHEMA)
    assert list(df["clip_id"]) == ["a", "b", "c"]
    assert df.set_index("clip_id").loc["a", "status"] == "error"
    assert df.set_index("clip_id").loc["b", "num_frames"] == 12
    assert finished_keys(path, CLIP_SCHEMA) == {"a": "error", "b": "kept", "c": "kept"}


@pytest.mark.parametrize("row, needle", [
    (_row("x", status="maybe"), "status 'maybe'"),
    (_row("x", reason="because"), "reason 'because'"),
    (_row("x", status="rejected", reason="unreadable"), "belongs to status 'error'"),
    ({**_row("x"), "clip_path": None}, "kept row without clip_path"),
])
def test_validation_rejects_bad_rows(tmp_path, row, needle):
    path = tmp_path / "m.parquet"
    with ManifestWriter(path, CLIP_SCHEMA) as w:
        w.add(row)
    with pytest.raises(ManifestError, match=needle):
        read_manifest(path, CLIP_SCHEMA)


def test_unknown_columns_and_foreign_files_are_errors(tmp_path):
    with pytest.raises(ManifestError, match="unknown column"):
        CLIP_SCHEMA.table([{**_row("x"), "colour": "red"}])
    import pyarrow as pa

    bad = tmp_path / "other.parquet"
    pq.write_table(pa.table({"clip_id": ["x"]}).replace_schema_metadata({b"stc.schema": b"pairs"}), bad)
    with pytest.raises(ManifestError, match="is a 'pairs' manifest"):
        read_manifest(bad, CLIP_SCHEMA)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "missing.parquet", CLIP_SCHEMA)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_funnel_counts_follow_the_first_failed_stage():
    reasons = ["kept", "kept", "unreadable", "no_face", "side_face", "text", "crop_too_small",
               "encode_failed", "blurry"]
    counts = funnel_counts(reasons)
    assert list(counts) == list(FUNNEL)
    assert counts == {"inputs": 9, "decodable": 8, "face": 7, "crop": 6, "frontal": 5,
                      "quality": 4, "no_text": 3, "kept": 2}


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    """Datasets are shared: files must not stay private like the temporary file they were."""
    import os

    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    plain = tmp_path / "b.txt"
    plain.write_text("x")
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == os.stat(plain).st_mode & 0o777
