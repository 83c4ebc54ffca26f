r"""Analytic reference systems as objects: each builds its data and knows its closed forms.

Every system carries the data (a ``DeltaMixture`` or ``GaussianMixture``) and, from ``theory.symbolic``,
the theta at which the centre x = 0 loses stability (``centre_theta_c``) and the forward time of that loss
on a given schedule (``centre_t_c``). Where the centre's loss is the first bifurcation met in generation
(a supercritical pitchfork: two symmetric deltas, two symmetric Gaussians in 1D) ``theta_c`` / ``t_c`` return
the same numbers and ``kind == "pitchfork"``; elsewhere they raise, because no closed form exists for the
saddle-node that comes first (``kind`` says which bifurcation is known to come first, None if unknown).

Derivations (docs/derivations.md has them in full):

* Variance preserving (sigma^2 = 1 - theta^2, g^2 = -2 a): the drift is -a (x + (1 + eta^2) score), so the
  centre loses stability where (1 + eta^2)(sigma^2 - theta^2 lam) = sigma^4, lam the top eigenvalue of the
  posterior covariance at x = 0 (the data covariance for centred equal-norm data; lam = a^2 for deltas at +-a).
  For two Gaussians N(+-m, v0) the variance becomes v = theta^2 v0 + sigma^2: (1 + eta^2)(v - theta^2 m^2) = v^2.
* Variance exploding (theta = 1, a = 0): the drift is (1 + eta^2)/2 g^2 score for every eta, so the centre
  loses stability where Hess log p_t(0) does: sigma^2 = lam (deltas), sigma^2 = m^2 - v0 (Gaussians).

Times: ``centre_t_c`` is nan when the crossing lies outside the schedule's [theta(T), 1] (VP) or
[sigma_min, sigma_max] (VE); look at ``centre_theta_c`` to tell "always stable" (nan) from "never stable" (0).

The catalogue behind ``python -m theory`` (``reference_problems``) is these systems, each solved at one eta, with
bare data where no closed form exists (the heavy-tailed four deltas).

Examples:
    >>> from theory import VPLinear
    >>> s = TwoDeltas(1.0)
    >>> round(s.theta_c(eta=1.0), 10), round(s.t_c(VPLinear(), eta=1.0), 10)
    (0.6435942529, 0.2926416543)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache

import numpy as np

from theory import symbolic as S
from theory._checks import (
    check_eta,
    check_finite_array,
    check_in_range,
    check_int,
    check_positive,
    check_schedule,
    check_weights,
)
from theory.data import DeltaMixture, GaussianMixture

__all__ = [
    "ReferenceSystem",
    "TwoDeltas",
    "EqualNormSet",
    "ThreeDeltas",
    "TwoGaussians",
    "reference_systems",
    "ReferenceProblem",
    "reference_problems",
]


@cache
def _coefficients(name):
    """(A, B, C) of the centre's quadratic in s = theta^2 (``theory.symbolic.critical_quadratic``), compiled once."""
    args = {"two_delta": (S.a, S.eta), "equal_norm": (S.lam, S.eta), "two_gaussian": (S.m, S.v0, S.eta)}[name]
    return S.lambdify(S.critical_quadratic(name), args)


def _theta_c(name, *params) -> float:
    """sqrt(s_+), s_+ the root >= 0 of A s^2 + B s + C (A >= 0 >= C), in the form without cancellation for the
    sign of B: the textbook (-B + sqrt(B^2 - 4AC)) / 2A loses s_+ ~ -C / B to round-off when B >> 1 (far-apart
    points: 0.707 instead of 1e-25 for deltas at +-1e25). hypot keeps B^2 from overflowing."""
    A, B, C = (float(v) for v in _coefficients(name)(*(np.float64(p) for p in params)))
    h = math.hypot(B, 2.0 * math.sqrt(-A * C))
    s = -2.0 * C / (B + h) if B > 0 else (h - B) / (2.0 * A)
    return math.sqrt(s)


