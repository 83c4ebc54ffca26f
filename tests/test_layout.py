"""The package layout: empirical's role folders import only down their chain, nothing outside theory imports
theory's private modules, every command is listed by ``python -m empirical``, and the old module paths give the
new modules' very objects with a DeprecationWarning."""

import ast
import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# empirical's roles from the bottom up: a module may import its own role and those before it
ROLES = ["_util", "data", "models", "training", "sampling", "measure", "metrics", "interop", "pipelines"]


def imported_modules(path: Path) -> list[str]:
    """Every module an import statement of ``path`` names (function-level imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_every_empirical_module_lives_in_a_role_folder():
    top = sorted(p.name for p in (ROOT / "empirical").iterdir() if p.name != "__pycache__")
    assert top == sorted(["__init__.py", "__main__.py", *ROLES])


def test_imports_point_down_the_chain_of_roles():
    wrong = []
    for path in sorted((ROOT / "empirical").rglob("*.py")):
        parts = path.relative_to(ROOT / "empirical").parts
        if len(parts) == 1:
            continue  # the top level re-exports every role
        rank = ROLES.index(parts[0])
        for name in imported_modules(path):
            target = name.split(".")
            if target[0] == "empirical" and len(target) > 1 and target[1] in ROLES:
                if ROLES.index(target[1]) > rank:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_chain_check_catches_an_upward_import(tmp_path):
    """The rule above on a module of ``data`` that imports a pipeline (the check can fail)."""
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from empirical.pipelines import stages\n")
    names = imported_modules(bad)
    assert "empirical.pipelines.stages" in names and ROLES.index("pipelines") > ROLES.index("data")


def test_no_private_theory_module_is_imported_outside_theory():
    folders = ["empirical", "benchmarks", "scripts", "docs"]
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in imported_modules(path)
        if name.startswith("theory._")
    ]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        lines = nb.read_text().splitlines()
        wrong += [f"{nb.name}: {line.strip()}" for line in lines if re.search(r"(from|import) theory\._", line)]
    assert not wrong, "\n".join(wrong)


def test_python_m_empirical_lists_every_command_and_runs_one():
    from empirical.__main__ import COMMANDS

    out = subprocess.run([sys.executable, "-m", "empirical"], capture_output=True, text=True, cwd=ROOT, check=True)
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)
    for command, module in COMMANDS.items():  # every command's module has a main(argv)
        assert callable(importlib.import_module(f"empirical.{module}").main), command
    run = subprocess.run([sys.executable, "-m", "empirical", "n-sweep", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "python -m empirical n-sweep" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "empirical", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr


@pytest.mark.parametrize("old", ["samplers", "train", "diffusers_adapter", "breaking_time", "measure_flow"])
def test_old_module_paths_give_the_new_objects_with_a_warning(old):
    from empirical._util.legacy import MOVED

    new = importlib.import_module(f"empirical.{MOVED[old]}")
    sys.modules.pop(f"empirical.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"empirical.{old}")
    assert module is new
    assert any(issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught)


def test_old_module_paths_still_run_as_commands():
    out = subprocess.run(
        [sys.executable, "-W", "always", "-m", "empirical.steps_sweep", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--n-starts" in out.stdout
    assert "empirical.steps_sweep moved to empirical.pipelines.steps_sweep" in out.stderr


def test_the_measure_and_metrics_packages_keep_their_module_names():
    from empirical.measure import measure_critical_time
    from empirical.measure.fixed_points import measure_critical_time as new
    from empirical.metrics import fid
    from empirical.metrics.scores import fid as new_fid

    assert measure_critical_time is new and fid is new_fid


def test_import_empirical_is_cheap():
    """The public names are lazy: importing the package loads neither torch nor jax."""
    code = "import sys, empirical; print('torch' in sys.modules, 'jax' in sys.modules, len(empirical.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"] and int(out[2]) > 10
