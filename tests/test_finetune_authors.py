"""The authors' released model through stc's commands, on a small checkpoint in their layout:
`stc weights import` -> `stc train stage2 --init` (fine-tune: only the LQ encoder and the
transformers move) -> the run loads again; `stc enhance --checkpoint` of the import on a real
clip, scored by `stc eval`; bad .pth files refused before anything is written."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from stc.core.video import encode_frames, probe, read_frames
from stc.model.training.checkpoint import latest_checkpoint, load_weights
from stc.pipelines.cli import main as stc
from tests.authors_fixture import small_checkpoint

CLIP_FRAMES = 8


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """A small bfvr-layout checkpoint (nf 8, D 32, 9 layers, 4 x 4 latent grid: 32^2 input),
    saved as the release is and imported by the command a user runs."""
    root = tmp_path_factory.mktemp("authors")
    ckpt = small_checkpoint(root / "ckpt-bfvr.pth", seed=3)
    run = root / "imported"
    assert stc(["weights", "import", str(ckpt), "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def curated(shared_videos, tmp_path_factory) -> Path:
    """A curated-style manifest of two real clips (48^2 face crops of 8 frames): one trains,
    one is held out for the validation pairs."""
    import cv2

    from stc.manifests.clips import CLIP_SCHEMA
    from stc.manifests.io import write_table

    out = tmp_path_factory.mktemp("curated_ft")
    rows = []
    for name in ("hdtf_2", "hdtf_3"):
        frames = read_frames(shared_videos / f"{name}.mp4", 0, CLIP_FRAMES)
        h, w = frames[0].shape[:2]
        s = min(h, w)
        crops = [cv2.resize(f[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (48, 48),
                            interpolation=cv2.INTER_AREA) for f in frames]
        rel = f"clips/{name}.mp4"
        encode_frames(crops, out / rel, fps=25.0, crf=10, preset="ultrafast")
        row = {"clip_id": name, "source_id": f"{name}-src", "source_path": name,
               "source": "shared", "status": "kept", "reason": "kept", "message": "",
               "clip_path": rel, "clip_size": 48, "clip_num_frames": CLIP_FRAMES,
               "clip_fps": 25.0, "shot_index": 0, "track_index": 0, "start_frame": 0,
               "end_frame": CLIP_FRAMES}
        rows.append({k: v for k, v in row.items() if k in CLIP_SCHEMA.columns})
    write_table(CLIP_SCHEMA.table(rows), out / "manifest.parquet")
    return out


def frozen(name: str) -> bool:
    """The Stage I model inside Stage II: HQ encoder, codebooks, SA2, generator."""
    return name.startswith("vqgan.")


def test_finetune_from_import_moves_only_the_lq_encoder_and_transformers(
        imported, curated, tmp_path, ray_session, capsys):
    run2 = tmp_path / "ft"
    # The authors' Stage II settings of the import's variant; only the clip length and the
    # bookkeeping are made small for 2 CPU cores.
    argv = ["train", "stage2", "--curriculum", "finetune-bfvr", "--init", str(imported),
            "--manifest", str(curated), "--out", str(run2), "--max-steps", "3", "--device", "cpu",
            "--set", "data.num_frames=4", "--set", "train.grad_accum=1",
            "--set", "data.num_workers=0", "--set", "data.val_pairs=1",
            "--set", "train.log_every=1", "--set", "train.val_every=3",
            "--set", "train.ckpt_every=3"]
    assert stc(argv) == 0
    err = capsys.readouterr().err
    step = run2 / "steps" / "01-bfvr"
    assert f"started from {imported}" in err
    assert (run2 / "init.txt").read_text().strip() == str(imported.resolve())
    prov = json.loads((run2 / "init_provenance.json").read_text())
    assert prov["variant"] == "bfvr" and prov["source_file"] == "ckpt-bfvr.pth"

    # the network is the import's, the settings are the authors' bfvr ones the import carries
    import yaml

    cfg = yaml.safe_load((run2 / "stage2_config.yaml").read_text())
    assert cfg["transformer"]["motion_residual"] == "authors_layout"
    assert (cfg["transformer"]["layers"], cfg["transformer"]["heads"]) == (9, 2)
    assert cfg["vqgan"]["base_channels"] == 8 and cfg["data"]["size"] == 32
    assert (cfg["losses"]["feature"], cfg["losses"]["ce"]) == (10.0, 1.0)
    assert cfg["optim"]["lr"] == 2e-5 and cfg["train"]["ema_decay"] == 0.995

    before = load_weights(latest_checkpoint(imported), "model")
    ckpt = latest_checkpoint(step)
    assert ckpt.name == "step_00000003"
    for which in ("model", "ema"):
        after = load_weights(ckpt, which)
        assert set(after) == set(before)
        moved = {k for k in before if not torch.equal(before[k], after[k])}
        assert not {k for k in moved if frozen(k)}, f"{which}: frozen entries moved"
        trained = {k for k in before if not frozen(k)}
        assert trained <= moved, f"{which}: did not train {sorted(trained - moved)[:5]}"
        for part in ("lq_encoder.", "transformer_s.", "transformer_t."):
            assert any(k.startswith(part) for k in moved), part
    # the Stage I parts the authors freeze are all there, and bitwise the import's
    for part in ("vqgan.quantizer.codebook_s", "vqgan.quantizer.codebook_t",
                 "vqgan.quantizer.temporal_attention.", "vqgan.decoder.", "vqgan.encoder."):
        assert any(k.startswith(part) for k in before), part

    # the fine-tuned run loads again, runs, and its rerun has nothing left to do
    from stc.model.stage2.model import load_stage2

    model, loaded = load_stage2(run2)
    assert loaded.transformer.motion_residual == "authors_layout"
    x = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    assert model.restore(x).shape == x.shape
    assert stc(argv) == 0
    assert "finished earlier" in capsys.readouterr().err

    # an stc Stage II run is an --init too: its saved settings and curated manifest are reused
    run3 = tmp_path / "ft_again"
    assert stc(["train", "stage2", "--curriculum", "finetune-bfvr", "--init", str(run2),
                "--out", str(run3), "--max-steps", "1", "--device", "cpu"]) == 0
    assert (run3 / "manifest.txt").read_text().strip() == str(curated.resolve())
    assert yaml.safe_load((run3 / "stage2_config.yaml").read_text()) == cfg
    again = load_weights(latest_checkpoint(run3 / "steps" / "01-bfvr"), "model")
    start = load_weights(ckpt, "ema")            # a run continues from its EMA weights
    assert all(torch.equal(again[k], start[k]) for k in start if frozen(k))
    assert any(not torch.equal(again[k], start[k]) for k in start if not frozen(k))
    capsys.readouterr()

    # --init and --stage1 are one or the other, and a network change is refused plainly
    assert stc(argv + ["--stage1", str(imported)]) == 2
    assert "not both" in capsys.readouterr().err
    other = [a if a != str(run2) else str(tmp_path / "ft2") for a in argv]
    assert stc(other + ["--set", "transformer.layers=3"]) == 2
    assert "transformer.layers: 9 -> 3" in capsys.readouterr().err
    assert not (tmp_path / "ft2").exists()


def test_init_needs_an_imported_run_and_a_manifest(imported, tmp_path, capsys):
    base = ["train", "stage2", "--curriculum", "finetune-bfvr", "--out", str(tmp_path / "ft"),
            "--max-steps", "1"]
    assert stc(base + ["--init", str(imported)]) == 2
    assert "records no curated manifest" in capsys.readouterr().err
    pth = small_checkpoint(tmp_path / "ckpt.pth")
    assert stc(base + ["--init", str(pth)]) == 2
    assert f"`stc weights import {pth} --out RUN`" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


def test_enhance_with_the_import_on_a_real_clip_then_eval(imported, shared_videos, tmp_path):
    src = shared_videos / "hdtf_2.mp4"
    clip = tmp_path / "talk.mp4"
    encode_frames(read_frames(src, 0, CLIP_FRAMES), clip, fps=probe(src).fps, crf=12,
                  preset="ultrafast")
    out = tmp_path / "restored.mp4"
    assert stc(["enhance", str(clip), "-o", str(out), "--checkpoint", str(imported),
                "--workers", "1"]) == 0
    info, given = probe(out), probe(clip)
    assert (info.width, info.height, info.num_frames) == (given.width, given.height, CLIP_FRAMES)
    stats = json.loads((tmp_path / "enhance_stats.json").read_text())["videos"]["restored"]
    assert stats["frames"] == CLIP_FRAMES and stats["model_clips"] >= 1   # the model ran
    # `stc eval` takes videos, not a checkpoint: it scores what the import restored
    table = tmp_path / "eval.parquet"
    assert stc(["eval", "--pred", str(out), "--gt", str(clip), "--out", str(table),
                "--face-stride", "0"]) == 0
    import pandas as pd

    rows = pd.read_parquet(table)
    assert list(rows["status"]) == ["ok"] and rows["psnr"].between(5, 80).all()


def test_import_refuses_truncated_and_code_running_files_and_writes_nothing(tmp_path, capsys):
    good = small_checkpoint(tmp_path / "good.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert stc(["weights", "import", str(cut), "--out", str(tmp_path / "a")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"params_ema": {"x": Payload()}}, evil, pickle_module=pickle)
    assert stc(["weights", "import", str(evil), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "never runs code" in err
    assert not marker.exists() and not (tmp_path / "b").exists()
