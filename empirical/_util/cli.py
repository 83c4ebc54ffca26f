"""Typed command lines built from a config dataclass: one option per field (``--batch-size`` for ``batch_size``),
the element type from the annotation (``X | None`` counts as X, ``tuple[int, ...]`` takes several values), help,
choices, ``required``, ``positional`` (an argument without a dash, such as checkpoint files) and ``flag`` (a bool
switch without a value) from the field's metadata, and ``--dry-run``. ``parse_args`` ends a numeric list at its
first non-number, so a positional file after ``--classes 1 8`` is never read as a label."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import types
import typing

import numpy as np

__all__ = [
    "dataclass_parser",
    "config_from_args",
    "parse_args",
    "typed_command",
    "refuse",
    "print_config",
    "parse_bool",
    "is_int",
    "is_real",
    "command_line",
]


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
        if kind is bool and f.metadata.get("flag"):  # a switch without a value (--print)
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action="store_true", help=help_of(f))
            continue
        if kind is bool:
            kind, extra["metavar"] = parse_bool, "{true,false}"
        if "choices" in f.metadata:
            extra["choices"] = f.metadata["choices"]
        help = help_of(f)
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=kind, help=help, **extra)
            continue
        if f.metadata.get("required"):
            extra["required"] = True
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=f.default, help=help, **extra
        )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that a list of numbers (``--classes 1 8``) ends at its first token that is
    not a number: that token and what follows up to the next option are positional arguments, not a bad label.

    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("files", nargs="+"); _ = p.add_argument("--classes", type=int, nargs="+")
    >>> parse_args(p, ["--classes", "1", "8", "a.pt", "b.pt"])
    Namespace(files=['a.pt', 'b.pt'], classes=[1, 8])
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(not a.option_strings for a in parser._actions):
        return parser.parse_args(argv)
    options, positional, value_of = [], [], None
    for i, token in enumerate(argv):
        if token == "--":
            positional += argv[i + 1 :]
            break
        action = parser._option_string_actions.get(token.split("=")[0]) if token.startswith("-") else None
        if action is not None and not _number(token, float):
            options.append(token)
            value_of = None if "=" in token else action
            left = 0 if action.nargs == 0 else 1 if action.nargs is None else None
            continue
        if value_of is not None and (left is None or left > 0):
            if left is None and value_of.type in (int, float) and not _number(token, value_of.type):
                value_of = None  # a numeric list ends here: the token is positional
            else:
                options.append(token)
                left = None if left is None else left - 1
                continue
        positional.append(token)
    return parser.parse_args(options + (["--", *positional] if positional else []))


def _number(token: str, kind) -> bool:
    try:
        kind(token)
    except ValueError:
        return False
    return True


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get("help", " ")


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


def typed_command(cls, prog: str, description: str, argv: list[str] | None):
    """(config, parsed arguments) of a typed command line: ``dataclass_parser`` options parsed by ``parse_args``,
    the ``cls`` instance built (its checks raise ValueError naming the field, which the command prints)."""
    parser = dataclass_parser(cls, prog, description)
    parser.formatter_class = _Formatter
    args = parse_args(parser, argv)
    return config_from_args(cls, args), args


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written (its example commands), and each option's default."""


def refuse(err: Exception) -> int:
    """Print a refused command line's error and return the exit status 2 (argparse's for a usage error)."""
    print(f"error: {err}", file=sys.stderr)
    return 2


def print_config(command: str, cfg) -> int:
    """``--dry-run``: print the resolved config as JSON under the command's name; returns 0."""
    import json

    print(json.dumps({command: dataclasses.asdict(cfg)}, indent=1))
    return 0
