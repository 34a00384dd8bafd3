"""Reliability and security, round 3 (issue 23): each case a new user or an attacker hit.

Every test here failed before its fix: a hang under a terminal, a manifest path that led
out of its run, a traceback instead of a message, a silent loss, a wrong result.
Inputs are generated (noise clips, copies of the bundled sample), so these run without the
shared clips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stc.core.content_hash import content_hash, identical_groups
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import read_manifest
from stc.pipelines.curate import run_curate

from tests.conftest import noise_video

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "curation" / "samples" / "hdtf_3.mp4"


def stc(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stc.pipelines.cli", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]


# --- identical inputs: one source, both paths ------------------------------------------
def test_content_hash_is_blake2b_of_the_bytes(tmp_path):
    import hashlib

    a = noise_video(tmp_path / "a.mp4", frames=10, size=64)
    assert content_hash(a) == hashlib.blake2b(a.read_bytes(), digest_size=32).hexdigest()
    (tmp_path / "sub").mkdir()
    b = Path(shutil.copy(a, tmp_path / "sub" / "b.mp4"))
    c = noise_video(tmp_path / "c.mp4", frames=10, size=64, seed=1)
    same_size = tmp_path / "d.mp4"
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 1           # same size, one bit apart in the middle
    same_size.write_bytes(bytes(data))
    assert identical_groups([a, b, c, same_size]) == [[a, b]]


def test_byte_identical_inputs_are_one_source_with_both_paths(tmp_path, ray_session):
    inputs = tmp_path / "in"
    (inputs / "copy").mkdir(parents=True)
    a = noise_video(inputs / "a.mp4", frames=12, size=64)
    b = Path(shutil.copy(a, inputs / "copy" / "a_again.mp4"))
    noise_video(inputs / "c.mp4", frames=12, size=64, seed=3)
    out = tmp_path / "out"
    run_curate([str(inputs)], out, config="fast", progress=False)
    df = read_manifest(out / "manifest.parquet", CLIP_SCHEMA)
    assert df["source_id"].nunique() == 2           # a and its copy are one source
    row = df[df["source_path"] == str(a.resolve())].iloc[0]
    assert json.loads(row["duplicate_paths"]) == [str(b.resolve())]
    assert row["source_hash"] == content_hash(a)
    assert df["source_hash"].notna().all() and df["source_hash"].nunique() == 2
    # A rerun resumes: nothing new, the same rows.
    again = run_curate([str(inputs)], out, config="fast", progress=False)
    assert again["processed"] == 0
    pd.testing.assert_frame_equal(df, read_manifest(out / "manifest.parquet", CLIP_SCHEMA))
