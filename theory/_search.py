"""Attractors at a frozen time, found with no hand-picked guesses, and the basin mass of each.

Seeds: the centre kappa E[y], the data attractors kappa y_j of a farthest-point subset (it keeps the
outlying data: their attractors have basins that few diffused samples reach), optional draws from p_t
(they find the attractors that hold the mass), and the attractors of a neighbouring time. Each seed
descends the potential by majorise-minimise steps (float32 on large data sets: it only chooses
candidates); the limits are merged, polished in float64 by Newton (saddle-free Newton where Newton
lands on a saddle), merged again and kept when stable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import _lockstep
from theory._continuation import dedup

KNOWN_MAX = 8  # attractors of the time before carried to t as known balls: past a few, their Newton solves and top
# eigenvalues cost more than the seeds' steps they save (MNIST's 44 and 190 attractors below its first birth)
FLOAT32_MIN_WORK = 1e6  # N d above which the descent runs in float32 (it only chooses candidates): 3x faster


def use_float32(field) -> bool:
    return field.n_components * field.d >= FLOAT32_MIN_WORK


def polish(field, X, t):
    """Newton from each row of X; rows that do not end on a stable point retry by saddle-free Newton.

    On a finite data set in many dimensions every row first runs Newton in lock-step (``theory._lockstep``: one
    pass over the data for all rows); the rows it leaves (near a saddle, -H not positive definite) run Newton by
    MINRES alone."""
    X = np.atleast_2d(X)
    if len(X) > 1 and _lockstep.supported(field):
        Xn, ok = _lockstep.newton_many(field, X, t, n_iter=30)
        if not ok.all():
            Xn[~ok], ok[~ok] = field.newton(X[~ok], t, n_iter=30)
    else:
        Xn, ok = field.newton(X, t, n_iter=30)
    stable = ok.astype(bool)
    stable[stable] = stable_mask(field, Xn[stable], t)
    if not stable.all():
        Xs, ok_s = field.minimise(X[~stable], t)
        Xn[~stable], ok[~stable] = Xs, ok_s
    return Xn, ok


def stable_points(field, t, n_seeds, extra=None, samples=0, seed=0, max_iter=1000, known=None):
    """All attractors reached from the seeds (and the rows of ``extra``), polished and deduplicated, (n, d).
    ``known``: stable fixed points at t already found; a seed that enters one's certified ball stops there."""
    parts = [field.seeds(t, n_seeds)]
    if extra is not None and len(extra):
        parts.append(np.atleast_2d(extra))
    if samples:
        parts.append(field.sample(t, samples, seed))
    X, _ = field.descend(np.concatenate(parts), t, max_iter=max_iter, float32=use_float32(field), attractors=known)
    X = dedup(X[np.all(np.isfinite(X), axis=1)], 1e-4 * (1.0 + field.scale))  # merge before the costly polish
    Xp, ok = polish(field, X, t)
    if known is not None:  # first: the seeds polished onto a known attractor merge into it (its stability is known)
        Xp, ok = np.concatenate([np.atleast_2d(known), Xp]), np.concatenate([np.ones(len(known), dtype=bool), ok])
    X = dedup(Xp[ok], 1e-7 * (1.0 + field.scale))
    return X[stable_mask(field, X, t)].reshape(-1, field.d)


def stable_mask(field, X, t):
    """Which rows of X (k, d) are stable at t: all at once where the field can (``MixtureField.stable_many``)."""
    if not len(X):
        return np.zeros(0, dtype=bool)
    if hasattr(field, "stable_many"):
        return field.stable_many(X, t)
    return np.array([field.stable(x, t) for x in X], dtype=bool)


def attractors_at(field, t, n_seeds, extra=None):
    """``stable_points`` from the seeds, or where the field certifies a single attractor (``one_attractor``:
    the fixed-point map contracts everywhere) that attractor alone, by Newton from the centre seed.
    ``extra``: the attractors at a neighbouring time; where they are few, those Newton carries to stable points at
    t are ``known`` there (a seed that enters one's certified ball stops: most seeds of a scan end at the attractors
    of the time before)."""
    if getattr(field, "one_attractor", None) is not None and field.one_attractor(t):
        x, ok = field.newton(field.kappa(t) * np.asarray(field.data.mean())[None], t, n_iter=30)
        if ok[0]:
            return x
    known = None
    if extra is not None and 0 < len(extra) <= KNOWN_MAX and getattr(field, "finite", False):
        extra = np.atleast_2d(extra)
        X, ok = _lockstep.newton_many(field, extra, t) if _lockstep.supported(field) else field.newton(extra, t)
        ok &= np.all(np.isfinite(X), axis=1)
        ok[ok] = stable_mask(field, X[ok], t)
        known = X[ok] if ok.any() else None
    return stable_points(field, t, n_seeds, extra=extra, known=known)


@dataclass(frozen=True)
class BasinMasses:
    """Shares of p_t that flow to each attractor at t: ``mass`` (k,), standard errors ``se`` (k,),
    from ``n`` samples; ``unassigned``: the share that ended at none of them (stuck or elsewhere)."""

    t: float
    mass: np.ndarray
    se: np.ndarray
    n: int
    unassigned: float


def descend_samples(field, t, n_samples, seed=0, max_iter=3000, attractors=None):
    """Where ``n_samples`` draws of p_t (seeded) end under descent of the potential, (n, d). ``attractors``: stable
    points at t; a draw that enters one's certified ball ends there."""
    X, _ = field.descend(
        field.sample(t, n_samples, seed), t, max_iter=max_iter, float32=use_float32(field), attractors=attractors
    )
    return X


def basin_masses(field, t, attractors, n_samples=256, seed=0, max_iter=3000, limits=None) -> BasinMasses:
    """Sample p_t, descend each draw to its attractor, count the draws that end at each of ``attractors``.

    A draw ends at an attractor when its descent limit is within 1e-3 (1 + scale) of it; the standard
    error of a share p is sqrt(p (1 - p) / n). ``limits``: the draws' limits, if already descended.
    """
    A = np.atleast_2d(attractors)
    X = descend_samples(field, t, n_samples, seed, max_iter) if limits is None else limits
    n = len(X)
    dist = np.linalg.norm(X[:, None, :] - A[None, :, :], axis=2)
    near = dist.min(axis=1) <= 1e-3 * (1.0 + field.scale)
    counts = np.bincount(dist.argmin(axis=1)[near], minlength=len(A))
    mass = counts / n
    return BasinMasses(float(t), mass, np.sqrt(mass * (1.0 - mass) / n), n, float(1.0 - near.mean()))
