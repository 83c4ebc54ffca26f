"""A catalogue of reference problems with, where one exists, the closed-form critical theta.

The derivations are in docs/derivations.md; the closed forms come from ``theory.symbolic``.
Each problem is small enough to solve in seconds; ``python -m theory`` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import symbolic as S
from theory.data import DeltaMixture, GaussianMixture

__all__ = ["ReferenceProblem", "reference_problems", "equal_norm_set"]


@dataclass(frozen=True)
class ReferenceProblem:
    """A named data set, the eta it is solved at, and the closed-form theta of the centre's loss
    of stability (None where no closed form exists)."""

    name: str
    data: object
    eta: float
    centre_theta_closed_form: float | None


def equal_norm_set(d: int, n_dirs: int, radius: float, seed: int) -> np.ndarray:
    """A centred equal-norm finite set: ``n_dirs`` random unit vectors and their negatives, times ``radius``."""
    V = np.random.default_rng(seed).normal(size=(n_dirs, d))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return np.concatenate([V, -V]) * radius


def _two_delta(a, eta):
    return float(S.lambdify(S.two_delta_theta_c(), (S.a, S.eta))(a, eta))


def _equal_norm(lam, eta):
    return float(S.lambdify(S.equal_norm_theta_c(), (S.lam, S.eta))(lam, eta))


def reference_problems() -> list[ReferenceProblem]:
    """The catalogue: symmetric (pitchfork), asymmetric and subcritical (saddle-node) problems."""
    Y = equal_norm_set(10, 10, 1.5, seed=0)
    lam = float(np.linalg.eigvalsh(Y.T @ Y / len(Y))[-1])
    ang = 2 * np.pi * np.arange(3) / 3
    gm_theta = float(S.lambdify(S.two_gaussian_theta_c(), (S.m, S.v0, S.eta))(1.0, 0.1, 1.0))
    return [
        ReferenceProblem("deltas +-1 (paper)", DeltaMixture([[-1.0], [1.0]]), 1.0, _two_delta(1.0, 1.0)),
        ReferenceProblem("deltas +-1, eta=0.5", DeltaMixture([[-1.0], [1.0]]), 0.5, _two_delta(1.0, 0.5)),
        ReferenceProblem("deltas +-0.7, ODE", DeltaMixture([[-0.7], [0.7]]), 0.0, _two_delta(0.7, 0.0)),
        ReferenceProblem("deltas +-2", DeltaMixture([[-2.0], [2.0]]), 1.0, _two_delta(2.0, 1.0)),
        ReferenceProblem("deltas +-1, weights .3/.7", DeltaMixture([[-1.0], [1.0]], [0.3, 0.7]), 1.0, None),
        ReferenceProblem("2 Gaussians +-1, var 0.1", GaussianMixture([[-1.0], [1.0]], [0.1, 0.1]), 1.0, gm_theta),
        ReferenceProblem(
            "4 deltas, heavy tails", DeltaMixture([[-1.0], [-0.2], [0.2], [1.0]], [0.05, 0.45, 0.45, 0.05]), 1.0, None
        ),
        ReferenceProblem(
            "3 deltas at 120 deg (2D)", DeltaMixture(np.c_[np.cos(ang), np.sin(ang)]), 1.0, _equal_norm(0.5, 1.0)
        ),
        ReferenceProblem("equal-norm, N=20, d=10", DeltaMixture(Y), 1.0, _equal_norm(lam, 1.0)),
    ]
