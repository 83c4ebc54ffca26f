"""Result files: strict JSON written atomically, and tables kept as lists of rows keyed by some fields."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["write_json_atomic", "upsert_row", "finite"]


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as strict JSON (numpy arrays and scalars allowed) to a temporary file in the same
    folder, fsync it, then rename it over ``path``: a kill leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_strict(obj), f, indent=1, allow_nan=False, default=_jsonable)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Replace the row of the JSON list at ``path`` that agrees with ``row`` on ``keys`` (or append it); atomic.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.json"
    >>> _ = upsert_row(p, {"a": 1, "v": 1}, ("a",)); _ = upsert_row(p, {"a": 2, "v": 2}, ("a",))
    >>> upsert_row(p, {"a": 1, "v": 3}, ("a",))
    [{'a': 2, 'v': 2}, {'a': 1, 'v': 3}]
    """
    path = Path(path)
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if any(r.get(k) != row.get(k) for k in keys)] + [row]
    write_json_atomic(path, rows)
    return rows
