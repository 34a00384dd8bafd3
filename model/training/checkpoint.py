"""Training checkpoints on disk: atomic step folders, newest-wins resume, RNG state.

A run folder holds `checkpoints/step_NNNNNNNN/`, each with
    <name>.safetensors   one file per weight set (model, ema, disc_heads, ...)
    state.pt             optimizer states, step and RNG states (torch.save)
    config.yaml          the config the weights belong to
A folder is written under a dot-name and renamed into place, so the newest `step_*` folder
is always complete; older ones beyond `keep` are pruned. Nothing here knows about Stage I,
so Stage II reuses it as is.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stc.core.config import save_config

_CKPT = re.compile(r"^step_(\d{8})$")
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _CKPT.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(_CKPT.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder meant by a run folder (its newest), a checkpoint folder, or a
    file inside one."""
    path = Path(path).expanduser()
    if path.is_file():
        return path.parent
    if (path / CONFIG_FILE).exists() and any(path.glob("*.safetensors")):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"{path}: no checkpoint found; give a run folder with checkpoints/step_*/, one "
            "checkpoint folder, or a .safetensors file inside one")
    return latest


def save_checkpoint(run_dir: str | Path, step: int, weights: dict[str, dict[str, torch.Tensor]],
                    state: dict[str, Any], config: Any, keep: int = 3) -> Path:
    """Write checkpoints/step_<step>/ atomically and prune all but the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:08d}"
    if final.exists():
        return final
    tmp = root / f".step_{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, tensors in weights.items():
        # safetensors refuses shared or non-contiguous storage; clone to plain tensors.
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()},
                  str(tmp / f"{name}.safetensors"))
    torch.save({"step": step, **state}, tmp / STATE_FILE)
    save_config(config, tmp / CONFIG_FILE)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_weights(ckpt: Path, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(ckpt) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the checkpoint is incomplete; delete {ckpt} "
                                "to resume from the one before it")
    return load_file(str(path), device=str(device))


def load_state(ckpt: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    # Our own file: it holds NumPy RNG state, which the weights-only unpickler refuses.
    return torch.load(Path(ckpt) / STATE_FILE, map_location=device, weights_only=False)
