"""Typed command lines built from a config dataclass: one option per field (``--batch-size`` for ``batch_size``),
the element type from the annotation (``X | None`` counts as X, ``tuple[int, ...]`` takes several values), help
and choices from the field's metadata, and ``--dry-run``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import types
import typing

import numpy as np

__all__ = ["dataclass_parser", "config_from_args", "parse_bool", "is_int", "is_real", "command_line"]


def is_int(value) -> bool:
    """An integer count (numpy integers included; bool is not a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (numpy scalars included: np.float32(0.5) is a number; bool is not)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _arg_type(hint) -> tuple[type, bool]:
    """(element type, is a tuple) of a field's annotation; ``X | None`` counts as X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def parse_bool(text: str) -> bool:
    """A command-line truth value: true/false, yes/no, on/off, 1/0 (any case); argparse's ``type=bool`` would
    read "False" as True.

    >>> parse_bool("False"), parse_bool("on")
    (False, True)
    """
    value = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if text.lower() not in value:
        raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")
    return value[text.lower()]


def dataclass_parser(cls, prog: str, description: str, parser: argparse.ArgumentParser | None = None):
    """An argparse parser with one typed option per field of the dataclass ``cls`` and ``--dry-run``; pass
    ``parser`` to add the options to another command's parser.

    >>> @dataclasses.dataclass
    ... class C:
    ...     n_steps: int = 3
    ...     classes: tuple[int, ...] | None = None
    >>> args = dataclass_parser(C, "prog", "demo").parse_args(["--n-steps", "5", "--classes", "0", "1"])
    >>> config_from_args(C, args)
    C(n_steps=5, classes=(0, 1))
    """
    if parser is None:
        parser = argparse.ArgumentParser(
            prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, is_tuple = _arg_type(hints[f.name])
        extra = {"nargs": "+"} if is_tuple else {}
        if kind is bool:
            kind, extra["metavar"] = parse_bool, "{true,false}"
        if "choices" in f.metadata:
            extra["choices"] = f.metadata["choices"]
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=f.default,
            help=f.metadata.get("help", " "), **extra,
        )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    return parser


def config_from_args(cls, args: argparse.Namespace):
    """The ``cls`` instance of parsed ``dataclass_parser`` options (lists of several values become tuples)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def command_line(command: str, argv: list[str] | None) -> str:
    """The shell line that reruns ``python -m empirical <command>`` with ``argv`` (``sys.argv[1:]`` if None), as
    stored in result rows.

    >>> command_line("shell", ["--t", "0.5", "a b"])
    "python -m empirical shell --t 0.5 'a b'"
    """
    return shlex.join(["python", "-m", "empirical", command, *(sys.argv[1:] if argv is None else argv)])
