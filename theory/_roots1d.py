"""Every fixed point in 1D: sign changes of R on a grid, refined by vectorised bisection."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np


@cache
def _kernels(score):
    def R_scalar(p, x, th, s2, c):  # R at a scalar x
        return score(*p, jnp.reshape(x, (1,)), th, s2)[0] - c * x

    def bisect(p, lo, hi, th, s2, c):  # vectorised bisection of brackets with R(lo) R(hi) < 0
        R = jax.vmap(R_scalar, (None, 0, 0, 0, 0))
        f_lo = R(p, lo, th, s2, c)

        def body(_, state):
            lo, hi, f_lo = state
            mid = 0.5 * (lo + hi)
            f_mid = R(p, mid, th, s2, c)
            left = jnp.sign(f_mid) == jnp.sign(f_lo)
            return jnp.where(left, mid, lo), jnp.where(left, hi, mid), jnp.where(left, f_mid, f_lo)

        lo, hi, _ = jax.lax.fori_loop(0, 80, body, (lo, hi, f_lo))  # 2^-80 of the bracket: round-off
        x = 0.5 * (lo + hi)
        return x, jax.vmap(jax.grad(R_scalar, argnums=1), (None, 0, 0, 0, 0))(p, x, th, s2, c)

    grid = jax.vmap(jax.vmap(R_scalar, (None, 0, None, None, None)), (None, 0, 0, 0, 0))
    return jax.jit(grid), jax.jit(bisect)


def roots_1d(field, ts, n_grid=4001):
    """Every fixed point in 1D at each time of ``ts``: sign changes of R on a grid over
    kappa [min y, max y] (padded by the components' spread), refined by vectorised bisection.

    Returns per time (roots (n,), slopes dR/dx (n,)); a root is stable iff its slope is < 0.
    """
    R_grid, bisect = _kernels(field.data._k["score"])
    ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
    th, s2, c, _ = field.coeffs_array(ts)
    k = th / (1.0 + c * s2)
    means = np.asarray(field.data.means)[:, 0]
    pad = 1e-6 + 8.0 * np.sqrt(field.lam_min) * th * np.abs(k)
    ends = np.stack([k * means.min() - pad, k * means.max() + pad])
    lo, hi = ends.min(axis=0), ends.max(axis=0)
    X = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, n_grid)[None, :]
    R = np.asarray(R_grid(field.p, jnp.asarray(X), th, s2, c))
    it, j = np.nonzero(np.sign(R[:, :-1]) * np.sign(R[:, 1:]) < 0)
    lo_x, hi_x = X[it, j], X[it, j + 1]
    iz, jz = np.nonzero(R == 0)  # roots exactly on the grid (e.g. the centre of symmetric data): [x, x]
    it, lo_x, hi_x = np.concatenate([it, iz]), np.concatenate([lo_x, X[iz, jz]]), np.concatenate([hi_x, X[iz, jz]])
    # Pad the brackets to a power of two so that repeated calls reuse one compiled kernel.
    n = len(it)
    roots = slopes = np.zeros(0)
    if n:
        pad = np.concatenate([np.arange(n), np.zeros((1 << (n - 1).bit_length()) - n, dtype=int)])
        ip = it[pad]
        roots, slopes = bisect(field.p, jnp.asarray(lo_x[pad]), jnp.asarray(hi_x[pad]), th[ip], s2[ip], c[ip])
        roots, slopes = np.asarray(roots)[:n], np.asarray(slopes)[:n]
    out = [([], []) for _ in ts]
    for i, x, sl in zip(it, roots, slopes, strict=True):
        out[i][0].append(x)
        out[i][1].append(sl)
    result = []
    for r, sl in out:
        order = np.argsort(r)
        result.append((np.asarray(r)[order], np.asarray(sl)[order]))
    return result
