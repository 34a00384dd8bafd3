"""Training checkpoints on disk: atomic step folders, newest-wins resume, RNG state.

A run folder holds `checkpoints/step_NNNNNNNN/`, each with
    <name>.safetensors   one file per weight set (model, ema, disc_heads, ...)
    state.safetensors    every tensor of the training state (optimizer moments, RNG states)
    state.json           the rest of that state (step, hyper-parameters, structure), with
                         a reference into state.safetensors where a tensor or array was
    config.yaml          the config the weights belong to
Nothing in a checkpoint is pickled, so opening one cannot run code: a run folder copied
from elsewhere is data, not a program. stc 0.1 wrote the state as a pickled `state.pt`;
such a folder is never unpickled (see `load_state` for how to go on). A folder is written
under a dot-name and renamed into place, so the newest `step_*` folder is always complete;
older ones beyond `keep` are pruned. Nothing here knows about Stage I, so Stage II reuses it
as is.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stc.core.config import ConfigError, save_config
from stc.core.names import LEGACY_TRAIN_STATE, TRAIN_STATE, TRAIN_STATE_META

_CKPT = re.compile(r"^step_(\d{8})$")
CONFIG_FILE = "config.yaml"
STATE_FORMAT = 1


class LegacyCheckpoint(ConfigError):
    """A checkpoint whose training state is a pickle (stc 0.1): never loaded as it is."""


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
    """Complete checkpoint folders of a run, oldest first (stc 0.1's too: their weights are
    safetensors and load; only their pickled state is refused, by `load_state`)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _CKPT.match(p.name)
             and ((p / TRAIN_STATE_META).exists() or (p / LEGACY_TRAIN_STATE).exists())]
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
    save_state(tmp, {"step": step, **state})
    save_config(config, tmp / CONFIG_FILE)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class CheckpointDamaged(ConfigError):
    """A weights or state file is cut short or not safetensors at all."""


def read_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of one .safetensors file; a truncated or foreign file is a
    CheckpointDamaged naming it and what to do, never a parser traceback."""
    try:
        return load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ValueError: one cause
        raise CheckpointDamaged(
            f"{path} is damaged ({type(exc).__name__}: {str(exc)[:200]}): the file is cut short "
            "(a copy or a save that did not finish) or is not a safetensors file. Copy it again, "
            "or give the checkpoint before it (delete this step folder to resume from the one "
            "before)") from None


def load_weights(ckpt: Path, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(ckpt) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the checkpoint is incomplete; delete {ckpt} "
                                "to resume from the one before it")
    return read_safetensors(path, device)


# --- training state without pickle ------------------------------------------------------
# The state is a tree of dicts, lists, tuples, numbers, strings, tensors and NumPy arrays
# (optimizer state dicts, RNG states). Tensors and arrays go to state.safetensors under
# "t<N>"; the tree goes to state.json with {"__tensor__": "t<N>"} or {"__ndarray__": ...}
# in their place. Tuples and dicts with non-string keys (optimizer states are keyed by
# parameter index) are tagged, so the tree reads back exactly as it was.
def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        # safetensors has no uint32; int64 holds every value of NumPy's RNG key exactly.
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64))
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        if all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in obj):
            return {"__items__": [[k, _encode(v, tensors, f"{where}.{k}")] for k, v in obj.items()]}
    raise TypeError(f"training state {where or 'root'}: cannot store a {type(obj).__name__} "
                    "without pickle; keep checkpoint_state() to tensors, arrays and plain values")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].cpu().numpy().astype(np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """Write `state` as state.safetensors + state.json into `folder` (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "")
    save_file(tensors, str(Path(folder) / TRAIN_STATE))
    (Path(folder) / TRAIN_STATE_META).write_text(
        json.dumps({"format": STATE_FORMAT, "state": tree}))


def load_state(ckpt: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state of a checkpoint, read without unpickling anything.

    A checkpoint of stc 0.1 (a pickled state.pt) is refused with the way on: unpickling
    runs whatever code the file names, so a planted state.pt would run under `stc train`."""
    ckpt = Path(ckpt)
    meta = ckpt / TRAIN_STATE_META
    if not meta.exists():
        if (ckpt / LEGACY_TRAIN_STATE).exists():
            raise LegacyCheckpoint(
                f"{ckpt} keeps its training state in a pickled {LEGACY_TRAIN_STATE} (stc 0.1), "
                "which stc never unpickles: a planted file could run code. If you made this "
                "run yourself, convert it once with `python -m stc.model.training.checkpoint "
                f"{ckpt}` (reads it with torch's weights-only loader, which refuses code) and "
                "rerun; otherwise start a new --out (its weights still load, e.g. with "
                "`stc enhance --checkpoint`)")
        raise FileNotFoundError(f"{meta} missing: the checkpoint is incomplete; delete {ckpt} "
                                "to resume from the one before it")
    doc = json.loads(meta.read_text())
    if doc.get("format") != STATE_FORMAT:
        raise ConfigError(f"{meta}: training state format {doc.get('format')!r}, this stc reads "
                          f"{STATE_FORMAT}; use the stc version that wrote it")
    tensors = read_safetensors(ckpt / TRAIN_STATE, device)
    return _decode(doc["state"], tensors)


def convert_legacy_state(ckpt: Path) -> Path:
    """Rewrite a stc 0.1 state.pt as state.safetensors + state.json.

    Read with `weights_only=True`: torch's restricted unpickler builds tensors and plain
    containers and, allowed here, NumPy arrays (the RNG state), and refuses every other
    global, so a file that names code fails to load instead of running it."""
    ckpt = Path(ckpt)
    legacy = ckpt / LEGACY_TRAIN_STATE
    if not legacy.exists():
        raise FileNotFoundError(f"{legacy} not found; nothing to convert")
    allowed = [np.ndarray, np.dtype, np.dtypes.UInt32DType]
    allowed += [getattr(m, "_reconstruct") for m in _numpy_multiarray()]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends: one verdict
        raise LegacyCheckpoint(
            f"{legacy} is not a plain training state (the weights-only loader refused it: "
            f"{type(exc).__name__}: {str(exc)[:300]}); it was not run. Delete it and start a "
            "new --out") from None
    save_state(ckpt, state)
    os.replace(legacy, ckpt / f"{LEGACY_TRAIN_STATE}.converted")
    return ckpt / TRAIN_STATE_META


def _numpy_multiarray() -> list:
    mods = []
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mods.append(__import__(name, fromlist=["_reconstruct"]))
        except ImportError:
            pass
    return mods


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["--help"]:
        if arg in ("-h", "--help"):
            print("usage: python -m stc.model.training.checkpoint CHECKPOINT_DIR...\n"
                  "Convert stc 0.1 checkpoints (pickled state.pt) to state.safetensors + "
                  "state.json, reading them with torch's weights-only loader.")
            continue
        try:
            print(f"converted: {convert_legacy_state(Path(arg))}")
        except (LegacyCheckpoint, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
