r"""Continuation of fixed points in time, written once for every field.

A *field* at frozen time t is anything with (the protocol, published in ``theory.fields``; ``MixtureField`` is
the exact mixture, ``empirical.measure.fixed_points.LearnedField`` a trained denoiser):

    scale, T                 the data's scale (for distances) and the schedule's end time
    newton(X, t, prev=None)  -> (X, converged mask): Newton (or chord) polish of the rows of X; prev = (t0, x0)
                                a solved point nearby whose Jacobian may serve as a chord
    top_eig(x, t)            -> (lam, v): the eigenvalue of the field's Jacobian that decides stability
                                (< 0 iff stable; largest real part) and its vector
    margin(x, t)             -> a continuous function of t along a branch, > 0 iff stable
    fold_system(x, t)        optional: (R, H, dR/dt, lam, v, dlam/dx, dlam/dt) for the extended system
                             (H a dense matrix or a symmetric operator: ``theory._krylov``)

A branch is carried by Newton steps with an adaptive step in t. Where it ends, the end is located:
* a continuous loss of stability (the margin crosses 0 while the branch goes on, e.g. the centre at a
  pitchfork) by Brent's method on the margin along the branch;
* a fold (the branch ceases to exist: a saddle-node) by Newton on the minimally augmented system
  R(x, t) = 0, lam_max(H(x, t)) = 0 in the unknowns (x, t), started from the last good point of the
  branch: quadratic convergence, a handful of Hessians, instead of halving steps until they fail.
  Fields without ``fold_system`` fall back to halving the step down to ``tol_t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from theory._krylov import solve, solve_bordered


def log_snr_grid(schedule, t_min: float, t_max: float, n: int, snr_floor: float = 1e-8) -> np.ndarray:
    """n times from t_max down to t_min, uniform in log-SNR (where the structure changes).

    Where snr(t_max) < ``snr_floor`` (cosine: theta(T) = 0, where the ODE's fixed points x = E[y|x] / theta
    are at infinity) the grid starts at snr = snr_floor instead of t_max.
    """
    lo, hi = float(schedule.log_snr(t_max)), float(schedule.log_snr(t_min))
    start = float(t_max)
    if lo < math.log(snr_floor):
        lo, start = math.log(snr_floor), float(schedule.t_from_snr(snr_floor))
    inner = np.asarray(schedule.t_from_snr(np.exp(np.linspace(lo, hi, n)[1:-1])), dtype=np.float64)
    return np.concatenate([[start], inner, [float(t_min)]])


def log_snr_shift(schedule, t: float, delta: float) -> float:
    """The time whose log-SNR is log-SNR(t) + delta (delta > 0: less noise, earlier forward time)."""
    return float(schedule.t_from_snr(math.exp(float(schedule.log_snr(t)) + delta)))


def log_snr_mid(schedule, t_a: float, t_b: float) -> float:
    """The time halfway between t_a and t_b in log-SNR."""
    mid = 0.5 * (float(schedule.log_snr(t_a)) + float(schedule.log_snr(t_b)))
    return float(schedule.t_from_snr(math.exp(mid)))


def first_of_groups(X, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the kept rows, counts): each row of X joins the first kept row closer than tol, or is kept."""
    X = np.atleast_2d(X)
    kept, counts = [], []
    for i, x in enumerate(X):
        for k, j in enumerate(kept):
            if np.linalg.norm(x - X[j]) <= tol:
                counts[k] += 1
                break
        else:
            kept.append(i)
            counts.append(1)
    return np.array(kept, dtype=int), np.array(counts, dtype=int)


