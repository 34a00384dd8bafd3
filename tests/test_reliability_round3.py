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


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """`stc ARGS` in this process (no interpreter start-up): its exit code and what it printed."""
    from stc.pipelines.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:           # argparse refusing an option
        code = exc.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


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


def test_stats_decodes_only_sources_inside_the_run_or_its_recorded_inputs(tmp_path, monkeypatch,
                                                                          capsys):
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
    r = cli(capsys, "stats", str(cur), "--out", str(tmp_path / "report3"), "--allow-outside")
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


# --- enhance: a damaged checkpoint is a message; its own input is never its output ---------
def test_enhance_refuses_a_truncated_checkpoint_and_its_own_input(tmp_path, capsys):
    from stc.model.training.checkpoint import save_checkpoint

    from tests.test_stage2 import tiny_stage2

    m = tiny_stage2()
    run = tmp_path / "run2"
    ckpt = save_checkpoint(run, 1, {"model": m.state_dict(), "ema": m.state_dict()}, {}, m.cfg)
    clip = noise_video(tmp_path / "clip.mp4", frames=8, size=32)
    before = clip.read_bytes()

    r = cli(capsys, "enhance", str(clip), "-o", str(clip), "--checkpoint", str(run), "--aligned",
            "--overwrite")
    assert r.returncode == 2, r.stderr[-2000:]
    no_traceback(r)
    assert "destroy the input" in r.stderr and clip.read_bytes() == before

    ema = ckpt / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[: ema.stat().st_size // 2])
    r = cli(capsys, "enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--checkpoint",
            str(run), "--aligned")
    assert r.returncode == 2, r.stderr[-2000:]
    no_traceback(r)
    assert "ema.safetensors is damaged" in r.stderr and "cut short" in r.stderr


# --- links, loops, and a run's own output inside its input --------------------------------
def test_linked_folders_are_followed_loops_are_rows_and_own_output_is_not_input(tmp_path, ray_session):
    import os

    from stc.pipelines.inputs import gather_inputs

    inputs, elsewhere = tmp_path / "in", tmp_path / "disk2" / "more"
    a = noise_video(inputs / "a.mp4", frames=12, size=64)
    b = noise_video(elsewhere / "b.mp4", frames=12, size=64, seed=1)
    os.symlink(elsewhere, inputs / "linked")                 # footage linked in from another disk
    os.symlink(elsewhere, inputs / "linked_again")           # the same folder twice: once
    (inputs / "sub").mkdir()
    os.symlink("..", inputs / "sub" / "up")                  # a loop
    os.symlink("me.mp4", inputs / "me.mp4")                  # a link to itself
    found = dict(gather_inputs([str(inputs)]))
    assert set(found) == {str(a.resolve()), str(b.resolve()), str(inputs / "me.mp4")}

    out = inputs / "cur"                                      # --out inside the input folder
    run_curate([str(inputs)], out, config="fast", progress=False)
    df = read_manifest(out / "manifest.parquet", CLIP_SCHEMA)
    by_path = df.drop_duplicates("source_id").set_index("source_path")
    assert set(by_path.index) == set(found)
    loop = by_path.loc[str(inputs / "me.mp4")]
    assert (loop["status"], loop["reason"]) == ("error", "unreadable")
    noise_video(out / "clips" / "planted.mp4", frames=12, size=64, seed=5)   # an output clip
    again = run_curate([str(inputs)], out, config="fast", progress=False)
    assert again["inputs"] == 3 and again["processed"] == 0
    assert not read_manifest(out / "manifest.parquet", CLIP_SCHEMA)["source_path"].str.startswith(
        str(out.resolve())).any()


def test_eval_over_folders_with_a_link_loop_scores_the_videos_without_a_traceback(tmp_path, capsys):
    """The second command that walks folders: `stc eval --pred DIR --gt DIR` with a link back
    up the tree in each."""
    import os

    for side in ("pred", "gt"):
        noise_video(tmp_path / side / "a.mp4", frames=8, size=32)
        (tmp_path / side / "sub").mkdir()
        os.symlink("..", tmp_path / side / "sub" / "up")
    out = tmp_path / "scores.parquet"
    r = cli(capsys, "eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
            "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    no_traceback(r)
    scores = pd.read_parquet(out)
    assert list(scores["status"]) == ["ok"] and len(scores) == 1, scores


# --- tracebacks that are now messages -------------------------------------------------------
def test_bad_numbers_and_presets_are_refused_before_anything_runs(tmp_path, capsys):
    cur = tmp_path / "cur"
    cur.mkdir()
    for args, needle in ((["--seed", str(2 ** 64 + 1)], "below 2^63"),
                         (["--shard-mb", "nan"], "finite number above 0"),
                         (["--shard-mb", "0"], "finite number above 0")):
        r = cli(capsys, "degrade", str(cur), "--out", str(tmp_path / "p"), *args)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr[-1500:])
        no_traceback(r)
    r = cli(capsys, "curate", "--print-config", "--set", "encode.preset=veryfst")
    assert r.returncode == 2 and "encode.preset: 'veryfst' is not one of" in r.stderr, r.stderr
    no_traceback(r)
    r = cli(capsys, "degrade", "--print-config", "--set", "steps.0.bfvr.preset=quick")
    assert r.returncode == 2 and "'quick' is not one of" in r.stderr, r.stderr[-1500:]
    no_traceback(r)


def test_a_ray_out_of_memory_kill_is_a_message_and_a_crash_report(tmp_path):
    import os

    inputs = tmp_path / "in"
    for i in range(2):
        noise_video(inputs / f"n{i}.mp4", frames=12, size=64, seed=i)
    logs = tmp_path / "logs"
    # Ray's memory monitor kills every worker once the node uses more than 1% of its memory.
    env = {**os.environ, "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "50",
           "STC_LOG_DIR": str(logs)}
    r = stc("curate", str(inputs), "--out", str(tmp_path / "out"), "--config", "fast",
            "--workers", "2", env=env)
    assert r.returncode == 1, r.stderr[-2000:]
    no_traceback(r)
    assert "lack of memory" in r.stderr and "fewer --workers" in r.stderr
    reports = list(logs.glob("stc-*.log"))
    assert len(reports) == 1 and str(reports[0]) in r.stderr
    assert "Traceback" in reports[0].read_text()      # the details are kept for a bug report


def test_an_unreachable_object_store_is_one_paragraph(tmp_path, capsys, monkeypatch):
    import os
    import socket

    with socket.socket() as s:              # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clip = noise_video(tmp_path / "in" / "a.mp4", frames=8, size=32)
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
                 "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1",
                 "STC_LOG_DIR": str(tmp_path / "logs")}.items():
        monkeypatch.setenv(k, v)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()    # fsspec keeps file systems made for moto
    r = cli(capsys, "curate", str(clip), "--out", "s3://bucket/out", "--config", "fast",
            "--workers", "1")
    assert r.returncode == 1, r.stderr[-2000:]
    no_traceback(r)
    assert "cannot reach the object storage" in r.stderr and "resume" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 4, r.stderr