class ReferenceSystem(ABC):
    """Base class: subclasses set ``name``, ``data``, ``kind`` and define ``centre_theta_c`` and ``_ve_sigma2``."""

    name: str
    data: DeltaMixture | GaussianMixture
    kind: str | None = None  # the first bifurcation in generation, where it is known

    @abstractmethod
    def centre_theta_c(self, eta: float = 1.0) -> float:
        """Closed-form theta where the centre loses stability on a variance-preserving schedule."""

    @abstractmethod
    def _ve_sigma2(self) -> float:
        """sigma^2 at which the centre loses stability on a variance-exploding schedule."""

    def centre_t_c(self, schedule, eta: float = 1.0) -> float:
        """Forward time of the centre's loss of stability on ``schedule`` (VP or VE); nan if outside [0, T]."""
        check_schedule(schedule)
        eta = check_eta(eta)
        if schedule.variance_preserving:
            th = self.centre_theta_c(eta)
            if not math.isfinite(th) or not float(schedule.theta(schedule.T)) <= th <= 1.0:
                return math.nan
            return float(schedule.t_from_theta(th))
        s2 = self._ve_sigma2()
        if not hasattr(schedule, "t_from_sigma"):
            raise ValueError(f"schedule {schedule!r} is neither variance preserving nor VE: no closed form")
        if not math.isfinite(s2) or not schedule.sigma_min <= math.sqrt(max(s2, 0.0)) <= schedule.sigma_max:
            return math.nan
        return float(schedule.t_from_sigma(math.sqrt(s2)))

    def _require_pitchfork(self):
        if self.kind != "pitchfork":
            raise ValueError(
                f"{self.name}: no closed form for the critical time (the first bifurcation is "
                f"{self.kind or 'not known'}, not the centre's pitchfork); use centre_theta_c / centre_t_c "
                f"for the centre's loss, or theory.critical_time"
            )

    def theta_c(self, eta: float = 1.0) -> float:
        """Critical theta (the first bifurcation in generation), where it is the centre's pitchfork."""
        self._require_pitchfork()
        return self.centre_theta_c(eta)

    def t_c(self, schedule, eta: float = 1.0) -> float:
        """Critical forward time on ``schedule``, where it is the centre's pitchfork."""
        self._require_pitchfork()
        return self.centre_t_c(schedule, eta)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class TwoDeltas(ReferenceSystem):
    """p_0 = w_- delta_{-a} + w_+ delta_{+a} in 1D (the paper's example for a = 1, equal weights).

    Equal weights: a supercritical pitchfork at theta_c = sqrt(s_+), s^2 + s((1 + eta^2)(1 + a^2) - 2) - eta^2 = 0.
    Unequal weights: the centre is no fixed point; a saddle-node creates the lighter point's attractor, located by
    ``reduced_drift`` = 0 and its derivative = 0 (no closed-form theta).

    >>> TwoDeltas(2.0).centre_theta_c(1.0) < TwoDeltas(1.0).centre_theta_c(1.0)  # farther apart: breaks earlier
    True
    """

    def __init__(self, a: float = 1.0, weights=None):
        self.a = check_positive("a", a)
        self.weights = check_weights(weights, 2)
        self.symmetric = bool(self.weights[0] == self.weights[1])
        self.kind = "pitchfork" if self.symmetric else "saddle-node"
        self.name = f"deltas +-{self.a:g}" + (
            "" if self.symmetric else f", weights {self.weights[0]:g}/{1 - self.weights[0]:g}"
        )
        self.data = DeltaMixture([[-self.a], [self.a]], self.weights)
        self.lam = self.a**2

    def centre_theta_c(self, eta: float = 1.0) -> float:
        if not self.symmetric:
            raise ValueError(f"{self.name}: with unequal weights the centre is not a fixed point (no centre_theta_c)")
        return _theta_c("two_delta", self.a, check_eta(eta))

    def _ve_sigma2(self):
        if not self.symmetric:
            raise ValueError(f"{self.name}: with unequal weights the centre is not a fixed point")
        return self.lam

    def reduced_drift(self, x, theta, eta: float = 1.0):
        """VP fixed-point residual R(x) = score + x / (1 + eta^2) (the drift is -(1 + eta^2) a R) and dR/dx.

        Written in numpy from the posterior m = tanh(theta a x / sigma^2 + 1/2 ln(w_+ / w_-)): independent of the
        jax kernels, so tests can hold fixed points and folds against it.
        """
        x = check_finite_array("x", x)
        theta = check_in_range("theta", theta, 0.0, 1.0, open_hi=True)  # sigma^2 = 1 - theta^2 > 0
        s2 = 1.0 - theta**2
        wm, wp = self.weights
        m = np.tanh(theta * self.a * x / s2 + 0.5 * np.log(wp / wm))
        c = 1.0 / (1.0 + check_eta(eta) ** 2)
        R = (theta * self.a * m - x) / s2 + c * x
        dR = -1.0 / s2 + theta**2 * self.a**2 / s2**2 * (1 - m**2) + c
        return R, dR


