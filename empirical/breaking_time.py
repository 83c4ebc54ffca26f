"""Train a denoiser, measure its breaking time, compare with the theory's predictions, write the table row.

    python -m empirical.breaking_time --dataset digits            # CPU, minutes
    python -m empirical.breaking_time --dataset digits --dry-run  # print the resolved config

One run: (1) trains (or resumes) the denoiser with ``empirical.train``; (2) predicts the critical
time from the training images alone: ``theory.critical_time`` of their empirical distribution (the
exact prediction), the equal-norm closed form with the top covariance eigenvalue, and the Biroli et
al. 1/2 ln Lambda estimate; (3) measures it in the trained network (``empirical.measure``,
``empirical.cloning``): the count of stable fixed points by bisection on t, the centre branch, cloning with
a classifier trained here, and the potential along a path between two generated trajectories. It writes
(atomically) the row of ``<results>/breaking_time.json`` for (dataset, device), the curves in
``<results>/breaking_<dataset>.json``, the figures ``<results>/figures/breaking_<dataset>_*.png`` and
the resolved config next to the checkpoint (``results`` defaults to docs/results of the repository,
whatever the working directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time

import numpy as np
import torch

import theory
from empirical.classifier import train_classifier
from empirical.cli import dataclass_parser, is_int, is_real, pipeline_config
from empirical.cloning import cloning, potential_along_path, simulate
from empirical.datasets import DATASETS, load_dataset
from empirical.denoiser import T_MIN, ExactDenoiser
from empirical.measure import centre_branch, map_coeffs, measure_critical_time
from empirical.results import finite, upsert_row, write_json_atomic
from empirical.train import TrainConfig, check_out_dir, export_weights, load_denoiser, train
from theory.paths import results_dir
from theory.symbolic import equal_norm_theta_c, lambdify
from theory.symbolic import eta as eta_sym
from theory.symbolic import lam as lam_sym

__all__ = ["Config", "predict", "run"]


@dataclasses.dataclass
class Config:
    """What one row of the table depends on (the training options are ``TrainConfig``'s)."""

    dataset: str = "digits"
    n_train: int | None = None
    classes: tuple[int, ...] | None = None
    eta: float = 1.0
    steps: int = 12000
    batch_size: int = 256
    net: str = "mlp"
    width: int = 256
    depth: int = 3
    ch: int = 32
    seed: int = 0
    n_starts: int = 128
    tol_t: float = 1e-3
    t_min: float = 0.02
    n_parents: int = 64
    n_clones: int = 8
    classifier_steps: int = 1000
    run_dir: str | None = None
    results: str | None = None  # None: docs/results of the repository (theory.paths.results_dir)
    device: str = "auto"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}; got {self.dataset!r}")
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
        if self.results is not None and not (isinstance(self.results, str) and self.results):
            raise ValueError(f"results must be a non-empty path or None (docs/results); got {self.results!r}")
        if self.run_dir is None:
            self.run_dir = f"runs/breaking-{self.dataset}"

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            dataset=self.dataset,
            n_train=self.n_train,
            classes=self.classes,
            net=self.net,
            width=self.width,
            depth=self.depth,
            ch=self.ch,
            steps=self.steps,
            batch_size=self.batch_size,
            seed=self.seed,
            out=self.run_dir,
            device=self.device,
        )


def predict(x_train: np.ndarray, eta: float = 1.0, schedule=None) -> dict:
    """The critical time predicted from the training images alone (forward time, VP linear by default).

    - ``t_c_predicted``: ``theory.critical_time`` of the empirical distribution (a DeltaMixture of the images);
    - ``t_c_equal_norm``: the equal-norm closed form (1 + eta^2)(sigma^2 - theta^2 lam) = sigma^4 with lam
      the top eigenvalue of the images' covariance;
    - ``t_c_biroli``: Biroli et al.'s speciation time 1/2 ln Lambda (OU time) mapped to the schedule.
    """
    schedule = theory.VPLinear() if schedule is None else schedule
    data = theory.DeltaMixture(x_train)
    ct = theory.critical_time(data, schedule, eta=eta)
    lam = float(np.linalg.eigvalsh(np.atleast_2d(np.cov(x_train.T, bias=True)))[-1])
    theta_en = float(lambdify(equal_norm_theta_c(), (lam_sym, eta_sym))(lam, eta))
    sp = theory.speciation_time(data, schedule)
    return {
        "t_c_predicted": float(ct.t),
        "theta_c_predicted": float(ct.theta),
        "kind_predicted": ct.kind,
        "centre_t_predicted": float(ct.centre_t),
        "t_c_equal_norm": _t_from_theta(schedule, theta_en),
        "t_c_biroli": float(sp.biroli_t),
        "top_covariance_eigenvalue": lam,
    }


