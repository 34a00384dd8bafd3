"""The one way stc starts a program, and the stdin every stc process hands its children.

A program whose stdin is a terminal may read it (ffmpeg takes keys: `q` quits, `?` prints
help) or change its mode; when it is not in the terminal's foreground process group the
kernel stops it, and its whole group, at the first touch (SIGTTIN/SIGTTOU). A Ray worker
under `script`/ssh/tmux is exactly that: `stc curate` hung forever, its actor and the
`ffmpeg -v quiet` that scenedetect runs at import both in state T. So:

* `run_program` / `start_program` start every program stc runs itself with stdin /dev/null unless the
  caller feeds it through a pipe;
* `detach_stdin` points this process's fd 0 at /dev/null: every Ray worker calls it before
  building its pipeline worker, so what libraries start on their own (imageio-ffmpeg's
  probe, scenedetect's check) inherits /dev/null too, whatever cluster it runs on;
* `children_without_stdin` lends /dev/null as fd 0 while a block starts processes: the
  local Ray cluster (raylet, every worker it forks) never holds the terminal.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any, Iterator, Sequence


def run_program(cmd: Sequence[str], *, input: bytes | None = None, **kwargs: Any
        ) -> subprocess.CompletedProcess:
    """`subprocess.run` with stdin a pipe when `input` is given, else /dev/null."""
    if input is None:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(list(cmd), input=input, **kwargs)


def start_program(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen` with stdin /dev/null unless the caller asks for a pipe."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(list(cmd), **kwargs)


def detach_stdin() -> None:
    """Make /dev/null this process's stdin (fd 0 and `sys.stdin`): for worker processes,
    which never read input, so nothing they start can reach a terminal."""
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    with contextlib.suppress(Exception):
        sys.stdin = open(os.devnull)   # noqa: SIM115 - the process's stdin for good


@contextlib.contextmanager
def children_without_stdin() -> Iterator[None]:
    """Processes started inside the block get /dev/null as stdin; this one keeps its own."""
    try:
        saved = os.dup(0)
    except OSError:         # no fd 0 at all: children get none either
        yield
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(null)
