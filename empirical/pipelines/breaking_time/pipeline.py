r"""Train a denoiser, measure its breaking time, compare with the theory's predictions, write the table row.

    python -m empirical breaking-time --dataset digits            # CPU, minutes
    python -m empirical breaking-time --dataset digits --dry-run  # print the resolved config

One run: (1) trains (or resumes) the denoiser with ``empirical.training.train``; (2) predicts the critical
time from the training images alone: ``theory.critical_time`` of their empirical distribution (the
exact prediction), the equal-norm closed form with the top covariance eigenvalue, and the Biroli et
al. 1/2 ln Lambda estimate; (3) measures it in the trained network (``empirical.measure.fixed_points``,
``empirical.measure.cloning``): the count of stable fixed points by bisection on t, the centre branch, cloning with
a classifier trained here, and the potential along a path between two generated trajectories. It writes
(atomically) the row of ``<results>/breaking_time.json`` for (dataset, device), the curves in
``<results>/breaking_<dataset>.json``, the figures ``<results>/figures/breaking_<dataset>_*.png`` and
the resolved config next to the checkpoint (``results`` defaults to results/ under the current
directory; the committed rows are in docs/results). The stages are in ``empirical.pipelines.stages`` (shared with
``empirical.pipelines.late_start.pipeline``) and ``empirical.pipelines.breaking_time.stages``.

Instead of training: ``--model FILE`` measures a checkpoint or exported-weights file of ``empirical.training.train``
(the row names the file; it is not re-exported), ``--diffusers PATH`` a diffusers ``UNet2DModel`` folder
(``empirical.interop.diffusers_unet``; its schedule is the scheduler's betas). ``--prediction FILE:KEY`` reads the exact
prediction of the same training images from a benchmark results file (``benchmarks/critical_time.py``) instead of
computing it (15-17 minutes at 60,000 x 784). At 28x28 on a CPU (sizes: ``empirical.pipelines.breaking_time.stages``):

    OMP_NUM_THREADS=1 python -m empirical breaking-time --dataset mnist \
        --model docs/results/mnist/mnist_denoiser.pt --prediction benchmarks/results.json:mnist \
        --search flow --n-starts 32 --n-grid 12 --t-max 0.9 --t-min 0.05 --centre false \
        --n-parents 16 --n-clones 4 --classifier-steps 500 --results docs/results/28x28
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
from dataclasses import dataclass, field

import torch

from empirical._util.cli import dataclass_parser, is_int, is_real
from empirical._util.stopwatch import Stopwatch
from empirical.pipelines import stages
from empirical.pipelines.breaking_time import stages as stage
from empirical.pipelines.config import PipelineConfig, pipeline_config
from empirical.pipelines.stages import predict

__all__ = ["Config", "predict", "run", "main"]


@dataclass
class Config(PipelineConfig):
    """What one row of the table depends on: the shared denoiser's fields (``PipelineConfig``) and the
    measurement's."""

    eta: float = field(default=1.0, metadata={"help": "the eta family's member (1: the reverse SDE)"})
    n_starts: int = field(default=128, metadata={"help": "training images seeding the fixed-point search"})
    n_grid: int = field(default=16, metadata={"help": "log-SNR grid of the count before bisection"})
    tol_t: float = field(default=1e-3, metadata={"help": "bisection tolerance on t"})
    t_min: float = field(default=0.02, metadata={"help": "smallest t scanned"})
    t_max: float | None = field(default=None, metadata={"help": "largest t scanned (omit: T)"})
    search: str = field(
        default="iterate",
        metadata={"help": "stable points: iterated map, or damped flow (28x28)", "choices": ("iterate", "flow")},
    )
    n_parents: int = field(default=64, metadata={"help": "cloning: parent trajectories"})
    n_clones: int = field(default=8, metadata={"help": "cloning: clones per parent and time"})
    centre: bool = field(
        default=True, metadata={"help": "centre branches, learned and exact (dense Jacobians: hours at d = 784)"}
    )
    classifier_steps: int = field(default=1000, metadata={"help": "optimizer steps of the classifier"})

    def __post_init__(self):
        super().__post_init__()
        if not (is_real(self.eta) and 0 <= self.eta < math.inf):
            raise ValueError(f"eta must be a finite number >= 0; got {self.eta!r}")
        for name in ("n_starts", "n_parents", "classifier_steps"):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an int >= 1; got {getattr(self, name)!r}")
        if not (is_int(self.n_clones) and self.n_clones >= 2):
            raise ValueError(f"n_clones must be an int >= 2; got {self.n_clones!r}")
        if not (is_real(self.tol_t) and 0 < self.tol_t < 0.1):
            raise ValueError(f"tol_t must lie in (0, 0.1); got {self.tol_t!r}")
        if not (is_real(self.t_min) and 0 < self.t_min < 1):
            raise ValueError(f"t_min must lie in (0, 1); got {self.t_min!r}")
        if self.t_max is not None and not (is_real(self.t_max) and self.t_min < self.t_max <= 1):
            raise ValueError(f"t_max must be None or lie in (t_min={self.t_min}, 1]; got {self.t_max!r}")
        if not (is_int(self.n_grid) and self.n_grid >= 2):
            raise ValueError(f"n_grid must be an int >= 2; got {self.n_grid!r}")
        if not isinstance(self.centre, bool):
            raise ValueError(f"centre must be true or false; got {self.centre!r}")
        if self.search not in ("iterate", "flow"):
            raise ValueError(f"search must be 'iterate' or 'flow'; got {self.search!r}")


