r"""Matrix-free linear algebra of the frozen-time field, for data in many dimensions.

A Hessian of a finite data set costs N d^2 multiply-adds (and its eigendecomposition ~10 d^3); a product
H v costs ~3 N d (the posterior, then Y^T (r * (Y v))). From ``MATRIX_FREE_D`` dimensions on, the field
never forms H: Newton solves H dx = -R by MINRES (H is symmetric), the top eigenpair comes from Lanczos
(ARPACK) warm-started at the last eigenvector found, and the bordered system of a fold by GMRES. Each
is iterated to round-off, so the numbers reported are those of the dense path (a test compares them).
"""

from __future__ import annotations

import functools

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
        # a row whose Krylov space is invariant (beta ~ 0: H is a multiple of I on it) is checked at once
        invariant = beta[act, j] <= 1e-12 * np.max(np.abs(alpha[act, : j + 1]), axis=1)
        if (j + 1) % check_every and j + 1 < max_steps and not invariant.any():
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


def _cg_many(mv, B, rtol, max_iter=500):
    """Solve A_k z_k = b_k for the rows of B (k, d), each A_k symmetric positive definite, by conjugate gradients
    in lock-step: ``mv(P, rows)`` gives A_k p_k for the listed rows (one pass over the data for all)."""
    Z, Rr = np.zeros_like(B), B.copy()
    P, rr = Rr.copy(), np.sum(B * B, axis=1)
    stop = (rtol * np.linalg.norm(B, axis=1)) ** 2
    act, bad = np.nonzero(rr > stop)[0], []
    for _ in range(max_iter):
        if not len(act):
            break
        AP = mv(P[act], act)
        pAp = np.sum(P[act] * AP, axis=1)
        lost = ~(pAp > 0.0)  # not positive definite after all (or round-off): that row gets no solution
        bad += list(act[lost])
        act, AP, pAp = act[~lost], AP[~lost], pAp[~lost]
        if not len(act):
            break
        a = rr[act] / pAp
        Z[act] += a[:, None] * P[act]
        Rr[act] -= a[:, None] * AP
        new = np.sum(Rr[act] ** 2, axis=1)
        P[act] = Rr[act] + (new / rr[act])[:, None] * P[act]
        rr[act] = new
        act = act[new > stop[act]]
    return Z, np.concatenate([act, np.asarray(bad, dtype=int)])


def fold_bounds_many(field, X, t, rtol=1e-8):
    """``theory._continuation.fold_extrapolation`` at every stable row of X (k, d) at one time t, all at once.

    t_u = t - lam / (dlam/dt along the branch), dlam/dt = lam_t - lam_x . H^-1 R_t. Where x is stable H is
    negative definite; the solve takes v (the top eigenvector, near a fold the soft direction) out exactly and
    runs conjugate gradients on -H over the rest, every row in lock-step. Rows whose eigenpair or solve does not
    converge get nan (the caller keeps them)."""
    Y, logw, ysq = field.p
    th, s2, c = field.coeffs(t)
    todo = [i for i, x in enumerate(X) if field._eig_key(x, t) not in field._ecache]
    if len(todo) > 1:  # the scan's stability tests memoised most of them
        lams, V, ok = top_eigpairs_many(field, X[todo], t)
        for i, lam, v in zip(np.asarray(todo)[ok], lams[ok], V[ok], strict=True):
            field._remember(field._eig_key(X[i], t), (float(lam), v))
    lams, V = np.zeros(len(X)), np.zeros_like(X)
    for i, x in enumerate(X):
        lams[i], V[i] = field.top_eig(x, t)
    pad = _padded(np.arange(len(X)))  # few compiled shapes
    Xj, Vj, tj = jnp.asarray(X[pad]), jnp.asarray(V[pad]), jnp.asarray(float(t))
    n = len(X)
    lam_x = np.asarray(_vgrad(field)(field.p, Xj, Vj, th, s2, c))[:n]
    lam_t = np.asarray(_vquad_t(field)(field.p, Xj, Vj, tj))[:n]
    R_t = np.asarray(_vR_t(field)(field.p, Xj, tj))[:n]
    R, M = (np.asarray(a)[:n] for a in _posteriors(Y, logw, ysq, Xj, th, s2))

    def mv(P, rows):  # -(I - v v^T) H (I - v v^T) p
        rows = np.asarray(rows)
        P = P - np.sum(P * V[rows], axis=1, keepdims=True) * V[rows]
        pad = _padded(np.arange(len(rows)))
        HP = np.asarray(_products(Y, R[rows][pad], M[rows][pad], jnp.asarray(P[pad]), th, s2, c))[: len(rows)]
        return -(HP - np.sum(HP * V[rows], axis=1, keepdims=True) * V[rows])

    along = np.sum(V * R_t, axis=1)
    Z, bad = _cg_many(mv, -(R_t - along[:, None] * V), rtol)
    with np.errstate(divide="ignore", invalid="ignore"):
        Z = Z - np.sum(Z * V, axis=1, keepdims=True) * V + (along / lams)[:, None] * V  # H^-1 R_t
        dlam = lam_t - np.sum(lam_x * Z, axis=1)
        out = np.where(dlam != 0, t - lams / dlam, np.inf)
    out[bad] = np.nan
    return out


@functools.cache
def _vmapped(fn, axes):
    return jax.jit(jax.vmap(fn, axes))


@functools.cache
def _vgrad_of(quad):
    return jax.jit(jax.vmap(jax.grad(quad, argnums=1), (None, 0, 0, None, None, None)))


def _vgrad(field):
    return _vgrad_of(field.k["quad"])


def _vquad_t(field):
    return _vmapped(field._quad_t, (None, 0, 0, None))


def _vR_t(field):
    return _vmapped(field._R_t, (None, 0, None))
