"""What the user sees when a command fails in a way no pipeline turned into a message: one
paragraph on the console, and the whole story in a crash report file it names.

A Python traceback on the console is for stc's developers; the user needs to know what
happened, whether work was lost (it was not: every pipeline keeps what it committed) and
what to send with a bug report. `write_crash_report` keeps the full traceback chain, the
command, the versions and the time in `$STC_LOG_DIR` (default `~/.cache/stc/crash/`).
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path


def crash_dir() -> Path:
    env = os.environ.get("STC_LOG_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stc" / "crash"


def write_crash_report(exc: BaseException, command: str, version: str) -> Path | None:
    """The crash report file for `exc` (None when nothing can be written anywhere)."""
    text = "".join([
        f"stc {version} crash report, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n",
        f"command: {command}\n",
        f"python {sys.version.split()[0]} on {platform.platform()}\n\n",
        *traceback.format_exception(type(exc), exc, exc.__traceback__),
    ])
    name = f"stc-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"
    for folder in (crash_dir(), Path(os.environ.get("TMPDIR", "/tmp"))):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def one_paragraph(exc: BaseException, limit: int = 600) -> str:
    """`exc` as the user reads it: its type when the message alone says too little, the
    first lines of a message that embeds pages (Ray's out-of-memory report), at most
    `limit` characters."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:4] if line.strip())
    if not text or type(exc).__module__ not in ("builtins", "stc") and not \
            type(exc).__module__.startswith("stc."):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit].rstrip() + " ..."
