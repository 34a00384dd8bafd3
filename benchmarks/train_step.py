"""Stage I training-step time and peak memory: the tiny config on CPU, and the paper config
on a GPU when one is available.

Each case builds the real `Stage1Trainer` (model, EMA, optimizers, and the VGG19 / DINOv2
critics when the config turns their losses on; here they are randomly initialised
ViT-S/14-sized and VGG19-sized networks saved to a temp folder, since timing does not depend
on the weights) on a one-clip manifest of generated frames, then times `train_step` on a
fixed batch (data loading excluded: it runs in loader workers in parallel with the step).

It also times what the loader workers do per sample (`window_read`): reading a 24-frame
window at the start and near the end of a 200-frame 512x512 clip, encoded with the curation
encode settings, with x264's default keyframe interval and with the configured one.

    .venv/bin/python benchmarks/train_step.py [--steps 5] [--warmup 2] [--cases tiny-cpu,paper-cuda]
                                              [--no-window-read]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

from stc.core.video import encode_frames, read_frames
from stc.curation.config import EncodeConfig
from stc.manifests.clips import CLIP_SCHEMA
from stc.manifests.io import ManifestWriter
from stc.model.stage1.config import load_stage1_config
from stc.model.stage1.perceptual import VGG19Features
from stc.model.stage1.trainer import Stage1Trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _manifest(folder: Path, frames: int, size: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    video = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(frames)]
    encode_frames(video, folder / "clips/noise.mp4", fps=25.0, crf=18, preset="ultrafast")
    with ManifestWriter(folder / "manifest.parquet", CLIP_SCHEMA) as w:
        w.add({"clip_id": "noise", "source_path": "generated", "source": "bench", "status": "kept",
               "reason": "kept", "message": "", "clip_path": "clips/noise.mp4",
               "clip_num_frames": frames, "clip_size": size})
    return folder / "manifest.parquet"


def _random_critics(folder: Path, cfg) -> None:
    """Random VGG19 (torchvision layout) and DINOv2 ViT-S/14 for the losses the config uses."""
    import torch

    if cfg.losses.perceptual > 0:
        path = folder / "vgg19.pth"
        torch.save(VGG19Features().state_dict(), path)
        cfg.perceptual.weights = str(path)
    if cfg.losses.adversarial > 0:
        from transformers import Dinov2Config, Dinov2Model

        vits = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                            intermediate_size=1536, patch_size=14, image_size=518)
        Dinov2Model(vits).save_pretrained(folder / "dinov2-vits14")
        cfg.discriminator.backbone = str(folder / "dinov2-vits14")
        cfg.losses.disc_start = 0


def run_case(config: str, device: str, steps: int, warmup: int) -> dict:
    import torch

    cfg = load_stage1_config(config)
    cfg.data.num_workers = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _random_critics(tmp, cfg)
        manifest = _manifest(tmp, cfg.data.num_frames + 2, cfg.data.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Stage1Trainer(cfg, manifest, tmp / "run", device=device, log=lambda m: None)
        b = cfg.train.batch_size
        x = torch.rand(b, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size) * 2 - 1
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        for _ in range(warmup):
            trainer.train_step(x)
        sync()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step(x)
            sync()
            times.append(time.perf_counter() - t0)
        out = {
            "config": config, "device": device,
            "input": [b, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size],
            "losses": {k: v for k, v in vars(cfg.losses).items() if isinstance(v, float)},
            "amp": cfg.train.amp if device.startswith("cuda") else "none",
            "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 3),
            "steps_timed": steps,
            "step_s_mean": round(sum(times) / len(times), 4),
            "step_s_min": round(min(times), 4),
        }
        if device.startswith("cuda"):
            out["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
            out["gpu"] = torch.cuda.get_device_name()
        else:
            # Linux reports kilobytes; the whole process's peak, model and critics included.
            out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            out["torch_threads"] = torch.get_num_threads()
        return out


def window_read(frames: int = 200, size: int = 512, window: int = 24, repeats: int = 3) -> dict:
    """Seconds to read a window at frame 0 and at the last window, best of `repeats`."""
    import dataclasses

    import cv2
    import numpy as np

    # Smooth noise panning one pixel a frame, plus faint grain: motion x264 can predict, and
    # at crf 10 about the bitrate (hence decode cost) of a real 512x512 talking-head clip.
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8),
                      (size + frames, size + frames), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-3, 4, (8, size, size, 3), dtype=np.int16)
    video = np.stack([np.clip(base[i:i + size, i:i + size] + grain[i % 8], 0, 255).astype(np.uint8)
                      for i in range(frames)])
    enc = EncodeConfig()
    out = {"frames": frames, "size": size, "window": window, "encode": dataclasses.asdict(enc)}
    with tempfile.TemporaryDirectory() as tmp:
        for keyint in (0, enc.keyint):
            path = encode_frames(video, Path(tmp) / f"k{keyint}.mp4", fps=25.0,
                                 **{**dataclasses.asdict(enc), "keyint": keyint})
            row = {"keyint": keyint, "file_mb": round(path.stat().st_size / 2 ** 20, 2)}
            for name, start in (("start_0_s", 0), ("start_last_s", frames - window)):
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    read_frames(path, start, window)
                    times.append(time.perf_counter() - t0)
                row[name] = round(min(times), 4)
            out[f"keyint_{keyint}"] = row
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cases", default="tiny-cpu,paper-cuda",
                    help="comma list of CONFIG-DEVICE, e.g. tiny-cpu, paper-cuda, tiny-cuda")
    ap.add_argument("--window-read", action=argparse.BooleanOptionalAction, default=True,
                    help="also time reading a training window from a curated-style clip")
    args = ap.parse_args()
    names = {"tiny": "stage1-tiny", "paper": "stage1"}
    results, skipped = [], []
    for case in args.cases.split(","):
        config, device = case.strip().rsplit("-", 1)
        if device == "cuda" and not torch.cuda.is_available():
            skipped.append(f"{case}: no CUDA device")
            continue
        results.append(run_case(names.get(config, config), device, args.steps, args.warmup))
    print(json.dumps({"benchmark": "stage1_train_step", "torch": torch.__version__,
                      "python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                      "results": results, "skipped": skipped,
                      "window_read": window_read() if args.window_read else None}, indent=2))


if __name__ == "__main__":
    main()
