"""The one policy for paths read from a manifest or a config, and the input roots a run vouches for.

A manifest (or a run folder's config) is data that may come from elsewhere: a path in it
must not make stc open, decode, copy into shards or draw into a report a file the user
never gave it. `allowed_path` is the rule every reader applies: the path is resolved (links
and `..`), and it must lie inside one of the allowed roots (the manifest's own folder, and
for a curated run's `source_path` the inputs that run recorded), else it is refused with
an `OutsideRoot` whose message is the same whether the file exists or not. `--allow-outside`
is the explicit way out.

**Recorded inputs.** `stc curate` records the folders and files it was given in
`OUT/inputs.json`, with an HMAC-SHA256 under a key only this user holds
(`~/.config/stc/run.key`, created 0600 on first use; `$STC_KEY_FILE` elsewhere). An edited
or foreign `inputs.json` (a run folder copied from another machine, or one an attacker
wrote "/" into) fails the check and vouches for nothing, so the manifest's paths outside
its folder are refused until the user says `--allow-outside`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from stc.core import storage
from stc.core.fs import OutsideRoot, within
from stc.core.storage import Location

INPUT_ROOTS = "inputs.json"


def allowed_path(text: str | Path, roots: Sequence[Location], *, what: str, where: object,
                 allow_outside: bool = False) -> Location:
    """`text` (relative to the first root, or absolute) resolved, when inside one of `roots`;
    with `allow_outside` whatever it names. Else OutsideRoot naming `what` and `where`."""
    for root in roots:
        target = _url_within(root, str(text)) if storage.is_url(text) else within(root, text)
        if target is not None:
            return target
    if allow_outside:
        if storage.is_url(text) or not roots:
            return storage.location(text)
        return storage.join(roots[0], str(text)) if storage.is_url(roots[0]) \
            else (Path(roots[0]) / text).resolve()
    inside = " or ".join(str(r) for r in roots[:3]) + (" ..." if len(roots) > 3 else "")
    raise OutsideRoot(
        f"{what} {str(text)!r} in {where} leads outside {inside}; refused, nothing was read. "
        "Give --allow-outside if it names files elsewhere on purpose")


def _url_within(root: Location, url: str) -> str | None:
    """`url` when it names `root` or an object below it (no `..`: object names are literal)."""
    base = str(root).rstrip("/")
    if not storage.is_url(root) or "/../" in f"{url}/" or "/./" in f"{url}/":
        return None
    return url if url == base or url.startswith(base + "/") else None


def resolved(path: str | Path) -> Path:
    """`path` absolute with links and `..` resolved; a link loop (or a chain too long to
    follow) is kept as the absolute path it is, for its reader to report, never an error."""
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(p))


def walk_files(folder: str | Path, prune: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Every file below `folder` in sorted order, following links to folders: each real
    folder is walked once, so a link loop (`sub/up -> ..`) or a second link to the same
    folder ends there. An entry that cannot be followed (a link to itself) is yielded as a
    file: whoever reads it gets the error and reports it. A subfolder for which `prune`
    says True is not entered."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        if prune is not None:
            dirnames[:] = [d for d in dirnames if not prune(Path(dirpath) / d)]
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


# --- the inputs a run vouches for ----------------------------------------------------
def _key() -> bytes:
    path = Path(os.environ.get("STC_KEY_FILE") or Path.home() / ".config" / "stc" / "run.key")
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return bytes.fromhex(key)


def _mac(roots: list[str]) -> str:
    return hmac.new(_key(), json.dumps(roots).encode(), hashlib.sha256).hexdigest()


def record_input_roots(folder: Location, roots: Iterable[Location]) -> None:
    """Add `roots` (resolved folders or files, or URLs) to the inputs `folder` vouches for."""
    new = {str(r) for r in roots}
    merged = sorted(set(recorded_input_roots(folder)) | new)
    storage.write_text(storage.join(folder, INPUT_ROOTS),
                       json.dumps({"roots": merged, "hmac": _mac(merged)}, indent=1))


def recorded_input_roots(folder: Location) -> list[str]:
    """The inputs `folder`'s run recorded, when their HMAC checks out under this user's key;
    [] when absent, edited, or recorded by someone else."""
    loc = storage.join(folder, INPUT_ROOTS)
    try:
        doc = json.loads(storage.read_text(loc))
        roots = [str(r) for r in doc["roots"]]
        good = hmac.compare_digest(str(doc["hmac"]), _mac(roots))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return roots if good else []