def _t_from_theta(schedule, theta: float) -> float:
    """t(theta), or nan where theta is outside the schedule's range [theta(T), 1] (no transition there)."""
    lo = float(schedule.theta(schedule.T))
    return float(schedule.t_from_theta(theta)) if lo <= theta <= 1.0 else float("nan")


def _softest(prefix, cb, cb_exact, t_c) -> dict:
    """Where each centre branch is softest (its top eigenvalue of grad R largest) within 0.75 t_c .. 1.25 t_c."""
    out = {}
    for name, b in (("measured", cb), ("exact", cb_exact)):
        window = (b.t > 0.75 * t_c) & (b.t < 1.25 * t_c)
        i = int(np.argmax(np.where(window, b.lam, -np.inf)))
        out[f"{prefix}_t_{name}"], out[f"{prefix}_lam_{name}"] = float(b.t[i]), float(b.lam[i])
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def run(cfg: Config, command: str) -> dict:
    """The whole pipeline for one data set; returns the table row (also written to disk)."""
    # None: the repository's docs/results, wherever the command runs; both folders checked before the long work
    results = check_out_dir(results_dir() if cfg.results is None else cfg.results, "results")
    check_out_dir(cfg.run_dir, "run_dir")
    ds = load_dataset(cfg.dataset, n=cfg.n_train, classes=cfg.classes, seed=0)
    x_train = ds.x
    clock = {}

    t0 = time.perf_counter()
    ckpt = train(cfg.train_config())
    clock["train_s"] = time.perf_counter() - t0
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    model_file = export_weights(ckpt, results / f"{cfg.dataset}_denoiser.pt")  # EMA only, float32: reloads on a CPU
    device = stored["config"].get("device", "cpu")
    # Measurements in float64, on the GPU when there is one (d = 784 needs it), else on the CPU.
    den = load_denoiser(ckpt, device="cuda" if torch.cuda.is_available() else "cpu").double()
    den.requires_grad_(False)

    t0 = time.perf_counter()
    pred = predict(x_train, cfg.eta, den.schedule)
    clock["predict_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    m = measure_critical_time(den, x_train, eta=cfg.eta, n_starts=cfg.n_starts, tol_t=cfg.tol_t, t_min=cfg.t_min)
    clock["measure_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cb = centre_branch(den, x_train, eta=cfg.eta, t_min=cfg.t_min)
    cb_exact = centre_branch(ExactDenoiser(theory.DeltaMixture(x_train), den.schedule), x_train, eta=cfg.eta)
    clock["centre_branch_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_test = len(x_train) // 5
    perm = np.random.default_rng(cfg.seed).permutation(len(x_train))
    clf = train_classifier(
        x_train[perm[n_test:]], ds.labels[perm[n_test:]], ds.image_shape, steps=cfg.classifier_steps, seed=cfg.seed
    )
    accuracy = float(
        np.mean(np.asarray(clf.predict(torch.as_tensor(x_train[perm[:n_test]]))) == ds.labels[perm[:n_test]])
    )
    t_branch = np.linspace(0.9, 0.05, 18)
    clone = cloning(
        den.float(), lambda x: clf.predict(x.float()), t_branch, n_parents=cfg.n_parents, n_clones=cfg.n_clones,
        eta=cfg.eta, seed=cfg.seed,
    )  # fmt: skip
    den.double()
    clock["cloning_s"] = time.perf_counter() - t0

    # The potential along the line through two generated samples of different classes, scaled to time t
    # (kappa(t) x0, where their attractors sit once they exist), learned and exact, at times around t_c.
    ts = np.linspace(den.schedule.T, T_MIN, 201)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = torch.randn(16, x_train.shape[1], generator=gen, dtype=torch.float64).to(next(den.parameters()).device)
    ends = den.x0(simulate(den, start, ts, eta=cfg.eta, generator=gen)[-1], ts[-1])
    labels = clf.predict(ends.float())
    a, b = 0, int(np.flatnonzero(labels != labels[0])[0]) if np.any(labels != labels[0]) else 1
    exact = ExactDenoiser(theory.DeltaMixture(x_train), den.schedule)
    arcs = []
    for t in [0.8] + [f * pred["t_c_predicted"] for f in (1.25, 1.0, 0.8, 0.6)]:
        kappa, _ = map_coeffs(den, t, cfg.eta)
        s, u = potential_along_path(den, kappa * ends[a], kappa * ends[b], t, eta=cfg.eta)
        _, u_exact = potential_along_path(exact, kappa * ends[a], kappa * ends[b], t, eta=cfg.eta)
        arcs.append(
            {"t": float(t), "s": s, "u_learned": u, "u_exact": u_exact, "classes": [int(labels[a]), int(labels[b])]}
        )

    measured = float(m.t)
    row = {
        "dataset": cfg.dataset,
        "n_train": int(len(x_train)),
        "dim": int(x_train.shape[1]),
        "classes": list(cfg.classes) if cfg.classes else None,
        "eta": cfg.eta,
        **{k: finite(v) for k, v in pred.items()},
        "t_c_measured": finite(measured),
        "t_c_measured_bracket": [finite(m.t_lo), finite(m.t_hi)],
        "n_stable_below": len(m.points),
        "relative_error": finite(abs(measured - pred["t_c_predicted"]) / pred["t_c_predicted"]),
        "relative_error_equal_norm": finite(abs(measured - pred["t_c_equal_norm"]) / pred["t_c_equal_norm"]),
        "relative_error_biroli": finite(abs(measured - pred["t_c_biroli"]) / pred["t_c_biroli"]),
        "centre_t_measured": finite(cb.crossing_t),  # a continuous loss of stability of the learned branch
        "centre_t_exact_branch": finite(cb_exact.crossing_t),  # the same code on the exact score
        "centre_fold_t_measured": finite(cb.fold_t),  # where the stable branch ends (a fold), if it does
        "centre_fold_t_exact": finite(cb_exact.fold_t),
        **_softest("centre_softest", cb, cb_exact, pred["t_c_predicted"]),
        "centre_asymmetry_median": float(np.median(cb.asymmetry)),
        "cloning_midpoint": finite(clone.midpoint),
        "cloning_chance": clone.chance,
        "classifier_accuracy": accuracy,
        "train_steps": int(stored["step"]),
        "model": str(model_file),
        "final_loss": float(stored["loss"][-200:].mean()),
        "seconds": {k: round(v, 1) for k, v in clock.items()},
        "device": _device_name(device),
        "command": command,
    }
    curves = {
        "row": row,
        "scan": {"t": m.grid_t, "count": m.grid_count, "evaluations": m.evaluations},
        "centre": {"t": cb.t, "lam": cb.lam, "mu_imag": np.imag(cb.mu), "asymmetry": cb.asymmetry},
        "centre_exact": {"t": cb_exact.t, "lam": cb_exact.lam},
        "cloning": {
            "t": clone.t,
            "p_agree": clone.p_agree,
            "chance": clone.chance,
            "midpoint": finite(clone.midpoint),
        },
        "arcs": arcs,
    }
    write_json_atomic(results / f"breaking_{cfg.dataset}.json", curves)
    upsert_row(results / "breaking_time.json", row, ("dataset", "device"))
    from empirical.plots import plot_breaking

    plot_breaking(curves, results / "figures", cfg.dataset)
    return row


def build_parser() -> argparse.ArgumentParser:
    return dataclass_parser(Config, "python -m empirical.breaking_time", __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg, train_cfg = pipeline_config(Config, args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"breaking_time": dataclasses.asdict(cfg), "train": train_cfg.to_dict()}, indent=1))
        return 0
    row = run(cfg, "python -m empirical.breaking_time " + shlex.join(argv))
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
