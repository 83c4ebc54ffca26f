r"""Matrix-free linear algebra of the frozen-time field, for data in many dimensions.

A Hessian of a finite data set costs N d^2 multiply-adds (and its eigendecomposition ~10 d^3); a product
H v costs ~3 N d (the posterior, then Y^T (r * (Y v))). From ``MATRIX_FREE_D`` dimensions on, the field
never forms H: Newton solves H dx = -R by MINRES (H is symmetric), the top eigenpair comes from Lanczos
(ARPACK) warm-started at the last eigenvector found, and the bordered system of a fold by GMRES. Each
is iterated to round-off, so the numbers reported are those of the dense path (a test compares them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator, eigsh, gmres, minres

MATRIX_FREE_D = 256  # d from which the field works with products H v instead of H


class HessianOperator(LinearOperator):
    """H(x) at frozen t as a symmetric linear operator (products through the field's jitted kernel)."""

    def __init__(self, field, x, t):
        p, (th, s2, c), xj = field.local_params(x, t), field.coeffs(t), jnp.asarray(x)
        if field.k_post is not None:  # a finite data set: the posterior at x once, not once a product
            post, hvr = field.k_post
            r, m = post(p, xj, th, s2)
            self._mm = lambda V: hvr(p, r, m, V, th, s2, c)
        else:
            self._mm = lambda V: field.k["HV"](p, xj, V, th, s2, c)
        super().__init__(np.float64, (field.d, field.d))

    def _matmat(self, V):
        return np.asarray(self._mm(jnp.asarray(V, dtype=jnp.float64)))

    def _matvec(self, v):
        return self._matmat(np.reshape(v, (-1, 1)))[:, 0]

    def _adjoint(self):
        return self


def top_eigpair(H, v0=None):
    """(largest eigenvalue, unit eigenvector) of the symmetric operator H by Lanczos, to round-off."""
    d = H.shape[0]
    if v0 is not None and not np.all(np.isfinite(v0)):
        v0 = None
    # ncv = 12: a warm start converges within the first Lanczos basis, and ARPACK fills the whole basis
    w, V = eigsh(H, k=1, which="LA", v0=v0, tol=0.0, ncv=min(d, 12), maxiter=50 * d)
    return float(w[0]), V[:, 0]


def solve(H, b, rtol=1e-12, eig=None, maxiter=1000):
    """H^-1 b for a dense matrix (LU) or a symmetric operator (MINRES to ``rtol`` or ``maxiter`` steps).

    Near a fold H is nearly singular along its top eigenvector: ``eig`` = (lam, v), when known, takes that
    direction out exactly (b's component along v divided by lam) and MINRES solves the rest, where H is
    well conditioned. Without it an ill-conditioned solve stops at ``maxiter``: every caller uses the
    result as a Newton step or a predictor, checked afterwards on the exact residual.
    """
    if isinstance(H, np.ndarray):
        return np.linalg.solve(H, b)
    if eig is None:
        x, info = minres(H, b, rtol=rtol, maxiter=maxiter)
    else:
        lam, v = eig
        along = float(v @ b)
        P = LinearOperator(H.shape, matvec=lambda y: _perp(H @ _perp(np.ravel(y), v), v), dtype=np.float64)
        y, info = minres(P, b - along * v, rtol=rtol, maxiter=maxiter)
        x = _perp(y, v) + (along / lam) * v
    if info < 0 or not np.all(np.isfinite(x)):
        raise np.linalg.LinAlgError(f"MINRES failed (info={info})")
    return x


def _perp(y, v):
    return y - (v @ y) * v


def solve_bordered(H, col, row, corner, rhs, rtol=1e-12):
    """Solve [[H, col], [row^T, corner]] z = rhs, H a dense matrix or an operator (then by GMRES)."""
    d = len(col)
    if isinstance(H, np.ndarray):
        J = np.zeros((d + 1, d + 1))
        J[:d, :d], J[:d, d], J[d, :d], J[d, d] = H, col, row, corner
        return np.linalg.solve(J, rhs)

    def mv(z):
        z = np.ravel(z)
        return np.concatenate([H @ z[:d] + col * z[d], [row @ z[:d] + corner * z[d]]])

    J = LinearOperator((d + 1, d + 1), matvec=mv, dtype=np.float64)
    z, info = gmres(J, rhs, rtol=rtol, atol=0.0, restart=min(d + 1, 200), maxiter=5)
    if info < 0 or not np.all(np.isfinite(z)):  # not converged to rtol: still a Newton step, checked on R
        raise np.linalg.LinAlgError(f"GMRES on the bordered system failed (info={info})")
    return z


# --- many points at once: one pass over the data serves a product at every point -------------------------
@jax.jit
def _posteriors(Y, logw, ysq, X, th, s2):
    """Posterior weights R (k, N) and means M (k, d) at the rows of X (k, d), for a finite data set."""
    R = jax.nn.softmax(logw[None, :] + (th * (X @ Y.T) - 0.5 * th**2 * ysq[None, :]) / s2, axis=1)
    return R, R @ Y


@jax.jit
def _products(Y, R, M, V, th, s2, c):
    """H(x_k) v_k for every row k: Cov[y | x_k] v_k = sum_j r_kj (y_j . v_k) y_j - m_k (m_k . v_k), two GEMMs."""
    cov_v = (R * (V @ Y.T)) @ Y - M * jnp.sum(M * V, axis=1, keepdims=True)
    return -(1.0 / s2 + c) * V + th**2 / s2**2 * cov_v


def _padded(idx):
    """idx padded with copies of its first entry to a power of two up to 32, above to an eighth of an octave."""
    n = len(idx)
    step = 1 << max(0, int(n - 1).bit_length() - (4 if n > 32 else 0))
    return np.concatenate([idx, np.full(-(-n // step) * step - n, idx[0])])


def top_eigpairs_many(field, X, t, max_steps=80, check_every=4, rtol=1e-12):
    """Top eigenpairs of H at each row of X (k, d) of a finite data set, by k Lanczos runs in lock-step.

    One step is one product at every point, two passes over the data (GEMMs) instead of k; full
    reorthogonalisation, so a run stops when its top Ritz pair's residual is below ``rtol`` times the largest
    Ritz value in magnitude (round-off, as ARPACK's tol=0). Returns (lams (k,), vecs (k, d), converged (k,)).
    """
    Y, logw, ysq = field.p
    th, s2, c = field.coeffs(t)
    k, d = X.shape
    R, M = (np.asarray(a) for a in _posteriors(Y, logw, ysq, jnp.asarray(X), th, s2))  # rows gathered on the host
    Q = np.zeros((k, max_steps + 1, d))
    q = np.random.default_rng(0).standard_normal((k, d))
    Q[:, 0] = q / np.linalg.norm(q, axis=1, keepdims=True)
    alpha, beta = np.zeros((k, max_steps)), np.zeros((k, max_steps))
    lams, vecs, ok = np.full(k, np.nan), np.zeros((k, d)), np.zeros(k, dtype=bool)
    act = np.arange(k)
    for j in range(max_steps):
        rows = _padded(act)  # few compiled shapes as runs finish
        W = np.array(_products(Y, R[rows], M[rows], jnp.asarray(Q[rows, j]), th, s2, c))[: len(act)]
        alpha[act, j] = np.sum(W * Q[act, j], axis=1)
        for _ in range(2):  # full reorthogonalisation: Lanczos vectors stay orthogonal to round-off
            W -= np.einsum("kjd,kj->kd", Q[act, : j + 1], np.einsum("kjd,kd->kj", Q[act, : j + 1], W))
        beta[act, j] = np.linalg.norm(W, axis=1)
        Q[act, j + 1] = W / np.maximum(beta[act, j], 1e-300)[:, None]
        if (j + 1) % check_every and j + 1 < max_steps:
            continue
        done = []
        for i in act:
            w, S = scipy.linalg.eigh_tridiagonal(alpha[i, : j + 1], beta[i, :j])
            if beta[i, j] * abs(S[-1, -1]) <= rtol * max(abs(w[0]), abs(w[-1])):
                lams[i], vecs[i], ok[i] = w[-1], S[:, -1] @ Q[i, : j + 1], True
                done.append(i)
        act = np.setdiff1d(act, done)
        if not len(act):
            break
    vecs[ok] /= np.linalg.norm(vecs[ok], axis=1, keepdims=True)
    return lams, vecs, ok
