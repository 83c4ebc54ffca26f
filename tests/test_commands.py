"""The typed command lines: every command stored in the committed results still parses into its config (the option
names were kept when the commands moved to typed configs), and a list of numbers ends at its first non-number."""

import re
import shlex
from pathlib import Path

import pytest

from empirical._util.cli import typed_command
from empirical.measure import attractors, denoising_gap, memorisation, shell
from empirical.pipelines import recipe, steps_sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "shell": shell.Config,
    "attractors": attractors.Config,
    "denoising-gap": denoising_gap.Config,
    "memorisation": memorisation.Config,
    "steps-sweep": steps_sweep.Config,
}


def committed_commands() -> list[str]:
    """Every ``python -m empirical <command> ...`` of a converted command stored in docs/results."""
    found = set()
    for path in sorted((ROOT / "docs" / "results").rglob("*.json")):
        for match in re.finditer(r"python -m empirical (\S+) ([^\"\n]*)", path.read_text()):
            if match.group(1) in CONFIGS:
                found.add(match.group(0))
    return sorted(found)


def test_committed_commands_are_found():
    counts = {name: sum(c.split()[3] == name for c in committed_commands()) for name in CONFIGS}
    assert all(counts.values()), counts  # each converted command has committed rows to check


@pytest.mark.parametrize("command", committed_commands())
def test_every_committed_command_still_parses(command):
    words = shlex.split(command)
    cfg, args = typed_command(CONFIGS[words[3]], words[3], "", words[4:])
    assert not args.dry_run
    if words[3] == "steps-sweep":  # the files are positional wherever they stand, --classes ends at a file
        files = [w for w in words[4:] if w.endswith(".pt")]
        assert cfg.checkpoints == tuple(files) and all(isinstance(c, int) for c in cfg.classes or ())


def test_a_numeric_list_ends_at_a_file_and_a_string_list_does_not():
    argv = ["--dataset", "digits", "--t", "0.5", "0.6", "a.pt", "b.pt", "--n", "5"]
    cfg, _ = typed_command(denoising_gap.Config, "denoising-gap", "", argv)
    assert cfg.t == (0.5, 0.6) and cfg.models == ("a.pt", "b.pt") and cfg.n == 5
    cfg, _ = typed_command(steps_sweep.Config, "steps-sweep", "", ["x.pt", "--dataset", "digits", "--t-max", "0.9"])
    assert cfg.checkpoints == ("x.pt",) and cfg.t_max == 0.9 and cfg.t_min == 0.02


def test_recipe_subcommands_keep_their_options(capsys):
    assert recipe.main(["train", "--print", "--steps", "10", "--out", "runs/x"]) == 0
    assert capsys.readouterr().out.startswith("python -m empirical train --dataset fashion-mnist")
    assert recipe.main(["export", "runs/x", "--results", "r", "--n-fid", "10", "--overwrite", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '"overwrite": true' in out and '"results": "r"' in out
    assert recipe.main(["nope"]) == 2 and "{train,export,inception-ref}" in capsys.readouterr().err
