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

BISECT_TOL = 1e-4  # bracket of the macroscopic time, relative to T: each halving costs a descent of the draws
DESCENT_ITER = 3000


def central_share(field, t, centre, n_samples, seed):
    """(m, standard error) at t: the share of ``n_samples`` seeded draws of p_t whose descent ends at ``centre``.

    A draw that enters the ball around the centre that the descent provably maps into itself and contracts
    (``MixtureField.contraction_radius``) counts at once. Near a loss of stability of the centre the descent slows
    (its contraction rate tends to 1), so draws left unconverged next to the centre are polished by Newton, which
    converges there at once."""
    f32 = use_float32(field)
    draws = field.sample(t, n_samples, seed)
    X, res = field.descend(draws, t, max_iter=DESCENT_ITER, float32=f32, attractors=centre[None])
    radius = 1e-3 * (1.0 + field.scale)
    dist = np.linalg.norm(X - centre, axis=1)
    at = dist <= radius
    tol = (1e-6 if f32 else 1e-9) * (1.0 + field.scale)  # descend's own convergence test
    slow = ~at & (res > tol) & (dist <= 0.25 * (1.0 + field.scale))
    if slow.any():
        Xn, ok = field.newton(X[slow], t, n_iter=30)
        at[np.nonzero(slow)[0]] = ok & (np.linalg.norm(Xn - centre, axis=1) <= radius)
    m = float(at.mean())
    return m, math.sqrt(m * (1.0 - m) / n_samples)


def share_at(run, t, n_samples, seed):
    """(m, standard error) at t for a search ``run`` (``theory._critical._Run``): 0 below the centre's end."""
    if np.isfinite(run.centre_t) and t < run.centre_t:
        return 0.0, 0.0  # no central attractor: it has lost stability or ceased to exist
    c = run.centre_at(t)
    if c is None:  # Newton did not converge on the centre: its nearest recorded point stands in
        c = min(run.path, key=lambda p: abs(p[0] - t))[1]
    return central_share(run.f, t, c, n_samples, seed)


def macroscopic_search(run, t_c, threshold, n_samples, seed):
    """The macroscopic breaking time below the first bifurcation at ``t_c``, and the order parameter's curve.

    Above t_c the centre is the only attractor (m = 1). The grid times below t_c are sampled down to the first
    where 1 - m > ``threshold``; the crossing is then bisected in log-SNR between it and the time above (t_c
    for the first cell), on the same seeded draws. Where the centre ends inside the bracket, 1 - m = 1 just
    below its end, so the time is at least ``centre_t`` (a pitchfork's macroscopic time is t_c itself).
    Returns ((t, m, se) or None, [(t, m, se) at the grid times sampled]).
    """
    rows, hi = [], float(t_c)
    for j in np.nonzero(run.ts < t_c)[0]:
        t = float(run.ts[j])
        run.extend_centre(j)  # with centre="search" the branch may stop above t
        m, se = share_at(run, t, n_samples, seed)
        run.bar.set_postfix_str(f"macroscopic: m={m:.4f} at t={t:.6g}")
        rows.append((t, m, se))
        if 1.0 - m > threshold:
            break
        hi = t
    else:
        return None, rows
    lo, below = t, (m, se)
    if np.isfinite(run.centre_t) and lo < run.centre_t <= hi:
        lo, below = float(run.centre_t), (0.0, 0.0)
    while hi - lo > BISECT_TOL * run.T:
        mid = log_snr_mid(run.s, lo, hi)
        if not lo < mid < hi:  # the bracket is at round-off
            break
        m, se = share_at(run, mid, n_samples, seed)
        run.bar.set_postfix_str(f"macroscopic: m={m:.4f} at t={mid:.6g}, bracket {hi - lo:.2g}")
        if 1.0 - m > threshold:
            lo, below = mid, (m, se)
        else:
            hi = mid
    return (lo, *below), rows
