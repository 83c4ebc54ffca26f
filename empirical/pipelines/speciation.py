r"""Speciation of two classes (Biroli et al.): t_S from Lambda, the exact cloning curve and a network's.

Biroli, Bonnaire, de Bortoli & Mezard ("Dynamical regimes of diffusion models", arXiv:2402.18491) write the forward
process in Ornstein-Uhlenbeck time s, x_s = x_0 e^{-s} + sqrt(1 - e^{-2s}) xi, and predict the speciation time
s_S = 1/2 ln Lambda, Lambda the top eigenvalue of the training images' covariance. Their cloning experiment branches a
backward trajectory at s into two copies continued with fresh noise; phi(s), the probability that both end in the same
class, rises from about 1/2 (two balanced classes) to 1. For two Gaussians phi(s_S) = 1/2 + 1/2 E[tanh^2(1 + z)] =
0.7752 (``theory.cloning_curve.biroli_cloning_probability``), and they read the measured t_S where phi crosses 0.775.

For a data set restricted to two classes this computes, in the project's forward time t (VP linear, theta(t) =
e^{-s}, ``Schedule.t_from_ou_time``) and in OU time:

1. Lambda in the network's units (images in [-1, 1]) and in the paper's ([0, 1] pixels, torch.cov's N - 1), and
   s_S = 1/2 ln Lambda of the network's units (the noise is added to those);
2. the exact cloning curve of the same images (``theory.cloning_curve``, eta = 1, the exact score of the finite
   set) and where it crosses the level;
3. the network's cloning curve (``empirical.measure.cloning``, two clones per parent: each parent is one Bernoulli
   draw, so the standard error is binomial), the end points labelled by a classifier trained on the same images,
   and where it crosses, with the delta-method error of the crossing;
4. the published MNIST row (``PUBLISHED``) beside them.

    OMP_NUM_THREADS=1 python -m empirical speciation --model runs/mnist-18/checkpoint.pt --dataset mnist --classes 1 8
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from empirical._util.cli import is_int, is_real
from theory.checks import check_int

__all__ = ["PUBLISHED", "paper_lambda", "speciation_times", "read_crossing", "crossing_error", "ddpm_grid_ou_time",
           "exact_curve", "measured_curve", "published_row", "Config", "run", "main"]  # fmt: skip

# Biroli et al. 2024 (arXiv:2402.18491), Table 1, its MNIST row. The table's page was not readable from here: the
# numbers are those the authors' own notebook prints under "# Content of Table 1" (src/Plots_paper.ipynb of
# github.com/tbonnair/Dynamical-Regimes-of-Diffusion-Models, commit 2a5ac50e75091410e5167d8e81b416545909a29f): Lambda,
# t_S read on their DDPM grid (1000 steps, betas 1e-4..0.02: the first step with alpha-bar < 1/Lambda, as
# -1/2 ln alpha-bar), and the measured t_S (where phi crosses 0.775, branch points every 50 steps) as a fraction of
# that step. Their MNIST set (src/Utils/loader.py, cfg.py): classes 1 and 8, 10,000 training images (5,000 a class),
# padded to 32x32, pixels in [0, 1] centred by the mean pixel (not standardised); Lambda from torch.cov (N - 1).
PUBLISHED = {
    "source": "Biroli, Bonnaire, de Bortoli, Mezard, Dynamical regimes of diffusion models, arXiv:2402.18491 "
    "(Nat. Commun. 15, 9957, 2024), Table 1, MNIST row, as printed by the authors' notebook src/Plots_paper.ipynb "
    "('# Content of Table 1'), github.com/tbonnair/Dynamical-Regimes-of-Diffusion-Models @ 2a5ac50",
    "classes": (1, 8),
    "n_train": 10000,
    "normalisation": "pixels in [0, 1], 28x28 padded to 32x32, centred by the mean pixel; covariance with N - 1",
    "Lambda": 7.66,
    "t_S_ou": 1.01822639,
    "measured_over_theory_steps": 0.96452955,
    "level": 0.775,
}


def paper_lambda(x) -> float:
    """Lambda in Biroli et al.'s normalisation of images x (n, d) in [-1, 1]: the top eigenvalue of torch.cov
    (N - 1) of the [0, 1] pixels (x + 1) / 2 (a scalar centring and zero padding leave it unchanged)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"x must have shape (n, d) with n >= 2; got {x.shape}")
    return float(np.linalg.eigvalsh(np.atleast_2d(np.cov(((x + 1.0) / 2.0).T, ddof=1)))[-1])


