r"""Matrix-free linear algebra of the frozen-time field, for data in many dimensions.

A Hessian of a finite data set costs N d^2 multiply-adds (and its eigendecomposition ~10 d^3); a product
H v costs ~3 N d (the posterior, then Y^T (r * (Y v))). From ``MATRIX_FREE_D`` dimensions on, the field
never forms H: Newton solves H dx = -R by MINRES (H is symmetric), the top eigenpair comes from Lanczos
(ARPACK) warm-started at the last eigenvector found, and the bordered system of a fold by GMRES. Each
is iterated to round-off, so the numbers reported are those of the dense path (a test compares them).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
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
