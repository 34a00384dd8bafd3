"""Object storage end to end against a real S3 API (moto's server on 127.0.0.1): curate from
s3://raw/ into s3://cur, degrade into s3://pairs, read the pairs and train Stage I from
s3://cur. Resume, the settings-changed rule and the output lock hold there, and the
manifests equal a local run's apart from paths. Credentials and the endpoint come only from
the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

s3fs = pytest.importorskip("s3fs")
import torch

from stc.core import storage
from stc.core.fs import OutputLocked
from stc.core.storage import ObjectLock
from stc.degrade.loader import PairDataset
from stc.degrade.windows import WindowOptions
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import manifest_files, read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.pipelines.curate import run_curate
from stc.pipelines.degrade import run_degrade
from stc.pipelines.driver import SettingsChanged

from .conftest import ROOT
from .test_cluster import short_inputs

STC = [sys.executable, "-m", "stc.pipelines.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, buckets raw/cur/pairs, and the standard AWS
    variables pointing at it (for this process and the `stc` processes the test starts)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                                   "127.0.0.1", "-p", str(port)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "STC_CACHE_DIR": str(tmp_path_factory.mktemp("object-cache"))}
    try:
        # Its imports alone can take many seconds on a loaded 2-core machine.
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start on port {port}: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            # fsspec reuses an S3 file system made earlier in this process with the endpoint
            # of that time (another test's dead one); the endpoint is read when one is made.
            s3fs.S3FileSystem.clear_instance_cache()
            fs, _ = storage._fs("s3://raw")
            for bucket in ("raw", "cur", "pairs"):
                fs.mkdir(bucket)
            yield env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.terminate()
        server.wait(timeout=30)


def stc(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    run = subprocess.run([*STC, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == expect, run.stderr[-3000:]
    return run


# Columns that name or hash the input's location; everything else must match.
# person_id is `<source_id>_pNN`, so it names the input path too.
PATH_COLUMNS = {"clip_id", "source_id", "source_path", "clip_path", "message", "person_id"}


def by_name(df) -> dict[tuple[str, str], dict]:
    """Rows keyed without paths: (input file name, the clip's part of its id)."""
    return {(storage.name(r["source_path"]), r["clip_id"][len(r["source_id"]):]): r
            for r in df.to_dict("records")}


def test_storage_layer_names_reads_and_stages_local_and_urls(tmp_path, monkeypatch):
    """The same calls on a local folder and on a URL (fsspec's memory://)."""
    monkeypatch.setenv("STC_CACHE_DIR", str(tmp_path / "cache"))
    for base in (tmp_path / "out", "memory://bucket/out"):
        assert storage.join(base, "a", "b.txt") == (Path(base) / "a" / "b.txt" if isinstance(base, Path)
                                                   else "memory://bucket/out/a/b.txt")
        storage.write_text(storage.join(base, "a", "b.txt"), "one")
        storage.write_bytes(storage.join(base, "c.bin"), b"\x00\x01")
        assert storage.read_text(storage.join(base, "a", "b.txt")) == "one"
        assert storage.listdir(base) == ["a", "c.bin"]
        assert [storage.relative(p, base) for p in storage.find_files(base)] == ["a/b.txt", "c.bin"]
        assert [storage.name(p) for p in storage.glob(base, "*/*.txt")] == ["b.txt"]
        assert storage.isdir(storage.join(base, "a")) and not storage.exists(storage.join(base, "x"))
        with storage.local_input(storage.join(base, "a", "b.txt")) as local:
            assert local.read_text() == "one" and local.name == "b.txt"
        with storage.local_output(storage.join(base, "d.txt")) as local:
            local.write_text("two")
        assert storage.read_text(storage.join(base, "d.txt")) == "two"
        # A cached copy follows the object: a changed object is fetched again.
        first = storage.cached_input(storage.join(base, "d.txt"))
        storage.write_text(storage.join(base, "d.txt"), "three!")
        assert first.read_text() == "two" or isinstance(base, Path)
        assert storage.cached_input(storage.join(base, "d.txt")).read_text() == "three!"
        storage.remove(storage.join(base, "d.txt"))
        storage.remove(storage.join(base, "d.txt"))              # missing: fine
        assert not storage.exists(storage.join(base, "d.txt"))
    # Inputs named by URL: a prefix (recursive, videos only), a glob, a .txt list of URLs.
    from stc.pipelines.inputs import gather_inputs

    for rel in ("raw/a.mp4", "raw/sub/b.MOV", "raw/notes.txt", "other/c.mp4"):
        storage.write_bytes(f"memory://bucket/{rel}", b"")
    storage.write_text("memory://bucket/list.txt", "# two\nraw/a.mp4\nmemory://bucket/other/c.mp4\n")
    assert gather_inputs(["memory://bucket/raw/"]) == [
        ("memory://bucket/raw/a.mp4", "raw"), ("memory://bucket/raw/sub/b.MOV", "raw")]
    assert [p for p, _ in gather_inputs(["memory://bucket/*/*.mp4"])] == [
        "memory://bucket/other/c.mp4", "memory://bucket/raw/a.mp4"]
    assert gather_inputs(["memory://bucket/list.txt"]) == [
        ("memory://bucket/other/c.mp4", "list"), ("memory://bucket/raw/a.mp4", "list")]
    assert gather_inputs(["memory://bucket/gone.mp4"]) == [("memory://bucket/gone.mp4", "bucket")]
    assert storage.is_url("s3://raw/x.mp4") and not storage.is_url("file:///tmp/x")
    assert storage.location("file:///tmp/x") == Path("/tmp/x")
    assert storage.parent("s3://raw/a/x.mp4") == "s3://raw/a" and storage.stem("s3://raw/x.mp4") == "x"


@pytest.mark.slow
def test_curate_degrade_train_on_s3_match_local(s3, tmp_path):
    local_raw = short_inputs(tmp_path / "raw", frames=32)
    for f in local_raw.iterdir():
        storage.upload(f, f"s3://raw/{f.name}")
    # inputs: a bucket prefix, as a user names a folder
    # One worker: models load once, which is what costs on 2 shared cores.
    cur = json.loads(stc("curate", "s3://raw/", "--out", "s3://cur", "--config", "fast",
                         "--workers", "1", "--json").stdout)
    assert cur["processed"] == 2 and set(cur["status"]) == {"kept"}
    assert storage.exists("s3://cur/curate_config.yaml") and storage.exists("s3://cur/run_stats.json")
    assert not storage.exists("s3://cur/.stc.lock")           # released
    remote = read_manifest("s3://cur/manifest.parquet", CLIP_SCHEMA)
    assert all(p.startswith("s3://raw/") for p in remote.source_path)
    assert set(remote.source) == {"raw"}

    # The same inputs from a local folder named the same: identical rows apart from paths,
    # identical clip bytes.
    stc("curate", str(local_raw), "--out", str(tmp_path / "cur"), "--config", "fast",
        "--workers", "1")
    local = read_manifest(tmp_path / "cur" / "manifest.parquet", CLIP_SCHEMA)
    r, loc = by_name(remote), by_name(local)
    assert sorted(r) == sorted(loc) and {name for name, _ in r} == {"hdtf_3.mp4", "hdtf_4.mp4"}
    def comparable(row: dict) -> dict:
        # list columns (the mean face embedding) come back as arrays: compare them as lists
        return {k: (v.tolist() if hasattr(v, "tolist") else v)
                for k, v in row.items() if k not in PATH_COLUMNS}

    for name in r:
        assert comparable(r[name]) == comparable(loc[name])
        assert storage.read_bytes(f"s3://cur/{r[name]['clip_path']}") == \
            (tmp_path / "cur" / loc[name]["clip_path"]).read_bytes()

    # Resume: a rerun finds both inputs done and writes nothing (in this process: with
    # nothing to do no worker starts).
    parts = manifest_files("s3://cur/manifest.parquet")
    again = run_curate(["s3://raw/"], "s3://cur", config="fast", progress=False)
    assert (again["processed"], again["skipped_finished"]) == (0, 2)
    assert manifest_files("s3://cur/manifest.parquet") == parts
    # Settings changed: refused, naming the folder, before any work.
    with pytest.raises(SettingsChanged, match="s3://cur was made with other settings"):
        run_curate(["s3://raw/"], "s3://cur", config="default", progress=False)

    # Degrade s3://cur -> s3://pairs, and a local copy of s3://cur into a local folder. (The
    # draws of a degradation are seeded by clip id, which hashes the input's location, so
    # both degrade the same clips: the bucket's.)
    deg = ["--recipe", "bfvr", "--seed", "2", "--window", "8", "--max-windows", "2",
           "--size", "32", "--workers", "1", "--json"]
    d = json.loads(stc("degrade", "s3://cur", "--out", "s3://pairs", *deg).stdout)
    assert d["new_pairs"] == 2 * len(r) and d["new_error_clips"] == 0
    assert storage.glob("s3://pairs/shards/bfvr-seed2", "shard-*.parquet")
    copy = tmp_path / "cur-copy"
    for url in storage.find_files("s3://cur"):
        storage.download(url, copy / storage.relative(url, "s3://cur"))
    stc("degrade", str(copy), "--out", str(tmp_path / "pairs"), *deg)
    rp = read_manifest("s3://pairs/pairs.parquet", PAIRS_SCHEMA)
    lp = read_manifest(tmp_path / "pairs" / "pairs.parquet", PAIRS_SCHEMA)
    # Identical rows apart from the shard file names (they carry a time stamp and pid).
    assert rp.drop(columns="lq_path_or_shard").equals(lp.drop(columns="lq_path_or_shard"))
    again = run_degrade("s3://cur", "s3://pairs", "bfvr", 2,
                        WindowOptions(window=8, max_windows=2, size=32), progress=False)
    assert again["new_pairs"] == 0 and again["skipped_clips"] == len(r)

    # The loader streams the S3 shards and gives the local pairs' tensors.
    def tensors(pairs_dir):
        return {meta["pair_id"]: (lq, hq) for lq, hq, meta in
                PairDataset(pairs_dir, "bfvr", shuffle=False, return_meta=True)}

    remote_pairs, local_pairs = tensors("s3://pairs"), tensors(tmp_path / "pairs")
    assert sorted(remote_pairs) == sorted(local_pairs) and len(remote_pairs) == 2 * len(r)
    for k, (lq, hq) in remote_pairs.items():
        assert torch.equal(lq, local_pairs[k][0]) and torch.equal(hq, local_pairs[k][1])

    # Stage I trains from s3://cur: manifest and clips read from the bucket.
    from tests.test_train_stage1 import metrics, tiny
    from stc.model.stage1.trainer import Stage1Trainer

    cfg = tiny(**{"train.max_steps": 2, "train.log_every": 1, "train.val_every": 100,
                  "train.ckpt_every": 2, "data.num_workers": 0})
    trainer = Stage1Trainer(cfg, "s3://cur", tmp_path / "run", device="cpu", log=lambda m: None)
    assert {c.path for c, _ in trainer.split.train} <= {f"s3://cur/{p}" for p in remote.clip_path}
    trainer.run()
    logged = [m for m in metrics(tmp_path / "run") if "loss/total" in m]
    assert [m["step"] for m in logged] == [1, 2] and all(m["loss/total"] > 0 for m in logged)
    assert list(Path(s3["STC_CACHE_DIR"]).glob("*.mp4"))        # clips came through the cache


@pytest.mark.slow
def test_object_lock_is_exclusive_and_a_dead_holder_expires(s3):
    url = "s3://cur/locked-run"
    first = ObjectLock(url, "stc curate first", lease_seconds=60).acquire()
    try:
        with pytest.raises(OutputLocked, match="stc curate first"):
            ObjectLock(url, "stc curate second").acquire()
        # The pipeline refuses too, before it starts any worker.
        with pytest.raises(OutputLocked, match="being written by another stc run"):
            run_curate([str(ROOT / "curation" / "samples")], url, config="fast", progress=False)
    finally:
        first.release()
    assert not storage.exists(f"{url}/.stc.lock")
    ObjectLock(url, "after release").acquire().release()

    # A holder killed without releasing: its lease runs out and the next run takes over.
    stale = {"pid": 1, "host": "gone", "command": "stc curate killed", "token": "x",
             "since": "then", "renewed": time.time() - 1000, "expires": time.time() - 900}
    storage.write_text(f"{url}/.stc.lock", json.dumps(stale))
    lock = ObjectLock(url, "takes over").acquire()
    assert json.loads(storage.read_text(f"{url}/.stc.lock"))["command"] == "takes over"
    lock.release()