def speciation_times(x, schedule=None) -> dict:
    """Lambda of images x (n, d) in the network's units and the paper's, s_S = 1/2 ln Lambda (OU time) and its
    schedule time t_S (``empirical.pipelines.stages.cheap_predictions``: VP linear by default)."""
    from empirical.pipelines.stages import cheap_predictions

    cheap = cheap_predictions(np.asarray(x, dtype=np.float64), schedule=schedule)
    lam = cheap["top_covariance_eigenvalue"]
    return {
        "Lambda": lam, "Lambda_paper": paper_lambda(x), "t_S_ou": 0.5 * math.log(lam) if lam > 0 else math.nan,
        "t_S": cheap["t_c_biroli"],
    }  # fmt: skip


def read_crossing(t, phi, level: float) -> float:
    """The time at which phi(t) first reaches ``level`` in the generative direction (t decreasing), linear between
    the two grid times around it; nan if it never does. ``t`` (M,) distinct times in any order, ``phi`` (M,).

    >>> round(read_crossing([0.8, 0.6, 0.4], [0.5, 0.7, 0.9], 0.8), 12)
    0.5
    """
    t, phi = _curve(t, phi)
    if not (is_real(level) and 0.0 < level < 1.0):
        raise ValueError(f"level must be a probability in (0, 1); got {level!r}")
    j = _bracket(phi, level)
    if j is None:
        return math.nan
    w = (level - phi[j - 1]) / (phi[j] - phi[j - 1])
    return float(t[j - 1] + w * (t[j] - t[j - 1]))


def crossing_error(t, phi, se, level: float) -> float:
    """Delta-method standard error of ``read_crossing`` from independent errors ``se`` (M,) of phi at the two grid
    times around the crossing: t* = t0 + (L - p0)(t1 - t0)/(p1 - p0). nan where there is no crossing."""
    t_sorted, phi_sorted = _curve(t, phi)
    order = np.argsort(-np.asarray(t, dtype=np.float64))
    se = np.asarray(se, dtype=np.float64)[order]
    j = _bracket(phi_sorted, level)
    if j is None:
        return math.nan
    (t0, t1), (p0, p1), (s0, s1) = t_sorted[j - 1 : j + 1], phi_sorted[j - 1 : j + 1], se[j - 1 : j + 1]
    d0 = (t1 - t0) * (level - p1) / (p1 - p0) ** 2
    d1 = -(t1 - t0) * (level - p0) / (p1 - p0) ** 2
    return float(math.hypot(d0 * s0, d1 * s1))


