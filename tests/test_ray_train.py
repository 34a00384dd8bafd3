"""Ray Train with several workers really synchronises: after a step both ranks hold the same
weights, and those are the weights of one step with the two ranks' gradients averaged (what
DDP does: each rank's batch-level loss terms stay its own), not those of a step on one
rank's half of the batch. Stage II runs the same path from `stc train stage2 --workers 2`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stc.core.video import encode_frames, read_frames, resize_frames
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import write_table
from stc.model.stage1.data import StepSampler
from stc.model.stage1.trainer import Stage1Trainer
from stc.model.training.ray_train import fit
from stc.pipelines.cli import main

from .conftest import ROOT
from .test_train_stage1 import tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    """Three 24-frame 64x64 clips cut from the bundled sample videos."""
    out = tmp_path_factory.mktemp("curated")
    rows = []
    for name, src, start in (("a", "hdtf_3", 0), ("b", "hdtf_4", 0), ("c", "hdtf_3", 100)):
        frames = resize_frames(read_frames(ROOT / "curation" / "samples" / f"{src}.mp4", start, 24),
                               64, 64)
        encode_frames(frames, out / "clips" / f"{name}.mp4", fps=25.0, crf=10, preset="ultrafast")
        rows.append({"clip_id": f"{name}_s000", "source_id": name, "source_path": f"{src}.mp4",
                     "source": "samples", "status": "kept", "reason": "kept", "message": "",
                     "clip_path": f"clips/{name}.mp4", "clip_size": 64, "clip_num_frames": 24,
                     "clip_fps": 25.0, "shot_index": 0, "start_frame": 0, "end_frame": 24})
    write_table(CLIP_SCHEMA.table([{k: v for k, v in r.items() if k in CLIP_SCHEMA.columns}
                                   for r in rows]), out / "manifest.parquet")
    return out


def one_step_config():
    return tiny(**{"train.max_steps": 1, "train.batch_size": 1, "train.log_every": 1,
                   "train.val_every": 100, "train.ckpt_every": 1, "data.num_workers": 0})


def test_two_workers_step_as_ddp_averages_gradients(curated, tmp_path, ray_session):
    cfg = one_step_config()
    run = tmp_path / "ddp"

    def loop(config):
        # Defined here so Ray ships it by value: the workers need only stc, not the tests.
        import json as _json

        import torch as _torch
        from safetensors.torch import save_file

        from stc.core.config import from_dict
        from stc.model.stage1.config import Stage1Config
        from stc.model.stage1.trainer import Stage1Trainer as Trainer
        from stc.model.training.ray_train import replicas_agree, worker_context

        ctx = worker_context()
        t = Trainer(from_dict(Stage1Config, config["cfg"]), config["manifest"], config["run"],
                    device="cpu", rank=ctx["rank"], world=ctx["world"], report=ctx["report"],
                    log=lambda m: None)
        t.run()
        weights = {k: v.contiguous() for k, v in t.model.state_dict().items()}
        save_file(weights, f"{config['run']}/rank{ctx['rank']}.safetensors")
        # The replica check itself: true now, false once one rank's copy is nudged.
        nudged = [w.clone() for w in weights.values()]
        if ctx["rank"] == 1:
            nudged[0].view(-1)[0] += 1e-3
        with open(f"{config['run']}/agree{ctx['rank']}.json", "w") as f:
            _json.dump({"agree": replicas_agree(weights.values(), ctx["world"]),
                        "nudged": replicas_agree(nudged, ctx["world"]),
                        "threads": _torch.get_num_threads()}, f)

    from stc.core.config import to_dict

    fit(loop, {"cfg": to_dict(cfg), "manifest": str(curated), "run": str(run)}, run, "ddp",
        workers=2, cpus_per_worker=1)
    w0, w1 = load_file(str(run / "rank0.safetensors")), load_file(str(run / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)                # identical replicas
    agree = [json.loads((run / f"agree{r}.json").read_text()) for r in (0, 1)]
    assert all(a["agree"] and not a["nudged"] for a in agree)

    # The same step by hand in this process: each rank's gradient on its own half of the
    # global batch (sample indices of StepSampler(rank, world=2)), then one Adam step with
    # their mean (DDP), or with rank 0's alone (one worker on half the batch).
    ref = Stage1Trainer(cfg, curated, tmp_path / "ref", device="cpu", log=lambda m: None)
    start = copy.deepcopy(ref.model.state_dict())
    params = [p for p in ref.model.parameters()]

    def grads(rank: int) -> list[torch.Tensor | None]:
        ref.model.load_state_dict(start)
        ref.model.train()
        x = torch.stack([ref.dataset[i] for i in StepSampler(0, 1, 1, rank=rank, world=2)])
        ref.model.zero_grad(set_to_none=True)
        ref.losses(x)[0].backward()
        return [None if p.grad is None else p.grad.clone() for p in params]

    def stepped(gradients) -> dict[str, torch.Tensor]:
        ref.model.load_state_dict(start)
        opt = torch.optim.Adam(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                               weight_decay=cfg.optim.weight_decay)
        for p, g in zip(params, gradients):
            p.grad = g
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        opt.step()
        return {k: v.clone() for k, v in ref.model.state_dict().items()}

    # On the workers' one thread: the sums inside a convolution's backward run in another
    # order on two, and Adam's first step (about lr * sign(g)) turns a 1e-10 difference in
    # a near-zero gradient into one of lr.
    threads = torch.get_num_threads()
    torch.set_num_threads(agree[0]["threads"])
    try:
        g0, g1 = grads(0), grads(1)
    finally:
        torch.set_num_threads(threads)
    assert any(a is not None and not torch.equal(a, b) for a, b in zip(g0, g1))   # two halves
    ddp = stepped([None if a is None else (a + b) / 2 for a, b in zip(g0, g1)])
    half = stepped(g0)
    for k in w0:
        assert torch.allclose(w0[k], ddp[k], rtol=0, atol=1e-6), k
    moved = [k for k in w0 if not torch.allclose(w0[k], half[k], rtol=0, atol=1e-6)]
    assert len(moved) > len(w0) // 2, moved          # not a step on rank 0's half alone


def test_stage2_trains_on_two_workers_from_the_cli(curated, tmp_path, ray_session):
    run1 = tmp_path / "run1"
    Stage1Trainer(one_step_config(), curated, run1, device="cpu", log=lambda m: None).run()
    curriculum = tmp_path / "cur.yaml"
    curriculum.write_text(yaml.safe_dump({"name": "ddp", "degrade_seed": 0, "steps": [
        {"name": "bfvr", "recipe": "bfvr", "data": "pairs", "iterations": 2}]}))
    run2 = tmp_path / "run2"
    argv = ["train", "stage2", "--curriculum", str(curriculum), "--stage1", str(run1),
            "--out", str(run2), "--config", "stage2-tiny", "--manifest", str(curated),
            "--set", "train.batch_size=1", "--set", "train.log_every=1",
            "--workers", "2", "--cpus-per-worker", "1", "--degrade-workers", "2"]
    assert main(argv) == 0
    step = next((run2 / "steps").iterdir())
    logged = [json.loads(line) for line in (step / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss/total" in m] == [1, 2]
    assert (step / "checkpoints" / "step_00000002" / "model.safetensors").exists()
    # Two workers ran it, and ended in sync: the worker loop checks the replicas and would
    # have failed the run otherwise.
    assert json.loads((step / "ray_train.json").read_text())["workers"] == 2