def group(X, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(representatives, counts) of ``first_of_groups``."""
    X = np.atleast_2d(X)
    kept, counts = first_of_groups(X, tol)
    return X[kept].reshape(-1, X.shape[1]), counts


def dedup(X, tol: float) -> np.ndarray:
    """The rows of X with the later duplicates (closer than tol to a kept row) removed."""
    return group(X, tol)[0]


@dataclass(frozen=True)
class BranchEnd:
    """Where a continued branch stopped: its last point ``x`` at ``t``; ``reached`` the target time;
    otherwise ``how`` it ended: "crossing" (stability lost continuously), "fold" (the branch ceased to
    exist, located by the extended system) or "halved" (the step fell below tol_t)."""

    x: np.ndarray
    t: float
    reached: bool
    how: str = ""


def continue_branch(
    field,
    x0,
    t0,
    t1,
    tol_t,
    *,
    h0=None,
    lipschitz=None,
    track_crossing=True,
    path=None,
    reject=None,
    fold_tries=2,
    crossings=None,
    margin=None,
):
    """Carry the stable fixed point x0 at t0 towards t1 while it stays a stable fixed point.

    A Newton limit further than ``jump`` from the last point (or, with ``lipschitz``, further than
    lipschitz |dt|) is another branch, not this one: past a pitchfork Newton started on the centre can
    land on a child branch, which is O(sqrt|dt|) away. ``reject(x, t)`` marks points of another known
    branch (a child continued towards its birth must not walk onto the centre it was born from).
    ``path`` (a list) receives every accepted (t, x). ``fold_tries``: extended-system solves before
    falling back to halving (0: no fold location, e.g. to find only the cell where a branch ends).
    ``crossings`` (a list): carry the branch on through losses of stability (it then ends only where it
    ceases to exist), appending each crossing's (t, x), located by Brent's method. ``margin``: a function with
    the sign of ``field.margin`` along this branch (e.g. ``theory._lockstep.ChainedMargin``; default field.margin).
    Returns a BranchEnd.
    """
    margin_of = field.margin if margin is None else margin
    x, t, h = np.asarray(x0, dtype=np.float64), float(t0), float(t1) - float(t0)
    polish_fold = fold_tries > 0 and hasattr(field, "fold_system")
    if h0 is not None:  # a first step smaller than the whole way saves failed Newton solves
        h = math.copysign(min(abs(h), h0), h)
    jump = 0.05 * (1.0 + field.scale)
    prev = None  # the accepted point before x: a secant predictor
    failed = 0  # failed steps from x
    while abs(h) > tol_t:
        t_try = t + h
        if (h < 0 and t_try < t1) or (h > 0 and t_try > t1):
            t_try, h = float(t1), float(t1) - t
        guess = x if prev is None else x + (x - prev[1]) * (t_try - t) / (t - prev[0])
        xn, ok = field.newton(guess[None], t_try, prev=(t, x))
        dx = np.linalg.norm(xn[0] - x)
        near = ok[0] and dx <= jump and (lipschitz is None or dx <= lipschitz * abs(t_try - t))
        near = near and (reject is None or not reject(xn[0], t_try))
        margin = margin_of(xn[0], t_try) if near else -1.0
        if near and crossings is not None and (margin > 0) != (margin_of(x, t) > 0):
            end = locate_crossing(field, x, t, t_try, tol_t, margin_of)
            if end is None:  # no continuous crossing in this step: a jump; a smaller step decides
                h *= 0.5
                continue
            crossings.append((end[1], end[0]))
        if margin > 0 or (near and crossings is not None):
            prev, x, t, failed = (t, x), xn[0], t_try, 0
            if path is not None:
                path.append((t, x))
            if t == t1:
                return BranchEnd(x, t, True)
            h *= 2.0
            continue
        if near and track_crossing:  # still a fixed point, no longer stable: a continuous crossing?
            end = locate_crossing(field, x, t, t_try, tol_t, margin_of)
            if end is not None:
                return BranchEnd(end[0], end[1], False, "crossing")
        failed += 1  # a fold is looked for once a halved step has failed too: most failed steps were only too long
        if fold_tries > 0 and failed >= 2 and hasattr(field, "fold_system") and _may_fold(field, x, t, t_try):
            fold_tries -= 1
            fold = locate_fold(field, x, t, t_try, tol_t)
            if fold is not None:
                return BranchEnd(fold[0], fold[1], False, "fold")
        h *= 0.5
    if polish_fold and t != t0:
        # The steps failed within tol_t of here, where Newton slows next to the fold: polish it there.
        reach = math.copysign(min(abs(float(t1) - t), 1e-6 * field.T), float(t1) - t)
        fold = locate_fold(field, x, t, t + reach, tol_t)
        if fold is not None:
            return BranchEnd(fold[0], fold[1], False, "fold")
    return BranchEnd(x, t, False, "halved")


def fold_extrapolation(field, x, t):
    """t - lam / (d lam/dt along the branch through the stable point x): where the linear extrapolation of
    the top eigenvalue reaches 0 (inf where lam moves away from 0 as t grows). Under the square-root law
    of a fold, lam ~ -sqrt|t_f - t|, it lies at twice the distance to the fold; where lam is linear
    (a pitchfork) at the crossing itself."""
    _, H, R_t, lam, v, lam_x, lam_t = field.fold_system(x, t)
    try:
        # along the branch dx/dt = -H^-1 dR/dt; a bound and a ranking need no more than 1e-8 of it
        dlam = lam_t - lam_x @ solve(H, R_t, rtol=1e-8, eig=(lam, v))
    except np.linalg.LinAlgError:
        return math.nan
    return t - lam / dlam if dlam != 0 else math.inf


def _may_fold(field, x, t, t_try):
    """Can the branch through x at t fold within the failed step to t_try? Not if the extrapolated zero
    of lam lies behind the step or beyond 4 steps (twice the square-root law's factor): the step was
    only too long, and halving it is cheaper than the fold system's Newton."""
    ratio = (fold_extrapolation(field, x, t) - t) / (t_try - t)
    return True if math.isnan(ratio) else 0.0 < ratio <= 4.0


def locate_crossing(field, x, t_in, t_out, tol_t, margin=None):
    """Root of the margin (``margin``, default ``field.margin``) along the branch through x between t_in and t_out
    (opposite signs), or None."""
    margin = field.margin if margin is None else margin

    def f(s):
        xs, ok = field.newton(x[None], s)
        if not ok[0]:
            raise ArithmeticError
        return margin(xs[0], s)

    try:
        root = brentq(f, t_in, t_out, xtol=tol_t, rtol=4 * np.finfo(float).eps)
    except (ArithmeticError, ValueError):
        return None
    xr, ok = field.newton(x[None], root)
    return (xr[0], root) if ok[0] else None


def locate_fold(field, x, t_in, t_out, tol_t, max_iter=12):
    """The fold (saddle-node) of the branch through the stable point x at t_in, expected towards t_out.

    First the branch is walked towards the fold by the square-root law (lam^2 is linear in t near a fold:
    each step goes 90% of the way to t - lam / (2 dlam/dt), a failed step halves the distance), until
    the top eigenvalue is small; then Newton on F(x, t) = (R(x, t), lam(x, t)) = 0, lam the top
    eigenvalue of H: the bordered Jacobian [[H, dR/dt], [dlam/dx, dlam/dt]] is regular at a generic fold
    although H is singular there. Returns (x, t) with |R| <= tol_res and |dt| <= tol_t, t between t_in
    and t_out; or None.
    """
    start = _approach_fold(field, np.asarray(x, dtype=np.float64), float(t_in), float(t_out))
    if start is None:
        return None
    x, t_in = start
    lo, hi = sorted((t_in, t_out))
    span = hi - lo
    t = float(t_in)
    jump = 0.05 * (1.0 + field.scale)
    x0 = x = np.asarray(x, dtype=np.float64)
    polished = False
    for _ in range(max_iter):
        R, H, R_t, lam, _, lam_x, lam_t = field.fold_system(x, t)
        d = len(x)
        try:
            step = solve_bordered(H, R_t, lam_x, lam_t, -np.concatenate([R, [lam]]))
        except np.linalg.LinAlgError:
            return None
        dx, dt = step[:d], float(step[d])
        if not (np.all(np.isfinite(dx)) and math.isfinite(dt)):
            return None
        x, t = x + dx, t + dt
        if not lo - span <= t <= hi + span or np.linalg.norm(x - x0) > 2 * jump:  # Newton may overshoot a little
            return None
        done = abs(dt) <= tol_t and np.linalg.norm(R) <= field.tol_res(t)
        if done and not polished:  # one more step: quadratic convergence takes it to round-off
            polished = True
            continue
        if done:
            # The fold of this branch lies between its last good point and the failed step, near x:
            # a fold found elsewhere belongs to another branch.
            inside = lo - tol_t <= t <= hi + tol_t and np.linalg.norm(x - x0) <= jump
            return (x, t) if inside else None
    return None


def _approach_fold(field, x, t, t_out, max_steps=12, small=0.05):
    """Walk the stable branch through (x, t) towards its fold in (t, t_out] until the top eigenvalue of
    H is below ``small`` of its value at the start; returns the last point (x, t), or None."""
    lam0, far = None, t_out
    for _ in range(max_steps):
        _, H, R_t, lam, v, lam_x, lam_t = field.fold_system(x, t)
        lam0 = lam if lam0 is None else lam0
        if lam >= 0:
            return None  # not on the stable side of a fold
        if lam > small * lam0:
            return x, t
        try:
            dxdt = -solve(H, R_t, eig=(lam, v))
        except np.linalg.LinAlgError:
            return x, t
        dlam = lam_t + lam_x @ dxdt
        t_est = t - lam / (2.0 * dlam) if dlam * (far - t) > 0 else far
        if (t_est - t) * (far - t) <= 0 or abs(t_est - t) > abs(far - t):
            t_est = far
        t_new = t + 0.9 * (t_est - t)
        for _ in range(8):  # a step past the fold fails: halve it
            xn, ok = field.newton((x + dxdt * (t_new - t))[None], t_new, prev=(t, x))
            if ok[0] and field.margin(xn[0], t_new) > 0 and np.linalg.norm(xn[0] - x) <= 0.05 * (1.0 + field.scale):
                break
            far, t_new = t_new, t + 0.5 * (t_new - t)
        else:
            return x, t
        x, t = xn[0], t_new
    return x, t