def _curve(t, phi) -> tuple[np.ndarray, np.ndarray]:
    t, phi = np.asarray(t, dtype=np.float64), np.asarray(phi, dtype=np.float64)
    if t.ndim != 1 or t.shape != phi.shape or len(t) < 2:
        raise ValueError(f"t and phi must be 1D of one length >= 2; got shapes {t.shape}, {phi.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(phi))) or len(np.unique(t)) != len(t):
        raise ValueError("t must hold distinct finite times and phi finite values")
    order = np.argsort(-t)
    return t[order], phi[order]


def _bracket(phi: np.ndarray, level: float) -> int | None:
    """The first j (t decreasing) with phi[j - 1] < level <= phi[j]."""
    for j in range(1, len(phi)):
        if phi[j - 1] < level <= phi[j]:
            return j
    return None


def ddpm_grid_ou_time(lam: float, ratio: float = 1.0) -> dict:
    """Biroli et al.'s reading of s_S on the DDPM grid (1000 steps, betas 1e-4..0.02; ``theory.DDPM``): the first
    model step j (0-based; alpha-bar_j = theta_{j+1}^2) with alpha-bar_j < 1/lam, and the step ``ratio`` x j, as OU
    times (-1/2 ln alpha-bar, linear between steps) and as VP-linear times t = (j + 1) / 1000."""
    from theory import DDPM

    if not (is_real(lam) and lam > 1.0) or not (is_real(ratio) and ratio > 0.0):
        raise ValueError(f"need lam > 1 and ratio > 0; got lam={lam!r}, ratio={ratio!r}")
    ou = -np.log(np.asarray(DDPM().theta_steps(), dtype=np.float64)[1:])  # -1/2 ln alpha-bar_j, j = 0..999
    j = int(np.argmax(ou > 0.5 * math.log(lam)))
    jm = ratio * j
    return {
        "step": j, "ou_time": float(ou[j]), "t": (j + 1) / 1000, "measured_step": jm,
        "measured_ou_time": float(np.interp(jm, np.arange(len(ou)), ou)), "measured_t": (jm + 1) / 1000,
    }  # fmt: skip


def exact_curve(ds, ts, level: float, *, n: int, n_steps: int, seed: int, schedule=None) -> dict:
    """The exact cloning curve of the images of ``ds`` (``theory.cloning_curve``, eta = 1): the simulated share
    ``p`` (binomial ``se``) and the eta = 1 posterior formula on the same draws, and where each crosses ``level``."""
    from theory import DeltaMixture, VPLinear
    from theory.cloning_curve import cloning_curve

    c = cloning_curve(DeltaMixture(np.asarray(ds.x, dtype=np.float64)), schedule or VPLinear(), ts, eta=1.0,
                      labels=ds.labels, n=n, n_steps=n_steps, seed=seed)  # fmt: skip
    return {
        "t": c.t, "p": c.p, "se": c.se, "posterior": c.posterior, "n_pairs": n, "n_steps": n_steps,
        "t_S_posterior": read_crossing(c.t, c.posterior, level), "t_S_simulated": read_crossing(c.t, c.p, level),
        "t_S_simulated_se": crossing_error(c.t, c.p, c.se, level),
    }  # fmt: skip


def measured_curve(denoiser, classify, ts, level: float, *, n_parents: int, n_steps: int, seed: int) -> dict:
    """The cloning curve of a denoiser (``empirical.measure.cloning``, eta = 1, two clones per parent) with binomial
    standard errors, and where it crosses ``level`` with its delta-method error. ``classify``: (n, d) -> labels."""
    from empirical.measure.cloning import cloning

    c = cloning(denoiser, classify, ts, n_parents=n_parents, n_clones=2, n_steps=n_steps, eta=1.0, seed=seed)
    se = np.sqrt(np.maximum(c.p_agree * (1.0 - c.p_agree), 1e-12) / n_parents)
    return {
        "t": c.t, "p": c.p_agree, "se": se, "chance": c.chance, "n_parents": n_parents, "n_clones": 2,
        "n_steps": n_steps, "t_S": read_crossing(c.t, c.p_agree, level),
        "t_S_se": crossing_error(c.t, c.p_agree, se, level),
    }  # fmt: skip


def published_row() -> dict:
    """``PUBLISHED`` with its times on the project's clock: the DDPM-grid reading of Lambda (``ddpm_grid_ou_time``)
    and the measured step, as OU time and VP-linear t (the DDPM steps discretise VP linear, t = (j + 1) / 1000)."""
    grid = ddpm_grid_ou_time(PUBLISHED["Lambda"], PUBLISHED["measured_over_theory_steps"])
    return {
        **PUBLISHED, "t_S_ou_half_ln_Lambda": 0.5 * math.log(PUBLISHED["Lambda"]),
        "t_S_ou_grid_recomputed": grid["ou_time"], "t_S_step": grid["step"], "t_S": grid["t"],
        "measured_t_S": grid["measured_t"], "measured_t_S_ou": grid["measured_ou_time"],
        "measured_over_theory_ou": grid["measured_ou_time"] / grid["ou_time"],
    }  # fmt: skip


NOTES = {
    "two_class_network": "Biroli et al. train one network per two-class set (MNIST: classes 1 and 8 only) and read "
    "phi between those two classes, so the network must be trained on the two classes alone: a ten-class network "
    "commits among ten classes (a clone can end in any digit) and its training set has another Lambda.",
    "times": "t is the project's VP-linear forward time (beta 0.1..20); OU time s = -ln theta(t). The published "
    "ratio is of DDPM step indices, which discretise VP-linear t (t = (j + 1) / 1000).",
    "level": "t_S is read where phi first reaches 0.775 going down in t (Biroli et al.'s threshold, the two-Gaussian "
    "phi(t_S) = 0.7752), linear between grid times; the exact curve's t_S is read on its eta = 1 posterior formula.",
}

DEFAULT_TS = (0.7, 0.65, 0.6, 0.575, 0.55, 0.525, 0.5, 0.45)  # the committed run's (3.6 min on 2 busy cores)


@dataclass
class Config:
    """The options of ``python -m empirical speciation``; every field is checked on construction."""

    model: str = field(default="runs/mnist-18/checkpoint.pt", metadata={"help": "checkpoint of a denoiser trained on "
                                                                        "the same images"})  # fmt: skip
    dataset: str = field(default="mnist", metadata={"help": "data set (its labels name the classes)"})
    classes: tuple[int, ...] = field(default=(1, 8), metadata={"help": "the two classes"})
    n_train: int | None = field(default=None, metadata={"help": "images kept (omit for all of the two classes)"})
    data_seed: int = field(default=0, metadata={"help": "seed of the n_train subset"})
    t: tuple[float, ...] = field(default=DEFAULT_TS, metadata={"help": "branch times (VP-linear t)"})
    n_parents: int = field(default=80, metadata={"help": "network: parents (two clones each) per branch time"})
    n_steps: int = field(default=80, metadata={"help": "network: Euler-Maruyama steps from T to t_end"})
    exact_pairs: int = field(default=80, metadata={"help": "exact curve: pairs per branch time"})
    exact_steps: int = field(default=50, metadata={"help": "exact curve: Euler-Maruyama steps from t to t_end"})
    classifier_steps: int = field(default=400, metadata={"help": "classifier training steps"})
    seed: int = field(default=0, metadata={"help": "seed of the draws and of the classifier"})
    device: str = field(default="cpu", metadata={"help": "network device", "choices": ("cpu", "cuda")})
    out: str = field(default="docs/results/speciation.json", metadata={"help": "results file (written atomically)"})

    def __post_init__(self):
        from empirical.data.datasets import DATASETS

        self.classes, self.t = tuple(self.classes), tuple(self.t)
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}; got {self.dataset!r}")
        if len(self.classes) != 2 or not all(is_int(c) and c >= 0 for c in self.classes) or len(set(self.classes)) != 2:
            raise ValueError(f"classes must be two distinct labels >= 0; got {list(self.classes)}")
        if len(self.t) < 2 or not all(is_real(t) and 1e-3 < t < 1.0 for t in self.t) or len(set(self.t)) != len(self.t):
            raise ValueError(f"t must be >= 2 distinct branch times in (0.001, 1); got {list(self.t)}")
        for name, lo in (("n_parents", 2), ("n_steps", 2), ("exact_pairs", 2), ("exact_steps", 1),
                         ("classifier_steps", 1), ("data_seed", 0), ("seed", 0)):  # fmt: skip
            check_int(name, getattr(self, name), lo=lo)
        if self.n_train is not None:
            check_int("n_train", self.n_train, lo=4)


