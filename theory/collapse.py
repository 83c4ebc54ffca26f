r"""The collapse time of a finite data set, exact, and Biroli et al.'s estimates from the same data.

**Exact.** Near t = 0 every data point y_j has its own attractor (the stable fixed point x -> y_j as t -> 0,
where the posterior is concentrated on j). Continued up in t, the branch of y_j ends where it ceases to be
an attractor of its own: at a fold (a saddle-node, going up: it annihilates with a saddle and its basin
joins another attractor's) or where it loses stability (a pitchfork of symmetric points). Point j *owns* an
attractor at t while its branch exists there with j the strict argmax of the posterior (so two symmetric
points sharing one attractor own none). Its end t_j is located to ``tol_t`` (Newton on the extended system
for a fold, Brent's method for a crossing). The collapse time is the largest t at which every point owns an
attractor, min_j t_j; the owned fraction is #{j : t_j > t} / N.

**Biroli, Bonnaire, de Bortoli & Mezard (2024)** work in Ornstein-Uhlenbeck (OU) time s: x_s = e^{-s} x_0 +
sqrt(Delta_s) z, Delta_s = 1 - e^{-2s}, so theta = e^{-s}. A project schedule is mapped to OU time through its
SNR, theta^2 / sigma^2 = 1 / (e^{2s} - 1) (``Schedule.ou_time``): on a variance-preserving schedule
(sigma^2 = 1 - theta^2: VPLinear, VPCosine, DDPM) this is theta(t) = e^{-s} exactly.
* Speciation: t_S = 1/2 ln Lambda, Lambda the top eigenvalue of the data covariance.
* Collapse, excess-entropy definition: f(s) = s_ent(s) - 1/2 ln(2 pi e Delta_s), s_ent the entropy per
  dimension of the population's p_s; collapse where f(s_C) = ln N / d. From the data alone, s_ent is estimated
  by the cross-entropy of the leave-one-out mixture (each diffused point scored by the N - 1 others), which
  is at least the entropy: the f it gives is >= f, so its s_C is an upper bound in expectation (collapse
  met no later in OU time).
* Collapse, Gaussian closed form (data N(0, sigma^2 I)): s_C = 1/2 ln(1 + sigma^2 / (N^{2/d} - 1)), with
  sigma^2 = tr Cov / d of the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

from theory._checks import check_finite_array, check_int, check_positive, check_schedule
from theory._continuation import BranchEnd, continue_branch, log_snr_grid
from theory._engine import grid_search_setup, one_blas_thread, progress_bar
from theory.schedules import Schedule
from theory.tree import locate_end

__all__ = ["CollapseTime", "BiroliTimes", "collapse_time", "biroli_times"]


@dataclass(frozen=True)
class CollapseTime:
    """The exact collapse time ``t`` (with ``theta``, ``snr``, ``ou_time``), the end of each point's own
    attractor ``t_own`` (N,) and how it ended (``how``: "fold", "crossing" or "halved"), and the
    owned-fraction curve: ``owned_fraction(t)`` = #{j : t_own[j] > t} / N. ``biroli``: the BiroliTimes of the
    same data."""

    t: float
    theta: float
    snr: float
    ou_time: float
    t_own: np.ndarray
    how: tuple
    biroli: BiroliTimes

    def owned_fraction(self, t):
        """Share of the data points that own an attractor at each t (scalar or array)."""
        t = check_finite_array("t", t)
        return np.mean(self.t_own[None, :] > t.reshape(-1, 1), axis=1).reshape(t.shape)

    def __repr__(self):
        b = self.biroli
        return (
            f"CollapseTime(t={self.t:.10g}, theta={self.theta:.10g}, ou_time={self.ou_time:.6g}, N={len(self.t_own)}, "
            f"last own attractor ends at t={self.t_own.max():.6g}; Biroli t_C entropy={b.collapse_entropy_t:.6g}, "
            f"Gaussian={b.collapse_gaussian_t:.6g}, t_S={b.speciation_t:.6g})"
        )


@dataclass(frozen=True)
class BiroliTimes:
    """Biroli et al.'s speciation and collapse times of a data set, in OU time (``*_ou``) and in the schedule's
    forward time (``*_t``, nan where outside [0, T]). ``Lambda``: top covariance eigenvalue; ``sigma2``:
    tr Cov / d; N points in d dimensions."""

    speciation_ou: float
    speciation_t: float
    collapse_entropy_ou: float
    collapse_entropy_t: float
    collapse_gaussian_ou: float
    collapse_gaussian_t: float
    Lambda: float
    sigma2: float
    N: int
    d: int

    def __repr__(self):
        return (
            f"BiroliTimes(t_S={self.speciation_t:.6g} (OU {self.speciation_ou:.6g}), t_C entropy="
            f"{self.collapse_entropy_t:.6g} (OU {self.collapse_entropy_ou:.6g}), t_C Gaussian="
            f"{self.collapse_gaussian_t:.6g} (OU {self.collapse_gaussian_ou:.6g}), N={self.N}, d={self.d})"
        )


def excess_entropy(Y, s, n_draws=4, seed=0):
    """Biroli et al.'s excess entropy f(s) per dimension of the data Y (N, d) at OU time s, the population's
    entropy estimated by the leave-one-out mixture (see the module docstring); ``n_draws`` noises per point."""
    Y = check_finite_array("Y", Y)
    if Y.ndim != 2 or Y.shape[0] < 2:
        raise ValueError(f"Y must have shape (N, d) with N >= 2; got {Y.shape}")
    s = check_positive("s (Ornstein-Uhlenbeck time)", s)
    N, d = Y.shape
    e, delta = math.exp(-s), -math.expm1(-2.0 * s)
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(n_draws):
        X = e * Y + math.sqrt(delta) * rng.standard_normal(Y.shape)
        D2 = np.sum(X**2, 1)[:, None] - 2.0 * e * X @ Y.T + e**2 * np.sum(Y**2, 1)[None, :]
        np.fill_diagonal(D2, np.inf)  # leave the point itself out
        total += float(np.sum(-logsumexp(-D2 / (2.0 * delta), axis=1) + math.log(N - 1)))
    return total / (n_draws * N * d) - 0.5


def biroli_times(data, schedule: Schedule, *, n_draws: int = 4, seed: int = 0) -> BiroliTimes:
    """Biroli et al.'s t_S = 1/2 ln Lambda and t_C (excess entropy, Gaussian closed form) of a DeltaMixture.

    Examples:
        >>> import numpy as np
        >>> from theory import DeltaMixture, VPLinear
        >>> b = biroli_times(DeltaMixture(np.eye(4) * 3.0), VPLinear())  # covariance 9 (I/4 - 11^T/16)
        >>> round(b.Lambda, 12), round(b.speciation_ou, 6), round(float(np.log(1.5)), 6)
        (2.25, 0.405465, 0.405465)
    """
    Y, d, N = _points(data)
    check_schedule(schedule)
    n_draws, seed = check_int("n_draws", n_draws), check_int("seed", seed, lo=0)
    C = np.cov(Y.T, bias=True).reshape(d, d)
    Lam, sigma2 = float(np.linalg.eigvalsh(C)[-1]), float(np.trace(C) / d)
    s_S = 0.5 * math.log(Lam) if Lam > 1.0 else math.nan
    target = math.log(N) / d
    s_gauss = 0.5 * math.log1p(sigma2 / math.expm1(2.0 * target)) if sigma2 > 0 else math.nan

    def g(s):
        return excess_entropy(Y, s, n_draws, seed) - target

    s_ent, lo, hi = math.nan, 1e-6, 1.0
    while g(hi) > 0 and hi < 50:
        hi *= 2.0
    if g(lo) > 0 > g(hi):
        s_ent = brentq(g, lo, hi, xtol=1e-12)
    return BiroliTimes(
        s_S, schedule.t_from_ou_time(s_S), s_ent, schedule.t_from_ou_time(s_ent), s_gauss,
        schedule.t_from_ou_time(s_gauss), Lam,
        sigma2, N, d,
    )  # fmt: skip


def _points(data):
    from theory.data import DeltaMixture

    if not isinstance(data, DeltaMixture):
        raise TypeError(f"data must be a DeltaMixture (a finite data set); got {type(data).__name__}")
    Y = np.asarray(data.points, dtype=np.float64)
    if len(Y) < 2:
        raise ValueError(f"data must hold at least 2 points; got {len(Y)}")
    return Y, Y.shape[1], len(Y)


class _Own:
    """The branch of one data point's own attractor, continued up in t."""

    def __init__(self, field, j, x, t):
        self.f, self.j, self.x, self.t = field, j, x, t
        self.path = [(t, x)]
        self.end, self.how, self.x_end = math.nan, "", x

    def tied(self, x, t, tol=1e-9):
        """j shares the top posterior weight at x (to ``tol``): the attractor of symmetric points."""
        r = self.f.responsibilities(x, t)[0]
        return abs(r[self.j] - np.delete(r, self.j).max()) <= tol and r[self.j] >= r.max() - tol


