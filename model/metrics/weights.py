"""Loading user-supplied metric weights: local files only, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

from stc.core.config import ConfigError


def weights_file(path: str, what: str, hint: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} weights {path!r} not found (a local file is required; nothing is "
                          f"downloaded). {hint}")
    return p


def load_torchscript(path: str, what: str, hint: str):
    """A TorchScript module on CPU in eval mode, or ConfigError naming the file."""
    import torch

    p = weights_file(path, what, hint)
    try:
        return torch.jit.load(str(p), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - zip/pickle/format errors all mean "wrong file"
        raise ConfigError(f"{what} weights {p} are not a TorchScript module "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). {hint}") from None


def load_state_dict(path: str, what: str, hint: str) -> dict:
    import torch

    p = weights_file(path, what, hint)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{what} weights {p} cannot be read as a PyTorch state dict "
                          f"({type(exc).__name__}). {hint}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{what} weights {p} hold a {type(state).__name__}, not a state dict. {hint}")
    return state
