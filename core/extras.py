"""Optional dependencies (pyproject extras) imported where they are used, with one message.

A curate-only install (`pip install stc`) has no TensorBoard, diffusers, transformers or
Jupyter; the code that needs them imports them through `need`, so the user reads which
extra to install instead of a bare ModuleNotFoundError from deep inside a run.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


def need(module: str, extra: str, what: str) -> ModuleType:
    """`import module`, or MissingExtra saying that `what` needs `pip install 'stc[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{what} needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'stc[{extra}]' ({exc})") from None