@one_blas_thread
def collapse_time(
    data,
    schedule: Schedule,
    eta: float = 1.0,
    *,
    t_lo: float | None = None,
    n_grid: int = 64,
    tol_t: float = 1e-10,
    n_draws: int = 4,
    seed: int = 0,
    progress: bool | None = None,
) -> CollapseTime:
    """The largest t at which every data point owns a stable attractor (module docstring), located to ``tol_t``.

    ``t_lo`` (default 1e-4 T): where the branches start (every point must own an attractor there);
    ``n_grid`` grid times uniform in log-SNR from t_lo to T carry the branches up in lock-step.
    ``n_draws``, ``seed``: the Monte Carlo of Biroli et al.'s excess entropy (``biroli_times``). ``progress``: a
    bar over the grid times (tqdm, if installed; None: when stderr is a terminal).

    Examples:
        >>> from theory import DeltaMixture, VPLinear
        >>> from theory.systems import TwoDeltas
        >>> ct = collapse_time(DeltaMixture([[-1.0], [1.0]]), VPLinear(), n_grid=16)
        >>> abs(ct.t - TwoDeltas(1.0).t_c(VPLinear())) < 1e-8
        True
    """
    Y, d, N = _points(data)
    f, eta, t_lo, n_grid, tol_t = grid_search_setup(data, schedule, eta, t_lo, 1e-4, n_grid, tol_t, "t_lo")
    T = f.T
    _, dup = np.unique(Y, axis=0, return_counts=True)
    if dup.max() > 1:
        raise ValueError("data holds repeated points: they share one attractor at every t (no collapse time)")
    branches = _start(f, Y, t_lo)
    ts = log_snr_grid(schedule, t_lo, T, n_grid)[::-1]  # increasing
    lipschitz = 1e3 * (1.0 + f.scale) / T
    live = list(branches)
    bar = progress_bar(len(ts) - 1, "collapse time", progress)
    for i in range(1, len(ts)):
        for b in live:
            _carry(f, b, live, ts[i - 1], ts[i], tol_t, lipschitz)
        for b in live:  # once more, knowing where the others ended in this cell (a dead one is no obstacle)
            if b.how == "halved":
                b.end, b.how = math.nan, ""
                _carry(f, b, live, ts[i - 1], ts[i], tol_t, lipschitz)
                if b.how == "halved":
                    b.end, b.how = _refine(f, b, ts[i - 1], ts[i], tol_t)
        live = [b for b in live if not b.how]
        bar.set_postfix_str(f"t={ts[i]:.4g} branches={len(live)}", refresh=False)
        bar.update()
        if not live:
            break
    bar.close()
    for b in live:  # own attractors at T: the branch never ended
        b.end, b.how = T, "T"
    t_own = np.array([b.end for b in branches])
    t = float(t_own.min())
    return CollapseTime(
        t=t,
        theta=float(schedule.theta(t)),
        snr=float(schedule.snr(t)),
        ou_time=float(schedule.ou_time(t)),
        t_own=t_own,
        how=tuple(b.how for b in branches),
        biroli=biroli_times(data, schedule, n_draws=n_draws, seed=seed),
    )


