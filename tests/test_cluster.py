"""A real multi-node Ray cluster on this machine (two raylets on 127.0.0.1, one CPU each):
`stc curate` and `stc degrade` joined with --address spread their inputs over both nodes,
and make the same rows and the same bytes as on one node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stc.core.video import encode_frames, read_frames
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA

from .conftest import ROOT

pytestmark = pytest.mark.slow
SAMPLES = ROOT / "curation" / "samples"
STC = [sys.executable, "-m", "stc.pipelines.cli"]


@pytest.fixture(scope="module")
def cluster():
    """A head node with one CPU; the test adds the second node when it needs it. Every
    process belongs to this Cluster object and is stopped by it (never `ray stop`)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    c.node_args = node
    yield c
    c.shutdown()


def short_inputs(folder: Path, frames: int = 50) -> Path:
    """The two bundled sample videos cut to 2 s: enough for the fast config, cheap on 2 cores."""
    folder.mkdir(parents=True)
    for src in sorted(SAMPLES.glob("*.mp4")):
        encode_frames(read_frames(src, 0, frames), folder / src.name, fps=25.0, crf=12,
                      preset="ultrafast")
    return folder


def stc(*args: str, address: str) -> dict:
    run = subprocess.run([*STC, *args, "--address", address, "--json"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def pipelines(inputs: Path, out: Path, address: str) -> tuple[dict, dict]:
    """curate then degrade (BFVR, 16-frame windows at 64 px) on the cluster."""
    cur = stc("curate", str(inputs), "--out", str(out / "cur"), "--config", "fast",
              address=address)
    deg = stc("degrade", str(out / "cur"), "--out", str(out / "pairs"), "--recipe", "bfvr",
              "--seed", "5", "--window", "16", "--max-windows", "2", "--size", "64",
              address=address)
    return cur, deg


def pair_bytes(pairs_dir: Path) -> dict[str, tuple[bytes, bytes]]:
    pairs = read_manifest(pairs_dir / "pairs.parquet", PAIRS_SCHEMA)
    out = {}
    for p in pairs[pairs.status == "ok"].itertuples():
        row = pq.read_table(pairs_dir / p.lq_path_or_shard).slice(int(p.shard_row), 1).to_pylist()[0]
        out[p.pair_id] = (row["hq"], row["lq"])
    return out


def test_two_nodes_share_the_work_and_match_one_node(cluster, tmp_path):
    inputs = short_inputs(tmp_path / "raw")
    one_cur, one_deg = pipelines(inputs, tmp_path / "one", cluster.address)
    assert len(one_cur["nodes"]) == 1 and len(one_deg["nodes"]) == 1

    cluster.add_node(**cluster.node_args, resources={"second_node": 1})
    cluster.wait_for_nodes()
    two_cur, two_deg = pipelines(inputs, tmp_path / "two", cluster.address)

    # Both nodes worked: one actor per node (one CPU each), each finished an input.
    for summary in (two_cur, two_deg):
        assert len(summary["nodes"]) == 2 and sum(summary["nodes"].values()) == 2, summary["nodes"]
    stats = json.loads((tmp_path / "two" / "cur" / "run_stats.json").read_text())
    assert len(stats["nodes"]) == 2
    head = next(iter(one_cur["nodes"]))
    assert head in two_cur["nodes"]                     # the head node is one of the two

    # Same rows...
    one = read_manifest(tmp_path / "one" / "cur" / "manifest.parquet", CLIP_SCHEMA)
    two = read_manifest(tmp_path / "two" / "cur" / "manifest.parquet", CLIP_SCHEMA)
    assert len(one) >= 2 and set(one.status) == {"kept"}
    assert one.equals(two)
    # ...and the same clip bytes,
    for rel in one.clip_path:
        assert (tmp_path / "one" / "cur" / rel).read_bytes() == (tmp_path / "two" / "cur" / rel).read_bytes()
    # and the same pairs: rows apart from shard file names (time stamps), and bytes.
    p1 = read_manifest(tmp_path / "one" / "pairs" / "pairs.parquet", PAIRS_SCHEMA)
    p2 = read_manifest(tmp_path / "two" / "pairs" / "pairs.parquet", PAIRS_SCHEMA)
    assert len(p1) == 2 * len(one) and set(p1.status) == {"ok"}
    assert p1.drop(columns="lq_path_or_shard").equals(p2.drop(columns="lq_path_or_shard"))
    assert pair_bytes(tmp_path / "one" / "pairs") == pair_bytes(tmp_path / "two" / "pairs")
