"""Every number on the docs pages against the committed result file it comes from.

Two mechanisms. A table on a page is a snippet that ``docs/gen_numbers.py`` generates from a result file: the
snippets read from files are rebuilt here and must equal the committed ones. A number in a page's prose is a
``Claim``: a pattern that finds it as written, and the value the result file holds; the number must equal that
value rounded to the decimals the page shows. A failure names the page, the sentence and the file's value; after a
new run, regenerate the snippets (``python docs/gen_numbers.py``) and correct the prose.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


@functools.cache
def gen():
    """docs/gen_numbers.py as a module."""
    spec = importlib.util.spec_from_file_location("gen_numbers", ROOT / "docs" / "gen_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def load(path: str):
    return json.loads((ROOT / path).read_text())


# --- the generated snippets ------------------------------------------------------------------------------------
# and the snippets read from the notebooks and the packages (the transcripts of theory and empirical runs take
# seconds to minutes: their printed numbers are claims below)
FAST = ["notebook_list", "result_files", "public_surface"]


@pytest.mark.parametrize("name", [*gen().RESULT_SNIPPETS, *FAST])
def test_generated_snippet_is_current(name):
    """The committed snippet is what docs/gen_numbers.py writes from the committed files now."""
    committed = (ROOT / "docs" / "generated" / f"{name}.md").read_text()
    assert committed == gen().HEADER + gen().SNIPPETS[name](), (
        f"docs/generated/{name}.md is stale: run `python docs/gen_numbers.py --only {name}`"
    )


def test_cli_reference_has_every_command_and_option():
    """docs/generated/cli.md against the commands' --help now: the same commands, each with the same options
    (compared as sets of option strings, so that argparse's layout in another Python version does not matter)."""
    page = (ROOT / "docs" / "generated" / "cli.md").read_text()
    sections = dict(re.findall(r"\n## `python -m (\S+(?: \S+)?)`\n\n```\n(.*?)\n```", page, re.S))
    helps = gen().command_help()
    helps.pop("")
    now = {("theory" if name == "theory" else f"empirical {name}"): text for name, text in helps.items()}
    assert sections.keys() == now.keys(), "run `python docs/gen_numbers.py --only cli`"
    for name, text in now.items():
        options = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", text))
        assert set(re.findall(r"(?<![\w-])--[a-z][\w-]*", sections[name])) == options, (
            f"{name}: its options changed; run `python docs/gen_numbers.py --only cli`"
        )


# --- numbers in the prose --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    page: str  # path from the repository root
    pattern: str  # a regex whose groups are the numbers as the page writes them
    expected: Callable[[], tuple]  # the values, from the result files, one per group

    def __str__(self):
        return f"{self.page}: {self.pattern[:50]}"


def _number(text: str) -> tuple[float, int]:
    """(value, decimals shown) of a number as written: 1,797 / 0.3990 / 3.6 / 4.6e-6."""
    text = text.replace(",", "").replace("{", "").replace("}", "").rstrip(".")
    mantissa = text.split("e")[0]
    return float(text), len(mantissa.split(".")[1]) if "." in mantissa else 0


def _shown(value: float, written: str) -> bool:
    got, decimals = _number(written)
    if "e" in written:  # the same mantissa at the written precision
        return f"{value:.{decimals}e}" == f"{got:.{decimals}e}"
    return abs(round(value, decimals) - got) < 10 ** -(decimals + 6)


# helpers reading the result files
def bt():
    return load("docs/results/breaking_time.json")[0]


def bt28(dataset: str):
    return next(r for r in load("docs/results/breaking_time_28.json") if r["dataset"] == dataset)


def gap28(dataset: str):
    r = bt28(dataset)
    return 100 * (r["t_c_measured"] - r["t_c_predicted"]) / r["t_c_predicted"]


def window_seeds():
    """The ten-class Fashion-MNIST window networks: (within 10%, none, all)."""
    rows = load("docs/results/breaking_vs_steps.json")["rows"]
    rows = [r for r in rows if r["dataset"] == "fashion-mnist" and not r.get("classes") and r.get("t_train")]
    within = sum(r["relative_gap"] is not None and abs(r["relative_gap"]) <= 0.1 for r in rows)
    none = sum(r["t_c_measured"] is None for r in rows)
    return within, len(rows), none


def curves(path: str = "docs/results/late_start_digits.json"):
    return load(path)


def first(path: str = "docs/results/late_start_digits.json"):
    """{(sampler, n, init, rule): row} on each sampler's first grid."""
    from empirical.pipelines.late_start.plots import first_grid_rows

    return first_grid_rows(curves(path))


def rows_by(path: str, dataset: str | None = None) -> dict:
    rows = load(path)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    key = ("sampler", "grid", "n_steps", "init", "t_start_rule")
    return {tuple(r.get(k, "uniform") for k in key): r for r in rows if dataset in (None, r.get("dataset"))}


def best_grid(path: str, dataset: str | None = None) -> list[dict]:
    """Per (sampler, n): the vanilla start on its best grid, gls at t_c on that grid, and the sweep-best cells."""
    by = rows_by(path, dataset)
    out = []
    for sampler, n in dict.fromkeys((k[0], k[2]) for k in by):
        grids = sorted({k[1] for k in by if k[0] == sampler})
        v = min((by[sampler, g, n, "vanilla", "none"] for g in grids), key=lambda r: r["fid"])
        g = by[sampler, v.get("grid", "uniform"), n, "gls", "theory"]
        within = [by[sampler, x, n, "gls", "theory"]["fid"] <= 1.1 * by[sampler, x, n, "gls", "sweep-best"]["fid"]
                  for x in grids]  # fmt: skip
        out.append({"sampler": sampler, "n": n, "ratio": v["fid"] / g["fid"], "within": within})
    return out


def teleport_gap(path: str, dataset: str | None = None) -> list[float]:
    """|FID(teleport) - FID(gls)| / FID(gls) at t_c, per (sampler, grid, n) cell."""
    by = rows_by(path, dataset)
    return [abs(r["fid"] - by[k[:3] + ("gls", "theory")]["fid"]) / by[k[:3] + ("gls", "theory")]["fid"]
            for k, r in by.items() if k[3] == "teleport"]  # fmt: skip


def teleport_ratio(path: str, dataset: str | None = None) -> list[float]:
    """FID(teleport) / FID(gls) at t_c, per (sampler, grid, n) cell."""
    by = rows_by(path, dataset)
    return [r["fid"] / by[k[:3] + ("gls", "theory")]["fid"] for k, r in by.items() if k[3] == "teleport"]


def rule(name: str):
    return load(f"docs/results/late_start_rule_{name}.json")


def rule_ratios_at(n: int) -> list[float]:
    return [c["fid_at_table_seed"] / c["table"]["gls_sweep_best"]
            for name in ("fashion-mnist", "mnist") for c in rule(name)["cells"] if c["n_steps"] == n]  # fmt: skip


def seeds(name: str, sampler: str, init: str) -> dict:
    res = load(f"docs/results/late_start_cells_{name}.json")
    return next(c for c in res["cells"] if c["sampler"] == sampler and c["init"] == init)


def inception_ratio(n: int, sub: float = 0.0):
    f = first()
    v, g = f["ddim", n, "vanilla", "none"]["fid_inception"], f["ddim", n, "gls", "theory"]["fid_inception"]
    return (v - sub) / (g - sub)


def protocol_ratio(n: int) -> float:
    f = first("docs/results/paper_protocol/late_start_mnist.json")
    return f["ddim", n, "vanilla", "none"]["fid_inception"] / f["ddim", n, "gls", "theory"]["fid_inception"]


def steps(name: str) -> dict:
    return next(r for r in load("benchmarks/unet_steps.json")["rows"] if r["name"] == name)


def bench(key: str) -> dict:
    return load("benchmarks/results.json")[key]


def memo(n: int) -> dict:
    return next(r for r in load("docs/results/memorisation.json") if r["n_train"] == n)


def scan(n: int, which: str, t: float, key: str) -> int:
    return next(s[key] for s in memo(n)[which] if s["t"] == t)


def fid_diffs() -> list[float]:
    return [abs(d) for r in load("docs/results/diffusers_fid.json") for d in r["fid_diff"]]


LS = "docs/results/late_start.json"
LS28 = {"mnist": "docs/results/late_start_mnist.json", "fashion": "docs/results/late_start_fashion-mnist.json"}


def converged_at(t: float) -> float:
    sweep = curves()["converged_sweep"]
    return sweep["fid"][sweep["t"].index(t)]


def sweep_rows() -> list[dict]:
    return sorted(load("docs/results/n_sweep.json"), key=lambda r: r["n_train"])


def knees() -> dict:
    """{data set: {tolerance: knee}} of docs/results/fid_knee.json."""
    datasets = load("docs/results/fid_knee.json")["datasets"]
    return {n: {k["tolerance"]: k["knee"] for k in e["knees"]} for n, e in datasets.items()}


def knee_rows() -> list[dict]:
    """The 3-se knee of each data set with its se and the exact prediction it is compared with."""
    out = []
    for e in load("docs/results/fid_knee.json")["datasets"].values():
        k = next(k for k in e["knees"] if k["tolerance"] == "3se")
        out.append({"knee": k["knee"], "se": k["se"], "t_exact": e["predictions"]["t_exact"]})
    return out


def speciation() -> dict:
    return load("docs/results/speciation.json")


def net28(dataset: str) -> dict:
    """The row of the recipe's final network in docs/results/28x28/breaking_time.json."""
    return next(r for r in load("docs/results/28x28/breaking_time.json") if r["dataset"] == dataset)


def fashion_unmemorised() -> list[float]:
    """The drift breaking times of the Fashion-MNIST networks that do not memorise (copies < 0.5), every width."""
    rows = [r["t_measured"] for r in sweep_rows() if r["copy_share"] < 0.5]
    return rows + [r["t_c_measured"] for r in load("docs/results/28x28/breaking_networks.json")["rows"]
                   if r["dataset"] == "fashion-mnist"]  # fmt: skip


CLAIMS = [
    # the N sweep's method: the training lengths, the scan and the copies of its small-N rows
    Claim("docs/breaking_time.md",
          r"images\): ([\d,]+) steps for (\d+) and (\d+) images and ([\d,]+) for ([\d,]+), where",
          lambda: (sweep_rows()[0]["step"], sweep_rows()[0]["n_train"], sweep_rows()[1]["n_train"],
                   sweep_rows()[2]["step"], sweep_rows()[2]["n_train"])),
    Claim("docs/breaking_time.md", r"flow search \((\d+) starts, (\d+) times from ([\d.]+)\s+to\s+([\d.]+)\)",
          lambda: tuple(sweep_rows()[0]["search"][k] for k in ("n_starts", "n_grid", "t_max", "t_min"))),
    Claim("docs/breaking_time.md", r"counts the share of (\d+) DDPM-100\s+samples",
          lambda: (sweep_rows()[0]["n_samples"],)),
    Claim("docs/breaking_time.md", r"knee up by ([\d.]+) to ([\d.]+)\.",
          lambda: tuple(sorted(round(k["50%"] - k["3se"], 2) for k in knees().values()))),
    Claim("docs/breaking_time.md", r"the threshold\s+([\d.]+) is theirs", lambda: (speciation()["level"],)),
    # docs/appendix/which_breaking_time.md: the networks and the options of each measurement
    Claim("docs/appendix/which_breaking_time.md",
          r"digits\) at ([\d,]+) steps and Fashion-MNIST \(([\d,]+)\s+images\) at ([\d,]+) steps",
          lambda: (net28("mnist")["train_steps"], net28("fashion-mnist")["n_train"],
                   net28("fashion-mnist")["train_steps"])),
    Claim("docs/appendix/which_breaking_time.md", r"trained to ([\d,]+) steps",
          lambda: (next(r["step"] for r in load("docs/results/28x28/breaking_networks.json")["rows"]
                        if not r["net"]["attn"]),)),
    Claim("docs/appendix/which_breaking_time.md", r"\(`--classes 1 8`\), ([\d,]+) steps",
          lambda: (speciation()["network"]["train_step"],)),
    Claim("docs/appendix/which_breaking_time.md", r"(\d+) samples per start time",
          lambda: (load("docs/results/fid_knee.json")["options"]["n_samples"],)),
    Claim("docs/appendix/which_breaking_time.md", r"uses (\d+) noisy held-out test images at each of (\d+)\s+times",
          lambda: (load("docs/results/local_score.json")["options"]["n_images"],
                   len(load("docs/results/local_score.json")["options"]["times"]))),
    Claim("docs/appendix/which_breaking_time.md", r"more than a\s+(\d+)-image subset and beyond \$P = (\d+)\$",
          lambda: (load("docs/results/local_score.json")["options"]["n_els"],
                   load("docs/results/local_score.json")["options"]["els_max_patch"])),
    Claim("docs/appendix/which_breaking_time.md", r"With (\d+)\s+parents per branch time",
          lambda: (speciation()["network"]["n_parents"],)),
    # README: the results table
    Claim("README.md", r"\| ([\d.]+) against ([\d.]+) \(([\d.]+)%\) \|",
          lambda: (bt()["t_c_measured"], bt()["t_c_predicted"], 100 * bt()["relative_error"])),
    Claim("README.md", r"\| ([\d.]+) -> ([\d.]+) \(([\d.]+)x\) \|",
          lambda: (first()["ddim", 3, "vanilla", "none"]["fid"], first()["ddim", 3, "gls", "theory"]["fid"],
                   first()["ddim", 3, "vanilla", "none"]["fid"] / first()["ddim", 3, "gls", "theory"]["fid"])),
    Claim("README.md", r"\(([\d,]+) x (\d+)\), on 2 CPU cores \| a saddle-node at t = ([\d.]+), in ([\d,]+) s",
          lambda: (bench("fashion")["N"], bench("fashion")["d"], bench("fashion")["t_c"], bench("fashion")["seconds"])),
    Claim("README.md", r"with the defaults \((\d+) seeds on (\d+) times\)",
          lambda: (bench("fashion")["options"]["n_seeds"], bench("fashion")["options"]["n_grid"])),
    # the breaking time
    Claim("docs/breaking_time.md", r"all ([\d,]+) images, \$d = (\d+)\$", lambda: (bt()["n_train"], bt()["dim"])),
    Claim("docs/breaking_time.md",
          r"breaks at \*\*([\d.]+)\*\* against the exact prediction\s+\*\*([\d.]+)\*\*, a relative error of "
          r"\*\*([\d.]+)%\*\*",
          lambda: (bt()["t_c_measured"], bt()["t_c_predicted"], 100 * bt()["relative_error"])),
    Claim("docs/breaking_time.md", r"equal-norm closed form \(([\d.]+)\)", lambda: (bt()["t_c_equal_norm"],)),
    Claim("docs/breaking_time.md", r"\\ln\\Lambda\$ \(([\d.]+)\) is (\d+)% off",
          lambda: (bt()["t_c_biroli"], 100 * bt()["relative_error_biroli"])),
    Claim("docs/breaking_time.md", r"at \$t = ([\d.]+)\$ for the exact score and at \$t = ([\d.]+)\$ for\s+the network",
          lambda: (bt()["centre_softest_t_exact"], bt()["centre_softest_t_measured"])),
    Claim("docs/breaking_time.md", r"fold at \$t = ([\d.]+)\$", lambda: (bt()["centre_fold_t_exact"],)),
    Claim("docs/breaking_time.md", r"held-out accuracy ([\d.]+)\)", lambda: (bt()["classifier_accuracy"],)),
    Claim("docs/breaking_time.md", r"from chance \(([\d.]+)\) to 1 and crosses halfway at \$t = ([\d.]+)\$",
          lambda: (bt()["cloning_chance"], bt()["cloning_midpoint"])),
    Claim("docs/breaking_time.md", r"within ([\d.]+)% of the exact critical time",
          lambda: (100 * bt()["relative_error"],)),
    Claim("docs/breaking_time.md", r"MNIST network breaks ([\d.]+)% above the exact time,\s+the Fashion-MNIST one "
          r"([\d.]+)% below it", lambda: (gap28("mnist"), -gap28("fashion-mnist"))),
    Claim("docs/breaking_time.md", r"within\s+10% of the exact time for (\d) seeds of (\d), and for (\d) it does not",
          lambda: window_seeds()),
    Claim("docs/tutorials/digits_end_to_end.md",
          r"second attractor at ([\d.]+), within (\d+)% of the exact prediction ([\d.]+)",
          lambda: (bt()["t_c_measured"], 100 * bt()["relative_error"], bt()["t_c_predicted"])),
    Claim("docs/generated/tutorial_measure.md", r"\n\(([\d.]+), ([\d.]+), ([\d.]+), (\d+)\)",
          lambda: (bt()["t_c_measured"], *bt()["t_c_measured_bracket"], bt()["n_stable_below"])),
    Claim("docs/generated/tutorial_digits.md", r"\('saddle-node', ([\d.]+), ([\d.]+)\)\n>>> .*\n\(([\d.]+), ([\d.]+)\)",
          lambda: (bench("digits")["t_c"], bench("digits")["centre_t"], bench("digits")["basin_mass"],
                   bench("digits")["macroscopic_t"])),
    Claim("docs/generated/tutorial_1d.md", r"\('pitchfork', ([\d.]+), ([\d.]+)\)",
          lambda: (bench("paper")["t_c"], bench("paper")["theta_c"])),
    Claim("docs/generated/quickstart.md", r"\('pitchfork', ([\d.]+), ([\d.]+),",
          lambda: (bench("paper")["theta_c"], bench("paper")["t_c"])),
    Claim("docs/tutorials/first_critical_time.md", r"pitchfork at \$t_c = ([\d.]+)\$",
          lambda: (bench("paper")["t_c"],)),
    # the Gaussian late start
    Claim("docs/late_start.md", r"the ratios are \*\*([\d.]+)x\*\* at \$n = 3\$ and \*\*([\d.]+)x\*\* at\s+\$n = 5\$",
          lambda: (inception_ratio(3), inception_ratio(5))),
    Claim("docs/late_start.md",
          r"floor \(([\d.]+)\) subtracted from both, \*\*([\d.]+)x\*\* and \*\*([\d.]+)x\*\*, against the paper's\s+"
          r"([\d.]+)x and ([\d.]+)x",
          lambda: (f := curves()["summary"]["inception"]["fid_floor"], inception_ratio(3, f), inception_ratio(5, f),
                   curves()["summary"]["paper_ddim_ratios"]["3"], curves()["summary"]["paper_ddim_ratios"]["5"])),
    Claim("docs/late_start.md", r"FID ([\d.]+) at\s+\$t_\\text\{start\} = 1\$, ([\d.]+) at 0.40 and ([\d.]+) at 0.20",
          lambda: (converged_at(1.0), converged_at(0.4), converged_at(0.2))),
    Claim("docs/late_start.md",
          r"vanilla start reaches FID\s+\*\*([\d.]+)\*\*, gls at \$t_c\$ \*\*([\d.]+)\*\*, \$\\mathcal N\(0, I\)\$ at "
          r"\$t_c\$ ([\d.]+)",
          lambda: tuple(curves()["summary"]["converged"][k]["fid"] for k in ("vanilla", "gls", "late"))),
    Claim("docs/late_start.md", r"FID\(vanilla, \$n\$\) / ([\d.]+) bounds",
          lambda: (curves()["summary"]["converged"]["gls"]["fid"],)),
    Claim("docs/late_start.md", r"vanilla DDIM-10 \(([\d.]+)\) is within ([\d.]+)x of the converged model",
          lambda: (first()["ddim", 10, "vanilla", "none"]["fid"],
                   first()["ddim", 10, "vanilla", "none"]["fid"] / curves()["summary"]["converged"]["vanilla"]["fid"])),
    Claim("docs/late_start.md", r"10 steps from \$\\mathcal N\(0, I\)\$ reaches ([\d.]+)",
          lambda: (first()["dpm-solver++", 10, "vanilla", "none"]["fid"],)),
    Claim("docs/late_start.md", r"beats the best vanilla grid in\s+(\d) of (\d) MNIST cells and (\d) of (\d) "
          r"Fashion-MNIST cells",
          lambda: (sum(c["ratio"] > 1 for c in best_grid(LS28["mnist"])), len(best_grid(LS28["mnist"])),
                   sum(c["ratio"] > 1 for c in best_grid(LS28["fashion"])), len(best_grid(LS28["fashion"])))),
    Claim("docs/late_start.md", r"gls at \$t_c\$ gives ([\d.]+)x, ([\d.]+)x\s+and ([\d.]+)x at \$n = 3, 5, 10\$, "
          r"against the paper's ([\d.]+)x, ([\d.]+)x and ([\d.]+)x",
          lambda: (protocol_ratio(3), protocol_ratio(5), protocol_ratio(10),
                   *(curves()["summary"]["paper_ddim_ratios"][n] for n in ("3", "5", "10")))),
    Claim("docs/appendix/late_start_baselines.md",
          r"holds (\d+) digits rows: (\d) samplers on their grids, (\d+)\s+\(sampler, grid, \$n\$\) cells",
          lambda: (len(rows_by(LS, "digits")), len({k[0] for k in rows_by(LS, "digits")}),
                   len({k[:3] for k in rows_by(LS, "digits")}))),
    Claim("docs/appendix/late_start_baselines.md",
          r"differ by\s+([\d.]+)% in the median and by at most (\d+)%, either way \(gls better in (\d+) of (\d+) "
          r"cells\)",
          lambda: (100 * statistics.median(teleport_gap(LS, "digits")), 100 * max(teleport_gap(LS, "digits")),
                   sum(r > 1 for r in teleport_ratio(LS, "digits")), len(teleport_gap(LS, "digits")))),
    Claim("docs/appendix/late_start_baselines.md", r"sweep's best \$t_\\text\{start\}\$ in (\d+); elsewhere",
          lambda: (sum(sum(c["within"]) for c in best_grid(LS, "digits")),)),
    Claim("docs/appendix/late_start_baselines.md", r"(\d+) of the (\d+) \(sampler, \$n\$\) cells favour gls",
          lambda: (sum(c["ratio"] > 1 for c in best_grid(LS, "digits")), len(best_grid(LS, "digits")))),
    Claim("docs/appendix/late_start_baselines.md",
          r"at \$n = 3\$ it wins for every sampler \(([\d.]+)x to\s+([\d.]+)x\), at \$n = 5\$ for (\d) of (\d) "
          r"\(([\d.]+)x to ([\d.]+)x;",
          lambda: (min(c["ratio"] for c in best_grid(LS, "digits") if c["n"] == 3),
                   max(c["ratio"] for c in best_grid(LS, "digits") if c["n"] == 3),
                   sum(c["ratio"] > 1 for c in best_grid(LS, "digits") if c["n"] == 5),
                   sum(c["n"] == 5 for c in best_grid(LS, "digits")),
                   min(c["ratio"] for c in best_grid(LS, "digits") if c["n"] == 5 and c["ratio"] > 1),
                   max(c["ratio"] for c in best_grid(LS, "digits") if c["n"] == 5))),
    Claim("docs/appendix/late_start_baselines.md",
          r"over the (\d+) \(cell, seed\) pairs is \$([\d.]+) \\times 10\^\{-6\}\$, against a seed-to-seed spread of "
          r"([\d.]+) to ([\d.]+)",
          lambda: (len(fid_diffs()), 1e6 * max(fid_diffs()),
                   min(r["seed_range_ours"] for r in load("docs/results/diffusers_fid.json")),
                   max(r["seed_range_ours"] for r in load("docs/results/diffusers_fid.json")))),
    Claim("docs/appendix/late_start_28.md",
          r"Teleport and gls at \$t_c\$ differ by ([\d.]+)% in the median and at most (\d+)%.*?as on\s+the digits "
          r"\(([\d.]+)% and (\d+)%\)",
          lambda: (100 * statistics.median(teleport_gap(LS28["mnist"])), 100 * max(teleport_gap(LS28["mnist"])),
                   100 * statistics.median(teleport_gap(LS, "digits")), 100 * max(teleport_gap(LS, "digits")))),
    Claim("docs/appendix/late_start_28.md",
          r"worse than gls in all (\d+) cells of this table \(([\d.]+)% in the median, up to ([\d.]+)x",
          lambda: (len(teleport_gap(LS28["fashion"])), 100 * statistics.median(teleport_gap(LS28["fashion"])),
                   max(teleport_ratio(LS28["fashion"])))),
    Claim("docs/appendix/late_start_28.md",
          r"beats the best vanilla grid in (\d) of the (\d) \(sampler, \$n\$\) cells, by ([\d.]+)x to ([\d.]+)x",
          lambda: (sum(c["ratio"] > 1 for c in best_grid(LS28["mnist"])), len(best_grid(LS28["mnist"])),
                   min(c["ratio"] for c in best_grid(LS28["mnist"]) if c["ratio"] > 1),
                   max(c["ratio"] for c in best_grid(LS28["mnist"])))),
    Claim("docs/appendix/late_start_28.md", r"beats the best vanilla grid in all (\d) cells, by ([\d.]+)x to ([\d.]+)x",
          lambda: (len(best_grid(LS28["fashion"])), min(c["ratio"] for c in best_grid(LS28["fashion"])),
                   max(c["ratio"] for c in best_grid(LS28["fashion"])))),
    Claim("docs/appendix/late_start_28.md", r"scores within 10% of the sweep's best in (\d+) of the (\d+) \(sampler, "
          r"grid, \$n\$\)\s+cells",
          lambda: (sum(sum(c["within"]) for c in best_grid(LS28["mnist"])),
                   sum(len(c["within"]) for c in best_grid(LS28["mnist"])))),
    Claim("docs/appendix/late_start_28.md",
          r"costs ([\d.]+)-([\d.]+)x there \(within 10% in (\d) of (\d) cells\)",
          lambda: (min(rule_ratios_at(10)), max(rule_ratios_at(10)), sum(r <= 1.1 for r in rule_ratios_at(10)),
                   len(rule_ratios_at(10)))),
    Claim("docs/appendix/late_start_28.md",
          r"\*\*Fashion-MNIST (\d+) of (\d+)\*\* \(the rule \$t_c\$: also (\d+)\), \*\*MNIST (\d+) of (\d+)\*\* "
          r"\(\$t_c\$: (\d+)\)",
          lambda: (rule("fashion-mnist")["comparison"]["within_10pct"], rule("fashion-mnist")["comparison"]["compared"],
                   sum(sum(c["within"]) for c in best_grid(LS28["fashion"])),
                   rule("mnist")["comparison"]["within_10pct"], rule("mnist")["comparison"]["compared"],
                   sum(sum(c["within"]) for c in best_grid(LS28["mnist"])))),
    Claim("docs/appendix/late_start_28.md", r"on MNIST the two are equal \(([\d.]+) and ([\d.]+)\)",
          lambda: (seeds("mnist", "dpm-solver++", "gls")["mean"],
                   seeds("mnist", "dpm-solver++", "gls-analytic")["mean"])),
    # the CPU recipe
    Claim("docs/cpu_recipe.md", r"attention at 7x7: ([\d,]+) parameters", lambda: (steps("ch16-b1")["params"],)),
    Claim("docs/appendix/cpu_recipe_choice.md", r"Two threads were ([\d.]+)x \(ref\) and ([\d.]+)x \(ch32-b1\)",
          lambda: (steps("ref-2threads")["vs_ref"],
                   steps("ch32-b1-2threads")["s_per_step"] / steps("ch32-b1")["s_per_step"])),
    Claim("docs/appendix/cpu_recipe_choice.md", r"bf16 autocast was ([\d.]+)x slower\*\* \(ch32-b1\)",
          lambda: (steps("ch32-b1-bf16")["s_per_step"] / steps("ch32-b1")["s_per_step"],)),
    Claim("docs/appendix/cpu_recipe_choice.md", r"\(([\d.]+) at the size of `ref`, ([\d.]+) against ([\d.]+) at one",
          lambda: (steps("diffusers-ref")["vs_ref"], steps("diffusers-b1")["vs_ref"], steps("ch32-b1")["vs_ref"])),
    Claim("docs/appendix/cpu_recipe_choice.md", r"\(ch16-b1 ([\d.]+) against ch32-b1 ([\d.]+)\)",
          lambda: (steps("ch16-b1")["vs_ref"], steps("ch32-b1")["vs_ref"])),
    Claim("docs/appendix/cpu_recipe_choice.md",
          r"gave ([\d.]+) against ([\d.]+) at two blocks but ([\d.]+) against ([\d.]+) at one",
          lambda: (steps("ch32-b2-noattn")["vs_ref"], steps("ref")["vs_ref"], steps("ch32-b1-noattn")["vs_ref"],
                   steps("ch32-b1")["vs_ref"])),
    Claim("docs/appendix/cpu_recipe_choice.md", r"\(mult \(1, 2, 4\), ([\d.]+)x the parameters\) cost ([\d.]+) against "
          r"([\d.]+)",
          lambda: (steps("ch32-b1-mult124")["params"] / steps("ch32-b1")["params"], steps("ch32-b1-mult124")["vs_ref"],
                   steps("ch32-b1")["vs_ref"])),
    Claim("docs/appendix/cpu_recipe_choice.md", r"channels_last\*\* was ([\d.]+) against ([\d.]+)",
          lambda: (steps("ch32-b1-channels_last")["vs_ref"], steps("ch32-b1")["vs_ref"])),
    Claim("docs/appendix/cpu_recipe_choice.md", r"`ch16-b1` \(([\d.]+) of `ref`\)",
          lambda: (steps("ch16-b1")["vs_ref"],)),
    # memorisation
    Claim("docs/memorisation.md", r"one attractor per training image \((\d+) at\s+\$t \\le ([\d.]+)\$\)",
          lambda: (scan(64, "network_scan", 0.1, "n_attractors"), 0.1)),
    Claim("docs/memorisation.md", r"; (\d+)% of its samples are\s+copies \(the exact score",
          lambda: (100 * memo(64)["copy_fraction"],)),
    Claim("docs/memorisation.md", r"owns an attractor up to \$t = ([\d.]+)\$\s+\(the 1/3 rule on the grid; the exact "
          r"collapse time, by continuation, is ([\d.]+)\)",
          lambda: (memo(64)["t_exact_same_rule"], memo(64)["t_collapse_exact"])),
    Claim("docs/memorisation.md", r"complete ownership only at \$t = ([\d.]+)\$ to \$([\d.]+)\$",
          lambda: tuple(memo(64)["t_measured_bracket"])),
    Claim("docs/memorisation.md", r"\((\d+) at\s+\$t = 0.3\$ against the exact (\d+)\)",
          lambda: (scan(64, "network_scan", 0.3, "n_attractors"), scan(64, "exact_scan", 0.3, "n_attractors"))),
    Claim("docs/memorisation.md",
          r"\(N = 64: ([\d.]+) by the excess entropy, ([\d.]+) by the Gaussian form; N = 256:\s+([\d.]+) and "
          r"([\d.]+)\)",
          lambda: (memo(64)["t_C_biroli_entropy"], memo(64)["t_C_biroli_gaussian"], memo(256)["t_C_biroli_entropy"],
                   memo(256)["t_C_biroli_gaussian"])),
    Claim("docs/memorisation.md", r"exact finite-set value \(([\d.]+), ([\d.]+)\)",
          lambda: (memo(64)["t_collapse_exact"], memo(256)["t_collapse_exact"])),
    Claim("docs/memorisation.md", r"collapses at\s+\$t = ([\d.]+)\$ \(every image owns an attractor below it, (\d+) of "
          r"(\d+) at \$t = 0.175\$\)",
          lambda: (memo(256)["t_collapse_exact"], scan(256, "exact_scan", 0.175, "n_owned"), 256)),
    Claim("docs/memorisation.md", r"it has (\d+) attractors and (\d+) owned images, and only (\d+)% of its samples",
          lambda: (scan(256, "network_scan", 0.05, "n_attractors"), scan(256, "network_scan", 0.05, "n_owned"),
                   100 * memo(256)["copy_fraction"])),
    Claim("docs/memorisation.md", r"already at \$t = 0.1\$ \((\d+) against (\d+)\)",
          lambda: (scan(256, "network_scan", 0.1, "n_attractors"), 256)),
    # benchmarks
    Claim("docs/benchmarks.md", r"([\d.]+) s and ([\d.]+) s for the same 1,000 images at \$d = 784\$",
          lambda: (bench("scaling")["vs_N"][0]["unit_seconds"], bench("scaling")["vs_d"][-1]["unit_seconds"])),
    Claim("docs/benchmarks.md", r"and ([\d.]+) s for 2,000 images where proportionality gives about ([\d.]+) s",
          lambda: (bench("scaling")["vs_N"][1]["unit_seconds"], 2 * bench("scaling")["vs_N"][0]["unit_seconds"])),
    Claim("docs/benchmarks.md", r"\(exponent ([\d.]+): products.*?\(exponent ([\d.]+)\)",
          lambda: (bench("scaling")["fit"]["N_exponent_seconds"], bench("scaling")["fit"]["d_exponent_seconds"])),
    Claim("docs/benchmarks.md",
          r"([\d,]+) s, (\d+) units \(one unit, a dense Hessian of the whole set, took ([\d.]+) s in that\s+run\); a "
          r"saddle-node at \$t_c = ([\d.]+)\$ \(\$\\theta_c = ([\d.]+)\$\) whose new attractor holds\s+\$([\d.]+) \\pm "
          r"([\d.]+)\$",
          lambda: (b := bench("fashion"), b["seconds"], b["units"], b["unit_seconds"], b["t_c"], b["theta_c"],
                   b["basin_mass"], b["basin_mass_se"])[1:]),
    Claim("docs/engine.md", r"the same first bifurcation, \$t_c = ([\d.]+)\$, to the last digit",
          lambda: (bench("mnist")["t_c"],)),
    Claim("docs/benchmarks.md", r"the macroscopic breaking time is \$t = ([\d.]+)\$, where\s+\$m = ([\d.]+)\$",
          lambda: (bench("fashion")["macroscopic_t"], bench("fashion")["macroscopic_m"])),
    Claim("docs/benchmarks.md", r"The scan \((\d+) units\), the centre branch\s+carried down to where it ends "
          r"\((\d+)\) and the births \((\d+)\) cost most here",
          lambda: tuple(bench("fashion")["phases"][k]["units"] for k in ("scan", "centre", "births"))),
    Claim("docs/benchmarks.md", r"The unit is itself noisy on a shared machine \(([\d.]+) s in this run",
          lambda: (bench("mnist")["unit_seconds"],)),
    Claim("docs/benchmarks.md",
          r"The table \"Where the\s+time goes\" above splits the ([\d,]+) by phase: the births carried "
          r"up \((\d+)\), the macroscopic search \((\d+): .*?\), the scan \((\d+)\) and the "
          r"centre branch \((\d+)\)",
          lambda: (b := bench("mnist"), b["units"], *(b["phases"][k]["units"] for k in ("births", "macroscopic", "scan",
                                                                                       "centre")))[1:]),
    Claim("docs/benchmarks.md",
          r"\(256 seeds on 64 times; `python\s+benchmarks/critical_time.py --only mnist`\): ([\d,]+) s, "
          r"([\d,]+) units, a saddle-node at \$t_c = ([\d.]+)\$",
          lambda: (bench("mnist")["seconds"], bench("mnist")["units"], bench("mnist")["t_c"])),
    Claim("docs/benchmarks.md", r"has left the centre, is\s+\$t = ([\d.]+)\$",
          lambda: (bench("mnist")["macroscopic_t"],)),
    Claim("docs/benchmarks.md", r"\((\d+) seeds on (\d+) times; `python",
          lambda: (bench("mnist")["options"]["n_seeds"], bench("mnist")["options"]["n_grid"])),
    Claim("docs/benchmarks.md",
          r"([\d,]+) draws of the 10-component mixture in \$d = ([\d{},]+)\$ .*?, ([\d,]+) s, (\d+) units \(one "
          r"unit ([\d.]+) s\), a saddle-node at \$t_c = ([\d.]+)\$\s+holding \$([\d.]+) \\pm ([\d.]+)\$ one cell "
          r"below its birth; the macroscopic breaking time is \$t = ([\d.]+)\$ and the\s+centre loses stability at "
          r"\$t = ([\d.]+)\$",
          lambda: (b := bench("synthetic"), b["N"], b["d"], b["seconds"], b["units"], b["unit_seconds"], b["t_c"],
                   b["basin_mass"], b["basin_mass_se"], b["macroscopic_t"], b["centre_t"])[1:]),
    Claim("docs/benchmarks.md", r"one\s+unit is (\d+) s of the two cores. The births \((\d+) units\), the "
          r"scan \((\d+)\) and the centre branch \((\d+)\) cost most; the\s+macroscopic search, one descent of the "
          r"draws just below \$t_c\$, takes (\d+)",
          lambda: (b := bench("synthetic"), b["unit_seconds"],
                   *(b["phases"][k]["units"] for k in ("births", "scan", "centre", "macroscopic")))[1:]),
    Claim("docs/benchmarks.md",
          r"`--only tree`\): (\d+) s; at the\s+grid time \$t = ([\d.]+)\$ the attractors found would make more than "
          r"`max_nodes = (\d+)` nodes, so the scan ends at\s+the grid time above, \$t = ([\d.]+)\$, with the exact "
          r"tree down to there: (\d+) nodes, the first birth at\s+\$t = ([\d.]+)\$",
          lambda: (b := bench("tree"), b["seconds"], float(b["truncated"].split("by t=")[1].split(":")[0]),
                   int(b["truncated"].split("max_nodes=")[1].split()[0]), b["t_min"], b["n_nodes"],
                   b["first_birth"])[1:]),
    Claim("docs/engine.md", r"on MNIST the centre folds at \$t = ([\d.]+)\$",
          lambda: (bench("mnist")["centre_t"],)),
    Claim("docs/engine.md", r"on the 8x8 digits \$m\$ falls to about\s+([\d.]+) just below \$t_c\$",
          lambda: (bench("digits")["macroscopic_m"],)),
    Claim("docs/engine.md", r"whose new attractor holds (\d+)% of the draws, this\s+one descent",
          lambda: (100 * bench("fashion")["basin_mass"],)),
    Claim("docs/engine.md", r"carried to \$t_\{\\min\}\$: (\d+) s of the search",
          lambda: (bench("fashion")["phases"]["centre"]["seconds"],)),
    Claim("docs/tree.md", r"all 1,797 digits the defaults stop at \$t = ([\d.]+)\$ with (\d+) nodes, in (\d+) s",
          lambda: (bench("tree")["t_min"], bench("tree")["n_nodes"], bench("tree")["seconds"])),
    Claim("docs/appendix/breaking_time_28.md",
          r"`critical_time`'s defaults\) is a saddle-node at \$t_c = ([\d.]+)\$ whose\s+new attractor holds "
          r"\$([\d.]+) \\pm ([\d.]+)\$",
          lambda: (b := bench("fashion-1-8"), b["t_c"], b["basin_mass"], b["basin_mass_se"])[1:]),
    Claim("docs/appendix/breaking_time_28.md",
          r"lies \$(\d) \\times 10\^\{-5\}\$ below it \(the order parameter \$m = ([\d.]+)\$",
          lambda: (b := bench("fashion-1-8"), 1e5 * (b["t_c"] - b["macroscopic_t"]), b["macroscopic_m"])[1:]),
    Claim("docs/appendix/breaking_time_28.md", r"exact\s+new attractor holds ([\d.]+) of the mass one grid cell below",
          lambda: (bench("fashion")["basin_mass"],)),
    Claim("docs/appendix/breaking_time_28.md", r"holds ([\d.]+) of the mass\s+one grid cell below \$t_c\$ \(ten "
          r"classes\) and ([\d.]+) \(two classes\)",
          lambda: (bench("fashion")["basin_mass"], bench("fashion-1-8")["basin_mass"])),
    Claim("docs/appendix/breaking_time_28.md", r"--only fashion-1-8   # the exact prediction \((\d+) s\)",
          lambda: (bench("fashion-1-8")["seconds"],)),
]  # fmt: skip

FACTS = {
    # docs/breaking_time.md, which breaking time in words
    "breaking_time.md: every N-sweep network breaks below its exact t_c; the memorising one comes closest": lambda: (
        all(r["t_measured"] < r["t_exact"] for r in sweep_rows())
        and min(sweep_rows(), key=lambda r: abs(r["relative_gap"]))["copy_share"] > 0.5
    ),
    "breaking_time.md: the FID knee (3 se) lies within one se of the exact first bifurcation on both sets": lambda: all(
        abs(e["knee"] - e["t_exact"]) < e["se"] for e in knee_rows()
    ),
    "breaking_time.md: the MNIST drift breaks above t_c, the non-memorising Fashion-MNIST ones far below": lambda: (
        net28("mnist")["t_c_measured"] > net28("mnist")["t_c_predicted"]
        and all(
            r["t_c_measured"] > r["t_c_predicted"]
            for r in load("docs/results/28x28/breaking_networks.json")["rows"]
            if r["dataset"] == "mnist"
        )  # fmt: skip
        and all(t < 0.75 * net28("fashion-mnist")["t_c_predicted"] for t in fashion_unmemorised())
    ),
    "breaking_time.md: measured/theory speciation ratio as Biroli et al.'s (OU time, within 0.01); the exact cloning "
    "time within 0.02 of theory and measurement": lambda: (
        (r := speciation()["ratios"])
        and abs(r["measured_over_theory_ou"] - r["published_measured_over_theory_ou"]) < 0.01
        and abs(speciation()["exact"]["t_S_posterior"] - speciation()["theory"]["t_S"]) < 0.02
        and abs(speciation()["exact"]["t_S_posterior"] - speciation()["network"]["t_S"]) < 0.02
        and speciation()["network"]["t_S"] < speciation()["theory"]["t_S"]
    ),
    "breaking_time.md: the calibrated patch is the whole image from the middle of the range up, for both networks; "
    "ELS on 64 images fits worse than LS on all": lambda: all(
        all((r["patch"] == 55) == (r["t"] > 0.5) for r in n["rows"])
        and n["r2_median_overall"]["els_subset"] < n["r2_median_overall"]["ls"]
        for n in load("docs/results/local_score.json")["networks"].values()
    ),
    "breaking_time.md: the LS machine on the 64-image subset breaks at the exact first bifurcation (1e-3)": lambda: (
        abs((b := load("docs/results/local_score.json")["breaking_time"])["t_measured"] - sweep_rows()[0]["t_exact"])
        < 1e-3
        and b["n_train"] == sweep_rows()[0]["n_train"]
    ),
    # docs/late_start.md, in words
    "late_start.md: gls at t_c never loses to the vanilla start at n <= 5 (each sampler's first grid)": lambda: all(
        first()[s, n, "vanilla", "none"]["fid"] > first()[s, n, "gls", "theory"]["fid"]
        for s, n, *_ in first()
        if n <= 5
    ),
    "late_start.md: at n = 3 gls at t_c beats the vanilla start in FID and KID for every sampler": lambda: all(
        first()[s, 3, "vanilla", "none"][m] > first()[s, 3, "gls", "theory"][m]
        for s in {k[0] for k in first()}
        for m in ("fid", "kid")
    ),
    "late_start.md: the knee's FID is worse than the best's in every row": lambda: all(
        first()[s, n, "gls", "sweep-knee"]["fid"] > first()[s, n, "gls", "sweep-best"]["fid"] for s, n, *_ in first()
    ),
    "late_start.md: against the best grid gls wins at n = 3 for every sampler and loses at n = 10 for most": lambda: (
        all(c["ratio"] > 1 for c in best_grid(LS, "digits") if c["n"] == 3)
        and sum(c["ratio"] < 1 for c in best_grid(LS, "digits") if c["n"] == 10) > 3.5
    ),
    "late_start.md: in Inception FID at N = 1,000 gls at t_c wins every cell": lambda: all(
        sum(c["fid_inception"]) < sum(v["fid_inception"])
        for name in ("mnist", "fashion-mnist")
        for cells in [load(f"docs/results/28x28-samplers/inception_{name}.json")["cells"]]
        for c in cells
        if c["init"] == "gls"
        for v in cells
        if v["init"] == "vanilla" and (v["sampler"], v["grid"], v["n_steps"]) == (c["sampler"], c["grid"], c["n_steps"])
    ),
}


@pytest.mark.parametrize("claim", CLAIMS, ids=str)
def test_number_on_page_is_its_result_file(claim):
    text = (ROOT / claim.page).read_text()
    found = re.findall(claim.pattern, text, re.S)
    assert found, f"{claim.page}: no sentence matches {claim.pattern!r} (the page changed: update the claim)"
    expected = claim.expected()
    for match in found:
        written = (match,) if isinstance(match, str) else match
        assert len(written) == len(expected), (written, expected)
        wrong = [(w, e) for w, e in zip(written, expected, strict=True) if not _shown(float(e), w)]
        assert not wrong, f"{claim.page}: written {written}, the result files give {expected}"


@pytest.mark.parametrize("fact", FACTS)
def test_statement_on_page_holds_in_its_result_file(fact):
    assert FACTS[fact](), fact
