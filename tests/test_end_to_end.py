"""The whole toolkit on 2 CPU cores, through the `stc` command line: curate real clips ->
tiny Stage I -> tiny two-step Stage II (its pairs made by the degradation pipeline with
both curriculum recipes) -> resume mid-curriculum -> enhance -> eval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stc.core.video import encode_frames, probe, read_frames
from stc.pipelines.cli import main as stc

FRAMES = 48


@pytest.fixture(scope="module")
def workdir(shared_videos, tmp_path_factory) -> Path:
    """The first 48 frames of three real clips (short inputs keep the run within minutes)."""

    root = tmp_path_factory.mktemp("e2e")
    (root / "raw").mkdir()
    # hdtf_1 turns its head in its first 48 frames (its turned run is cut out) and
    # talkshow_1 is a real low-quality input the quality gate may reject: at least two of
    # these three are kept.
    for name in ("hdtf_2", "hdtf_3", "talkshow_1"):
        src = shared_videos / f"{name}.mp4"
        encode_frames(read_frames(src, 0, FRAMES), root / "raw" / f"{name}.mp4",
                      fps=probe(src).fps, crf=12, preset="ultrafast")
    return root


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_curate_to_enhance_and_eval(workdir: Path, ray_session, capsys):
    w = workdir
    assert stc(["curate", str(w / "raw"), "--out", str(w / "cur"), "--config", "fast"]) == 0
    manifest = pd.read_parquet(w / "cur" / "manifest.parquet")
    assert (manifest["status"] == "kept").sum() >= 2

    assert stc(["train", "stage1", "--manifest", str(w / "cur"), "--config", "stage1-tiny",
                "--out", str(w / "s1"), "--max-steps", "20"]) == 0
    assert (w / "s1" / "manifest.txt").read_text().strip() == str((w / "cur").resolve())

    cfg = yaml.safe_load(Path("model/stage2/configs/stage2-tiny.yaml").read_text())
    cfg["train"].update(log_every=5, val_every=10, ckpt_every=10, keep_checkpoints=3)
    (w / "stage2.yaml").write_text(yaml.safe_dump(cfg))
    run2 = w / "s2"
    train2 = ["train", "stage2", "--curriculum", "bfvr", "--stage1", str(w / "s1"),
              "--out", str(run2), "--config", str(w / "stage2.yaml"), "--max-steps", "20"]
    assert stc(train2) == 0
    step1, step2 = run2 / "steps" / "01-bfvr-nonoise", run2 / "steps" / "02-bfvr"

    # the degradation pipeline made pairs for both recipes, at the Stage II window and size
    pairs = pd.read_parquet(run2 / "data" / "pairs.parquet")
    assert set(pairs["recipe"]) == {"bfvr-nonoise", "bfvr"}
    assert (pairs["status"] == "ok").all() and set(pairs["num_frames"]) == {4}
    nonoise = [json.loads(p)[0] for p in pairs[pairs["recipe"] == "bfvr-nonoise"]["params"]]
    assert all(p["noise"] == 0 for p in nonoise)

    # cross-entropy falls over the curriculum; step 2 starts where step 1 ended
    m1, m2 = metrics(step1), metrics(step2)
    ce = lambda m: m["loss/ce_s"] + m["loss/ce_t"]  # noqa: E731
    logged1 = [m for m in m1 if "loss/ce_s" in m]
    logged2 = [m for m in m2 if "loss/ce_s" in m]
    assert ce(logged2[-1]) < 0.8 * ce(logged1[0])
    assert logged2[0]["train/acc_s"] > logged1[0]["train/acc_s"]
    # TensorBoard shows a held-out pair as LQ | restored | GT at each validation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(step2 / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert {"val/lq_restored_gt/frame", "val/lq_restored_gt/clip"} <= set(acc.Tags()["images"])
    assert acc.Images("val/lq_restored_gt/clip")[-1].width == 3 * 32 + 2 * 2

    # stop mid-curriculum: step 2 lost its last checkpoint; the rerun skips step 1 and
    # resumes step 2 from its step-10 checkpoint
    shutil.rmtree(step2 / "checkpoints" / "step_00000020")
    capsys.readouterr()
    assert stc(train2) == 0
    err = capsys.readouterr().err
    assert "step 1/2 (bfvr-nonoise): finished earlier" in err
    assert f"resuming {step2} from" in err and "(step 10)" in err
    assert (step2 / "checkpoints" / "step_00000020").is_dir()
    # a changed curriculum is refused rather than mixed into the run
    assert stc(train2[:3] + ["brightness"] + train2[4:]) == 2

    # enhance the curated clips with the final model, then evaluate against them
    gt = w / "cur" / "clips"
    assert stc(["enhance", str(gt), "-o", str(w / "pred"), "--checkpoint", str(run2),
                "--aligned", "--workers", "1"]) == 0
    stats = json.loads((w / "pred" / "enhance_stats.json").read_text())
    assert stats["seconds_per_clip"] > 0
    preds = sorted((w / "pred").glob("*.mp4"))
    assert len(preds) == len(list(gt.glob("*.mp4")))

    for p in preds:
        info = probe(p)
        assert (info.width, info.height, info.num_frames) == (32, 32, FRAMES)

    capsys.readouterr()
    assert stc(["eval", "--pred", str(w / "pred"), "--gt", str(gt), "--out",
                str(w / "eval.parquet")]) == 0
    table = pd.read_parquet(w / "eval.parquet")
    assert (table["status"] == "ok").all() and len(table) == len(preds)
    assert table["psnr"].between(5, 60).all() and table["ssim"].between(0, 1).all()
    assert table["seconds_per_clip"].notna().all()
    print(capsys.readouterr().out)
