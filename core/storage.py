"""Where stc reads and writes: local paths and object-storage URLs, through one small layer.

A *location* is a local path (`str` or `Path`) or a URL that fsspec knows: `s3://bucket/key`
(`s3fs`), `gs://` (`gcsfs`), `memory://`, ... (`pip install 'stc[cloud]'`). Every pipeline
names its inputs, manifests, clips and shards through the functions below, so the same code
runs on a laptop folder and on a bucket.

* Local paths keep the code they always had: pathlib, `atomic_path` (write a temp file, then
  rename) and the `flock` output lock. `file://` URLs are local paths.
* URLs go through fsspec. One PUT is atomic on object storage (readers see the whole object
  or none), so a write is a single `pipe`; there are no temp objects to clean up.
  Listings are always refreshed: other processes (Ray workers on other nodes) write there.
* Tools that need a real file (ffmpeg, PyAV, dlib) get one: `local_input` downloads an
  object to a temp file for the length of a `with`, `cached_input` keeps a verified copy for
  reads that repeat (training), `local_output` gives a temp file that is uploaded when the
  block succeeds.
* Credentials and endpoints never come from stc's files or manifests: they are the standard
  ones of each backend (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or an
  instance role, AWS_ENDPOINT_URL for S3-compatible stores, GOOGLE_APPLICATION_CREDENTIALS
  for GCS) or fsspec's own config (FSSPEC_S3_ENDPOINT_URL, ~/.config/fsspec/*.json).
  On a cluster every node needs them in its own environment.

The output lock on object storage (`ObjectLock`) is a lock object created only if absent
(a conditional PUT, `If-None-Match: *` on S3) and renewed by a heartbeat, each renewal and a
takeover of a lock whose lease ran out (its holder was killed) a compare-and-swap on its
ETag (`If-Match`); every write below a locked folder checks the lease first. See
`ObjectLock` for the limits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator, Union

from stc.core.fs import OutputLock, OutputLocked, atomic_path
from stc.core.fs import running_writer as _local_writer
from stc.core.fs import clean_stale_temps as _clean_local_temps
from stc.core.names import LOCK_FILE

Location = Union[str, Path]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


# --- naming ------------------------------------------------------------------------------
def is_url(loc: Location | None) -> bool:
    """True for `s3://...`, `gs://...`, `memory://...`; False for local paths and file://."""
    if not isinstance(loc, str):
        return False
    m = _SCHEME.match(loc)
    return bool(m) and m.group(1).lower() != "file"


def location(loc: Location) -> Location:
    """A URL as a string without a trailing slash, anything else as a local `Path`."""
    if is_url(loc):
        text = str(loc)
        return text.rstrip("/") if not text.endswith("://") else text
    text = str(loc)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text).expanduser()


def join(base: Location, *parts: str) -> Location:
    """`base / part / ...`: a `Path` for a local base, a URL string for a URL."""
    base = location(base)
    if isinstance(base, Path):
        return base.joinpath(*parts)
    tail = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
    return f"{base}/{tail}" if tail else base


def name(loc: Location) -> str:
    loc = location(loc)
    return loc.name if isinstance(loc, Path) else loc.rsplit("/", 1)[-1]


def parent(loc: Location) -> Location:
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.parent
    scheme, rest = loc.split("://", 1)
    return f"{scheme}://{rest.rsplit('/', 1)[0]}" if "/" in rest else loc


def relative(loc: Location, base: Location) -> str:
    """`loc` relative to `base`, with forward slashes (what manifests store)."""
    loc, base = location(loc), location(base)
    if isinstance(loc, Path) and isinstance(base, Path):
        return loc.relative_to(base).as_posix()
    loc, base = str(loc), str(base).rstrip("/") + "/"
    if not loc.startswith(base):
        raise ValueError(f"{loc} is not inside {base}")
    return loc[len(base):]


def stem(loc: Location) -> str:
    return PurePosixPath(name(loc)).stem


def suffix(loc: Location) -> str:
    return PurePosixPath(name(loc)).suffix


