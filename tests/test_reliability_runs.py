"""Runs treated the way users treat them (issue 11, items 2, 3 and 7): a second run on a
busy folder, two runs at once, kill -9 in the middle, broken configs and arguments, a run
where nothing works. Every `stc` here is the real command in its own process (or `main` in
this one where no Ray is involved), on real Ray, ffmpeg and Parquet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stc.core.fs import TEMP_PREFIX, OutputLock
from stc.core.names import PAIRS_MANIFEST, SHARDS_DIR
from stc.degrade.shards import ShardWriter
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestWriter, manifest_files, new_part_name, read_table
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.pipelines.cli import main as stc_main

from tests.conftest import noise_video

FRAMES, WINDOW = 48, 8                       # 6 pairs per clip
DEGRADE = ["--window", str(WINDOW), "--size", "64", "--workers", "1", "--num-cpus", "1"]


def kept_row(name: str, rel: str, frames: int) -> dict:
    return {"clip_id": f"{name}_s000_t00_00", "source_id": name, "source_path": f"/raw/{name}.mp4",
            "source": "test", "status": "kept", "reason": "kept", "message": "", "clip_path": rel,
            "shot_index": 0, "track_index": 0, "start_frame": 0, "end_frame": frames,
            "clip_size": 64, "clip_num_frames": frames, "clip_fps": 25.0}


def write_curated(out: Path, rows: list[dict]) -> Path:
    with ManifestWriter(out / "manifest.parquet", CLIP_SCHEMA) as writer:
        for r in rows:
            writer.add(r)
    return out


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    """Six kept 48-frame noise clips (degrade needs no faces)."""
    out = tmp_path_factory.mktemp("curated")
    rows = []
    for i in range(6):
        noise_video(out / "clips" / f"n{i}.mp4", frames=FRAMES, size=64, seed=i)
        rows.append(kept_row(f"n{i}", f"clips/n{i}.mp4", FRAMES))
    return write_curated(out, rows)


def stc(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stc.pipelines.cli", *args], capture_output=True,
                          text=True, timeout=600, **kw)


def start_stc(*args: str) -> subprocess.Popen:
    # Its own process group: kill -9 reaches stc and the Ray processes it started.
    return subprocess.Popen([sys.executable, "-m", "stc.pipelines.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def pairs_of(out: Path, seed: int | None = None) -> list[dict]:
    rows = read_table(out / PAIRS_MANIFEST, PAIRS_SCHEMA).to_pylist()
    return [r for r in rows if seed is None or r["seed"] == seed]


def raw_pair_ids(out: Path) -> Counter:
    """How often each pair id occurs over all part files (before 'latest part wins')."""
    n: Counter = Counter()
    for f in manifest_files(out / PAIRS_MANIFEST):
        n.update(pq.read_table(f, columns=["pair_id"]).column("pair_id").to_pylist())
    return n


def shard_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in (out / SHARDS_DIR).rglob("shard-*")}


def temps(out: Path) -> list[Path]:
    return list(out.rglob(TEMP_PREFIX + "*"))


# --- one writer per folder -------------------------------------------------------------
def test_a_second_run_on_a_busy_folder_is_refused_naming_the_holder(curated, tmp_path):
    out = tmp_path / "pairs"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from stc.core.fs import OutputLock; "
         "OutputLock(sys.argv[1], 'stc degrade held-by-test').acquire(); print('held', flush=True); "
         "time.sleep(120)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["degrade", str(curated), "--out", str(out), *DEGRADE],
                     ["curate", str(curated / "clips"), "--out", str(out), "--workers", "1"]):
            r = stc(*args)
            assert r.returncode == 2, r.stderr
            assert "being written by another stc run" in r.stderr
            assert f"pid {holder.pid}" in r.stderr and "held-by-test" in r.stderr
            assert "Traceback" not in r.stderr
        assert not (out / PAIRS_MANIFEST).exists()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(out, "test"):           # a killed holder leaves nothing to clean up
        pass


def test_part_and_shard_names_never_collide(tmp_path):
    """Two writers opened on one folder before either wrote (stc 0.1 numbered parts by what
    it found at start, so both wrote part-000000 and one overwrote the other)."""
    path = tmp_path / "m.parquet"
    a, b = ManifestWriter(path, CLIP_SCHEMA), ManifestWriter(path, CLIP_SCHEMA)
    rows = [kept_row(f"x{i}", f"clips/x{i}.mp4", 10) for i in range(6)]
    a.add_item(rows[:3])
    b.add_item(rows[3:])
    assert len(manifest_files(path)) == 2
    assert len(read_table(path, CLIP_SCHEMA)) == 6
    names = {new_part_name() for _ in range(1000)}
    assert len(names) == 1000
    s1, s2 = ShardWriter(tmp_path, "r", 0), ShardWriter(tmp_path, "r", 0)
    row = {"pair_id": "p", "clip_id": "c", "recipe": "r", "seed": 0, "window": 0, "start_frame": 0,
           "num_frames": 1, "fps": 25.0, "width": 2, "height": 2, "hq_format": "h264", "hq": b"x",
           "lq_format": "h264", "lq": b"y", "lq_stream_width": 2, "lq_stream_height": 2,
           "lq_up_interp": "area", "params": "[]"}
    s1.add(row)
    s2.add(row)
    assert s1.flush()[0][0] != s2.flush()[0][0]
    assert len(list(s1.dir.iterdir())) == 2


@pytest.mark.slow
def test_two_degrade_runs_at_once_into_one_folder_lose_nothing(curated, tmp_path):
    """Seeds 7 and 8 started together into one folder: one runs, the other is refused with
    exit 2 (it used to run too and overwrite the first's rows); rerun, both are whole."""
    out = tmp_path / "pairs"
    args = lambda seed: ["degrade", str(curated), "--out", str(out), "--seed", str(seed),  # noqa: E731
                         "--limit", "2", *DEGRADE]
    procs = {seed: start_stc(*args(seed)) for seed in (7, 8)}
    results = {seed: (p.wait(timeout=600), p.stderr.read()) for seed, p in procs.items()}
    codes = sorted(rc for rc, _ in results.values())
    assert codes in ([0, 0], [0, 2]), results
    for seed, (rc, err) in results.items():
        if rc == 2:
            assert "being written by another stc run" in err
            again = stc(*args(seed))
            assert again.returncode == 0, again.stderr
    for seed in (7, 8):
        ok = [r for r in pairs_of(out, seed) if r["status"] == "ok"]
        assert len(ok) == 2 * FRAMES // WINDOW, seed
    assert all(n == 1 for n in raw_pair_ids(out).values())
    used = {r["lq_path_or_shard"] for r in pairs_of(out)}
    assert shard_files(out) == used                      # no orphan, nothing missing
    assert not temps(out)


# --- kill -9 ------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_mid_degrade_then_rerun_loses_and_duplicates_nothing(curated, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    r = stc("degrade", str(curated), "--out", str(ref), "--seed", "3", *DEGRADE)
    assert r.returncode == 0, r.stderr

    # Tiny shards: a clip's pairs span several shard files (the old resume took a clip with
    # some of its pairs written as done).
    victim = start_stc("degrade", str(curated), "--out", str(out), "--seed", "3",
                       "--shard-mb", "0.001", *DEGRADE)
    deadline = time.time() + 300
    while not manifest_files(out / PAIRS_MANIFEST):
        assert victim.poll() is None and time.time() < deadline, victim.stderr.read()
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    first = {r["clip_id"] for r in pairs_of(out)}
    assert 1 <= len(first) < 6, "killed too late to test anything"

    # What a kill can also leave: a half-written temp file and a shard without rows.
    shard_dir = next((out / SHARDS_DIR).iterdir())
    (shard_dir / f"{TEMP_PREFIX}shard-x.parquet.tmp").write_bytes(b"half")
    orphan = shard_dir / new_part_name("shard")
    shutil.copy(next(shard_dir.glob("shard-*")), orphan)

    r = stc("degrade", str(curated), "--out", str(out), "--seed", "3", *DEGRADE)
    assert r.returncode == 0, r.stderr
    got, want = pairs_of(out), pairs_of(ref)
    assert len([x for x in got if x["status"] == "ok"]) == 6 * FRAMES // WINDOW
    assert all(n == 1 for n in raw_pair_ids(out).values()), "a pair was written twice"
    place = ("lq_path_or_shard", "shard_row")
    strip = lambda rows: {x["pair_id"]: {k: v for k, v in x.items() if k not in place} for x in rows}  # noqa: E731
    assert strip(got) == strip(want)                     # same seed, same pairs
    for g, w in zip(sorted(got, key=lambda x: x["pair_id"]), sorted(want, key=lambda x: x["pair_id"])):
        a = pq.read_table(out / g["lq_path_or_shard"]).slice(g["shard_row"], 1).to_pylist()[0]
        b = pq.read_table(ref / w["lq_path_or_shard"]).slice(w["shard_row"], 1).to_pylist()[0]
        assert (a["hq"], a["lq"]) == (b["hq"], b["lq"]), g["pair_id"]
    assert not temps(out)
    assert not orphan.exists()
    assert shard_files(out) == {x["lq_path_or_shard"] for x in got}


# --- configs and arguments ---------------------------------------------------------------
BAD_CURATE = [
    ("side_face:\n  alpha_min: 3.0\n", "side_face.alpha_min"),        # above alpha_max 2.5
    ("crop:\n  size: 0\n", "crop.size"),
    ("crop:\n  size: 511\n", "crop.size"),                            # odd: x264 yuv420p
    ("face:\n  min_face_size: -5\n", "face.min_face_size"),
    ("face:\n  min_face_frame_fraction: 1.5\n", "face.min_face_frame_fraction"),
    ("sampling:\n  per_second: 0\n", "sampling.per_second"),
    ("motion:\n  threshold: 300\n", "motion.threshold"),
]


@pytest.mark.parametrize("text,key", BAD_CURATE)
def test_a_bad_curate_config_exits_2_naming_the_key(tmp_path, capsys, text, key):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert stc_main(["curate", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert key in err and str(cfg) in err
    assert not (tmp_path / "o").exists()                 # refused before anything was made


BAD_RECIPES = [
    ("steps:\n  - brightness: {prob: 1.5}\n", "prob"),
    ("steps:\n  - bfvr: {noise: [5, 1]}\n", "noise"),
    ("steps:\n  - pixel_flicker: {noise_level: 999}\n", "noise_level"),
]


@pytest.mark.parametrize("text,key", BAD_RECIPES)
def test_a_bad_recipe_exits_2_naming_the_key(curated, tmp_path, capsys, text, key):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n" + text)
    code = stc_main(["degrade", str(curated), "--out", str(tmp_path / "o"), "--recipe", str(recipe)])
    assert code == 2
    assert key in capsys.readouterr().err


def test_bad_model_configs_exit_2_naming_the_key(curated, tmp_path, capsys):
    for stage, text, key in [
        ("stage1", "optim:\n  lr: -0.001\n", "optim.lr"),
        ("stage1", "data:\n  size: 0\n", "data.size"),
        ("stage1", "train:\n  ema_decay: 1.5\n", "train.ema_decay"),
        ("stage1", "optim:\n  betas: [0.9, 1.0]\n", "optim.betas"),
        ("stage2", "transformer:\n  width: 100\n  heads: 8\n", "transformer.width"),
        ("stage2", "data:\n  val_fraction: -0.1\n", "data.val_fraction"),
    ]:
        cfg = tmp_path / f"{stage}.yaml"
        cfg.write_text(text)
        extra = (["--manifest", str(curated)] if stage == "stage1"
                 else ["--curriculum", "bfvr", "--stage1", str(tmp_path / "s1")])
        code = stc_main(["train", stage, *extra, "--out", str(tmp_path / f"run-{stage}"),
                         "--config", str(cfg)])
        err = capsys.readouterr().err
        assert code == 2 and key in err, (text, err)


def test_window_options_are_range_checked(curated, tmp_path, capsys):
    assert stc_main(["degrade", str(curated), "--out", str(tmp_path / "o"), "--hq-crf", "99"]) == 2
    assert "hq_crf" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--limit", "-1"], ["--num-cpus", "0"], ["--workers", "0"]])
def test_negative_limits_and_zero_cpus_are_refused(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        stc_main(["curate", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert exit_.value.code == 2
    assert args[0] in capsys.readouterr().err


# --- nothing worked ------------------------------------------------------------------------
def test_a_run_where_every_input_failed_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert stc_main(["curate", str(bad), "--out", str(tmp_path / "cur"), "--workers", "1"]) == 1
    assert "every input of this run failed" in capsys.readouterr().err
    # degrade: a kept clip that is not there any more
    cur = write_curated(tmp_path / "c2", [kept_row("gone", "clips/gone.mp4", FRAMES)])
    assert stc_main(["degrade", str(cur), "--out", str(tmp_path / "p"), *DEGRADE]) == 1
    (row,) = pairs_of(tmp_path / "p")
    assert row["status"] == "error"


def test_every_built_in_config_passes_its_checks():
    """The rules reject bad values only: every config stc ships loads."""
    from stc.curation.config import BUILTIN_DIR as CURATE_DIR, CurateConfig
    from stc.degrade.recipe import builtin_recipes, load_recipe
    from stc.model.stage1.config import CONFIG_DIR as S1, load_stage1_config
    from stc.model.stage2.config import CONFIG_DIR as S2, load_stage2_config

    loaded = [CurateConfig.load(p.stem) for p in CURATE_DIR.glob("*.yaml")]
    loaded += [load_recipe(name) for name in builtin_recipes()]
    loaded += [load_stage1_config(p.stem) for p in S1.glob("*.yaml")]
    loaded += [load_stage2_config(p.stem) for p in S2.glob("*.yaml")]
    assert len(loaded) >= 8
