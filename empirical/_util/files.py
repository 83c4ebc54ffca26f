"""Writing output files safely: atomic replacement, a full disk named, exclusive locks, and the up-front checks
of an output path that every command makes before any work.

- ``atomic_write``: temporary file in the same folder, fsync, rename; a kill leaves the old file or the new one.
  A full disk raises ``OSError(ENOSPC)`` naming the file and its folder's free space, the old file kept.
- ``locked``: an exclusive ``fcntl.flock`` on a sibling lock file; ``wait=False`` refuses at once with
  ``OutputInUse`` when another process holds it. The kernel drops the lock when its holder dies (even by SIGKILL).
- ``remove_stale_temporaries``: the temporary files of writes cut short by a kill (called under the lock).
- ``check_output_dir`` / ``check_output_file``: the output is of the right kind, writable, and (for a file that
  rows are merged into) parseable, before any work; ``ValueError`` naming the option.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with locked(folder / "rows.json"):
...     atomic_write(folder / "rows.json", lambda f: f.write(b"[]"))
>>> sorted(p.name for p in folder.iterdir())  # the lock file goes with the lock
['rows.json']
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "OutputInUse",
    "atomic_write",
    "locked",
    "lock_file",
    "remove_stale_temporaries",
    "check_output_dir",
    "check_output_file",
]


class OutputInUse(RuntimeError):
    """Another process holds the lock of an output (a run folder, a results file) that must not be shared."""


def _temporary(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that ``atomic_write`` of ``path`` left behind when killed; returns them. Call it
    only while no other writer of ``path`` can be mid-write (under ``locked(path)`` or the run folder's lock)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")  # mkstemp's random part has no dot
    stale = [p for p in path.parent.glob(f".{glob_escape(path.name)}.*.tmp") if pattern.fullmatch(p.name)]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def atomic_write(path: str | os.PathLike, write: Callable[[typing.BinaryIO], None]) -> None:
    """Write ``path`` through a temporary file in the same directory (fsync, os.replace), so a reader or a
    process killed mid-write sees the old file or the new one, never a torn one; a full disk is named."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _disk_full(err):
            free = shutil.disk_usage(path.parent).free
            raise OSError(
                errno.ENOSPC,
                f"cannot write {path}: no space left on the disk holding {path.parent} ({free:,} bytes free); "
                f"{'the previous file is kept' if path.exists() else 'nothing was written'}",
            ) from err
        raise
    with contextlib.suppress(OSError):  # persist the rename itself (not possible on every file system)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def _disk_full(err: BaseException) -> bool:
    """ENOSPC or EDQUOT, raised directly or wrapped by torch's zip writer (a RuntimeError "file write failed")."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def lock_file(path: str | os.PathLike, kind: str = "lock") -> Path:
    """The lock file of an output: ``.<name>.<kind>`` beside a file, ``.<kind>`` inside a folder."""
    path = Path(path)
    return path / f".{kind}" if path.is_dir() else path.with_name(f".{path.name}.{kind}")


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, wait: bool = True, name: str = "out", kind: str = "lock"):
    """Hold an exclusive lock on the output ``path`` (a file or a folder) for the block. ``wait=False``: raise
    ``OutputInUse`` naming ``name`` and the holder's pid if another process holds it. The lock file is removed
    on release; a waiter that then finds its file gone or replaced locks the new one. ``kind`` names the lock:
    a whole run holds "run" on its output file while each write holds "lock" on it."""
    lock = lock_file(path, kind)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputInUse(
                f"{name}={path} is in use by another process (pid {holder}, lock {lock}); wait for it to finish "
                f"or choose another {name}"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        os.close(fd)  # the holder we waited for removed this lock file: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still held, so no one locks a file that is about to vanish
        os.close(fd)


def check_output_dir(path: str | os.PathLike, name: str = "out") -> Path:
    """Create the output folder ``path`` if needed and write a test file in it, before any long work;
    ``ValueError`` naming ``name`` if it is a file or not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a directory; {path} is an existing file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{name}={path} is not a writable directory: {err}") from err
    return path


_JSON_KIND = {dict: "object", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def check_output_file(path: str | os.PathLike, name: str = "out", holds: str | None = None) -> Path:
    """Check the output file ``path`` before any work: not a folder, its folder writable (created if needed), and,
    when rows are merged into an existing file, that it parses as JSON holding what the command merges into
    (``holds``: "list" of rows, "rows" for an object with a "rows" list, "object" for any JSON object).
    ``ValueError`` naming ``name``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} must be a file; {path} is a directory")
    try:
        check_output_dir(path.parent, "folder")
    except ValueError as err:
        raise ValueError(f"{name}={path} cannot be written: its {err}") from err
    if holds is None or not path.exists():
        return path
    try:
        content = json.loads(path.read_text())  # bare NaN of older files is read (and written back as null)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{name}={path} cannot be merged into: it is not a readable JSON file ({err})") from err
    if holds == "list" and not isinstance(content, list):
        kind = _JSON_KIND.get(type(content), "value")
        raise ValueError(f"{name}={path} holds a JSON {kind}, not a list of rows; choose another {name}")
    if holds == "object" and not isinstance(content, dict):
        kind = _JSON_KIND.get(type(content), "list")
        raise ValueError(f"{name}={path} holds a JSON {kind}, not this command's output (an object)")
    if holds == "rows" and not (isinstance(content, dict) and isinstance(content.get("rows"), list)):
        raise ValueError(f"{name}={path} is not a table of this command (an object with a 'rows' list); choose "
                         f"another {name}")  # fmt: skip
    return path
