"""Security (issue 11, item 8): nothing from a run folder or a manifest is executed or read
outside the folders it belongs to, and a local Ray cluster is not reachable from the network.

* Training state is safetensors + JSON; a planted pickle (`state.pt`) is refused with the way
  on, and its payload never runs, neither under `stc train` nor under the converter.
* Manifest paths that lead outside the manifest's folder (`../../etc/passwd`,
  `/proc/self/environ`, an absolute path to a real video elsewhere) are error rows in
  `stc degrade`, whose messages are the same whether the file exists or not; Stage I and
  the pairs loader refuse them; `--allow-outside` lifts the rule.
* The local Ray cluster stc starts listens on the loopback address only.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from stc.core.fs import OutsideRoot
from stc.core.names import CLIP_MANIFEST, LEGACY_TRAIN_STATE, PAIRS_MANIFEST, TRAIN_STATE, TRAIN_STATE_META
from stc.degrade.loader import PairDataset
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestPaths, ManifestWriter, read_table, with_source_roots, write_table
from stc.manifests.pairs import PAIRS_SCHEMA
from stc.manifests.schema import ManifestError
from stc.model.stage1.config import load_stage1_config
from stc.model.stage1.data import load_clips
from stc.model.training import checkpoint as ckpt_io

from tests.conftest import noise_video

UP = "../" * 30                      # enough to climb from any temp folder to /


def kept_row(name: str, rel: str, frames: int = 48) -> dict:
    return {"clip_id": f"{name}_s000_t00_00", "source_id": name, "source_path": f"/raw/{name}.mp4",
            "source": "test", "status": "kept", "reason": "kept", "message": "", "clip_path": rel,
            "shot_index": 0, "track_index": 0, "start_frame": 0, "end_frame": frames,
            "clip_size": 64, "clip_num_frames": frames, "clip_fps": 25.0}


def write_curated(out: Path, rows: list[dict]) -> Path:
    with ManifestWriter(out / CLIP_MANIFEST, CLIP_SCHEMA) as writer:
        for r in rows:
            writer.add(r)
    return out


def stc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stc.pipelines.cli", *args], capture_output=True,
                          text=True, timeout=600)


# --- no pickle ---------------------------------------------------------------------------
class Payload:
    """What a planted state.pt carries: code that runs the moment it is unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def plant(run: Path, marker: Path) -> Path:
    ckpt = run / "checkpoints" / "step_00000010"
    ckpt.mkdir(parents=True)
    torch.save({"step": 10, "opt_g": Payload(marker)}, ckpt / LEGACY_TRAIN_STATE)
    return ckpt


def test_a_planted_state_pt_is_refused_and_never_run(tmp_path):
    cur = tmp_path / "cur"
    for i in range(3):
        noise_video(cur / "clips" / f"n{i}.mp4", frames=16, size=64, seed=i)
    write_curated(cur, [kept_row(f"n{i}", f"clips/n{i}.mp4", 16) for i in range(3)])
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    ckpt = plant(run, marker)

    r = stc("train", "stage1", "--manifest", str(cur), "--out", str(run), "--config",
            "stage1-tiny", "--device", "cpu", "--max-steps", "12")
    assert r.returncode == 2, r.stderr[-3000:]
    assert not marker.exists(), "the planted pickle ran"
    assert LEGACY_TRAIN_STATE in r.stderr and "never unpickles" in r.stderr
    assert "python -m stc.model.training.checkpoint" in r.stderr   # the way on

    conv = subprocess.run([sys.executable, "-m", "stc.model.training.checkpoint", str(ckpt)],
                          capture_output=True, text=True, timeout=120)
    assert conv.returncode == 2 and "refused" in conv.stderr, conv.stderr
    assert not marker.exists(), "the converter ran the planted pickle"
    assert not (ckpt / TRAIN_STATE_META).exists()
    with pytest.raises(ckpt_io.LegacyCheckpoint):
        ckpt_io.load_state(ckpt)
    assert not marker.exists()


def _trained_optimizer() -> torch.optim.Optimizer:
    w = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    opt = torch.optim.Adam([w, torch.nn.Parameter(torch.zeros(4))], lr=1e-3, betas=(0.9, 0.99))
    for _ in range(3):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    return opt


