r"""Chosen late-start cells scored at several seeds: FID (project classifier) per (sampler, grid, n), init and seed.

    OMP_NUM_THREADS=1 python -m empirical late-start-cells --dataset fashion-mnist \
        --model docs/results/fashion-mnist/fashion-mnist_denoiser.pt --prediction benchmarks/results.json:fashion \
        --samplers dpm-solver++ ddim --grids uniform --n-steps 5 --inits gls gls-analytic teleport \
        --seeds 1 2 3 --t-start tc --n-samples 500 --classifier-steps 500 \
        --table docs/results/late_start_fashion-mnist.json --out docs/results/late_start_cells_fashion-mnist.json

It measures what one table row of ``empirical.pipelines.late_start.pipeline`` cannot: the seed noise of a cell (its FID
at several sampling seeds: mean and std, ddof = 1), and the start time chosen by ``empirical.sampling.start_rule``. The
stages are ``empirical.pipelines.late_start.pipeline``'s (``stages.load_data``, ``known_prediction``/``predict``,
``denoiser``, ``classifier``; ``stages_late_start.Scorer`` and ``Drawer``), with the same classifier
(``classifier_steps``, ``seed``), so the cell at the table's seed (``seed`` + 1) and N reproduces the table row's FID.
``--t-start`` takes numbers in (T_MIN, T], "tc" (the exact critical time of the training set) or "rule"
(``start_rule.rule_t_start``, calibrated on ``--calibration``, the digits' sweep curves); each is a cell of its own.
``--table`` (a late_start curves file of the same data) adds to each gls cell the table's gls rows (theory and
sweep-best) and teleport row, and to the output whether the table's rows are reproduced and how many cells lie within
10% of the sweep's best at the table's seed. ``--inception-n N`` also scores the first N samples of every draw with the
Inception FID against N training images (``stages.inception_split_reference``: the output's "inception" holds the
finite-N floor, a disjoint subset's FID). The output (``--out``, default ``<results>/late_start_cells_<dataset>.json``)
is written atomically after each cell, with "complete": false until the last; the same command after a kill resumes from
the cells written.

Cost on the committed 28x28 UNets (one thread of a busy 2-core CPU, N = 500): 2.4 s per denoiser evaluation, plus
the Gaussian's fit (gls ~9 s, gls-analytic and teleport ~4-5 s on Fashion-MNIST's 60,000 images) per draw, plus the
classifier (72 s MNIST, 124-198 s Fashion-MNIST); the command above took 532 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from empirical._util.cli import dataclass_parser, is_int, is_real
from empirical._util.files import OutputInUse, check_output_file, locked
from empirical._util.results import write_json_atomic
from empirical._util.stopwatch import Stopwatch
from empirical.metrics.scores import fid, inception_features
from empirical.models.denoiser import T_MIN
from empirical.pipelines import stages
from empirical.pipelines.config import PipelineConfig, pipeline_config
from empirical.pipelines.late_start import stages as stage
from empirical.pipelines.late_start.plots import WITHIN
from empirical.sampling.grids import GRIDS
from empirical.sampling.samplers import INITS, nfe
from empirical.sampling.start_rule import load_calibration, packaged_calibration, rule_t_start

__all__ = ["Config", "resolve_t_start", "score_cells", "compare_with_table", "ratio_table", "run", "main"]

T_SPECS = ("tc", "rule")


@dataclasses.dataclass
class Config(PipelineConfig):
    """The denoiser's and data's fields (``PipelineConfig``), the cells (samplers x grids x n_steps), the inits,
    sampling seeds and start times to score them at, and the classifier's steps (its seed is ``seed``)."""

    samplers: tuple[str, ...] = ("ddim", "dpm-solver++")
    grids: tuple[str, ...] = ("uniform",)
    n_steps: tuple[int, ...] = (5, 10)
    inits: tuple[str, ...] = ("gls", "gls-analytic", "teleport")
    seeds: tuple[int, ...] = (1, 2, 3)
    t_start: tuple[str, ...] = ("tc",)  # numbers in (T_MIN, T], "tc" or "rule"
    n_samples: int = 500
    classifier_steps: int = 500
    kid_subsets: int = 20
    inception_n: int = 0  # Inception FID of each cell's first inception_n samples (0: skip; N >= 1000 to compare)
    eta: float = 1.0  # the eta family's member of the critical time (1: the reverse SDE, the tables')
    calibration: str | None = None  # the rule's source: a late_start curves file (None: the packaged digits one)
    table: str | None = None  # a late_start curves file of the same data to compare with
    out: str | None = None  # the output file (omit: <results>/late_start_cells_<dataset>.json)
    threads: int = 1

    def __post_init__(self):
        super().__post_init__()
        for name in ("samplers", "grids", "n_steps", "inits", "seeds", "t_start"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        for name, allowed in (("samplers", tuple(stage.ALL_TABLE_SAMPLERS)), ("grids", GRIDS), ("inits", INITS)):
            value = getattr(self, name)
            if not value or any(v not in allowed for v in value) or len(set(value)) < len(value):
                raise ValueError(f"{name} must be a non-empty subset of {allowed} (no repeats); got {value!r}")
        if not self.n_steps or not all(is_int(n) and n >= 2 for n in self.n_steps):
            raise ValueError(f"n_steps must be a non-empty tuple of ints >= 2; got {self.n_steps!r}")
        if (
            not self.seeds
            or not all(is_int(s) and s >= 0 for s in self.seeds)
            or len(set(self.seeds)) < len(self.seeds)
        ):
            raise ValueError(f"seeds must be a non-empty tuple of distinct ints >= 0; got {self.seeds!r}")
        if not self.t_start or len(set(self.t_start)) < len(self.t_start):
            raise ValueError(f"t_start must be a non-empty tuple of distinct specs; got {self.t_start!r}")
        for spec in self.t_start:
            _check_spec(spec)
        for name in ("n_samples", "classifier_steps", "kid_subsets"):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an int >= 1; got {getattr(self, name)!r}")
        if self.n_samples < 10:
            raise ValueError(f"n_samples must be >= 10 (FID needs a covariance); got {self.n_samples}")
        if not (is_int(self.inception_n) and (self.inception_n == 0 or 10 <= self.inception_n <= self.n_samples)):
            raise ValueError(f"inception_n must be 0 (skip) or an int in [10, n_samples={self.n_samples}]; got "
                             f"{self.inception_n!r}")  # fmt: skip
        if not (is_real(self.eta) and 0 < self.eta < math.inf):
            raise ValueError(f"eta must be a finite number > 0 (stages.predict); got {self.eta!r}")
        if not (is_int(self.threads) and self.threads >= 0):
            raise ValueError(f"threads must be an int >= 0 (0: torch's default); got {self.threads!r}")

    def out_path(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return Path("results" if self.results is None else self.results) / f"late_start_cells_{self.dataset}.json"


def _check_spec(spec) -> None:
    """A t_start spec is "tc", "rule" or a number in (T_MIN, 1] (the VP schedules' T)."""
    if spec in T_SPECS:
        return
    try:
        value = float(spec)
    except (TypeError, ValueError):
        value = None
    if value is None or not T_MIN < value <= 1.0:
        raise ValueError(f"t_start must be 'tc', 'rule' or a number in ({T_MIN}, 1]; got {spec!r}")


def resolve_t_start(spec: str, n_steps: int, t_c: float, schedule, calibration: dict | None) -> float:
    """The start time of a spec: t_c for "tc", the rule's t_start(n) for "rule" (``calibration["by_n"]``), else
    the number."""
    _check_spec(spec)
    if spec == "tc":
        return float(t_c)
    if spec == "rule":
        return rule_t_start(n_steps, t_c, schedule, calibration["by_n"])
    return float(spec)


def score_cells(draw, scorer, cfg, t_c: float, calibration: dict | None, inception=None, done=(), on_cell=None):
    """One entry per (sampler, grid, n, t_start spec, init): the FID at every seed (``draw``: a
    ``stages_late_start.Drawer``; ``scorer``: a ``Scorer``), their mean and std (ddof = 1; None for one seed), and
    with ``inception`` (samples -> Inception FID) that FID at every seed. The seeds that entries of ``done`` (an
    earlier run's, maybe at other seeds) already scored are kept instead of drawn again; ``on_cell(cells)`` is
    called after each entry (to write them)."""
    done, out = {_cell_key(c): c for c in done}, []
    for sampler, grid, n, spec in itertools.product(cfg.samplers, cfg.grids, cfg.n_steps, cfg.t_start):
        t_start = resolve_t_start(spec, n, t_c, draw.den.schedule, calibration)
        for init in cfg.inits:
            t = draw.den.schedule.T if init == "vanilla" else t_start
            cell = {"sampler": sampler, "grid": grid, "n_steps": n, "nfe": nfe(stage.ALL_TABLE_SAMPLERS[sampler], n),
                    "init": init, "t_start_spec": "none" if init == "vanilla" else spec, "t_start": float(t),
                    "seeds": list(cfg.seeds), "n_samples": cfg.n_samples}  # fmt: skip
            scored = _scored_seeds(done.get(_cell_key(cell)))
            fids, inc = [], []
            for seed in cfg.seeds:
                if seed not in scored:
                    x = draw(sampler, n, init, t, cfg.n_samples, seed, grid)
                    scored[seed] = (scorer.fid(x), None if inception is None else inception(x))
                fids.append(scored[seed][0])
                inc.append(scored[seed][1])
                draw.bar.update(1)
            cell |= {"fid": fids, "mean": float(np.mean(fids)),
                     "std": float(np.std(fids, ddof=1)) if len(fids) > 1 else None}  # fmt: skip
            if inception is not None:
                cell["fid_inception"] = inc
            out.append(cell)
            if on_cell is not None:
                on_cell(out)
    return out


def _scored_seeds(cell: dict | None) -> dict:
    """{seed: (FID, Inception FID or None)} of an earlier run's cell."""
    if cell is None:
        return {}
    inc = cell.get("fid_inception") or [None] * len(cell["seeds"])
    return {s: (f, i) for s, f, i in zip(cell["seeds"], cell["fid"], inc, strict=True)}


def _cell_key(c: dict) -> tuple:
    return c["sampler"], c["grid"], c["n_steps"], c["init"], c["t_start_spec"], c["t_start"], c["n_samples"]


def compare_with_table(cells: list[dict], table_rows: list[dict]) -> dict:
    """Adds to each gls cell the table's FIDs of the same (sampler, grid, n) at the table's seed and N ("table":
    gls theory and sweep-best, teleport theory; "fid_at_table_seed"; "within_10pct" of the sweep-best row), and
    returns {reproduced: [...], within_10pct: count, compared: count} (reproduced: the cells at t_c and the table's
    seed whose FID equals the table row's, as [sampler, grid, n, init, equal])."""
    rows = {(r["sampler"], r.get("grid", "uniform"), r["n_steps"], r["init"], r["t_start_rule"]): r for r in table_rows}
    reproduced, within, compared = [], 0, 0

    def at_table_seed(c, row):  # the cell's FID at the row's seed and N, or None
        ok = row is not None and row["seed"] in c["seeds"] and row["n_samples"] == c["n_samples"]
        return c["fid"][c["seeds"].index(row["seed"])] if ok else None

    for c in cells:
        key = (c["sampler"], c["grid"], c["n_steps"])
        theory, best = rows.get((*key, c["init"], "theory")), rows.get((*key, "gls", "sweep-best"))
        fid = at_table_seed(c, theory)
        if fid is not None and c["t_start_spec"] == "tc" and theory["t_start"] == c["t_start"]:
            reproduced.append([*key, c["init"], fid == theory["fid"]])
        fid = at_table_seed(c, best)
        if c["init"] != "gls" or fid is None:
            continue
        tele = rows.get((*key, "teleport", "theory"))
        c["table"] = {"seed": best["seed"], "gls_sweep_best": best["fid"], "gls_sweep_best_t": best["t_start"],
                      "gls_theory": None if theory is None else theory["fid"],
                      "teleport_theory": None if tele is None else tele["fid"]}  # fmt: skip
        c["fid_at_table_seed"], c["within_10pct"] = fid, bool(fid <= WITHIN * best["fid"])
        within, compared = within + c["within_10pct"], compared + 1
    return {"reproduced": reproduced, "within_10pct": within, "compared": compared}


def ratio_table(cells: list[dict]) -> str:
    """A markdown row per (sampler, grid, n, t_start spec) with a vanilla cell and a late-start one: the mean FID of
    both (project classifier, and Inception where scored) and vanilla / late start (> 1: the late start helps)."""
    vanilla = {(c["sampler"], c["grid"], c["n_steps"]): c for c in cells if c["init"] == "vanilla"}
    inc = any("fid_inception" in c for c in cells)
    out = [
        "| sampler | grid | n | init (t_start) | vanilla | late start | ratio |"
        + (" vanilla, Inception | late start, Inception | ratio |" if inc else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|---|" if inc else ""),
    ]
    for c in cells:
        v = vanilla.get((c["sampler"], c["grid"], c["n_steps"]))
        if c["init"] == "vanilla" or v is None:
            continue
        row = f"| {c['sampler']} | {c['grid']} | {c['n_steps']} | {c['init']} ({c['t_start']:.4g}) "
        row += f"| {v['mean']:.2f} | {c['mean']:.2f} | {v['mean'] / c['mean']:.2f}x |"
        if inc:
            vi, ci = float(np.mean(v["fid_inception"])), float(np.mean(c["fid_inception"]))
            row += f" {vi:.2f} | {ci:.2f} | {vi / ci:.2f}x |"
        out.append(row)
    return "\n".join(out)


# --- the pipeline ---------------------------------------------------------------------------------
def run(cfg: Config, command: str) -> dict:
    """Score the cells of ``cfg`` with the late-start stages; returns the output (also written to ``out_path``
    after each cell, with "complete": false until the last; a run of the same config resumes from it)."""
    clock = Stopwatch()
    done = _resumable(cfg)
    table = None if cfg.table is None else json.loads(Path(cfg.table).read_text())
    x_train = (ds := stages.load_data(cfg)).x
    known = stages.known_prediction(cfg, x_train)
    model = stages.denoiser(cfg, x_train.shape[1])
    den = model.denoiser
    calibration = None
    if "rule" in cfg.t_start:
        calibration = (
            packaged_calibration() if cfg.calibration is None else load_calibration(cfg.calibration, den.schedule)
        )
    with clock("predict"):
        pred = stages.predict(x_train, cfg.eta, den.schedule, known)
    t_c = float(pred["t_c_predicted"])
    for n, spec in itertools.product(cfg.n_steps, cfg.t_start):  # a rule not calibrated at n fails before any work
        resolve_t_start(spec, n, t_c, den.schedule, calibration)
    with clock("classifier"):
        clf, accuracy, _ = stages.classifier(ds, cfg.classifier_steps, cfg.seed)
        scorer = stage.Scorer(clf, x_train, int(ds.labels.max()) + 1, cfg.kid_subsets, cfg.seed)
    inception, floor = None, None
    if cfg.inception_n:
        with clock("inception_reference"):
            ref, floor = stage.inception_split_reference(x_train, ds.image_shape, cfg.inception_n, cfg.seed)
        inception = lambda x: fid(inception_features(x[: floor["n"]], ds.image_shape), ref)  # noqa: E731
    out = {
        "dataset": cfg.dataset, "model": model.source, "t_c": t_c, "prediction": pred["prediction"],
        "classifier": {"steps": cfg.classifier_steps, "seed": cfg.seed, "accuracy": accuracy},
        "inception": floor, "calibration": calibration, "cells": [], "comparison": None, "complete": False,
        "config": dataclasses.asdict(cfg), "device": stages.device_name(next(den.parameters()).device),
        "torch_threads": torch.get_num_threads(), "command": command,
    }  # fmt: skip

    def write(cells):
        write_json_atomic(cfg.out_path(), out | {"cells": cells, "seconds": clock.seconds(digits=1)})

    total = len(cfg.samplers) * len(cfg.grids) * len(cfg.n_steps) * len(cfg.t_start) * len(cfg.inits) * len(cfg.seeds)
    with clock("cells"), tqdm(total=total, desc=f"late-start cells {cfg.dataset}", dynamic_ncols=True) as bar:
        drawer = stage.Drawer(den, x_train, bar)
        cells = score_cells(drawer, scorer, cfg, t_c, calibration, inception, done, write)
    comparison = None if table is None else {"table": cfg.table, **compare_with_table(cells, table["rows"])}
    out |= {"cells": cells, "comparison": comparison, "complete": True, "seconds": clock.seconds(digits=1)}
    write_json_atomic(cfg.out_path(), out)
    return out


# The fields that choose which cells (and seeds) to score: they may change between a run and its resumption, since
# a cell's FID at a seed does not depend on them. Every other field changes the numbers.
CELL_FIELDS = ("samplers", "grids", "n_steps", "inits", "seeds", "t_start", "table", "out", "threads")


def _resumable(cfg: Config) -> list[dict]:
    """The cells already scored at ``out_path`` by a run whose config differs at most in ``CELL_FIELDS`` (more
    seeds, more cells). An unfinished run of another config is refused (ValueError): its cells would be lost."""
    path = cfg.out_path()
    old = json.loads(path.read_text()) if path.is_file() else {}
    if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
        return []
    ours = json.loads(json.dumps(dataclasses.asdict(cfg)))
    differ = sorted(k for k in ours if k not in CELL_FIELDS and old["config"].get(k) != ours[k])
    if not differ:
        return old.get("cells", [])
    if old.get("complete") is False:
        raise ValueError(
            f"out={path} holds an unfinished run whose config differs in {', '.join(differ)}; rerun its own command "
            "to finish it, or choose another --out (starting here would discard its finished cells)"
        )
    return []  # a finished run of another config: this run replaces it


def build_parser() -> argparse.ArgumentParser:
    return dataclass_parser(Config, "python -m empirical late-start-cells", __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg, _ = pipeline_config(Config, args)
        for name, path in (("table", cfg.table), ("calibration", cfg.calibration)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} must be a late_start curves file; {path} is not a file")
        if cfg.out_path().is_dir():
            raise ValueError(f"out must be a file path; {cfg.out_path()} is a directory")
        if not args.dry_run:  # before any work: writable, and an earlier run's cells readable and resumable
            check_output_file(cfg.out_path(), "out", holds="object")
            _resumable(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"late_start_cells": dataclasses.asdict(cfg), "out": str(cfg.out_path())}, indent=1))
        return 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with locked(cfg.out_path(), wait=False, name="out", kind="run"):  # one run at a time per output file
            out = run(cfg, "python -m empirical late-start-cells " + shlex.join(argv))
    except OutputInUse as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: out[k] for k in ("t_c", "comparison", "seconds")}, indent=1))
    for c in out["cells"]:
        print(c["sampler"], c["grid"], c["n_steps"], c["init"], c["t_start_spec"], round(c["t_start"], 4),
              [round(f, 3) for f in c["fid"]], round(c["mean"], 3), c["std"] and round(c["std"], 3))  # fmt: skip
    print(ratio_table(out["cells"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
