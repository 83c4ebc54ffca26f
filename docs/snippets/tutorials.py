"""Reference snippets run live: the tutorial transcripts, the commands' --help, the notebooks, the public names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from .common import ROOT, _table

QUICKSTART = [
    "from theory import DDPM, DeltaMixture, VPLinear, critical_time, fixed_points, speciation_time",
    "data = DeltaMixture([[-1.0], [1.0]])",
    "ct = critical_time(data, VPLinear(), eta=1.0)",
    "ct.kind, round(ct.theta, 10), round(ct.t, 10), round(ct.snr, 6)",
    "critical_time(data, DDPM()).generative_step",
    "[(round(float(p.x[0]), 4) + 0.0, p.stable) for p in fixed_points(data, VPLinear(), t=0.2)]",
    "round(speciation_time(data, VPLinear()).theta, 10)",
]

# tutorials/first_critical_time.md, first part: the paper's two points, step by step
TUTORIAL_1D = [
    "from theory import DDPM, DeltaMixture, VPLinear, critical_time, fixed_points",
    "data = DeltaMixture([[-1.0], [1.0]])  # two training points, at -1 and +1",
    "schedule = VPLinear()  # beta from 0.1 to 20, T = 1",
    "[(round(float(p.x[0]), 4) + 0.0, p.stable) for p in fixed_points(data, schedule, t=0.6)]",
    "[(round(float(p.x[0]), 4) + 0.0, p.stable) for p in fixed_points(data, schedule, t=0.2)]",
    "ct = critical_time(data, schedule, eta=1.0)  # eta = 1: the reverse SDE",
    "ct.kind, round(ct.t, 6), round(ct.theta, 6)",
    "critical_time(data, DDPM()).generative_step  # of 1000 steps",
]

# tutorials/first_critical_time.md, second part: the 8x8 digits (about half a minute)
TUTORIAL_DIGITS = [
    "from empirical import load_dataset",
    "from theory import DeltaMixture, VPLinear, critical_time",
    'ds = load_dataset("digits")  # scikit-learn\'s 1,797 images, 8x8, scaled to [-1, 1]',
    "ds.x.shape",
    "ct = critical_time(DeltaMixture(ds.x), VPLinear())",
    "ct.kind, round(ct.t, 5), round(ct.centre_t, 5)",
    "round(ct.basin_mass, 3), ct.macroscopic is not None and round(ct.macroscopic.t, 5)",
]

# tutorials/digits_end_to_end.md: the committed digits model, measured from Python (about a minute)
TUTORIAL_MEASURE = [
    "from empirical import load_dataset, load_denoiser, measure_critical_time",
    'ds = load_dataset("digits")',
    'den = load_denoiser("docs/results/digits_denoiser.pt").double()  # the pipeline\'s model, in float64',
    "m = measure_critical_time(den, ds.x)  # the pipeline's defaults: 128 starts, bisection to 1e-3",
    "round(m.t, 4), round(m.t_lo, 5), round(m.t_hi, 5), len(m.points)  # the time, its bracket, stable points below",
]


def _transcript(lines: list[str]) -> str:
    """Run ``lines`` one by one, as an interactive session would, and record the session."""
    ns: dict = {}
    out = ["```pycon"]
    for line in lines:
        out.append(f">>> {line}")
        try:
            code = compile(line, "<transcript>", "eval")
        except SyntaxError:
            exec(compile(line, "<transcript>", "exec"), ns)
            continue
        value = eval(code, ns)
        if value is not None:
            out.append(repr(value))
    return "\n".join(out) + "\n```\n"


def quickstart() -> str:
    """Run QUICKSTART line by line, as an interactive session would, and record the transcript."""
    return _transcript(QUICKSTART)


def tutorial_1d() -> str:
    return _transcript(TUTORIAL_1D)


def tutorial_digits() -> str:
    return _transcript(TUTORIAL_DIGITS)


def tutorial_measure() -> str:
    return _transcript(TUTORIAL_MEASURE)


def notebook_figures() -> str:
    """The figures under docs/figures/<notebook>/ (written by scripts/run_notebooks.py), with their parameters."""
    figs = ROOT / "docs" / "figures"
    parts = []
    for d in sorted(p for p in figs.glob("*") if p.is_dir() and (ROOT / "notebooks" / f"{p.name}.ipynb").exists()):
        params = (d / "params.json").read_text().strip() if (d / "params.json").exists() else "unknown"
        parts.append(f"## {d.name}\n\nParameters of the run: `{' '.join(params.split())}`\n")
        parts += [f"![{png.stem}](figures/{d.name}/{png.name})\n" for png in sorted(d.glob("*.png"))]
    if not parts:
        return "No figures yet: run `make notebooks` (or `make notebooks-smoke`), then `python docs/gen_numbers.py`.\n"
    return "\n".join(parts)


# --- reference: the command line, the result files, the notebooks --------------------------------------------
HELP_SCRIPT = """
import contextlib, importlib, io, json, sys, warnings
warnings.simplefilter("ignore")
from empirical.__main__ import COMMANDS, usage
out = {"": usage()}
for name, module in COMMANDS.items():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        importlib.import_module("empirical." + module).main(["--help"])
    out[name] = buf.getvalue()
import theory.__main__ as th
buf = io.StringIO()
with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
    th.main(["--help"])
out["theory"] = buf.getvalue()
json.dump(out, sys.stdout)
"""


def command_help() -> dict:
    """{command: its --help text} for ``python -m empirical`` ("" the list) and ``python -m theory`` ("theory"), from
    one subprocess with a fixed terminal width, so that the text does not depend on the terminal it runs in."""
    env = {**os.environ, "COLUMNS": "100", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout)


def cli() -> str:
    """Every command's ``--help``, as the command prints it."""
    helps = command_help()
    out = "`python -m empirical` lists the commands:\n\n```\n" + helps.pop("").rstrip() + "\n```\n"
    out += "\n## `python -m theory`\n\n```\n" + helps.pop("theory").rstrip() + "\n```\n"
    for name, text in helps.items():
        out += f"\n## `python -m empirical {name}`\n\n```\n" + text.rstrip() + "\n```\n"
    return out


def public_surface() -> str:
    """``from empirical import ...``: each public name, where it is defined (a link to its documentation), and the
    first line of its docstring."""
    import importlib

    import empirical

    rows = []
    for name in empirical.__all__:
        module = f"empirical.{empirical._PUBLIC[name]}"
        obj = getattr(importlib.import_module(module), name)
        doc = " ".join((getattr(obj, "__doc__", None) or "").split("\n\n")[0].split()).replace("``", "`")
        doc = re.split(r"(?<=\.)\s", doc, maxsplit=1)[0] if callable(obj) else ""  # a constant's __doc__ is its type's
        page = module.split(".")[1]
        rows.append([f"[`{name}`]({page}.md#{module}.{name})", f"`{module}`", doc])
    return _table(["name", "defined in", "what it is"], rows)


def notebook_list() -> str:
    """The notebooks: each one's title (its first heading) and first sentence, linked to its page."""
    rows = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        text = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"])
        title, _, body = text.partition("\n")
        first = re.split(r"(?<=[.:])\s", " ".join(body.split()), maxsplit=1)[0]
        rows.append([f"[{nb.stem[:2]} {title.lstrip('# ').strip()}](notebooks/{nb.name})", first])
    return _table(["notebook", "what it starts with"], rows)