def _fs(url: str):
    """(fsspec file system, path inside it). fsspec caches file system instances.

    Without fsspec's listings cache: other processes (Ray workers on other nodes, the next
    run) write below the folders this one lists, and s3fs answers a later read of an object
    from a cached listing of its folder, so a part committed after a listing was "not found"
    in the process that listed first (a reader that polled a manifest, a resumed driver)."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with ray[data]
        raise RuntimeError(f"{url}: URLs need fsspec; pip install 'stc[cloud]'") from None
    try:
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        extra = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}.get(scheme, f"the fsspec backend for {scheme}://")
        raise RuntimeError(f"{url}: cannot open {scheme}:// locations ({exc}); install {extra} "
                           "(pip install 'stc[cloud]')") from None


# --- queries -----------------------------------------------------------------------------
def exists(loc: Location) -> bool:
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.exists()
    fs, path = _fs(loc)
    fs.invalidate_cache(path)
    return fs.exists(path)


def isdir(loc: Location) -> bool:
    """A local folder, or a URL prefix with objects under it (object stores have no
    empty folders)."""
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.is_dir()
    fs, path = _fs(loc)
    fs.invalidate_cache(path)
    return fs.isdir(path)


def isfile(loc: Location) -> bool:
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.is_file()
    fs, path = _fs(loc)
    fs.invalidate_cache(path)
    return fs.isfile(path)


def size(loc: Location) -> int:
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.stat().st_size
    fs, path = _fs(loc)
    return int(fs.size(path))


def listdir(loc: Location) -> list[str]:
    """Names directly inside a folder or prefix, sorted ([] when there is none)."""
    loc = location(loc)
    if isinstance(loc, Path):
        return sorted(p.name for p in loc.iterdir()) if loc.is_dir() else []
    fs, path = _fs(loc)
    try:
        entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    base = path.rstrip("/")
    return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != base)


def glob(base: Location, pattern: str) -> list[Location]:
    """Files under `base` whose path relative to it matches `pattern` (`*` within a folder,
    `**` across folders), sorted."""
    base = location(base)
    if isinstance(base, Path):
        return sorted(p for p in base.glob(pattern) if p.is_file())
    fs, path = _fs(base)
    fs.invalidate_cache(path)
    found = fs.glob(f"{path.rstrip('/')}/{pattern}", detail=True)
    return sorted(_under(base, path, p) for p, info in found.items() if info.get("type") == "file")


def _under(base: str, path: str, found: str) -> str:
    # Backends spell their paths their own way (memory:// adds a leading "/"): results are
    # built on the base as the user wrote it.
    return join(base, found[len(path.rstrip("/")):])


def find_files(base: Location) -> list[Location]:
    """Every file under a folder or prefix, recursively, sorted."""
    base = location(base)
    if isinstance(base, Path):
        return sorted(p for p in base.rglob("*") if p.is_file())
    fs, path = _fs(base)
    fs.invalidate_cache(path)
    return sorted(_under(base, path, p) for p in fs.find(path))


def expand_glob(pattern: str) -> list[Location]:
    """The files a URL glob (`s3://raw/*/clip_*.mp4`) names, sorted."""
    fs, path = _fs(pattern)
    fs.invalidate_cache()
    cut = min(i for i in (pattern.find(c) for c in "*?[") if i >= 0)
    base = pattern[:cut].rsplit("/", 1)[0]          # the literal folder before any wildcard
    base_path = fs._strip_protocol(base)
    return sorted(_under(base, base_path, p) for p, info in fs.glob(path, detail=True).items()
                  if info.get("type") == "file")


def fingerprint(loc: Location) -> str:
    """Changes when the file or object changes (size and mtime, or the object's ETag)."""
    loc = location(loc)
    if isinstance(loc, Path):
        st = loc.stat()
        return f"{st.st_size}-{st.st_mtime_ns}"
    fs, path = _fs(loc)
    fs.invalidate_cache(path)
    info = fs.info(path)
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation") \
        or info.get("LastModified") or info.get("mtime") or ""
    return f"{info.get('size')}-{str(tag).strip(chr(34))}"


# --- reading and writing -----------------------------------------------------------------
def read_bytes(loc: Location) -> bytes:
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.read_bytes()
    fs, path = _fs(loc)
    return fs.cat_file(path)


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode()


def open_input(loc: Location) -> IO[bytes]:
    """A seekable binary file (pyarrow reads row groups of a remote shard by range)."""
    loc = location(loc)
    if isinstance(loc, Path):
        return open(loc, "rb")
    fs, path = _fs(loc)
    return fs.open(path, "rb")


def write_bytes(loc: Location, data: bytes) -> None:
    """Write atomically: a temp file renamed into place, or one PUT of the whole object."""
    loc = location(loc)
    if isinstance(loc, Path):
        with atomic_path(loc) as tmp:
            tmp.write_bytes(data)
        return
    _fence(str(loc))
    fs, path = _fs(loc)
    fs.pipe_file(path, data)


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode())