class EqualNormSet(ReferenceSystem):
    """A centred finite set of equal-norm points with equal weights; lam the top eigenvalue of its covariance.

    At x = 0 the posterior is uniform, so the centre's loss is the two-delta formula with a^2 -> lam. The first
    bifurcation may be a saddle-node before it (memorisation in large sets, three-fold symmetry): ``kind`` is None.
    """

    def __init__(self, points, name: str | None = None):
        Y = check_finite_array("points", points)
        if Y.ndim != 2 or Y.shape[0] < 2:
            raise ValueError(f"points must have shape (N, d) with N >= 2; got {Y.shape}")
        norms = np.linalg.norm(Y, axis=1)
        if np.ptp(norms) > 1e-10 * norms.max() or norms.max() == 0:
            raise ValueError(f"points must have equal, nonzero norms; they range over [{norms.min()}, {norms.max()}]")
        if np.abs(Y.mean(axis=0)).max() > 1e-10 * norms.max():
            raise ValueError("points must be centred (mean 0 to 1e-10 of their norm)")
        self.points = Y
        self.data = DeltaMixture(Y)
        self.lam = float(np.linalg.eigvalsh(Y.T @ Y / len(Y))[-1])
        self.name = name or f"equal-norm, N={Y.shape[0]}, d={Y.shape[1]}"

    @classmethod
    def random(cls, d: int, n_dirs: int, radius: float, seed: int) -> EqualNormSet:
        """``n_dirs`` random unit vectors in R^d and their negatives, times ``radius`` (centred by construction)."""
        d, n_dirs = check_int("d", d), check_int("n_dirs", n_dirs)
        radius = check_positive("radius", radius)
        V = np.random.default_rng(check_int("seed", seed, lo=0)).normal(size=(n_dirs, d))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        return cls(np.concatenate([V, -V]) * radius, name=f"equal-norm, N={2 * n_dirs}, d={d}")

    def centre_theta_c(self, eta: float = 1.0) -> float:
        return _theta_c("equal_norm", self.lam, check_eta(eta))

    def _ve_sigma2(self):
        return self.lam

    def speciation_theta(self) -> float:
        """theta_S = 1 / sqrt(1 + lam): -log p_t stops being convex at the centre (the eta -> inf limit)."""
        return 1.0 / math.sqrt(1.0 + self.lam)


class ThreeDeltas(EqualNormSet):
    """Three points at 120 degrees on the circle of radius r (lam = r^2 / 2, twice degenerate).

    No x -> -x symmetry: a saddle-node creates three attractors before the centre loses stability.
    """

    kind = "saddle-node"

    def __init__(self, radius: float = 1.0):
        r = check_positive("radius", radius)
        ang = 2 * np.pi * np.arange(3) / 3
        super().__init__(r * np.c_[np.cos(ang), np.sin(ang)], name=f"3 deltas at 120 deg, r={r:g}")