def _start(f, Y, t_lo):
    """Each point's own attractor at t_lo: Newton from kappa y_j; every point must own one there."""
    X, ok = f.newton(f.kappa(t_lo) * Y, t_lo, n_iter=30)
    out = []
    for j, (x, o) in enumerate(zip(X, ok, strict=True)):
        b = _Own(f, j, x, t_lo)
        r = f.responsibilities(x, t_lo)[0] if o else None
        if not (o and f.stable(x, t_lo) and int(np.argmax(r)) == j and not b.tied(x, t_lo)):
            raise ValueError(
                f"data point {j} owns no attractor at t_lo={t_lo:.3g} (points closer than the noise there); "
                f"use a smaller t_lo"
            )
        out.append(b)
    return out


def _carry(f, b, live, t0, t1, tol_t, lipschitz):
    """Carry b's attractor from t0 to t1, or end it where it ceases to exist (b.end, b.how)."""
    others = [o for o in live if o is not b]
    end = continue_branch(f, b.x, t0, t1, tol_t, lipschitz=lipschitz, path=b.path, reject=_reject(f, b, others))
    if end.reached:
        b.x, b.t = end.x, t1
    else:
        b.end, b.how, b.x_end = float(end.t), end.how, end.x


def _reject(f, b, others):
    """Newton landed on another point's attractor (a live branch at t), or on one that symmetric points share
    (a tie of the posterior): not b's own attractor."""

    def reject(x, t):
        if b.tied(x, t):
            return True
        for o in others:
            if not (o.end > t or math.isnan(o.end)):  # o ceased to exist below t
                continue
            if np.linalg.norm(o.x - x) <= 0.1 * (1.0 + f.scale):  # o moved less than a Newton jump (0.05)
                y, ok = f.newton(o.x[None], t, n_iter=30)
                if ok[0] and np.linalg.norm(y[0] - x) <= 1e-6 * (1.0 + f.scale):
                    return True
        return False

    return reject