def run(cfg: Config, command: str) -> dict:
    """The stages: data, theory, exact curve, classifier and network curve, published row; returns the results."""
    from empirical._util.stopwatch import Stopwatch
    from empirical.pipelines.stages import classifier, device_name
    from empirical.training.config import DataConfig

    clock, level = Stopwatch(), PUBLISHED["level"]
    with clock("data"):
        data = DataConfig(dataset=cfg.dataset, n_train=cfg.n_train, classes=cfg.classes, data_seed=cfg.data_seed)
        ds = data.load()
        den, step = _load_model(cfg, data, ds.x.shape[1])
    with clock("theory"):
        theory_row = speciation_times(ds.x)
    with clock("exact"):
        exact = exact_curve(ds, cfg.t, level, n=cfg.exact_pairs, n_steps=cfg.exact_steps, seed=cfg.seed)
    with clock("classifier"):
        clf, accuracy, n_test = classifier(ds, cfg.classifier_steps, cfg.seed)
    with clock("network"):
        net = measured_curve(den, lambda x: clf.predict(x.float().cpu()), cfg.t, level,
                             n_parents=cfg.n_parents, n_steps=cfg.n_steps, seed=cfg.seed)  # fmt: skip
    pub = published_row()
    t_s, ou = theory_row["t_S"], _ou  # VP-linear t -> OU time
    return {
        "command": command, "options": dataclasses.asdict(cfg), "device": device_name(cfg.device),
        "data": {"dataset": cfg.dataset, "classes": list(cfg.classes), "n_train": len(ds.x), "d": ds.x.shape[1],
                 "per_class": {int(c): int(np.sum(ds.labels == c)) for c in cfg.classes},
                 "units": "network: pixels in [-1, 1]; paper: pixels in [0, 1], covariance with N - 1"},
        "level": level, "theory": theory_row, "exact": {**exact, "t_S_posterior_ou": ou(exact["t_S_posterior"])},
        "classifier": {"accuracy": accuracy, "n_test": n_test, "steps": cfg.classifier_steps},
        "network": {**net, "model": cfg.model, "train_step": step, "t_S_ou": ou(net["t_S"])},
        "published": pub,
        "ratios": {
            "exact_over_theory_t": exact["t_S_posterior"] / t_s,
            "exact_over_theory_ou": ou(exact["t_S_posterior"]) / theory_row["t_S_ou"],
            "measured_over_theory_t": net["t_S"] / t_s,
            "measured_over_theory_ou": ou(net["t_S"]) / theory_row["t_S_ou"],
            "measured_over_exact_t": net["t_S"] / exact["t_S_posterior"],
            "published_measured_over_theory_steps": pub["measured_over_theory_steps"],
            "published_measured_over_theory_ou": pub["measured_over_theory_ou"],
        },
        "notes": NOTES,
        "timings": clock.seconds(digits=1),
    }  # fmt: skip


