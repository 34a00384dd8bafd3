"""`stc degrade --format webdataset`: tar shards with KEY.hq.mp4 / KEY.lq.mp4 / KEY.json per
pair that the `webdataset` package streams without stc, that PairDataset reads into the
same tensors as the Parquet shards, and whose bytes repeat for the same seed."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import torch
import webdataset as wds

from stc.core import storage
from stc.degrade.loader import PairDataset
from stc.degrade.shards import decode_pair
from stc.degrade.windows import WindowOptions
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestWriter, read_manifest
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.pipelines.cli import main
from stc.pipelines.degrade import run_degrade
from stc.pipelines.driver import SettingsChanged

from .conftest import noise_video
from .test_degrade_pipeline import kept_row, shard_rows

OPTS = WindowOptions(window=8, max_windows=2, size=32)


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """One kept 24-frame clip: one clip and one worker run in-process, without Ray."""
    out = tmp_path_factory.mktemp("curated")
    noise_video(out / "clips" / "a.mp4", frames=24, size=64, seed=3)
    with ManifestWriter(out / "manifest.parquet", CLIP_SCHEMA) as w:
        # a dot in the id: tar keys must keep it whole
        w.add({**kept_row("a.b_s000", "clips/a.mp4", 24), "source_id": "a.b", "shot_index": 0,
               "start_frame": 0, "end_frame": 24})
    return out


def degrade(curated, out, recipe, fmt):
    return run_degrade(curated, out, recipe, seed=4, opts=OPTS, workers=1, progress=False,
                       format=fmt)


def frames_of(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("recipe", ["bfvr", "brightness"])
def test_webdataset_shards_stream_and_match_parquet(curated, tmp_path, recipe):
    assert degrade(curated, tmp_path / "pq", recipe, "parquet")["new_pairs"] == 2
    assert degrade(curated, tmp_path / "wds", recipe, "webdataset")["new_pairs"] == 2
    tars = storage.glob(tmp_path / "wds" / "shards", "*/shard-*.tar")
    assert tars and not storage.glob(tmp_path / "wds" / "shards", "*/*.parquet")

    # The webdataset package reads them as they are: three members per pair.
    parquet_rows = shard_rows(tmp_path / "pq", read_manifest(tmp_path / "pq" / "pairs.parquet",
                                                            PAIRS_SCHEMA))
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    assert len(samples) == 2
    for s in samples:
        assert {"hq.mp4", "lq.mp4", "json"} <= set(s)
        meta = json.loads(s["json"])
        assert s["__key__"] == meta["pair_id"].replace("/", "_").replace(".", "-")
        assert (meta["recipe"], meta["seed"], meta["width"], meta["num_frames"]) == (recipe, 4, 32, 8)
        # A plain decoder gives the HQ frames stc trains on, and an LQ video of the pair.
        lq_ref, hq_ref = decode_pair(parquet_rows[meta["pair_id"]])
        assert np.array_equal(frames_of(s["hq.mp4"]), hq_ref)
        lq = frames_of(s["lq.mp4"])
        assert len(lq) == 8
        if recipe == "brightness":       # stored losslessly: no stc needed to replay it
            assert meta["lq_format"] == "h264rgb-lossless" and np.array_equal(lq, lq_ref)
        else:                            # the low-res stream BFVR made, upscaled at load
            assert meta["lq_format"] == "h264-lowres" and lq.shape[1] == meta["lq_stream_height"]

    # PairDataset reads both kinds of shard into the same tensors.
    a = {m["pair_id"]: (lq, hq, m) for lq, hq, m in PairDataset(tmp_path / "pq", recipe,
                                                              shuffle=False, return_meta=True)}
    b = {m["pair_id"]: (lq, hq, m) for lq, hq, m in PairDataset(tmp_path / "wds", recipe,
                                                              shuffle=False, return_meta=True)}
    assert sorted(a) == sorted(b) and len(a) == 2
    for k in a:
        assert torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1])
        assert a[k][2] == b[k][2]                                   # params included


def test_webdataset_bytes_repeat_and_format_is_a_setting(curated, tmp_path):
    argv = ["degrade", str(curated), "--recipe", "bfvr", "--seed", "4", "--window", "8",
            "--max-windows", "2", "--size", "32", "--workers", "1", "--format", "webdataset"]
    assert main(argv + ["--out", str(tmp_path / "one")]) == 0
    assert main(argv + ["--out", str(tmp_path / "two")]) == 0
    one = storage.glob(tmp_path / "one" / "shards", "*/*.tar")
    two = storage.glob(tmp_path / "two" / "shards", "*/*.tar")
    assert len(one) == len(two) == 1 and one[0].read_bytes() == two[0].read_bytes()
    # One folder, one format: a Parquet run into the webdataset folder is refused.
    with pytest.raises(SettingsChanged, match="format"):
        degrade(curated, tmp_path / "one", "bfvr", "parquet")
