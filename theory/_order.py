r"""The order parameter m(t) and the macroscopic breaking time (DESIGN.md, "Macroscopic breaking time").

m(t) is the share of p_t that flows under the frozen drift to the central attractor (the branch continued
from the unique attractor at T). Draws of p_t (seeded: the same data indices and noises at every t, so m is
compared across times on common random numbers) descend the potential; a draw counts when its limit lies
within 1e-3 (1 + scale) of the centre. Below the centre's end (its loss of stability or fold) m = 0 exactly.
The macroscopic breaking time is the largest t at which 1 - m(t) exceeds a threshold: it exists whether the
bulk of p_t leaves the centre for one new attractor or for a hundred small ones, where the first bifurcation
may create an attractor around a few outlying points that no draw reaches.
"""

from __future__ import annotations

import math

import numpy as np

from theory._continuation import log_snr_mid
from theory._search import use_float32

BISECT_TOL = 1e-4  # bracket of the macroscopic time, relative to T: each halving descends the draws that change
DESCENT_ITER = 3000


def at_centre(field, t, centre, n_samples, seed, rows=None):
    """Which of ``n_samples`` seeded draws of p_t (only the indices ``rows``, if given) descend to ``centre``, (n,).

    A draw that enters the ball around the centre that the descent provably maps into itself and contracts
    (``MixtureField.contraction_radius``) counts at once. Near a loss of stability of the centre the descent slows
    (its contraction rate tends to 1), so draws left unconverged next to the centre are polished by Newton, which
    converges there at once."""
    f32 = use_float32(field)
    draws = field.sample(t, n_samples, seed)
    draws = draws if rows is None else draws[rows]
    X, res = field.descend(draws, t, max_iter=DESCENT_ITER, float32=f32, attractors=centre[None])
    radius = 1e-3 * (1.0 + field.scale)
    dist = np.linalg.norm(X - centre, axis=1)
    at = dist <= radius
    tol = (1e-6 if f32 else 1e-9) * (1.0 + field.scale)  # descend's own convergence test
    slow = ~at & (res > tol) & (dist <= 0.25 * (1.0 + field.scale))
    if slow.any():
        Xn, ok = field.newton(X[slow], t, n_iter=30)
        at[np.nonzero(slow)[0]] = ok & (np.linalg.norm(Xn - centre, axis=1) <= radius)
    return at


def share(at):
    """(m, standard error) of the draws' flags ``at``."""
    m = float(np.mean(at))
    return m, math.sqrt(m * (1.0 - m) / len(at))


def at_centre_of(run, t, n_samples, seed, rows=None):
    """``at_centre`` at t for a search ``run`` (``theory._critical._Run``): none below the centre's end."""
    n = n_samples if rows is None else len(rows)
    if np.isfinite(run.centre_t) and t < run.centre_t:
        return np.zeros(n, dtype=bool)  # no central attractor: it has lost stability or ceased to exist
    c = run.centre_at(t)
    if c is None:  # Newton did not converge on the centre: its nearest recorded point stands in
        c = min(run.path, key=lambda p: abs(p[0] - t))[1]
    return at_centre(run.f, t, c, n_samples, seed, rows)


def share_at(run, t, n_samples, seed):
    """(m, standard error) at t for a search ``run``."""
    return share(at_centre_of(run, t, n_samples, seed))


def macroscopic_search(run, t_c, threshold, n_samples, seed, probe=False):
    """The macroscopic breaking time below the first bifurcation at ``t_c``, and the order parameter's curve.

    Above t_c the centre is the only attractor (m = 1). With ``probe`` (a saddle-node whose new attractor holds
    more than the threshold one grid cell below its birth: m may jump at t_c) m is sampled first half a bracket
    below t_c, and where 1 - m exceeds the threshold there that is the time, to the bisection's bracket. Else
    the grid times below t_c are sampled down to the first where 1 - m > ``threshold``; the crossing is then
    bisected in log-SNR between it and the time above (t_c for the first cell), on the same seeded draws.
    Where the centre ends inside the bracket, 1 - m = 1 just below its end, so the time is at least
    ``centre_t`` (a pitchfork's macroscopic time is t_c itself).
    Returns ((t, m, se) or None, [(t, m, se) at the times sampled]).
    """
    rows, hi, at_hi = [], float(t_c), None
    if probe:
        t = float(t_c) - 0.5 * BISECT_TOL * run.T
        at = at_centre_of(run, t, n_samples, seed)
        rows.append((t, *share(at)))
        if 1.0 - np.mean(at) > threshold:
            return rows[-1], rows
        hi, at_hi = t, at
    for j in np.nonzero(run.ts < t_c)[0]:
        t = float(run.ts[j])
        run.extend_centre(j)  # with centre="search" the branch may stop above t
        at = at_centre_of(run, t, n_samples, seed)
        m, se = share(at)
        run.bar.set_postfix_str(f"macroscopic: m={m:.4f} at t={t:.6g}")
        rows.append((t, m, se))
        if 1.0 - m > threshold:
            break
        hi, at_hi = t, at
    else:
        return None, rows
    lo, at_lo = t, at
    if np.isfinite(run.centre_t) and lo < run.centre_t <= hi:
        lo, at_lo = float(run.centre_t), np.zeros(n_samples, dtype=bool)
    found = _bisect(run, lo, at_lo, hi, at_hi, threshold, n_samples, seed, changed_only=True)
    if found is None:  # the draws' fates were not monotone in t: every halving on every draw
        found = _bisect(run, lo, at_lo, hi, at_hi, threshold, n_samples, seed, changed_only=False)
    lo, at_lo = found
    return (lo, *share(at_lo)), rows


def _bisect(run, lo, at_lo, hi, at_hi, threshold, n_samples, seed, changed_only):
    """(t, flags) of the low end of a bracket [lo, hi] of the threshold crossing narrowed to ``BISECT_TOL``.

    ``changed_only``: each halving descends only the draws whose fate differs between the bracket's ends (all of
    them while an end has no flags: t_c), the others keeping the fate they share; the final bracket is then
    verified on every draw, and None returned where it is not one (a draw whose fate is not monotone in t)."""
    full_lo, full_hi = True, at_hi is not None
    while hi - lo > BISECT_TOL * run.T:
        mid = log_snr_mid(run.s, lo, hi)
        if not lo < mid < hi:  # the bracket is at round-off
            break
        if changed_only and at_hi is not None:
            idx = np.nonzero(at_lo != at_hi)[0]
            at = at_lo.copy()
            at[idx] = at_centre_of(run, mid, n_samples, seed, idx) if len(idx) else at[idx]
            full = False
        else:
            at, full = at_centre_of(run, mid, n_samples, seed), True
        m = float(np.mean(at))
        run.bar.set_postfix_str(f"macroscopic: m={m:.4f} at t={mid:.6g}, bracket {hi - lo:.2g}")
        if 1.0 - m > threshold:
            lo, at_lo, full_lo = mid, at, full
        else:
            hi, at_hi, full_hi = mid, at, full
    if not full_lo:
        at_lo = at_centre_of(run, lo, n_samples, seed)
        if not 1.0 - np.mean(at_lo) > threshold:
            return None
    if not full_hi and at_hi is not None:
        if not 1.0 - np.mean(at_centre_of(run, hi, n_samples, seed)) <= threshold:
            return None
    return lo, at_lo
