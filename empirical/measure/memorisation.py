r"""Memorisation measured in a denoiser, against the exact collapse time of its training set.

Three measurements on a denoiser (a trained network, or ``ExactDenoiser`` for the exact finite-set score):

1. **Copies** (Bonnaire et al. 2025): n samples generated with the learned score (the reverse SDE by
   Euler-Maruyama, ``empirical.measure.cloning.euler_maruyama``, from p_T down to T_MIN); a sample is a copy when its
   distance to the nearest training image is under 1/3 of its distance to the second nearest.
2. **Attractors** at frozen times t: the stable fixed points of the learned drift
   (``empirical.measure.fixed_points.stable_fixed_points``) reached from the theory's seeds (kappa y_j, the diffused
   images theta y_j + sigma eps, kappa times the mean).
3. **Owned images**: image j owns an attractor x* at t when the attractor's denoised point x* / kappa lies
   within 1/3 of the distance from y_j to its nearest other image (the same 1/3 rule). The measured time is
   the largest grid time at which every image owns one.

The exact collapse time of the same images (``theory.collapse_time``: the largest t at which every image
has its own attractor, by continuation) stands beside them; the 1/3 rule applied to the exact score
(``ExactDenoiser``) shows what the rule itself reads off the exact dynamics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from empirical._util.cli import print_config, refuse, typed_command
from empirical.measure.cloning import euler_maruyama
from empirical.measure.fixed_points import map_coeffs, stable_fixed_points
from empirical.models.denoiser import T_MIN, Denoiser, schedule_coeffs
from theory.checks import check_int

__all__ = [
    "Config",
    "copy_fraction",
    "owned_images",
    "attractor_scan",
    "exact_scan",
    "sde_samples",
    "measured_time",
    "run",
]


def _distances(A, Y):
    return np.sqrt(np.maximum(np.sum(A**2, 1)[:, None] - 2 * A @ Y.T + np.sum(Y**2, 1)[None, :], 0.0))


def copy_fraction(samples, x_train) -> float:
    """Share of ``samples`` (n, d) whose nearest image of ``x_train`` (N >= 2, d) is under 1/3 of the second nearest.

    >>> copy_fraction(np.array([[0.0, 0.01], [0.5, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]]))
    0.5
    """
    D = np.sort(_distances(np.asarray(samples, float), np.asarray(x_train, float)), axis=1)
    return float(np.mean(D[:, 0] < D[:, 1] / 3.0))


def owned_images(points, x_train, kappa: float) -> np.ndarray:
    """Mask (N,) of the images y_j with an attractor x* (rows of ``points``) whose x* / kappa lies within 1/3 of
    the distance from y_j to its nearest other image.

    >>> owned_images(np.array([[0.02, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]]), 1.0).tolist()
    [True, False]
    """
    Y = np.asarray(x_train, float)
    gap = _distances(Y, Y)
    np.fill_diagonal(gap, np.inf)
    if len(points) == 0:
        return np.zeros(len(Y), bool)
    D = _distances(Y, np.asarray(points, float) / kappa)
    return D.min(axis=1) < gap.min(axis=1) / 3.0


def sde_samples(denoiser: Denoiser, x_train, n: int, *, n_steps: int = 500, eta: float = 1.0, seed: int = 0):
    """n samples by the reverse SDE with the learned score from x_T = theta(T) y + sigma(T) eps (y a random
    training image) down to T_MIN on a uniform grid of ``n_steps`` steps; (n, d) float64."""
    g = torch.Generator().manual_seed(seed)
    Y = torch.as_tensor(np.asarray(x_train), dtype=torch.float64)
    T = float(denoiser.schedule.T)
    th, s = (float(v) for v in schedule_coeffs(denoiser.schedule, T, "theta", "sigma"))
    idx = torch.randint(len(Y), (n,), generator=g)
    x = th * Y[idx] + s * torch.randn((n, Y.shape[1]), generator=g, dtype=torch.float64)
    ts = np.linspace(T, T_MIN, n_steps + 1)
    return euler_maruyama(denoiser, x.to(_dtype(denoiser)), ts, eta=eta, generator=g)[-1].double().numpy()


def _dtype(denoiser):
    return next((p.dtype for p in denoiser.parameters()), torch.float64)


def attractor_scan(denoiser: Denoiser, x_train, ts, *, eta: float = 1.0, seed: int = 0) -> list[dict]:
    """At each t of ``ts``: the number of attractors and of owned images (the module docstring)."""
    Y = torch.as_tensor(np.asarray(x_train), dtype=torch.float64)
    eps = torch.randn(Y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows = []
    for t in ts:
        t = float(t)
        kappa, _ = map_coeffs(denoiser, t, eta)
        th, s = (float(v) for v in schedule_coeffs(denoiser.schedule, t, "theta", "sigma"))
        starts = torch.cat([kappa * Y, th * Y + s * eps, kappa * Y.mean(0, keepdim=True)])
        pts = stable_fixed_points(denoiser, t, starts.to(_dtype(denoiser)), eta=eta)
        X = np.array([p.x for p in pts]).reshape(-1, Y.shape[1])
        own = owned_images(X, Y.numpy(), kappa)
        rows.append({"t": t, "n_attractors": len(X), "n_owned": int(own.sum())})
    return rows


def measured_time(rows, n_train: int) -> tuple[float, float]:
    """(largest grid t at which every image owns an attractor, the next grid t above it: the bracket);
    nan where no grid time has all of them."""
    full = [r["t"] for r in rows if r["n_owned"] == n_train]
    if not full:
        return math.nan, math.nan
    t = max(full)
    above = [r["t"] for r in rows if r["t"] > t]
    return t, (min(above) if above else math.nan)


def exact_scan(x_train, ts, *, eta: float = 1.0) -> list[dict]:
    """``attractor_scan`` for the exact score of the images (``theory.fixed_points``: its stable points)."""
    from theory import DeltaMixture, VPLinear, fixed_points
    from theory.family import EtaFamily

    data, sched = DeltaMixture(np.asarray(x_train)), VPLinear()
    fam = EtaFamily(sched, eta)
    rows = []
    for t in ts:
        X = np.array([p.x for p in fixed_points(data, sched, float(t), eta) if p.stable])
        own = owned_images(X.reshape(-1, data.dim), x_train, float(fam.kappa(float(t))))
        rows.append({"t": float(t), "n_attractors": len(X), "n_owned": int(own.sum())})
    return rows


def run(n_train: int, steps: int, out: str, *, n_samples: int = 256, seed: int = 0) -> dict:
    """Train (or resume) the digits MLP on ``n_train`` images, then every measurement of the module docstring."""
    from empirical.data.datasets import load_dataset
    from empirical.training.config import TrainConfig
    from empirical.training.train import load_denoiser, train
    from theory import DeltaMixture, VPLinear, collapse_time, simulate

    torch.set_num_threads(1)
    cfg = TrainConfig(
        dataset="digits", n_train=n_train, data_seed=seed, net="mlp", width=256, depth=3, steps=steps,
        batch_size=256, out=out, device="cpu", ckpt_every=2000, seed=seed,
    )  # fmt: skip
    den = load_denoiser(train(cfg)).double()  # measurements in float64, as empirical.pipelines.breaking_time.pipeline
    x = load_dataset("digits", n=n_train, seed=seed).x
    ct = collapse_time(DeltaMixture(x), VPLinear(), n_grid=24)
    ts = np.round(np.linspace(0.05, 0.45, 17), 6)
    net, exact = attractor_scan(den, x, ts, seed=seed), exact_scan(x, ts)
    t_net, t_exact = measured_time(net, n_train), measured_time(exact, n_train)
    exact_samples = simulate(DeltaMixture(x), VPLinear(), n_samples, n_steps=500, t_end=T_MIN, seed=seed).x[-1]
    return {
        "dataset": "digits", "n_train": n_train, "steps": steps,
        "t_collapse_exact": ct.t, "t_C_biroli_entropy": ct.biroli.collapse_entropy_t,
        "t_C_biroli_gaussian": ct.biroli.collapse_gaussian_t, "t_S_biroli": ct.biroli.speciation_t,
        "t_measured": t_net[0], "t_measured_bracket": list(t_net), "t_exact_same_rule": t_exact[0],
        "copy_fraction": copy_fraction(sde_samples(den, x, n_samples, seed=seed), x),
        "copy_fraction_exact": copy_fraction(exact_samples, x),
        "network_scan": net, "exact_scan": exact,
        "command": f"python -m empirical memorisation --n-train {n_train} --steps {steps}",
    }  # fmt: skip


@dataclass
class Config:
    """The options of ``python -m empirical memorisation``; every field is checked on construction."""

    n_train: int = field(default=64, metadata={"help": "training images (digits, seeded subset)"})
    steps: int = field(default=12000, metadata={"help": "Adam steps (batch 256)"})
    out: str | None = field(default=None, metadata={"help": "checkpoint folder (omit: runs/memorise-<n_train>)"})
    results: str = field(default="results", metadata={"help": "folder of memorisation.json"})

    def __post_init__(self):
        check_int("n_train", self.n_train, lo=2)  # the 1/3 rule needs a second nearest image
        check_int("steps", self.steps, lo=1)
        if self.out is None:
            self.out = f"runs/memorise-{self.n_train}"


def main(argv: list[str] | None = None) -> int:
    from empirical._util.files import check_output_dir, check_output_file
    from empirical._util.results import upsert_row

    try:
        cfg, args = typed_command(Config, "python -m empirical memorisation", __doc__, argv)
        if not args.dry_run:  # before the training and the scans: both outputs writable, the rows mergeable
            check_output_dir(cfg.out, "out")
            rows = check_output_file(Path(check_output_dir(cfg.results, "results")) / "memorisation.json",
                                     "results", holds="list")  # fmt: skip
    except ValueError as err:
        return refuse(err)
    if args.dry_run:
        return print_config("memorisation", cfg)
    row = run(cfg.n_train, cfg.steps, cfg.out)
    upsert_row(rows, row, ("n_train",))
    print({k: v for k, v in row.items() if not k.endswith("scan")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
