"""``python -m empirical <command> [options]``: the project's commands; without a command, the list.

Each command is the ``main(argv)`` of one module; ``python -m empirical <command> --help`` shows its options.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys

# command -> module (under empirical.) whose main(argv) runs it
COMMANDS = {
    "train": "training.train",
    "recipe": "pipelines.recipe",
    "breaking-time": "pipelines.breaking_time.pipeline",
    "steps-sweep": "pipelines.steps_sweep",
    "n-sweep": "pipelines.n_sweep",
    "local-score": "pipelines.local_score",
    "late-start": "pipelines.late_start.pipeline",
    "late-start-cells": "pipelines.late_start.cells",
    "fid-knee": "pipelines.fid_knee",
    "diffusers-fid": "pipelines.late_start.diffusers_fid",
    "attractors": "measure.attractors",
    "shell": "measure.shell",
    "denoising-gap": "measure.denoising_gap",
    "memorisation": "measure.memorisation",
    "speciation": "pipelines.speciation",
}


def summary(command: str) -> str:
    """The first line of the command module's docstring, read from its source (no import: listing stays instant)."""
    spec = importlib.util.find_spec(f"empirical.{COMMANDS[command]}")
    with open(spec.origin) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    line = doc.split("\n\n")[0].replace("\n", " ")
    return line if len(line) <= 100 else line[:97] + "..."


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary(name)}" for name in COMMANDS]
    return (
        "usage: python -m empirical <command> [options]   (<command> --help for its options)\n\ncommands:\n"
        + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; choose one of: {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(f"empirical.{COMMANDS[command]}").main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
