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


# --- no hang under a terminal ------------------------------------------------------------
def run_under_pty(args: list[str], timeout: float) -> tuple[int | None, str]:
    """Run `args` as `script` would: a new session whose controlling terminal is a pty, in
    its foreground group. Returns (exit code or None on timeout, what it printed)."""
    import fcntl
    import os
    import pty
    import select
    import termios
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:         # the child side closed: it is done
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.poll()
        if code is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        return code, out.decode(errors="replace")
    finally:
        os.close(master)


def test_curate_under_a_terminal_finishes(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):      # two inputs: they go to Ray actors, which the terminal stopped
        noise_video(inputs / f"n{i}.mp4", frames=12, size=64, seed=i)
    code, out = run_under_pty([sys.executable, "-m", "stc.pipelines.cli", "curate", str(inputs),
                               "--out", str(tmp_path / "out"), "--config", "fast",
                               "--workers", "2"], timeout=150)
    assert code is not None, f"stc curate hung under a terminal:\n{out[-2000:]}"
    assert code == 0, out[-2000:]
    df = read_manifest(tmp_path / "out" / "manifest.parquet", CLIP_SCHEMA)
    assert df["source_id"].nunique() == 2


# --- one path policy: stc stats draws nothing outside the run and its inputs -------------
def rejected_row(name: str, source: str, frames: int = 16) -> dict:
    return {"clip_id": f"{name}_s000_t00_00", "source_id": name, "source_path": source,
            "source": "test", "status": "rejected", "reason": "side_face", "message": "",
            "clip_path": None, "num_frames": frames, "shot_index": 0, "track_index": 0,
            "start_frame": 0, "end_frame": frames, "crop_x0": 0, "crop_y0": 0, "crop_x1": 32,
            "crop_y1": 32}


def test_stats_decodes_only_sources_inside_the_run_or_its_recorded_inputs(tmp_path, monkeypatch):
    from stc.audit import review
    from stc.core.paths import INPUT_ROOTS, record_input_roots
    from stc.manifests.io import ManifestWriter
    from stc.pipelines.stats import run_stats

    monkeypatch.setenv("STC_KEY_FILE", str(tmp_path / "key"))
    inputs = tmp_path / "inputs"
    given = noise_video(inputs / "given.mp4", frames=16, size=64)
    elsewhere = noise_video(tmp_path / "elsewhere" / "secret.mp4", frames=16, size=64, seed=1)
    cur = tmp_path / "cur"
    with ManifestWriter(cur / "manifest.parquet", CLIP_SCHEMA) as w:
        w.add(rejected_row("given", str(given)))
        w.add(rejected_row("secret", str(elsewhere)))
        w.add(rejected_row("climb", str(cur / ".." / "elsewhere" / "secret.mp4")))
    record_input_roots(cur, [inputs.resolve()])
    opened: list[str] = []
    real = review.decode_sampled
    monkeypatch.setattr(review, "decode_sampled",
                        lambda path, *a, **k: (opened.append(str(path)), real(path, *a, **k))[1])

    summary, _ = run_stats(cur, tmp_path / "report")
    assert opened and all(Path(p).resolve() == given.resolve() for p in opened), opened
    entries = {e["clip_id"].split("_s000")[0]: e for e in summary["review"]["rejected"]}
    assert entries["given"]["source_path"] == str(given.resolve())
    for name in ("secret", "climb"):
        assert entries[name]["source_path"] is None
        assert "refused" in entries[name]["refused"][0] and "--allow-outside" in entries[name]["refused"][0]

    # A run folder whose recorded inputs were edited (here: to vouch for "/") vouches for nothing.
    doc = json.loads((cur / INPUT_ROOTS).read_text())
    (cur / INPUT_ROOTS).write_text(json.dumps({**doc, "roots": ["/"]}))
    opened.clear()
    run_stats(cur, tmp_path / "report2")
    assert opened == []

    # --allow-outside: the user says so, and the videos are read.
    r = stc("stats", str(cur), "--out", str(tmp_path / "report3"), "--allow-outside",
            env={**__import__("os").environ, "STC_KEY_FILE": str(tmp_path / "key")})
    assert r.returncode == 0, r.stderr[-2000:]
    no_traceback(r)


