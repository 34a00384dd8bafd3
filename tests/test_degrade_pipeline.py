"""`stc degrade` end to end with Ray on a small curated folder of generated clips."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from stc.core.config import ConfigError
from stc.core.tensors import to_uint8
from stc.degrade.loader import PairDataset
from stc.degrade.recipe import load_recipe
from stc.degrade.shards import LQ_LOSSLESS, LQ_LOWRES, LQ_REPLAY, decode_pair
from stc.degrade.windows import WindowOptions
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestWriter, read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.pipelines.cli import main
from stc.pipelines.degrade import run_degrade

from tests.conftest import noise_video

OPTS = WindowOptions(window=12, size=64)


def kept_row(clip_id: str, clip_path: str, num_frames: int) -> dict:
    return {"clip_id": clip_id, "source_path": f"/raw/{clip_id}.mp4", "source": "test",
            "status": "kept", "reason": "kept", "message": "", "clip_path": clip_path,
            "clip_size": 64, "clip_num_frames": num_frames, "clip_fps": 25.0}


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """Two good 30-frame clips (two 12-frame windows each), a corrupt one, one too short
    for a window, and a rejected row that must be ignored."""
    out = tmp_path_factory.mktemp("curated")
    noise_video(out / "clips" / "a.mp4", frames=30, size=64, seed=0)
    noise_video(out / "clips" / "b.mp4", frames=30, size=64, seed=1)
    noise_video(out / "clips" / "short.mp4", frames=8, size=64, seed=2)
    (out / "clips" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    rows = [kept_row("a", "clips/a.mp4", 30), kept_row("b", "clips/b.mp4", 30),
            kept_row("corrupt", "clips/corrupt.mp4", 30), kept_row("short", "clips/short.mp4", 8),
            {**kept_row("rej", "", 0), "status": "rejected", "reason": "no_face", "clip_path": None}]
    with ManifestWriter(out / "manifest.parquet", CLIP_SCHEMA) as writer:
        for r in rows:
            writer.add(r)
    return out


def shard_rows(out, pairs) -> dict[str, dict]:
    rows = {}
    for p in pairs[pairs.status == "ok"].itertuples():
        rows[p.pair_id] = pq.read_table(out / p.lq_path_or_shard).slice(int(p.shard_row), 1).to_pylist()[0]
    return rows


def test_degrade_pipeline_end_to_end(curated, tmp_path, ray_session):
    out = tmp_path / "pairs"
    # A first, partial run (one clip) and the full run: the finished clip is skipped.
    s0 = run_degrade(curated / "manifest.parquet", out, "bfvr", seed=3, opts=OPTS, limit=1,
                     progress=False)
    assert s0["new_pairs"] == 2
    s = run_degrade(curated / "manifest.parquet", out, "bfvr", seed=3, opts=OPTS, progress=False)
    assert (s["kept_clips"], s["skipped_clips"], s["new_pairs"], s["new_error_clips"]) == (4, 1, 2, 2)
    pairs = read_manifest(out / "pairs.parquet", PAIRS_SCHEMA)
    assert {"clip_id", "recipe", "seed", "lq_path_or_shard", "params"} <= set(pairs.columns)
    assert len(pairs) == 6 and "rej" not in set(pairs.clip_id)

    bad = pairs[pairs.status == "error"].set_index("clip_id")
    assert bad.loc["corrupt", "reason"] == "unreadable" and "corrupt.mp4" in bad.loc["corrupt", "message"]
    assert bad.loc["short", "reason"] == "too_short"

    ok = pairs[pairs.status == "ok"]
    assert sorted(ok.start_frame) == [0, 0, 12, 12]
    rows = shard_rows(out, pairs)
    for p in ok.itertuples():
        r = rows[p.pair_id]
        assert r["lq_format"] == LQ_LOWRES and p.lq_bytes == len(r["lq"])
        lq, hq = decode_pair(r)
        assert lq.shape == hq.shape == (12, 64, 64, 3)
        params = json.loads(p.params)
        assert params[0]["step"] == "bfvr" and 18 <= params[0]["crf"] <= 25
        assert r["lq_stream_width"] == params[0]["lowres_width"] < 64
        # The stored LQ decodes to exactly the degradation of the stored HQ.
        video, again = load_recipe("bfvr").run(hq, p.fps, 3, p.clip_id, p.window)
        assert video.bitstream == r["lq"] and again == params
        assert np.array_equal(video.frames, lq)
    # Windows of a video get their own draws.
    assert len({json.dumps(json.loads(x)[0]["sigma"]) for x in ok.params}) == 4

    # A rerun skips every finished clip, error rows included, unless asked to retry them.
    s2 = run_degrade(curated, out, "bfvr", seed=3, opts=OPTS, progress=False)
    assert (s2["processed_clips"], s2["new_pairs"]) == (0, 0)
    s3 = run_degrade(curated, out, "bfvr", seed=3, opts=OPTS, retry_errors=True, progress=False)
    assert (s3["processed_clips"], s3["new_error_clips"], s3["total_pairs"]) == (2, 2, 4)
    assert read_manifest(out / "pairs.parquet", PAIRS_SCHEMA).equals(pairs)

    # The same recipe and seed with other settings is refused; another recipe goes beside.
    with pytest.raises(ConfigError, match="other settings"):
        run_degrade(curated, out, "bfvr", seed=3, opts=WindowOptions(window=6, size=64), progress=False)
    assert run_degrade(curated, out, "brightness", seed=3, opts=OPTS, progress=False)["new_pairs"] == 4
    # Brightness LQ is stored as its recorded alphas and replayed on the stored HQ, exactly.
    for k, r in shard_rows(out, read_manifest(out / "pairs.parquet", PAIRS_SCHEMA)).items():
        if k.startswith("brightness/"):
            assert r["lq_format"] == LQ_REPLAY and r["lq"] == b""
            lq, hq = decode_pair(r)
            video, _ = load_recipe("brightness").run(hq, r["fps"], 3, r["clip_id"], r["window"])
            assert np.array_equal(lq, video.frames)

    # Same seed, another folder and worker count: the same bytes. Another seed: other bytes.
    again = tmp_path / "again"
    run_degrade(curated, again, "bfvr", seed=3, opts=OPTS, workers=1, progress=False)
    run_degrade(curated, again, "bfvr", seed=4, opts=OPTS, workers=1, progress=False)
    rows2 = shard_rows(again, read_manifest(again / "pairs.parquet", PAIRS_SCHEMA))
    for k, r in rows.items():
        assert rows2[k]["lq"] == r["lq"] and rows2[k]["hq"] == r["hq"]
        other = rows2[k.replace("bfvr/3/", "bfvr/4/")]
        assert other["lq"] != r["lq"] and other["hq"] == r["hq"]

    # The loader reads both recipes, every ok pair exactly once, split across two workers.
    ds = PairDataset(out, shuffle=True, seed=0, return_meta=True)
    assert len(ds) == 8
    seen = []
    for lq, hq, meta in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2):
        assert lq.shape == hq.shape == (2, 3, 12, 64, 64) and lq.dtype == torch.float32
        assert -1.0 <= float(lq.min()) and float(hq.max()) <= 1.0
        seen += meta["pair_id"]
    assert sorted(seen) == sorted(ok.pair_id.tolist() + [i.replace("bfvr/", "brightness/", 1)
                                                         for i in ok.pair_id])
    # Items are the stored frames, scaled; a recipe filter and a resize on load.
    lq, hq, meta = next(iter(PairDataset(out, recipe="bfvr", shuffle=False, return_meta=True)))
    assert meta["recipe"] == "bfvr"
    want_lq, want_hq = decode_pair(rows[meta["pair_id"]])
    assert np.array_equal(to_uint8(lq), want_lq) and np.array_equal(to_uint8(hq), want_hq)
    lq, hq = next(iter(PairDataset(out, recipe="brightness", size=32)))
    assert lq.shape == hq.shape == (3, 12, 32, 32)
    # Every epoch reshuffles the order, across shards.
    ds = PairDataset(out, shuffle=True, seed=0, return_meta=True)
    orders = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        orders.add(tuple(m["pair_id"] for _, _, m in ds))
    assert len(orders) > 1 and all(sorted(o) == sorted(seen) for o in orders)
    with pytest.raises(ValueError, match="no ok pairs"):
        PairDataset(out, recipe="pixel")


def test_cli_writes_pairs(curated, tmp_path, ray_session):
    out = tmp_path / "cli"
    rc = main(["degrade", str(curated), "--out", str(out), "--recipe", "bfvr-nonoise", "--seed", "1",
               "--window", "12", "--size", "64", "--max-windows", "1", "--limit", "1"])
    assert rc == 0
    pairs = read_manifest(out / "pairs.parquet", PAIRS_SCHEMA)
    assert len(pairs) == 1 and pairs.status.iloc[0] == "ok"
    assert json.loads(pairs.params.iloc[0])[0]["noise"] == 0.0
    assert (out / "runs" / "bfvr-nonoise-seed1.yaml").exists()
    assert json.loads((out / "runs" / "bfvr-nonoise-seed1.stats.json").read_text())["new_pairs"] == 1
    assert main(["degrade", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert main(["degrade", str(curated), "--out", str(out), "--recipe", "nope"]) == 2


def test_pixel_flicker_pipeline_with_tiny_model(curated, tmp_path, ray_session):
    """The pixel recipe through `stc degrade`: lossless LQ in the shard, only the drawn
    frames re-rendered."""
    from tests.tiny_upscaler import make_tiny_upscaler

    model = make_tiny_upscaler(tmp_path / "tiny-x4")
    recipe = tmp_path / "pixel-tiny.yaml"
    recipe.write_text("name: pixel-tiny\nsteps:\n"
                      f"  - pixel_flicker: {{model: {model}, prob: 0.3, steps: 1}}\n")
    out = tmp_path / "pix"
    s = run_degrade(curated, out, recipe, seed=0, opts=WindowOptions(window=12, size=64, max_windows=1),
                    device="cpu", workers=1, limit=1, progress=False)
    assert s["new_pairs"] == 1
    pairs = read_manifest(out / "pairs.parquet", PAIRS_SCHEMA)
    (r,) = shard_rows(out, pairs).values()
    assert r["lq_format"] == LQ_LOSSLESS
    lq, hq = decode_pair(r)
    chosen = set(json.loads(r["params"])[0]["frames"])
    assert chosen
    assert {i for i in range(12) if not np.array_equal(lq[i], hq[i])} == chosen

    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        recipe.write_text(f"name: pixel-gone\nsteps:\n  - pixel_flicker: {{model: {tmp_path / 'gone'}}}\n")
        run_degrade(curated, out, recipe, seed=0, opts=OPTS, progress=False)
