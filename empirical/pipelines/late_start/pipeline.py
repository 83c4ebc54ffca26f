r"""The Gaussian late start (gls) against the vanilla start, for four few-step samplers, and two ways to choose t_start.

    python -m empirical late-start --dataset digits            # CPU, ~10 minutes (one thread)
    python -m empirical late-start --dataset digits --dry-run  # print the resolved config

One run: (1) trains (or reuses) the denoiser of ``empirical.pipelines.breaking_time.pipeline`` (same ``TrainConfig``,
same run folder, so both pipelines share one model) and a classifier on the training images (its features give the
project's FID/KID, its predictions the class composition); (2) predicts the critical time t_c of the training
set with ``breaking_time.predict`` (eta = 1); (3) sweeps t_start: FID (project features) against t_start for
each sampler and n, from N(0, I) ("late") and from the Gaussian fitted to the diffused training set ("gls"),
and reads off the best t_start and the knee (the maximum of the discrete second derivative); (4) fills the
table: per sampler and n, the vanilla start (N(0, I) at T = 1, uniform grid), gls at the theory's t_start,
gls at the sweep's best and knee, and the late start at its sweep's best, each on fresh samples (another
seed than the sweep's, so the sweep's choice is not scored on the samples that chose it); (5) the same with
DDIM converged (``converged_steps``): the vanilla start, gls and N(0, I) at t_c, and gls swept over t_start,
i.e. what the start costs once the step error is gone; (6) Inception FID (the standard TF-FID network) for a
small headline subset (DDIM at ``inception_steps``: vanilla, gls at t_c and at the sweep's best). It writes
(atomically) the rows of ``<results>/late_start.json`` for (dataset, device), the curves, summary and sample pixels in
``<results>/late_start_<dataset>.json`` and the figures ``<results>/figures/late_start_<dataset>_*.png``
(``results`` defaults to results/ under the current directory; the committed rows are in docs/results).

The theory's rule, fixed before any sweep was run: **t_start = t_c**, the first bifurcation in the generative
direction of the training set's empirical distribution (``theory.critical_time`` through
``breaking_time.predict``, the reverse SDE, eta = 1). Until t_c the generative potential has a single stable
fixed point, so a Gaussian start skips no bifurcation; t_c is the latest start in generation (the smallest
t_start) with that guarantee. The rule was not tuned on the outcome.

Metrics: generated images are clipped to the data range [-1, 1], then FID and KID are computed on the
classifier's penultimate features against the whole training set (the reference, N_ref = 1797 for digits);
the floor of the FID from finite samples is the FID between two random halves of the training set. The
entropy of the predicted class composition (bits) is compared with the training set's (true labels).

Samplers and grids: the default table is DDPM, DDIM, PNDM and DPM-Solver++(2M) on the uniform grid in t;
``--samplers`` also takes ipndm, "dpm-solver++(3m)" and unipc, ``--grids`` any ``empirical.sampling.grids`` names or
"authors" (each sampler on its authors' grids, ``samplers.AUTHOR_GRIDS``), each grid a loop of its own (sweep
and table; every row carries its ``grid``), and ``--teleport true`` adds the analytic teleportation of the vanilla
noise to t_c (Wang & Vastola; ``empirical.sampling.teleport``) as a table cell:

    python -m empirical late-start --dataset digits --samplers ddpm ddim pndm dpm-solver++ ipndm \
        "dpm-solver++(3m)" unipc --grids uniform authors --teleport true

``--model FILE`` samples a checkpoint or exported-weights file of ``empirical.training.train`` instead of training, and
``--diffusers PATH`` a diffusers ``UNet2DModel`` folder (``empirical.interop.diffusers_unet``); ``--prediction
FILE:KEY`` reads t_c of the same training images from a benchmark results file (``benchmarks/critical_time.py``) instead
of running ``theory.critical_time``.
The stages are in ``empirical.pipelines.stages`` (shared with ``empirical.pipelines.breaking_time.pipeline``) and
``empirical.pipelines.late_start.stages``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys

import numpy as np
import torch
from tqdm import tqdm

from empirical._util.cli import dataclass_parser, is_int, is_real
from empirical._util.stopwatch import Stopwatch
from empirical.metrics.scores import class_entropy_bits
from empirical.pipelines import stages
from empirical.pipelines.config import PipelineConfig, pipeline_config
from empirical.pipelines.late_start import stages as stage
from empirical.pipelines.late_start.stages import (
    ALL_TABLE_SAMPLERS,
    GRID_CHOICES,
    TABLE_SAMPLERS,
    best_and_knee,
    grids_of,
)

__all__ = ["Config", "TABLE_SAMPLERS", "TABLE_INITS", "RULES", "best_and_knee", "gls_ratios", "run", "main"]

TABLE_INITS = ("vanilla", "late", "gls", "teleport")  # the table's inits (of sampling.samplers.INITS)
RULES = ("none", "theory", "sweep-best", "sweep-knee")  # how a row's t_start was chosen
# The paper's (Raya & Ambrogioni 2023, MNIST, DDIM) FID ratios vanilla / gls at n = 3, 5, 10 steps.
PAPER_DDIM_RATIOS = {3: 3.58, 5: 1.91, 10: 1.83}
# The paper's class entropies (bits) on MNIST: the training set, DDIM-5, gls-DDIM-5.
PAPER_ENTROPY = {"training": 1.55, "ddim-5": 0.76, "gls-ddim-5": 1.19}


@dataclasses.dataclass
class Config(PipelineConfig):
    """Everything one run depends on: the shared denoiser's fields (``PipelineConfig``, one model with
    ``breaking_time``) and the samplers', sweep's and metrics'."""

    samplers: tuple[str, ...] = tuple(TABLE_SAMPLERS)
    grids: tuple[str, ...] = ("uniform",)  # empirical.sampling.grids names, or "authors": each sampler's AUTHOR_GRIDS
    teleport: bool = False  # add the analytic teleportation to t_c as a table cell
    n_steps: tuple[int, ...] = (3, 5, 10)
    n_samples: int = 2000
    sweep_samples: int = 1000
    sweep_t: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 21))
    eta: float = 1.0
    classifier_steps: int = 1000
    kid_subsets: int = 20
    inception_n: int = 300
    inception_steps: tuple[int, ...] = (3, 5)
    converged_steps: int = 100
    n_grid: int = 10
    threads: int = 1

    def __post_init__(self):
        super().__post_init__()
        for name in ("samplers", "grids", "n_steps", "sweep_t", "inception_steps"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        bad = [s for s in self.samplers if s not in ALL_TABLE_SAMPLERS]
        if not self.samplers or bad:
            raise ValueError(
                f"samplers must be a non-empty subset of {tuple(ALL_TABLE_SAMPLERS)}; got {self.samplers!r}"
            )
        if not self.grids or any(g not in GRID_CHOICES for g in self.grids):
            raise ValueError(f"grids must be a non-empty subset of {GRID_CHOICES}; got {self.grids!r}")
        if not isinstance(self.teleport, bool):
            raise ValueError(f"teleport must be true or false; got {self.teleport!r}")
        if not self.n_steps or not all(is_int(n) and n >= 2 for n in self.n_steps):
            raise ValueError(f"n_steps must be a non-empty tuple of ints >= 2; got {self.n_steps!r}")
        if not all(is_real(v) for v in self.sweep_t):
            raise ValueError(f"sweep_t must hold numbers; got {self.sweep_t!r}")
        t = np.asarray(self.sweep_t, dtype=float)
        if t.size < 3 or np.any(np.diff(t) <= 0) or t[0] <= 0.01 or t[-1] > 1.0:
            raise ValueError(f"sweep_t must hold >= 3 increasing times in (0.01, 1]; got {self.sweep_t!r}")
        if not (is_int(self.converged_steps) and (self.converged_steps == 0 or self.converged_steps >= 2)):
            raise ValueError(f"converged_steps must be 0 (skip) or an int >= 2; got {self.converged_steps!r}")
        for name in ("n_samples", "sweep_samples", "classifier_steps", "kid_subsets", "n_grid"):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an int >= 1; got {getattr(self, name)!r}")
        for name in ("n_samples", "sweep_samples"):
            if getattr(self, name) < 10:
                raise ValueError(f"{name} must be >= 10 (FID needs a covariance); got {getattr(self, name)}")
        if not (is_int(self.inception_n) and (self.inception_n == 0 or self.inception_n >= 10)):
            raise ValueError(f"inception_n must be 0 (skip) or an int >= 10; got {self.inception_n!r}")
        if self.inception_n > self.n_samples:
            raise ValueError(f"inception_n={self.inception_n} must not exceed n_samples={self.n_samples}")
        if self.inception_n and (not set(self.inception_steps) <= set(self.n_steps) or "ddim" not in self.samplers):
            raise ValueError("inception_steps must be a subset of n_steps, and Inception FID needs 'ddim' in samplers")
        if not (is_real(self.eta) and 0 < self.eta < math.inf):
            raise ValueError(f"eta must be a finite number > 0 (breaking_time.predict); got {self.eta!r}")
        if not (is_int(self.threads) and self.threads >= 0):
            raise ValueError(f"threads must be an int >= 0 (0: torch's default); got {self.threads!r}")


def gls_ratios(rows, dataset: str, rule: str = "theory", metric: str = "fid", grid: str = "uniform") -> dict:
    """{(sampler, n_steps): metric(vanilla) / metric(gls with t_start_rule=rule)} from table rows on one grid
    (rows without a grid field ran on the uniform grid)."""
    by = {(r["sampler"], r["n_steps"], r["init"], r["t_start_rule"]): r for r in rows
          if r["dataset"] == dataset and r.get("grid", "uniform") == grid}  # fmt: skip
    out = {}
    for (s, n, init, _), r in by.items():
        gls = by.get((s, n, "gls", rule))
        if init == "vanilla" and gls and r.get(metric) is not None and gls.get(metric):
            out[s, n] = r[metric] / gls[metric]
    return out


# --- the pipeline ---------------------------------------------------------------------------------
def run(cfg: Config, command: str) -> dict:
    """The whole pipeline for one data set; returns the curves file's content (also written to disk)."""
    clock = Stopwatch()
    results = stages.folders(cfg)
    x_train = (ds := stages.load_data(cfg)).x
    known = stages.known_prediction(cfg, x_train)  # a --prediction of other images fails here, before any work
    with clock("train"):
        model = stages.denoiser(cfg, x_train.shape[1])
    den = model.denoiser
    with clock("classifier"):
        clf, accuracy, n_test = stages.classifier(ds, cfg.classifier_steps, cfg.seed)
        scorer = stage.Scorer(clf, x_train, int(ds.labels.max()) + 1, cfg.kid_subsets, cfg.seed)
        clf_stats = {"accuracy": accuracy, "n_test": n_test, "train_pred": clf.predict(x_train.astype(np.float32)),
                     "floor": stage.floor(clf, x_train, cfg.kid_subsets, cfg.seed)}  # fmt: skip
    with clock("predict"):  # the theory's start time: the critical time of the training set's empirical distribution
        pred = stages.predict(x_train, cfg.eta, den.schedule, known)
    t_theory = float(pred["t_c_predicted"])
    n_curves = sum(len(grids_of(cfg, s)) for s in cfg.samplers) * len(cfg.n_steps)
    n_sweep = (n_curves * 2 + (1 if cfg.converged_steps else 0)) * len(cfg.sweep_t)
    n_table = n_curves * (6 if cfg.teleport else 5) + (3 if cfg.converged_steps else 0)
    bar = tqdm(total=n_sweep + n_table, desc=f"late start {cfg.dataset}", dynamic_ncols=True)
    draw = stage.Drawer(den, x_train, bar)
    context = {"n_ref": len(x_train), "entropy_bits_train": class_entropy_bits(ds.labels, int(ds.labels.max()) + 1),
               "device": stages.device_name(next(den.parameters()).device), "command": command}  # fmt: skip
    with clock("sweep"):
        sweep, converged_sweep = stage.sweep(draw, scorer, cfg), stage.converged_sweep(draw, scorer, cfg)
    with clock("table"):
        rows, samples = stage.table(draw, scorer, sweep, t_theory, cfg, context)
        converged = stage.converged(draw, scorer, t_theory, cfg)
    bar.close()
    with clock("inception"):
        inception = stage.inception(rows, x_train, ds.image_shape, cfg)
    for r in rows:
        r.pop("_x", None)
    paper = {"paper_ddim_ratios": PAPER_DDIM_RATIOS, "paper_entropy_bits": PAPER_ENTROPY}
    summary = stage.summary(ds, model, clf_stats, pred, {"inception": inception, "converged": converged}, cfg,
                            context | paper | {"seconds": clock.seconds(digits=1)})  # fmt: skip
    curves = {
        "summary": summary,
        "config": dataclasses.asdict(cfg),
        "train_config": None if model.train_config is None else model.train_config.to_dict(),
        "sweep": sweep,
        "converged_sweep": converged_sweep,
        "rows": rows,
        "samples": samples,
        "train_samples": stage.hex_images(x_train[: cfg.n_grid]),
    }
    stage.write(results, cfg.run_dir, cfg.dataset, curves)
    return curves


# --- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """One typed option per ``Config`` field (``--n-samples``, ...) and ``--dry-run``."""
    return dataclass_parser(Config, "python -m empirical late-start", __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg, train_cfg = pipeline_config(Config, args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        train = None if cfg.diffusers or cfg.model else train_cfg.to_dict()
        print(json.dumps({"late_start": dataclasses.asdict(cfg), "train": train}, indent=1))
        return 0
    if cfg.threads:  # the ops are small: one thread is the fastest on a busy 2-core machine
        torch.set_num_threads(cfg.threads)
    curves = run(cfg, "python -m empirical late-start " + shlex.join(argv))
    print(json.dumps(curves["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