def _refine(f, b, t_lo, t_hi, tol_t):
    """The end of a branch whose steps halved out in the cell (t_lo, t_hi). Two ways the steps stop short or
    overshoot: near its end a branch moves as a square root, faster than the steps' Lipschitz bound, so they stop
    short (the end is then located by the extended system, ``theory.tree.locate_end``); and past a pitchfork of
    symmetric points Newton lands on the attractor they share, which Newton places off its symmetry plane by up
    to |R| / |lam| (lam -> 0 there) so the posterior shows no tie, and the branch walks on along it. So the
    attractor just above the end is continued down through the cell: where it loses stability (Brent's method)
    below the end, the branch of the point met the shared attractor there: a pitchfork, "crossing". Returns
    (t, how)."""
    end = locate_end(f, BranchEnd(b.x_end, b.end, False, b.how), t_hi, tol_t)
    t_end, how = float(end.t), end.how
    t_up = t_end + 1e-3 * (t_hi - t_end)
    X, _ = f.descend(end.x[None], t_up, max_iter=20000)
    X, ok = f.newton(X, t_up, n_iter=30)
    if not (ok[0] and f.stable(X[0], t_up)):
        return t_end, how
    cross = continue_branch(f, X[0], t_up, t_lo, tol_t)
    # j must share the top weight there: Newton places the crossing to |R| / |lam|, lam = 0, hence 1e-3, not 1e-9.
    if cross.how == "crossing" and cross.t <= t_end + 1e-3 * (t_hi - t_end) and b.tied(cross.x, cross.t, 1e-3):
        return float(cross.t), "crossing"
    return t_end, how
