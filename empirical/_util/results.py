"""Result files: strict JSON written atomically under the file's lock, and tables kept as lists of rows keyed by
some fields, merged under the same lock so that concurrent writers of one file never lose a row."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from empirical._util.files import atomic_write, locked, remove_stale_temporaries

__all__ = ["write_json_atomic", "update_json", "upsert_row", "finite"]


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as strict JSON (numpy arrays and scalars allowed; nan and inf as null) through a temporary
    file renamed over ``path``, under the file's lock: a kill leaves the old file or the new one, never half."""
    with locked(path):
        _write(Path(path), obj)


def _write(path: Path, obj) -> None:
    remove_stale_temporaries(path)  # of writers killed earlier: every writer of path holds the lock
    text = json.dumps(_strict(obj), indent=1, allow_nan=False, default=_jsonable) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _strict(obj):
    """``obj`` with every non-finite float (nan, inf) as None, in nested dicts, lists and tuples."""
    if isinstance(obj, float):
        return finite(obj)
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return [finite(x) for x in v.tolist()] if v.ndim == 1 else [_jsonable(r) for r in v]
    if isinstance(v, np.generic):
        return finite(v.item())
    raise TypeError(f"not JSON serialisable: {type(v)}")


def finite(v):
    """nan and inf -> None, so that the JSON stays strict (``null`` means "not measured / not defined")."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def upsert_row(path, row: dict, keys: tuple[str, ...]) -> list[dict]:
    """Replace the row of the JSON list at ``path`` that agrees with ``row`` on ``keys`` (or append it); atomic, and
    under the file's lock (``update_json``).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.json"
    >>> _ = upsert_row(p, {"a": 1, "v": 1}, ("a",)); _ = upsert_row(p, {"a": 2, "v": 2}, ("a",))
    >>> upsert_row(p, {"a": 1, "v": 3}, ("a",))
    [{'a': 2, 'v': 2}, {'a': 1, 'v': 3}]
    """

    def merge(rows):
        if not isinstance(rows, list):
            raise ValueError(f"{path} holds a JSON {type(rows).__name__}, not a list of rows")
        return [r for r in rows if any(r.get(k) != row.get(k) for k in keys)] + [row]

    return update_json(path, merge, [])


def update_json(path, change: Callable, default):
    """Read the JSON at ``path`` (``default`` if there is none), write ``change(content)`` back atomically, and
    return it; the read and the write happen under the file's lock, so a concurrent update waits instead of being
    lost. Bare NaN in an older file is read, and written back as null."""
    path = Path(path)
    with locked(path):
        new = change(json.loads(path.read_text()) if path.exists() else default)
        _write(path, new)
    return new