def run(cfg: Config, command: str) -> dict:
    """The whole pipeline for one data set; returns the table row (also written to disk)."""
    clock = Stopwatch()
    results = stages.folders(cfg)
    x_train = (ds := stages.load_data(cfg)).x
    known = stages.known_prediction(cfg, x_train)  # a --prediction of other images fails here, before any work
    name = ds.name  # the data set's name, or the data file's stem
    with clock("train"):
        model = stages.denoiser(cfg, x_train.shape[1])
    model_file = stage.model_file(model, results, name)
    # Measurements in float64, on the GPU when there is one (d = 784 needs it), else on the CPU.
    den = model.denoiser.to("cuda" if torch.cuda.is_available() else "cpu").double().requires_grad_(False)
    with clock("predict"):
        pred = predict(x_train, cfg.eta, den.schedule, known)
    with clock("measure"):
        m = stage.measure(den, x_train, cfg)
    with clock("centre_branch"):
        cb, cb_exact = stage.centre_branches(den, x_train, cfg)
    with clock("cloning"):
        clf, accuracy, _ = stages.classifier(ds, cfg.classifier_steps, cfg.seed)
        cloned = stage.clone(den, clf, cfg)
    with clock("arcs"):
        arcs = stage.arcs(den, clf, x_train, pred["t_c_predicted"], cfg)
    row = stage.table_row(cfg, x_train, pred, m, cb, cb_exact, cloned, accuracy, model, model_file)
    row |= {"seconds": clock.seconds(digits=1), "device": stages.device_name(model.device), "command": command}
    row |= {"data": cfg.data} if cfg.data is not None else {}
    stage.write(results, name, stage.curves(row, m, cb, cb_exact, cloned, arcs))
    return row


def build_parser() -> argparse.ArgumentParser:
    return dataclass_parser(Config, "python -m empirical breaking-time", __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg, train_cfg = pipeline_config(Config, args)
        if len(set(stages.load_data(cfg).labels.tolist())) < 2:  # cloning's classifier learns the labels
            raise ValueError(f"data {cfg.data} holds one class: pass an .npz with x and labels of >= 2 classes")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        train = None if cfg.diffusers or cfg.model else train_cfg.to_dict()
        print(json.dumps({"breaking_time": dataclasses.asdict(cfg), "train": train}, indent=1))
        return 0
    row = run(cfg, "python -m empirical breaking-time " + shlex.join(argv))
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
