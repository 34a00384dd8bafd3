"""Seconds per 24-frame clip of Stage II restoration (the paper reports 2.995 s at 512x512 on
an A100): the paper config on a GPU when one is present, the tiny config on the CPU always.

Runtime does not depend on the weights, so the models are randomly initialised from the
built-in configs (no checkpoint needed); `--checkpoint RUN2` times a trained model instead.
The clock covers the model (LQ encoder, both transformers, lookup, decoder), not video I/O,
as in the paper.

    .venv/bin/python benchmarks/enhance_runtime.py [--checkpoint RUN2] [--repeats 3]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from stc.model.stage1.config import load_stage1_config
from stc.model.stage1.vqgan3d import VQGAN3D
from stc.model.stage2.config import load_stage2_config
from stc.model.stage2.model import Stage2Model, load_stage2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(stage1: str, stage2: str):
    s1 = load_stage1_config(stage1)
    cfg = load_stage2_config(stage2)
    cfg.vqgan = s1.model
    return Stage2Model(cfg, VQGAN3D(s1.model)).eval(), cfg


def time_clip(model, cfg, device: str, repeats: int) -> dict:
    """Model seconds per 24 frames at the trained size (chunks of T frames as `stc enhance`)."""
    import torch

    T, size = cfg.data.num_frames, cfg.data.size
    chunks = -(-24 // T)
    model = model.to(device)
    x = torch.rand(1, 3, T, size, size, device=device) * 2 - 1
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model.restore(x)                                    # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(chunks):
                model.restore(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    out = {"device": device, "size": size, "chunk_frames": T, "chunks_per_24_frames": chunks,
           "seconds_per_24_frame_clip": round(min(times), 4),
           "seconds_per_24_frame_clip_mean": round(sum(times) / len(times), 4),
           "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    if device.startswith("cuda"):
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="time a trained Stage II run instead of random weights")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    results = {"benchmark": "enhance_runtime", "paper_a100_seconds": 2.995,
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "torch": torch.__version__, "threads": torch.get_num_threads()},
               "runs": []}
    if args.checkpoint:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, cfg = load_stage2(args.checkpoint, device)
        results["runs"].append({"config": f"checkpoint {args.checkpoint}",
                                **time_clip(model, cfg, device, args.repeats)})
    else:
        model, cfg = build("stage1-tiny", "stage2-tiny")
        results["runs"].append({"config": "stage1-tiny + stage2-tiny",
                                **time_clip(model, cfg, "cpu", args.repeats)})
        if torch.cuda.is_available():
            model, cfg = build("stage1", "stage2")
            results["runs"].append({"config": "stage1 + stage2 (paper, 512x512, T=24)",
                                    **time_clip(model, cfg, "cuda", args.repeats)})
        else:
            results["gpu"] = "no CUDA device: the paper-config run needs one"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