def _ou(t: float) -> float:
    """OU time of VP-linear t (nan stays nan)."""
    from theory import VPLinear

    return float(VPLinear().ou_time(t)) if math.isfinite(t) else math.nan


def _load_model(cfg: Config, data, dim: int):
    """(denoiser, training step) of the checkpoint; it must have been trained on the pipeline's images."""
    from pathlib import Path

    from empirical._util.checkpoints import load_checkpoint
    from empirical.training.config import DataConfig
    from empirical.training.train import load_denoiser

    if not Path(cfg.model).is_file():
        raise ValueError(f"model {cfg.model} is not a file (train one: python -m empirical train --classes ...)")
    stored = load_checkpoint(cfg.model)
    theirs = DataConfig.of(stored.get("config", {}))
    if theirs != data:
        raise ValueError(f"model {cfg.model} was trained on {theirs}; the images here are {data}")
    den = load_denoiser(cfg.model, device=cfg.device)
    if den.dim != dim:
        raise ValueError(f"model {cfg.model} takes {den.dim} values; the images have {dim}")
    return den, stored.get("step")


def main(argv: list[str] | None = None) -> int:
    from empirical._util.cli import command_line, print_config, refuse, typed_command
    from empirical._util.files import check_output_file
    from empirical._util.results import write_json_atomic

    try:
        cfg, args = typed_command(Config, "python -m empirical speciation", __doc__, argv)
        check_output_file(cfg.out, "out")
    except ValueError as err:
        return refuse(err)
    if args.dry_run:
        return print_config("speciation", cfg)
    try:
        result = run(cfg, command_line("speciation", argv))
    except ValueError as err:
        return refuse(err)
    write_json_atomic(cfg.out, result)
    keys = ("Lambda", "Lambda_paper", "t_S_ou", "t_S")
    print({**{k: round(result["theory"][k], 4) for k in keys}, "exact": result["exact"]["t_S_posterior"],
           "measured": result["network"]["t_S"], "measured_se": result["network"]["t_S_se"]}, flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