class TwoGaussians(ReferenceSystem):
    """p_0 = N(-m, v0)/2 + N(m, v0)/2 in 1D: a supercritical pitchfork at the closed-form theta_c(m, v0, eta).

    A transition exists iff (1 + eta^2) m^2 > v0 (1 + eta^2 - v0); otherwise ``centre_theta_c`` is nan.
    """

    kind = "pitchfork"

    def __init__(self, m: float = 1.0, v0: float = 0.1):
        self.m, self.v0 = check_positive("m", m), check_positive("v0", v0)
        self.name = f"2 Gaussians +-{self.m:g}, var {self.v0:g}"
        self.data = GaussianMixture([[-self.m], [self.m]], [self.v0, self.v0])

    def centre_theta_c(self, eta: float = 1.0) -> float:
        eta = check_eta(eta)
        m, v0 = self.m, self.v0
        if (1 + eta**2) * m**2 <= v0 * (1 + eta**2 - v0):
            return math.nan  # the centre stays stable down to t = 0
        return _theta_c("two_gaussian", m, v0, eta)  # A = (1 - v0)^2 = 0 at v0 = 1: B > 0 there, s = -C / B

    def _ve_sigma2(self):
        return self.m**2 - self.v0


def reference_systems() -> list[ReferenceSystem]:
    """One of each, at the parameters of the ``python -m theory`` table."""
    return [
        TwoDeltas(1.0),
        TwoDeltas(2.0),
        TwoDeltas(1.0, [0.3, 0.7]),
        TwoGaussians(1.0, 0.1),
        ThreeDeltas(1.0),
        EqualNormSet.random(10, 10, 1.5, seed=0),
    ]


@dataclass(frozen=True)
class ReferenceProblem:
    """A named data set, the eta it is solved at, and its reference system (None where no closed form exists).

    ``centre_theta_closed_form`` is the closed-form theta of the centre's loss of stability on a variance-
    preserving schedule (None where there is none); ``closed_centre(schedule)`` gives it on any schedule."""

    name: str
    data: object
    eta: float
    system: ReferenceSystem | None = None

    @property
    def centre_theta_closed_form(self) -> float | None:
        if self.system is None or (isinstance(self.system, TwoDeltas) and not self.system.symmetric):
            return None  # unequal weights: the centre is no fixed point
        return self.system.centre_theta_c(self.eta)

    def closed_centre(self, schedule) -> tuple[float | None, float | None]:
        """(theta, t) of the centre's loss in closed form on ``schedule``; theta is None on VE (theta = 1 there),
        both None where no closed form exists, t nan where the loss lies outside [0, T]."""
        check_schedule(schedule)
        theta = self.centre_theta_closed_form
        if theta is None:
            return None, None
        t = self.system.centre_t_c(schedule, self.eta)
        return (theta if schedule.variance_preserving else None), t


def _problem(name: str, system: ReferenceSystem, eta: float) -> ReferenceProblem:
    return ReferenceProblem(name, system.data, eta, system)


def reference_problems() -> list[ReferenceProblem]:
    """The catalogue: symmetric (pitchfork), asymmetric and subcritical (saddle-node) problems."""
    heavy = DeltaMixture([[-1.0], [-0.2], [0.2], [1.0]], [0.05, 0.45, 0.45, 0.05])
    return [
        _problem("deltas +-1 (paper)", TwoDeltas(1.0), 1.0),
        _problem("deltas +-1, eta=0.5", TwoDeltas(1.0), 0.5),
        _problem("deltas +-0.7, ODE", TwoDeltas(0.7), 0.0),
        _problem("deltas +-2", TwoDeltas(2.0), 1.0),
        _problem("deltas +-1, weights .3/.7", TwoDeltas(1.0, [0.3, 0.7]), 1.0),
        _problem("2 Gaussians +-1, var 0.1", TwoGaussians(1.0, 0.1), 1.0),
        ReferenceProblem("4 deltas, heavy tails", heavy, 1.0, None),
        _problem("3 deltas at 120 deg (2D)", ThreeDeltas(1.0), 1.0),
        _problem("equal-norm, N=20, d=10", EqualNormSet.random(10, 10, 1.5, seed=0), 1.0),
    ]
