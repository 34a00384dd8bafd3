"""The `stc` command line as a user meets it: a quiet console that ends with what to do next,
Ray Train's chatter in a log file, pairs to watch and score, configs built on configs with
--set and --print-config everywhere, plain messages for the wrong kind of folder, and a
curate-only install that never needs the extras."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stc.core.config import ConfigError
from stc.core.video import read_frames
from stc.curation.config import CurateConfig
from stc.pipelines.cli import build_parser
from stc.pipelines.cli import main as stc

from .conftest import ROOT

STC = [sys.executable, "-m", "stc.pipelines.cli"]
SAMPLES = ROOT / "curation" / "samples"
# What Ray prints about itself: none of it belongs on a user's console.
RAY_INTERNALS = re.compile(r"core_worker|raylet|\x1b\[|INFO worker\.py|Started a local Ray instance|"
                           r"RayTrainWorker|TrainController|PlacementGroup|\(pid=|\(\w+ pid=|"
                           r"Ray Train|WARNING|gcs_", re.IGNORECASE)
# The extras: a curate-only install has none of them.
EXTRAS = ("tensorboard", "tensorboardX", "diffusers", "transformers", "nbclient", "nbformat",
          "ipykernel")


@pytest.fixture(scope="module")
def curate_only(tmp_path_factory) -> dict[str, str]:
    """An environment where the extras cannot be imported (in this process's children and
    their Ray workers alike), as after `pip install stc` without extras."""
    site = tmp_path_factory.mktemp("curate_only")
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class _NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {set(EXTRAS)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
        sys.meta_path.insert(0, _NotInstalled())
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "RAY_ADDRESS"))}
    env.update(PYTHONPATH=str(site), RAY_AUTH_MODE="disabled")
    return env


def run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(STC + args, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def curated(curate_only, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("cli") / "cur"
    proc = run(["curate", str(SAMPLES), "--out", str(out), "--config", "fast", "--num-cpus", "2"],
               curate_only)
    return out, proc


def test_curate_console_has_no_ray_internals_and_ends_with_next_steps(curated):
    out, proc = curated
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    bad = [line for line in console.splitlines() if RAY_INTERNALS.search(line)]
    assert not bad, bad
    assert "loading dlib and PP-OCR" in console             # the bar says what it waits for
    assert "next:" in proc.stderr.strip().splitlines()[-6:]
    assert f"stc stats {out} --out {out}/report" in proc.stderr
    assert (pd.read_parquet(out / "manifest.parquet")["status"] == "kept").sum() == 2


def test_extras_are_not_needed_to_curate_and_are_named_when_missing(curated, curate_only,
                                                                   tmp_path):
    out, proc = curated
    assert proc.returncode == 0                               # curate ran without any extra
    train = run(["train", "stage1", "--manifest", str(out), "--config", "stage1-tiny",
                 "--out", str(tmp_path / "run1"), "--max-steps", "1"], curate_only)
    assert train.returncode == 2, train.stderr[-2000:]
    assert "pip install 'stc[train]'" in train.stderr
    assert "Traceback" not in train.stderr


def test_pixel_flicker_without_weights_fails_at_once(curated, curate_only, tmp_path):
    """No hub retries (the old check tried the network five times, ~30 s) and one message
    that says what to give instead; diffusers itself is the `pixel` extra."""
    out, _ = curated
    env = {k: v for k, v in curate_only.items() if k != "PYTHONPATH"}   # with the extras
    proc = run(["degrade", str(out), "--out", str(tmp_path / "p"), "--recipe", "pixel"], env,
               timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "not in the local Hugging Face cache" in proc.stderr
    assert "steps.0.pixel_flicker.model" in proc.stderr
    assert "Retry" not in proc.stderr and "huggingface.co" not in proc.stderr
    missing = run(["degrade", str(out), "--out", str(tmp_path / "p2"), "--recipe", "pixel"],
                  curate_only, timeout=300)
    assert missing.returncode == 2 and "pip install 'stc[pixel]'" in missing.stderr


@pytest.mark.slow
def test_ray_train_state_goes_to_the_run_log_and_progress_to_the_console(curated, tmp_path):
    out, _ = curated
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    run1 = tmp_path / "run1"
    proc = run(["train", "stage1", "--manifest", str(out), "--config", "stage1-tiny",
                "--out", str(run1), "--max-steps", "4", "--workers", "1", "--num-cpus", "2"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    bad = [line for line in console.splitlines() if RAY_INTERNALS.search(line)]
    assert not bad, bad
    assert re.search(r"^step 4/4 \| loss", proc.stdout, re.MULTILINE)   # worker 0's progress
    assert proc.stdout.count("finished at step 4") == 1
    log = (run1 / "stc.log").read_text()
    assert "\x1b[" not in log                                 # no colour codes in a file
    assert "TrainController" in log and "training worker group" in log
    # TensorBoard: the held-out input | reconstruction as an image and an animated clip
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run1 / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    assert {"val/input_reconstruction/frame", "val/input_reconstruction/clip"} <= set(tags)
    clip = acc.Images("val/input_reconstruction/clip")[-1]
    assert clip.encoded_image_string[:6] == b"GIF89a" and clip.width == 2 * 32 + 2


def test_degrade_mp4_pairs_are_exact_and_eval_reads_them(curated, ray_session, tmp_path):
    out, _ = curated
    common = ["--window", "8", "--max-windows", "2", "--size", "64", "--seed", "3"]
    mp4 = tmp_path / "pairs_mp4"
    assert stc(["degrade", str(out), "--out", str(mp4), "--format", "mp4", *common]) == 0
    lq, gt = sorted((mp4 / "lq").glob("*.mp4")), sorted((mp4 / "gt").glob("*.mp4"))
    assert len(lq) == 4 and [p.name for p in lq] == [p.name for p in gt]
    # the same pairs stored as Parquet shards decode to the very same frames
    shards = tmp_path / "pairs_parquet"
    assert stc(["degrade", str(out), "--out", str(shards), *common]) == 0
    from stc.audit.pairs import read_pair
    from stc.degrade.webdataset import sample_key

    rows = pd.read_parquet(shards / "pairs.parquet").to_dict("records")
    for r in rows:
        ref_lq, ref_hq = read_pair(shards, r)
        name = sample_key(r["pair_id"]) + ".mp4"
        assert np.array_equal(read_frames(mp4 / "lq" / name), ref_lq)
        assert np.array_equal(read_frames(mp4 / "gt" / name), ref_hq)
    table = tmp_path / "eval.parquet"
    assert stc(["eval", "--pred", str(mp4 / "lq"), "--gt", str(mp4 / "gt"),
                "--out", str(table), "--face-stride", "0"]) == 0
    scores = pd.read_parquet(table)
    assert (scores["status"] == "ok").all() and len(scores) == 4
    assert scores["psnr"].between(10, 60).all()
    # training refuses them plainly; the report shows a strip of them per recipe
    from stc.degrade.loader import PairDataset

    with pytest.raises(ValueError, match="--format mp4"):
        PairDataset(mp4)
    report = tmp_path / "report"
    assert stc(["stats", str(out), "--pairs", str(mp4), "--out", str(report)]) == 0
    assert (report / "pairs_bfvr.png").stat().st_size > 10_000
    assert "Example pairs of each recipe" in (report / "report.html").read_text()


# --- configs ------------------------------------------------------------------------------
def test_a_config_builds_on_a_base_and_changes_only_its_keys(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: fast\ntext: {frames: 4}\n")
    cfg, fast, default = CurateConfig.load(mine), CurateConfig.load("fast"), CurateConfig.load()
    assert cfg.text.frames == 4 and fast.text.frames != 4
    assert cfg.shots == fast.shots != default.shots           # the base's, not the defaults
    assert cfg.crop.size == fast.crop.size == 128 != default.crop.size
    # a chain of files, relative to the file naming them
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../mine.yaml\nface: {upsample: 1}\n")
    c2 = CurateConfig.load(child)
    assert (c2.text.frames, c2.face.upsample, c2.shots) == (4, 1, fast.shots)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        CurateConfig.load(loop)
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: no-such-config\n")
    with pytest.raises(ConfigError, match="no-such-config"):
        CurateConfig.load(bad)


@pytest.mark.parametrize("command, key, value", [
    (["curate", "--config", "fast"], "text.frames", 4),
    (["degrade", "--recipe", "bfvr"], "recipe.steps.0.bfvr.kernel_size", 31),
    (["train", "stage1", "--config", "stage1-tiny"], "train.max_steps", 7),
    (["train", "stage2", "--config", "stage2-tiny"], "optim.lr", 0.002),
    (["eval"], "face_stride", 2),
])
def test_every_config_takes_set_and_prints_itself(command, key, value, capsys):
    set_key = key.removeprefix("recipe.")
    assert stc([*command, "--set", f"{set_key}={value}", "--print-config"]) == 0
    node = yaml.safe_load(capsys.readouterr().out)
    for k in key.split("."):
        node = node[int(k)] if isinstance(node, list) else node[k]
    assert node == value


def test_set_names_the_bad_key(capsys):
    assert stc(["curate", "--set", "text.framez=3", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "text.framez" in err and "'frames'" in err
    assert stc(["train", "stage1", "--set", "train.max_steps=many", "--print-config"]) == 2
    assert "train.max_steps" in capsys.readouterr().err


def test_help_texts_are_for_users():
    parser = build_parser()
    subs = {a.dest: a for a in parser._actions if a.dest == "command"}["command"].choices
    for name, p in subs.items():
        text = p.format_help()
        assert "_add_" not in text and "(subparsers)" not in text, name
        nested = [a for a in p._actions if getattr(a, "choices", None) and a.dest == "stage"]
        for sp in (nested[0].choices.values() if nested else [p]):
            text = sp.format_help()
            if "--config" in text or "--recipe" in text:
                assert "--set KEY=VALUE" in text and "--print-config" in text, sp.prog


def test_the_wrong_kind_of_folder_is_named(curated, tmp_path, capsys):
    out, _ = curated
    assert stc(["train", "stage2", "--curriculum", "bfvr", "--stage1", str(out),
                "--out", str(tmp_path / "r2")]) == 2
    assert "is a curated folder; stc train stage2 --stage1 needs a Stage I run" in \
        capsys.readouterr().err
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "pairs.parquet").mkdir()
    assert stc(["stats", str(tmp_path / "pairs"), "--out", str(tmp_path / "r")]) == 2
    assert "is a pairs folder; stc stats needs a curated folder" in capsys.readouterr().err
    assert stc(["degrade", str(tmp_path / "pairs"), "--out", str(tmp_path / "x")]) == 2
    assert "is a pairs folder; stc degrade needs a curated folder" in capsys.readouterr().err