def remove(loc: Location) -> None:
    """Delete a file or object; a missing one is fine."""
    loc = location(loc)
    if isinstance(loc, Path):
        loc.unlink(missing_ok=True)
        return
    _fence(str(loc))
    fs, path = _fs(loc)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def makedirs(loc: Location) -> None:
    """Create a local folder; nothing for a URL (objects need no folder)."""
    loc = location(loc)
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)


def upload(local: Path, loc: Location) -> None:
    """Copy a local file to `loc` (atomically, as `write_bytes`)."""
    loc = location(loc)
    if isinstance(loc, Path):
        with atomic_path(loc) as tmp:
            shutil.copyfile(local, tmp)
        return
    _fence(str(loc))
    fs, path = _fs(loc)
    fs.put_file(str(local), path)


def download(loc: Location, local: Path) -> Path:
    """Copy `loc` to the local file `local` (atomically); returns `local`."""
    loc = location(loc)
    with atomic_path(local) as tmp:
        if isinstance(loc, Path):
            shutil.copyfile(loc, tmp)
        else:
            fs, path = _fs(loc)
            try:
                fs.get_file(path, str(tmp))
            except FileNotFoundError:
                raise FileNotFoundError(f"{loc} does not exist (or these credentials cannot "
                                        "read it)") from None
    return local


