"""File-system rules every writer follows: atomic replacement, one writer per output folder,
and a clear error when the disk fills up."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import posixpath
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from stc.core.names import LOCK_FILE

# Temp files carry this prefix so that cleaning them can never touch a user's own dot-files.
TEMP_PREFIX = ".stc-tmp."


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only on success.

    Readers never see a half-written file, and a crash leaves only a dot-file that the
    next run removes (`clean_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.",
                               suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600; give the result the permissions a plain open() would.
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def clean_stale_temps(folder: str | Path) -> int:
    """Remove the dot-files `atomic_path` leaves when a process is killed mid-write.

    Only safe while the caller holds the folder's `OutputLock` (no live writer exists)."""
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for p in root.rglob(TEMP_PREFIX + "*"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed


# --- one writer per folder -------------------------------------------------------------
class OutputLocked(RuntimeError):
    """Another stc process is writing into the same output folder."""


class OutputLock:
    """An exclusive advisory lock on an output folder, held for a whole run.

    The lock is `flock` on OUT/.stc.lock, so it vanishes with its process (kill -9 included)
    and never needs cleaning; the file records who holds it, for the refusal message.
    """

    def __init__(self, folder: str | Path, command: str):
        self.folder = Path(folder)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path)
            raise OutputLocked(
                f"{self.folder} is being written by another stc run ({holder}); wait for it to "
                "finish, or give this run another output folder") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def running_writer(folder: str | Path) -> str | None:
    """Who is writing `folder` right now (its lock is held by a live process), else None."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return (f"pid {info.get('pid')} on {info.get('host')}, `{info.get('command')}`, "
            f"since {info.get('since')}")


# --- paths read from manifests ------------------------------------------------------------
class OutsideRoot(ValueError):
    """A path read from a manifest leads outside the folders that manifest may name."""


def within(root: str | Path, text: str | Path) -> Path | str | None:
    """`root / text` with links and `..` resolved, when that stays inside `root` (an absolute
    `text` counts as itself); None when it leads out. Whether the file exists plays no part,
    so a refusal says nothing about what lies outside. A URL root (s3://...) is judged on
    the names alone: `text` must be relative and stay below it."""
    if "://" in str(root):
        if "://" in str(text) or str(text).startswith("/"):
            return None
        base = str(root).rstrip("/")
        scheme, rest = base.split("://", 1)
        joined = posixpath.normpath(f"/{rest}/{text}")
        return f"{scheme}:/{joined}" if joined.startswith(f"/{rest}/") else None
    base = Path(root).resolve()
    target = (base / text).resolve()
    return target if target == base or base in target.parents else None


# --- disk full ---------------------------------------------------------------------------
class DiskFull(OSError):
    """The output folder's file system is full; everything written before is kept."""

    def __str__(self) -> str:      # the sentence alone, without OSError's "[Errno 28] "
        return self.strerror or super().__str__()


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


DISK_FULL_TEXT = os.strerror(errno.ENOSPC)   # how a worker's error row names it


def disk_full_error(folder: str | Path, bytes_needed: float | None, resume: str) -> DiskFull:
    free = shutil.disk_usage(Path(folder) if Path(folder).exists() else Path(folder).parent).free
    need = f"about {_size(bytes_needed)} more" if bytes_needed else "more space"
    return DiskFull(errno.ENOSPC,
                    f"no space left in {folder} ({_size(free)} free; the rest of this run needs "
                    f"{need}). Every row finished so far is saved. Free space or move the folder, "
                    f"then rerun `{resume}` to resume (add --retry-errors to redo inputs that "
                    "failed for lack of space)")


def _size(n: float | None) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def command_line() -> str:
    """The command that started this process, as a user would retype it."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("stc", "__main__.py", "cli.py"):
        argv[0] = "stc"
    return " ".join(argv)