# --- a manifest still being written is not read as finished ---------------------------------
def test_degrade_refuses_a_curation_run_in_progress(tmp_path, capsys):
    from stc.core.fs import OutputLock
    from stc.manifests.io import ManifestWriter

    cur = tmp_path / "cur"
    noise_video(cur / "clips" / "c.mp4", frames=16, size=64)
    with ManifestWriter(cur / "manifest.parquet", CLIP_SCHEMA) as w:
        w.add({"clip_id": "c_s000_t00_00", "source_id": "c", "source_path": "/raw/c.mp4",
               "source": "t", "status": "kept", "reason": "kept", "message": "",
               "clip_path": "clips/c.mp4", "shot_index": 0, "track_index": 0, "start_frame": 0,
               "end_frame": 16, "clip_size": 64, "clip_num_frames": 16, "clip_fps": 25.0})
    with OutputLock(cur, "stc curate raw --out cur"):        # the curation run, still going
        r = cli(capsys, "degrade", str(cur), "--out", str(tmp_path / "pairs"), "--window", "8",
                "--size", "64", "--workers", "1", "--num-cpus", "1")
    assert r.returncode == 2, r.stderr[-2000:]
    no_traceback(r)
    assert "still being written" in r.stderr and "stc curate raw --out cur" in r.stderr
    assert not (tmp_path / "pairs" / "pairs.parquet").exists()


# --- wrong results ----------------------------------------------------------------------
def test_an_mkv_with_cover_art_first_reads_its_video(tmp_path):
    from stc.core.video import crop_transcode, ffmpeg_exe, probe, read_frames, video_stream_index

    video = noise_video(tmp_path / "v.mp4", frames=20, size=96)
    cover = tmp_path / "cover.png"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=red:size=320x240", "-frames:v", "1", str(cover)], check=True)
    mkv = tmp_path / "with_cover.mkv"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(cover), "-i",
                    str(video), "-map", "0", "-map", "1", "-c", "copy",
                    "-disposition:v:0", "attached_pic", str(mkv)], check=True,
                   stdin=subprocess.DEVNULL)
    info = probe(mkv)         # .mkv stores no frame count: num_frames 0 means "count them"
    assert (info.width, info.height, info.codec) == (96, 96, "h264")
    assert video_stream_index(mkv) == 1
    frames = read_frames(mkv)
    assert frames.shape == (20, 96, 96, 3)
    assert abs(frames.astype(int) - read_frames(video).astype(int)).mean() < 1
    out = tmp_path / "clip.mp4"
    for _ in crop_transcode(mkv, out, (0, 0, 64, 64), size=32, crf=18, preset="ultrafast"):
        pass
    assert probe(out).num_frames == 20


def test_the_stage2_step_after_a_tiny_stage1_names_the_tiny_stage2_config():
    from stc.pipelines.train import stage2_config_for

    assert stage2_config_for("stage1-tiny") == "stage2-tiny"
    assert stage2_config_for(None) is None and stage2_config_for("stage1") is None
    assert stage2_config_for("/my/stage1-small.yaml") == "STAGE2.yaml"