@contextlib.contextmanager
def local_input(loc: Location) -> Iterator[Path]:
    """A local file with the content of `loc` for the length of the block: the path itself
    when local, else a temp copy (same file name) removed afterwards."""
    loc = location(loc)
    if isinstance(loc, Path):
        yield loc
        return
    folder = Path(tempfile.mkdtemp(prefix="stc-in-"))
    try:
        yield download(loc, folder / name(loc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_output(loc: Location) -> Iterator[Path]:
    """A local path to write `loc` to: the path itself when local (callers write it
    atomically), else a temp file uploaded when the block ends without an error."""
    loc = location(loc)
    if isinstance(loc, Path):
        yield loc
        return
    folder = Path(tempfile.mkdtemp(prefix="stc-out-"))
    try:
        tmp = folder / name(loc)
        yield tmp
        if tmp.exists():
            upload(tmp, loc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cache_dir() -> Path:
    """Where `cached_input` keeps copies: $STC_CACHE_DIR, else ~/.cache/stc/objects."""
    env = os.environ.get("STC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stc" / "objects"


def cached_input(loc: Location) -> Path:
    """A local copy of `loc` that stays for later reads (training reads a clip many times):
    the path itself when local; else downloaded once into `cache_dir()`, named by the URL
    and the object's fingerprint, so a changed object is fetched again."""
    loc = location(loc)
    if isinstance(loc, Path):
        return loc
    key = hashlib.sha1(f"{loc}\n{fingerprint(loc)}".encode()).hexdigest()[:20]
    target = cache_dir() / f"{key}{suffix(loc)}"
    if not target.exists():
        download(loc, target)
    return target


# --- errors -------------------------------------------------------------------------------
# What botocore, aiohttp and gcsfs raise when the endpoint cannot be reached at all.
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                "ServerDisconnectedError", "ConnectionRefusedError", "ProxyConnectionError")
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError")


def unreachable_storage(exc: BaseException) -> str | None:
    """The one paragraph for an object store that cannot be reached or signed in to, when
    that is what `exc` (or an exception it came from) is; else None."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    names = {type(x).__name__ for x in seen}
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("FSSPEC_S3_ENDPOINT_URL")
    at = f" at {endpoint}" if endpoint else ""
    if names & set(_UNREACHABLE):
        detail = next(str(x) for x in seen if type(x).__name__ in _UNREACHABLE)
        return (f"cannot reach the object storage{at} ({detail[:200]}). Check the endpoint "
                "(AWS_ENDPOINT_URL), the network and the bucket name; everything committed "
                "before is kept, so rerun the same command to resume once it is reachable")
    if names & set(_NO_CREDENTIALS):
        return ("no credentials for the object storage: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or an instance role / GOOGLE_APPLICATION_CREDENTIALS) "
                "on this machine and every worker node, then rerun the same command")
    return None


# --- output folders ------------------------------------------------------------------------
def clean_stale_temps(folder: Location) -> int:
    """Remove temp files a killed writer left (local folders; object PUTs leave none)."""
    folder = location(folder)
    return _clean_local_temps(folder) if isinstance(folder, Path) else 0


def output_lock(folder: Location, command: str, lease_seconds: float = 120.0):
    """The one-writer lock of an output folder: `flock` for a local one, `ObjectLock` for
    a URL."""
    folder = location(folder)
    if isinstance(folder, Path):
        return OutputLock(folder, command)
    return ObjectLock(folder, command, lease_seconds)


def running_writer(folder: Location) -> str | None:
    """Who is writing `folder` right now (a run holds its output lock), else None: a
    reader must not take a folder in progress for a finished one."""
    folder = location(folder)
    if isinstance(folder, Path):
        return _local_writer(folder)
    try:
        holder = json.loads(read_bytes(join(folder, LOCK_FILE)) or b"{}")
    except (FileNotFoundError, ValueError):
        return None
    if time.time() > float(holder.get("expires", 0)) + ObjectLock.CLOCK_MARGIN:
        return None                                  # a dead run's lock
    return (f"pid {holder.get('pid')} on {holder.get('host')}, `{holder.get('command')}`, "
            f"since {holder.get('since')}")


def require_finished(folder: Location, reader: str) -> None:
    """Refuse to read an output folder while a run still writes it (its manifest would be
    the partial one of the inputs finished so far): OutputLocked naming the writer."""
    holder = running_writer(folder)
    if holder:
        raise OutputLocked(
            f"{folder} is still being written by a running stc command ({holder}); its "
            f"manifest holds only what that run finished so far. Wait for it to end, then run "
            f"{reader} (rerun it later to add what was written since)")


def _create(fs, path: str, data: bytes) -> None:
    """Write `path` only if absent (FileExistsError otherwise)."""
    try:
        fs.pipe_file(path, data, mode="create")
    except TypeError:
        # A backend whose pipe_file has no exclusive mode: check, then write. Two runs
        # starting in the same instant could both pass; say so once.
        warnings.warn(f"{type(fs).__name__} cannot create objects exclusively; the output lock "
                      "only stops a run that starts while another one is running", stacklevel=3)
        if fs.exists(path):
            raise FileExistsError(path) from None
        fs.pipe_file(path, data)


class LeaseLost(RuntimeError):
    """This run no longer holds its output lock: it must not write another byte there."""


class _Conflict(Exception):
    """A conditional write found the object changed: someone else wrote it."""


def _etag(fs, path: str) -> str | None:
    fs.invalidate_cache(path)
    info = fs.info(path)
    tag = info.get("ETag") or info.get("etag")
    return str(tag) if tag else None


def _swap(fs, path: str, data: bytes, etag: str) -> None:
    """Overwrite `path` only if it still has `etag` (compare-and-swap: S3 `If-Match`)."""
    try:
        fs.pipe_file(path, data, IfMatch=etag)
    except FileNotFoundError:
        raise _Conflict(path) from None
    except OSError as exc:
        if "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower():
            raise _Conflict(path) from None
        raise


# Output locks this process holds, by folder: every write below one checks its lease first.
_HELD: dict[str, "ObjectLock"] = {}


def _fence(loc: str) -> None:
    for folder, lock in list(_HELD.items()):
        if loc.startswith(folder.rstrip("/") + "/") and loc != lock.url:
            lock.check()


class ObjectLock:
    """One writer per output URL: the object `OUT/.stc.lock`, created only if absent.

    * Taking it is one conditional PUT (`If-None-Match: *` on S3, an exclusive create on
      other fsspec backends): of two runs starting at once exactly one succeeds.
    * The holder renews its lease every `lease / 4` seconds from a background thread, each
      renewal a compare-and-swap on the ETag of its own last write (`If-Match`). A lock whose
      lease ran out belongs to a run that died (kill -9, a lost node); it is taken over by
      the same compare-and-swap on the ETag the taker read, so of two runs that both find it
      expired exactly one gets it (a delete-then-create let both in).
    * The holder checks its lease before every write below the folder (`check`): it stops
      (`LeaseLost`) when a renewal found the lock taken over, or when it could not renew for
      a whole lease (a network cut: a taker may be about to start), which is before anyone
      may take it over (lease + `CLOCK_MARGIN` after the last renewal; clocks are trusted to
      within that margin).
    * Release deletes it when it is still this run's. Limits: a backend without exclusive
      create (some S3-compatible stores ignore If-None-Match) cannot tell two simultaneous
      starts apart, and one without If-Match (not S3) takes an expired lock over by delete
      and create, which two runs finding it expired at the same instant can both pass.
    """

    CLOCK_MARGIN = 60.0

    def __init__(self, folder: str, command: str, lease_seconds: float = 120.0):
        self.folder = folder
        self.url = join(folder, LOCK_FILE)
        self.command = command
        self.lease = float(lease_seconds)
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.etag: str | None = None            # of this run's last write of the lock
        self.renewed = 0.0                      # monotonic time that write's body was made
        self.lost: str | None = None            # why this run no longer holds it

    def _body(self) -> bytes:
        now = time.time()
        self.renewed = time.monotonic()
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "command": self.command, "token": self.token,
                           "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "renewed": now, "expires": now + self.lease}).encode()

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(read_bytes(self.url) or b"{}")
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def _cas(self, fs) -> bool:
        return "s3" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))

    def acquire(self) -> "ObjectLock":
        fs, path = _fs(self.url)
        for _ in range(3):
            try:
                body = self._body()
                _create(fs, path, body)
                break
            except FileExistsError:
                try:
                    seen = _etag(fs, path) if self._cas(fs) else None
                except FileNotFoundError:
                    continue                         # released in between: try again
                holder = self._holder()
                if holder is None:
                    continue
                if time.time() > holder.get("expires", 0) + self.CLOCK_MARGIN:
                    # Its holder stopped renewing: dead. Take it over in one conditional
                    # write on what we read; a second taker's write then fails.
                    if seen is None:
                        remove(self.url)
                        continue
                    try:
                        body = self._body()
                        _swap(fs, path, body, seen)
                        break
                    except _Conflict:
                        continue                     # someone was faster: look again
                raise OutputLocked(
                    f"{self.folder} is being written by another stc run (pid {holder.get('pid')} "
                    f"on {holder.get('host')}, `{holder.get('command')}`, since "
                    f"{holder.get('since')}); wait for it to finish, or give this run another "
                    f"output location. If that run is gone, its lock {self.url} expires "
                    f"{self.lease + self.CLOCK_MARGIN:.0f} s after its last renewal, or delete "
                    "it by hand") from None
        else:
            raise OutputLocked(f"could not take the lock {self.url}; another run keeps taking it")
        self.etag = _etag(fs, path) if self._cas(fs) else None
        if (self._holder() or {}).get("token") != self.token:
            raise OutputLocked(f"could not take the lock {self.url}; another run took it first")
        _HELD[str(self.folder)] = self
        self._thread = threading.Thread(target=self._renew, name="stc-lock-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> None:
        """One renewal (the lease thread calls it): a compare-and-swap on our last write."""
        fs, path = _fs(self.url)
        if self.etag is None:
            if (self._holder() or {}).get("token") != self.token:
                self.lost = "another run took the lock over"
                return
            fs.pipe_file(path, self._body())
            return
        try:
            _swap(fs, path, self._body(), self.etag)
        except _Conflict:
            self.lost = "another run took the lock over"
            return
        self.etag = _etag(fs, path)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 4) and self.lost is None:
            with contextlib.suppress(Exception):     # a missed renewal is retried next time
                self.renew()

    def check(self) -> None:
        """Raise LeaseLost unless this run still holds the lock: before every write."""
        if self.lost is None and time.monotonic() - self.renewed > self.lease:
            self.lost = f"it could not be renewed for {self.lease:.0f} s"
        if self.lost is not None:
            raise LeaseLost(
                f"this run lost its lock on {self.folder} ({self.lost}) and stopped writing "
                "there; what it committed before is kept. Check that no other run writes "
                "there, then rerun the same command to resume")

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        _HELD.pop(str(self.folder), None)
        with contextlib.suppress(Exception):
            if self.lost is None and (self._holder() or {}).get("token") == self.token:
                remove(self.url)

    def __enter__(self) -> "ObjectLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
