"""Decoding in a process forked from one that already decoded (DataLoader workers).

PyAV 18.1 keeps one swscale context per thread (`av.video.frame._thread_local`) and lets
swscale pick its own slice threads. `fork()` copies that context into the child but not
its threads, so the child's first `to_ndarray` waits forever on a thread that does not
exist. A trainer or a test that decodes a pair and then starts `DataLoader(num_workers=2)`
on the default fork start method hangs without a message; CI timed out on exactly that.

The handler below runs in every forked child: it takes the inherited context off the
thread-local, so the child builds its own. The old context is leaked on purpose: freeing
it would join the slice threads that the fork left behind.

It is registered when `stc.core` is imported and does nothing until PyAV is imported, so
it costs nothing to processes that never decode. Older PyAV releases (one context per
frame) have no `_thread_local` and need nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys


def forget_inherited_scaler() -> None:
    """In a freshly forked child: drop the parent's per-thread swscale context, if any."""
    frame_module = sys.modules.get("av.video.frame")
    local = getattr(frame_module, "_thread_local", None)
    scaler = getattr(local, "reformatter", None)
    if scaler is not None:
        # One reference that nothing drops, not even the interpreter's exit: freeing the
        # context would join slice threads the fork did not copy.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(scaler))
        del local.reformatter


os.register_at_fork(after_in_child=forget_inherited_scaler)
