"""Griffe extension for the API reference: make plain-text docstrings render as intended in markdown.

The package's docstrings are written for ``help()`` and doctest, not for markdown. Two constructs
would render wrongly through mkdocstrings:

* doctest lines (``>>> ...`` and their output) outside a google ``Examples:`` section: markdown
  reads ``>>>`` as nested block quotes and ``[...]`` output as link references. They become
  fenced ``pycon`` blocks (doctest flags such as ``# doctest: +ELLIPSIS`` are dropped);
* reStructuredText "simple tables" (rows of ``=====  ====`` borders): markdown reads the header
  border as a setext heading. They become fenced ``text`` blocks.

Doctests inside an ``Examples:`` section are left alone: griffe's google parser handles those.
Loaded from mkdocs.yml (``docs/griffe_doctests.py:FenceDoctests``), with ``HideDunders`` below; neither
changes anything in the package.
"""

from __future__ import annotations

import re

import griffe

_DOCTEST_FLAG = re.compile(r"\s*#\s*doctest:.*$")
_RST_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_EXAMPLES = re.compile(r"^\s*Examples:\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _fence(block: list[str], lang: str, indent: int, before: str | None) -> list[str]:
    pad = " " * indent
    # A blank line separates the fence from a paragraph above it, but not from a less indented
    # section header such as "Example:" (griffe reads a blank line there as "no section").
    out = [""] if before is not None and before.strip() and _indent(before) >= indent else []
    return out + [f"{pad}```{lang}", *block, f"{pad}```", ""]


def fence_docstring(text: str) -> str:
    """Return ``text`` with doctest runs and RST simple tables wrapped in fenced code blocks."""
    lines = text.splitlines()
    out: list[str] = []
    examples_indent: int | None = None  # indentation of an enclosing "Examples:" header
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() and examples_indent is not None and _indent(line) <= examples_indent:
            examples_indent = None
        if _EXAMPLES.match(line):
            examples_indent = _indent(line)
        prev = out[-1] if out else None
        if line.lstrip().startswith(">>>") and examples_indent is None:
            ind, block = _indent(line), []
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= ind:
                block.append(_DOCTEST_FLAG.sub("", lines[i]))
                i += 1
            out += _fence(block, "pycon", ind, prev)
            continue
        if _RST_BORDER.match(line):
            ind, block, borders = _indent(line), [], 0
            while i < len(lines) and borders < 3:
                borders += bool(_RST_BORDER.match(lines[i]))
                block.append(lines[i])
                i += 1
            out += _fence(block, "text", ind, prev)
            continue
        out.append(line)
        i += 1
    return "\n".join(out).rstrip("\n")


class FenceDoctests(griffe.Extension):
    """Rewrite every docstring with ``fence_docstring`` once its object is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_docstring(obj.docstring.value)


class HideDunders(griffe.Extension):
    """Drop special methods other than ``__init__`` (``__repr__``, ...) from classes.

    The ``public`` filter of mkdocstrings (the names of ``__all__`` where a module defines it) counts
    special methods as public; they carry no documentation here.
    """

    def on_class(self, *, cls: griffe.Class, **kwargs) -> None:
        for name in [n for n in cls.members if n.startswith("__") and n.endswith("__") and n != "__init__"]:
            cls.del_member(name)
