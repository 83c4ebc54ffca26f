"""Shared helpers of the snippets: the repository root, number formats, markdown tables, result files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPER = "deltas +-1 (paper)"


def _f(v, d=10):
    """A float with d decimals, or '-' for None / nan."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{d}f}"


def _cell(c) -> str:
    """A table cell; a | inside $...$ would end the cell (sympy writes \\left| ... \\right|), so it becomes \\vert."""
    return re.sub(r"\$[^$]*\$", lambda m: m[0].replace("|", "\\vert "), str(c))


def _table(head, rows):
    out = ["| " + " | ".join(map(_cell, head)) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(map(_cell, r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


RESULTS = ROOT / "docs" / "results"


def _json(path: str):
    return json.loads((ROOT / path).read_text())


def _pct(v, d=1) -> str:
    return "-" if v is None else f"{100 * v:+.{d}f}%"


def _pm(v, se, d=3) -> str:
    return "-" if v is None else f"{v:.{d}f} ± {se:.{d}f}" if se is not None else f"{v:.{d}f}"


def _maybe(path: str):
    """A committed result file, or None where that measurement has not been made."""
    return _json(path) if (ROOT / path).exists() else None
