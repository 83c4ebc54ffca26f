"""The jitted kernels of the exact field (``theory._field``): built once per data family, schedule and eta."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp

from theory.family import EtaFamily


@cache
def _kernels(score, hess, hvp, resp):
    """Jitted kernels of one data family, vectorised where the engine batches."""

    def R1(p, x, th, s2, c):
        return score(*p, x, th, s2) - c * x

    def H1(p, x, th, s2, c):
        return hess(*p, x, th, s2) - c * jnp.eye(x.shape[0])

    def quad(p, x, v, th, s2, c):  # v^T H(x) v
        return v @ hvp(*p, x, v, th, s2) - c * (v @ v)

    def descend(p, X, th, s2, c, L, tol, max_iter, r_max, C, radii):
        """Majorise-minimise steps x <- x + R(x) / L (L >= the top eigenvalue of -H): u never increases.
        A row that comes within ``radii[i]`` of the attractor ``C[i]`` (a ball the steps map into itself and
        contract: its limit is C[i]) is set to C[i] and stops."""
        c_sq = jnp.sum(C * C, axis=1)

        def cond(state):
            _, res, it = state
            return (it < max_iter) & jnp.any(res > tol)

        def body(state):
            X, res, it = state
            Rx = jax.vmap(R1, (None, 0, None, None, None))(p, X, th, s2, c)
            Xn = X + Rx / L
            Xn = jnp.where(jnp.linalg.norm(Xn, axis=1, keepdims=True) > r_max, X, Xn)  # freeze runaways
            res = jnp.linalg.norm(Rx, axis=1) / L
            near = jnp.argmin(c_sq[None, :] - 2.0 * Xn @ C.T, axis=1)  # the nearest attractor, then its exact distance
            inside = jnp.linalg.norm(Xn - C[near], axis=1) <= radii[near]
            return jnp.where(inside[:, None], C[near], Xn), jnp.where(inside, 0.0, res), it + 1

        X, res, _ = jax.lax.while_loop(cond, body, (X, jnp.full(X.shape[0], jnp.inf, X.dtype), 0))
        return X, res

    def HV(p, x, V, th, s2, c):  # H V for the columns of V: the posterior at x is computed once
        return jax.vmap(lambda v: hvp(*p, x, v, th, s2) - c * v, 1, 1)(V)

    return {
        "R": jax.jit(jax.vmap(R1, (None, 0, None, None, None))),
        "HV": jax.jit(HV),
        "H": jax.jit(H1),
        "quad_grad": jax.jit(jax.grad(quad, argnums=1)),
        "resp": jax.jit(jax.vmap(lambda p, x, th, s2: resp(*p, x, th, s2), (None, 0, None, None))),
        "descend": jax.jit(descend),
        "R1": R1,
        "H1": H1,
        "quad": quad,
    }


@cache
def _posterior_kernels(posterior, cov_matmat):
    """Finite data sets: the posterior (r, m) at x, and H V from it (two passes over the data a block)."""

    def HVr(p, r, m, V, th, s2, c):
        return -(1.0 / s2 + c) * V + th**2 / s2**2 * cov_matmat(p[0], r, m, V)

    return jax.jit(lambda p, x, th, s2: posterior(*p, x, th, s2)), jax.jit(HVr)


@cache
def _time_kernels(R1, quad, schedule, eta):
    """(theta, sigma^2, c) as functions of t, and the jitted t-derivatives of R and of v^T H v: compiled once
    per (data family, schedule, eta), not once per call of the public functions."""
    fam = None if eta is None else EtaFamily(schedule, eta)

    def coeffs_of_t(t):
        return schedule.theta(t), schedule.sigma2(t), (fam.c(t) if fam is not None else 0.0 * t)

    def R_t(p, x, t):
        return jax.jvp(lambda s: R1(p, x, *coeffs_of_t(s)), (t,), (jnp.ones_like(t),))[1]

    def quad_t(p, x, v, t):
        return jax.jvp(lambda s: quad(p, x, v, *coeffs_of_t(s)), (t,), (jnp.ones_like(t),))[1]

    return coeffs_of_t, jax.jit(lambda t: jnp.stack(coeffs_of_t(t))), jax.jit(R_t), jax.jit(quad_t)