def test_curate_records_the_inputs_it_was_given(tmp_path, monkeypatch):
    from stc.core.paths import recorded_input_roots
    from stc.pipelines.curate import input_roots

    folder = tmp_path / "in"
    a = noise_video(folder / "a.mp4", frames=8, size=32)
    lone = noise_video(tmp_path / "lone.mp4", frames=8, size=32)
    items = [{"source_path": str(a.resolve())}, {"source_path": str(lone.resolve())}]
    roots = input_roots([str(folder), str(lone)], items)
    assert roots == [str(folder.resolve()), str(lone.resolve())]
    monkeypatch.setenv("STC_KEY_FILE", str(tmp_path / "key"))
    from stc.core.paths import record_input_roots

    record_input_roots(tmp_path / "out", roots)
    assert recorded_input_roots(tmp_path / "out") == sorted(roots)
    monkeypatch.setenv("STC_KEY_FILE", str(tmp_path / "another_users_key"))
    assert recorded_input_roots(tmp_path / "out") == []


# --- object-storage lock: compare-and-swap takeover, a lease checked before each write ----
from tests.test_s3 import s3  # noqa: E402,F401 - moto's S3 server on 127.0.0.1 (fixture)


def test_an_expired_lock_is_taken_by_exactly_one_of_two_runs(s3):
    import threading
    import time

    from stc.core import storage
    from stc.core.fs import OutputLocked
    from stc.core.storage import ObjectLock

    url = "s3://cur/contended"
    for trial in range(8):
        stale = {"pid": 1, "host": "gone", "command": "stc curate killed", "token": "x",
                 "since": "then", "renewed": time.time() - 1000, "expires": time.time() - 900}
        storage.write_text(f"{url}/.stc.lock", json.dumps(stale))
        got, barrier = [], threading.Barrier(2)

        def take(n: int) -> None:
            barrier.wait()
            try:
                got.append(ObjectLock(url, f"run {n}", lease_seconds=30).acquire())
            except OutputLocked:
                pass

        threads = [threading.Thread(target=take, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 1, f"trial {trial}: {len(got)} runs hold the lock"
        holder = json.loads(storage.read_text(f"{url}/.stc.lock"))
        assert holder["token"] == got[0].token
        got[0].release()


def test_a_run_that_lost_its_lease_stops_writing(s3):
    import time

    from stc.core import storage
    from stc.core.storage import LeaseLost, ObjectLock

    url = "s3://cur/lease"
    lock = ObjectLock(url, "stc degrade holder", lease_seconds=2).acquire()
    try:
        storage.write_text(f"{url}/part", "written while holding it")
        # Another run takes the lock over (as after a long network cut): the holder's next
        # renewal finds the ETag changed, and every write after that is refused.
        storage._fs(url)[0].pipe_file(f"cur/lease/.stc.lock", json.dumps(
            {"token": "other", "command": "stc degrade taker", "expires": time.time() + 600}).encode())
        deadline = time.monotonic() + 10
        while lock.lost is None and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(LeaseLost, match="lost its lock.*rerun the same command"):
            storage.write_text(f"{url}/index", "must not be written")
        assert not storage.exists(f"{url}/index")
    finally:
        lock.release()
    assert json.loads(storage.read_text(f"{url}/.stc.lock"))["token"] == "other"   # not removed

    # A holder that could not renew for a whole lease stops before anyone may take over.
    lock = ObjectLock("s3://cur/lease2", "cut off", lease_seconds=30).acquire()
    try:
        lock.renewed -= 31
        with pytest.raises(LeaseLost, match="could not be renewed"):
            storage.write_text("s3://cur/lease2/index", "x")
    finally:
        lock.release()