def test_training_state_is_safetensors_and_json_and_reads_back_exactly(tmp_path):
    opt = _trained_optimizer()
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    rng = ckpt_io.rng_state()
    after = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    ckpt = ckpt_io.save_checkpoint(tmp_path / "run", 7, {"model": {"w": torch.ones(2)}},
                                   {"opt": opt.state_dict(), "rng": rng, "note": None},
                                   load_stage1_config("stage1-tiny"))
    files = sorted(p.name for p in ckpt.iterdir())
    assert TRAIN_STATE in files and TRAIN_STATE_META in files and LEGACY_TRAIN_STATE not in files
    for p in ckpt.iterdir():   # no pickle anywhere: protocol 2+ pickles start with 0x80
        assert not p.read_bytes().startswith(b"\x80"), p
    json.loads((ckpt / TRAIN_STATE_META).read_text())

    state = ckpt_io.load_state(ckpt)
    assert state["step"] == 7 and state["note"] is None
    fresh = _trained_optimizer()
    fresh.load_state_dict(state["opt"])
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for k in a["state"]:
        for name, v in a["state"][k].items():
            assert torch.equal(v, b["state"][k][name]), (k, name)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    ckpt_io.set_rng_state(state["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(after[0], again[0]) and np.array_equal(after[1], again[1])
    assert after[2] == again[2]


def test_an_honest_stc_0_1_state_converts_with_the_weights_only_loader(tmp_path):
    ckpt = tmp_path / "checkpoints" / "step_00000003"
    ckpt.mkdir(parents=True)
    opt = _trained_optimizer()
    torch.save({"step": 3, "opt": opt.state_dict(), "rng": ckpt_io.rng_state()},
               ckpt / LEGACY_TRAIN_STATE)           # exactly what stc 0.1 wrote
    with pytest.raises(ckpt_io.LegacyCheckpoint):
        ckpt_io.load_state(ckpt)
    ckpt_io.convert_legacy_state(ckpt)
    state = ckpt_io.load_state(ckpt)
    assert state["step"] == 3
    _trained_optimizer().load_state_dict(state["opt"])
    ckpt_io.set_rng_state(state["rng"])
    assert ckpt_io.checkpoint_dirs(tmp_path) == [ckpt]


def test_every_torch_load_is_weights_only():
    root = Path(__file__).resolve().parents[1]
    for py in root.glob("[!.]*/**/*.py"):
        if ".venv" in py.parts or "tests" in py.parts:
            continue
        for n, line in enumerate(py.read_text().splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{py}:{n}: {line.strip()}"


# --- Ray on the loopback address ------------------------------------------------------------
def test_the_local_ray_cluster_listens_on_loopback_only(ray_session):
    import psutil
    import ray

    @ray.remote
    def ping() -> int:
        return 1

    assert ray.get(ping.remote()) == 1                  # a worker exists and listens too
    me = psutil.Process()
    listening = []
    for p in [me, *me.children(recursive=True)]:
        try:
            listening += [(p.name(), c.laddr.ip) for c in p.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    assert listening, "found no Ray process listening"
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    assert all(ip in loopback for _, ip in listening), listening


# --- manifest paths ----------------------------------------------------------------------
OUTSIDE = {
    "passwd": UP + "etc/passwd",                        # exists
    "nofile": UP + "no/such/dir/clip.mp4",              # does not
    "environ": "/proc/self/environ",                    # exists
    "noabs": "/no/such/dir/clip.mp4",                   # does not
}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> tuple[Path, Path]:
    """A curated folder with one real clip inside and kept rows that point outside, one of
    them at a real video elsewhere."""
    root = tmp_path_factory.mktemp("crafted")
    cur = root / "cur"
    noise_video(cur / "clips" / "in.mp4", frames=16, size=64, seed=0)
    elsewhere = noise_video(root / "elsewhere" / "real.mp4", frames=16, size=64, seed=1)
    rows = [kept_row("in", "clips/in.mp4", 16), kept_row("real", str(elsewhere), 16)]
    rows += [kept_row(name, path, 16) for name, path in OUTSIDE.items()]
    return write_curated(cur, rows), elsewhere


def test_degrade_refuses_paths_outside_the_manifest_folder_alike(crafted, tmp_path):
    cur, elsewhere = crafted
    out = tmp_path / "pairs"
    args = ["degrade", str(cur), "--out", str(out), "--window", "8", "--size", "64",
            "--workers", "1", "--num-cpus", "1"]
    r = stc(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {x["clip_id"].split("_s000")[0]: x for x in read_table(out / PAIRS_MANIFEST, PAIRS_SCHEMA).to_pylist()}
    assert rows["in"]["status"] == "ok"
    texts = {}
    for name, path in {**OUTSIDE, "real": str(elsewhere)}.items():
        row = rows[name]
        assert (row["status"], row["reason"]) == ("error", "outside_root"), row
        texts[name] = row["message"].replace(path, "<PATH>")
    # Existing or not, video or not: one message, which says nothing about the file.
    assert len(set(texts.values())) == 1, texts
    assert "--allow-outside" in texts["passwd"]

    r = stc(*args, "--allow-outside", "--retry-errors")
    assert r.returncode == 0, r.stderr[-2000:]
    after = read_table(out / PAIRS_MANIFEST, PAIRS_SCHEMA).to_pylist()
    real = [x for x in after if x["clip_id"].startswith("real_") and x["status"] == "ok"]
    assert len(real) == 2                                   # read on request: 16 frames, T=8
    assert {x["reason"] for x in after if x["clip_id"].startswith("passwd_")} == {"unreadable"}


def test_stage1_refuses_paths_outside_the_manifest_folder(crafted):
    cur, _ = crafted
    with pytest.raises(ManifestError, match="5 kept clip.s. refused.*--allow-outside"):
        load_clips(cur)
    clips = load_clips(cur, allow_outside=True)
    assert len(clips) == 6


def test_the_pairs_loader_refuses_shards_outside_its_folder(crafted, tmp_path):
    cur, _ = crafted
    made = tmp_path / "made"
    cur_in = write_curated(tmp_path / "only_in", [kept_row("in", str(cur / "clips" / "in.mp4"), 16)])
    r = stc("degrade", str(cur_in), "--out", str(made), "--window", "8", "--size", "64",
            "--workers", "1", "--num-cpus", "1", "--allow-outside")
    assert r.returncode == 0, r.stderr[-2000:]
    messages = []
    for exists in (True, False):
        pairs = tmp_path / f"pairs_{exists}"
        shutil.copytree(made, pairs)
        table = read_table(pairs / PAIRS_MANIFEST, PAIRS_SCHEMA)
        moved = [f"../moved_{exists}/{Path(p).name}" for p in table.column("lq_path_or_shard").to_pylist()]
        if exists:
            (tmp_path / f"moved_{exists}").mkdir()
            for p in table.column("lq_path_or_shard").to_pylist():
                shutil.copy(pairs / p, tmp_path / f"moved_{exists}" / Path(p).name)
        table = table.set_column(table.schema.get_field_index("lq_path_or_shard"), "lq_path_or_shard",
                                 pa.array(moved, pa.string()))
        shutil.rmtree(pairs / PAIRS_MANIFEST)
        write_table(table, pairs / PAIRS_MANIFEST / "part-000000.parquet")
        with pytest.raises(ManifestError) as err:
            PairDataset(pairs, shuffle=False)
        messages.append(str(err.value).replace(str(pairs), "<DIR>").replace(f"moved_{exists}", "<M>"))
    assert messages[0] == messages[1]
    ds = PairDataset(tmp_path / "pairs_True", shuffle=False, allow_outside=True)
    lq, hq = next(iter(ds))
    assert lq.shape == hq.shape


def test_recorded_source_roots_let_out_only_what_their_manifest_lists(crafted, tmp_path):
    """Stage II's val_clips.parquet keeps absolute paths into the curated folder and records
    it as a source root; a crafted manifest recording "/" gains nothing."""
    cur, _ = crafted
    (cur / "clips" / "unlisted.mp4").write_bytes(b"x")
    table = CLIP_SCHEMA.table([kept_row("in", str((cur / "clips" / "in.mp4").resolve()), 16)])
    val = tmp_path / "run2" / "val_clips.parquet"
    write_table(with_source_roots(table, [cur.resolve()]), val)
    paths = ManifestPaths(val)
    assert paths(str((cur / "clips" / "in.mp4").resolve())) == (cur / "clips" / "in.mp4").resolve()
    for bad in (str(cur / "clips" / "unlisted.mp4"), "/etc/passwd", UP + "etc/passwd"):
        with pytest.raises(OutsideRoot):
            paths(bad)
    crafted_table = CLIP_SCHEMA.table([kept_row("p", "/etc/passwd", 16)])
    evil = tmp_path / "evil" / "manifest.parquet"
    write_table(with_source_roots(crafted_table, ["/"]), evil)
    with pytest.raises(OutsideRoot):
        ManifestPaths(evil)("/etc/passwd")
    assert pq.read_schema(val).metadata[b"stc.source_roots"]
