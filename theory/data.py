r"""Data families and the diffused density p_t.

Under the marginal x_t = theta x_0 + sigma eps:

* ``DeltaMixture`` (a finite data set y_j with weights w_j):
  p_t(x) = sum_j w_j N(x; theta y_j, sigma^2 I). With the posterior r_j(x) over the points,
  m = E[y | x] and C = Cov[y | x]:
  score = (theta m - x) / sigma^2,  Hess log p_t = -I / sigma^2 + theta^2 C / sigma^4.
* ``GaussianMixture`` (means mu_k, covariances Sigma_k = U_k diag(lam_k) U_k^T):
  p_t(x) = sum_k w_k N(x; theta mu_k, S_k), S_k = theta^2 Sigma_k + sigma^2 I. With the
  component scores g_k = -S_k^{-1}(x - theta mu_k) and responsibilities r_k:
  score = sum_k r_k g_k,  Hess log p_t = sum_k r_k (g_k g_k^T - S_k^{-1}) - score score^T.

Everything is log-sum-exp based, float64, jit-compiled, and batched over leading axes of x.
Methods take ``(x, t, schedule)`` with x of shape (..., d) and t a scalar or an array that
broadcasts against x.shape[:-1].

Examples:
    >>> import numpy as np
    >>> from theory import DeltaMixture, VPLinear
    >>> data = DeltaMixture(np.array([[-1.0], [1.0]]))
    >>> round(float(data.score(np.array([0.5]), 0.3, VPLinear())[0]), 6)
    -0.328932
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from theory._checks import (
    _short,
    check_finite_array,
    check_int,
    check_memory,
    check_schedule,
    check_weights,
    is_traced,
)
from theory.schedules import Schedule

__all__ = ["DeltaMixture", "GaussianMixture"]

LOG_2PI = float(np.log(2 * np.pi))


# --- delta mixtures: single-point kernels (x: (d,), theta, s2 scalars) -------------------------
def _dm_logits(Y, logw, ysq, x, theta, s2):
    """Log posterior weights up to a constant: ln w_j + (theta y_j.x - theta^2 |y_j|^2 / 2) / s2."""
    return logw + (theta * (Y @ x) - 0.5 * theta**2 * ysq) / s2


def _dm_log_prob(Y, logw, ysq, x, theta, s2):
    d = x.shape[-1]
    lse = logsumexp(_dm_logits(Y, logw, ysq, x, theta, s2))
    return lse - 0.5 * (x @ x) / s2 - 0.5 * d * (LOG_2PI + jnp.log(s2))


def _dm_posterior(Y, logw, ysq, x, theta, s2):
    r = jax.nn.softmax(_dm_logits(Y, logw, ysq, x, theta, s2))
    return r, r @ Y


def _dm_score(Y, logw, ysq, x, theta, s2):
    _, m = _dm_posterior(Y, logw, ysq, x, theta, s2)
    return (theta * m - x) / s2


def _dm_hessian(Y, logw, ysq, x, theta, s2):
    r, m = _dm_posterior(Y, logw, ysq, x, theta, s2)
    cov = (Y * r[:, None]).T @ Y - jnp.outer(m, m)
    return -jnp.eye(x.shape[-1]) / s2 + theta**2 / s2**2 * cov


def _dm_resp(Y, logw, ysq, x, theta, s2):
    return jax.nn.softmax(_dm_logits(Y, logw, ysq, x, theta, s2))


def _dm_cov_matmat(Y, r, m, V):
    """Cov[y | x] V (d, k) from the posterior weights r and mean m at x: two passes over the data per
    block, the posterior computed once per point (the matrix-free Hessian's products, ``theory._krylov``)."""
    return ((r[:, None] * (Y @ V)).T @ Y).T - jnp.outer(m, m @ V)  # W^T Y, not Y^T W: see _dm_hvp


def _dm_hvp(Y, logw, ysq, x, v, theta, s2):
    r, m = _dm_posterior(Y, logw, ysq, x, theta, s2)
    cov_v = (r * (Y @ v)) @ Y - m * (m @ v)  # w @ Y, not Y.T @ w: XLA's CPU matrix-vector product of a
    # transposed operand is ~10x slower at N = 60,000
    return -v / s2 + theta**2 / s2**2 * cov_v


# --- Gaussian mixtures ------------------------------------------------------------------------
def _gm_terms(M, U, lam, logw, x, theta, s2):
    """Responsibilities r (K,), component scores g (K, d) and variances v (K, d) in each eigenbasis."""
    v = theta**2 * lam + s2
    z = jnp.einsum("kij,ki->kj", U, x[None, :] - theta * M)  # U_k^T (x - theta mu_k)
    logn = -0.5 * jnp.sum(z**2 / v + jnp.log(v), axis=-1) - 0.5 * x.shape[-1] * LOG_2PI
    logits = logw + logn
    g = -jnp.einsum("kij,kj->ki", U, z / v)
    return logits, g, v


def _gm_log_prob(M, U, lam, logw, x, theta, s2):
    logits, _, _ = _gm_terms(M, U, lam, logw, x, theta, s2)
    return logsumexp(logits)


def _gm_score(M, U, lam, logw, x, theta, s2):
    logits, g, _ = _gm_terms(M, U, lam, logw, x, theta, s2)
    return jax.nn.softmax(logits) @ g


def _gm_resp(M, U, lam, logw, x, theta, s2):
    return jax.nn.softmax(_gm_terms(M, U, lam, logw, x, theta, s2)[0])


def _gm_hessian(M, U, lam, logw, x, theta, s2):
    logits, g, v = _gm_terms(M, U, lam, logw, x, theta, s2)
    r = jax.nn.softmax(logits)
    s = r @ g
    prec = jnp.einsum("kij,kj,klj->kil", U, 1.0 / v, U)  # S_k^{-1}
    return jnp.einsum("k,ki,kj->ij", r, g, g) - jnp.einsum("k,kij->ij", r, prec) - jnp.outer(s, s)


def _gm_hvp(M, U, lam, logw, x, w, theta, s2):
    logits, g, v = _gm_terms(M, U, lam, logw, x, theta, s2)
    r = jax.nn.softmax(logits)
    s = r @ g
    prec_w = jnp.einsum("kij,kj->ki", U, jnp.einsum("kij,i->kj", U, w) / v)
    return r @ (g * (g @ w)[:, None] - prec_w) - s * (s @ w)


def _batched(kernel, params, x, theta, s2, *extra):
    """Apply a single-point kernel over the leading axes of x (theta, s2 broadcast against them)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    batch = x.shape[:-1]
    theta = jnp.broadcast_to(theta, batch).reshape(-1)
    s2 = jnp.broadcast_to(s2, batch).reshape(-1)
    xs = x.reshape(-1, x.shape[-1])
    extra = [jnp.broadcast_to(jnp.asarray(e, dtype=jnp.float64), x.shape).reshape(xs.shape) for e in extra]
    out = _vmapped(kernel, len(extra))(params, xs, theta, s2, *extra)
    return out.reshape(batch + out.shape[1:])


@partial(jax.jit, static_argnums=(0, 1))
def _vmapped_call(kernel, n_extra, params, xs, theta, s2, *extra):
    if n_extra:
        f = lambda x, th, s, *e: kernel(*params, x, *e, th, s)  # noqa: E731
    else:
        f = lambda x, th, s: kernel(*params, x, th, s)  # noqa: E731
    return jax.vmap(f)(xs, theta, s2, *extra)


def _vmapped(kernel, n_extra):
    return partial(_vmapped_call, kernel, n_extra)


class _Mixture:
    """Shared interface: subclasses set ``_params`` and the kernel table ``_k``."""

    dim: int
    _k: dict
    _singular_at_zero = False  # DeltaMixture: p_0 is a sum of deltas

    def _ts(self, t, schedule: Schedule, singular_at_zero: bool = False):
        """(theta, sigma^2) at t after the checks; ``singular_at_zero``: refuse sigma = 0 (finite data sets)."""
        check_schedule(schedule)
        schedule.check_t(t)
        th, s2 = schedule.theta(t), schedule.sigma2(t)
        if singular_at_zero and not is_traced(s2) and np.any(np.asarray(s2) <= 0):
            raise ValueError(
                f"t must be > 0 here: sigma(t)^2 = 0 at t = 0 for {schedule!r}, where the density of a finite "
                "data set is a sum of deltas and its log density, score and Hessian are singular (use t > 0)"
            )
        return th, s2

    def _check_memory(self, x, per_point: float, what: str):
        """Refuse a batched call whose temporaries (``per_point`` float64 numbers per point) exceed free memory."""
        n = int(np.prod(np.shape(x)[:-1], dtype=np.int64))
        check_memory(f"{what} of {n} points with {self!r}", 8.0 * n * per_point, "evaluate x in smaller batches")

    def _check_sample(self, n, per_sample: float) -> int:
        """n checked as a count, and refused (MemoryError) before jax allocates its ``per_sample`` numbers each."""
        n = check_int("n", n)
        check_memory(f"sampling {n} points of {self!r}", 8.0 * n * per_sample, "draw them in smaller batches")
        return n

    def _check_x(self, x, name="x"):
        """x (..., d) as float64: real, finite (traced values are checked by shape only)."""
        x = jnp.asarray(x if is_traced(x) else check_finite_array(name, x), dtype=jnp.float64)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape (..., {self.dim}); got {x.shape}")
        return x

    def log_prob(self, x, t, schedule):
        """ln p_t(x); x (..., d) -> (...)."""
        th, s2 = self._ts(t, schedule, self._singular_at_zero)
        return _batched(self._k["log_prob"], self._params, self._check_x(x), th, s2)

    def score(self, x, t, schedule):
        """grad_x ln p_t(x); x (..., d) -> (..., d)."""
        th, s2 = self._ts(t, schedule, self._singular_at_zero)
        return _batched(self._k["score"], self._params, self._check_x(x), th, s2)

    def hessian(self, x, t, schedule):
        """Exact Hessian of ln p_t; x (..., d) -> (..., d, d). Refused (MemoryError) beyond the free memory."""
        th, s2 = self._ts(t, schedule, self._singular_at_zero)
        self._check_memory(x, 3 * self._hessian_temporaries(), "the Hessian")  # before x is copied
        return _batched(self._k["hessian"], self._params, self._check_x(x), th, s2)

    def responsibilities(self, x, t, schedule):
        """Posterior weights over the points (or components) given x_t = x; (..., d) -> (..., N)."""
        th, s2 = self._ts(t, schedule, self._singular_at_zero)
        return _batched(self._k["resp"], self._params, self._check_x(x), th, s2)

    def hvp(self, x, v, t, schedule):
        """Hessian-vector product (Hess ln p_t(x)) v without forming the Hessian; -> (..., d)."""
        th, s2 = self._ts(t, schedule, self._singular_at_zero)
        return _batched(self._k["hvp"], self._params, self._check_x(x), th, s2, self._check_x(v, "v"))

    # Single-point kernels on (theta, sigma^2), for jitted loops (the simulator) and autodiff checks.
    def log_prob_ts(self, x, theta, s2):
        return self._k["log_prob"](*self._params, x, theta, s2)

    def score_ts(self, x, theta, s2):
        return self._k["score"](*self._params, x, theta, s2)


class DeltaMixture(_Mixture):
    """A finite data set: p_0 = sum_j w_j delta(x - y_j).

    Args:
        points: (N, d) data points (a (N,) array is read as N points in 1D).
        weights: (N,) non-negative, summing to 1; uniform when None.

    Examples:
        >>> DeltaMixture([[-1.0], [1.0]]).dim
        1
    """

    _k = {
        "log_prob": _dm_log_prob,
        "score": _dm_score,
        "hessian": _dm_hessian,
        "hvp": _dm_hvp,
        "resp": _dm_resp,
        "posterior": _dm_posterior,
        "cov_matmat": _dm_cov_matmat,
    }
    _singular_at_zero = True

    def _hessian_temporaries(self):
        n, d = self.points.shape
        return n * d + d * d  # the weighted points and the covariance, per evaluation point

    def __init__(self, points, weights=None):
        Y = check_finite_array("points", points)
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or min(Y.shape) < 1:
            raise ValueError(f"points must have shape (N, d) with N, d >= 1; got {np.shape(points)}")
        self.points = jnp.asarray(Y)
        self.weights = jnp.asarray(check_weights(weights, Y.shape[0]))
        self.dim = Y.shape[1]
        with np.errstate(divide="ignore"):
            logw = np.log(np.asarray(self.weights))
        self._params = (self.points, jnp.asarray(logw), jnp.sum(self.points**2, axis=1))

    def __repr__(self):
        return f"DeltaMixture(N={self.points.shape[0]}, d={self.dim})"

    @property
    def means(self):
        """The attractors at t = 0: the points themselves."""
        return self.points

    def mean(self):
        return self.weights @ self.points

    def covariance(self):
        """Weighted covariance of the data set, (d, d)."""
        c = self.points - self.mean()
        return (c * self.weights[:, None]).T @ c

    def min_component_variance(self):
        return 0.0

    def sample(self, key, t, schedule, n: int):
        """n samples of x_t; returns (n, d). At t = 0 (sigma = 0) these are the points themselves."""
        n = self._check_sample(n, 4 * self.dim + 2)  # the draw, the noise, the gathered points, the sum
        th, s2 = self._ts(t, schedule)
        k1, k2 = jax.random.split(key)
        j = jax.random.choice(k1, self.points.shape[0], (n,), p=self.weights)
        return th * self.points[j] + jnp.sqrt(s2) * jax.random.normal(k2, (n, self.dim))


class GaussianMixture(_Mixture):
    """p_0 = sum_k w_k N(mu_k, Sigma_k).

    Args:
        means: (K, d).
        covariances: full (K, d, d), diagonal (K, d) or isotropic (K,) variances; each must be
            symmetric positive definite.
        weights: (K,), uniform when None.

    Examples:
        >>> GaussianMixture([[-1.0], [1.0]], [0.1, 0.1]).dim
        1
    """

    _k = {"log_prob": _gm_log_prob, "score": _gm_score, "hessian": _gm_hessian, "hvp": _gm_hvp, "resp": _gm_resp}

    def _hessian_temporaries(self):
        k, d = self.means.shape
        return k * d * d + d * d  # the K precisions, per evaluation point

    def __init__(self, means, covariances, weights=None):
        M = check_finite_array("means", means)
        if M.ndim == 1:
            M = M[:, None]
        if M.ndim != 2 or min(M.shape) < 1:
            raise ValueError(f"means must have shape (K, d) with K, d >= 1; got {np.shape(means)}")
        K, d = M.shape
        C = check_finite_array("covariances", covariances)
        if C.shape == (K,):
            C = C[:, None, None] * np.eye(d)
        elif C.shape == (K, d):
            C = np.einsum("ki,ij->kij", C, np.eye(d))
        elif C.shape != (K, d, d):
            raise ValueError(f"covariances must have shape ({K},), ({K}, {d}) or ({K}, {d}, {d}); got {C.shape}")
        asym = np.abs(C - np.swapaxes(C, 1, 2)).max(axis=(1, 2))
        if np.any(asym > 1e-12 * (1.0 + np.abs(C).max())):
            k = int(np.argmax(asym))
            raise ValueError(
                f"covariances must be symmetric; covariance {k} differs from its transpose by {asym[k]:.3g}"
            )
        lam, U = np.linalg.eigh(C)  # reads one triangle only: hence the symmetry check first
        if np.any(lam <= 0):
            k = int(np.argmin(lam.min(axis=1)))
            raise ValueError(
                f"covariances must be positive definite; covariance {k} has the eigenvalue {lam[k].min():.3g}"
            )
        self.dim = d
        self.means = jnp.asarray(M)
        self.covariances = jnp.asarray(C)
        self.weights = jnp.asarray(check_weights(weights, K))
        with np.errstate(divide="ignore"):
            logw = np.log(np.asarray(self.weights))
        self._params = (self.means, jnp.asarray(U), jnp.asarray(lam), jnp.asarray(logw))
        self._lam_min = float(lam.min())

    def __repr__(self):
        return f"GaussianMixture(K={self.means.shape[0]}, d={self.dim})"

    def mean(self):
        return self.weights @ self.means

    def covariance(self):
        """Covariance of the mixture: sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T."""
        c = self.means - self.mean()
        return jnp.einsum("k,kij->ij", self.weights, self.covariances) + (c * self.weights[:, None]).T @ c

    def min_component_variance(self):
        return self._lam_min

    def sample_components(self, key, idx):
        """One draw of x_0 from each listed component: idx (n,) -> (n, d)."""
        idx = np.asarray(idx)
        K = self.means.shape[0]
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or np.any((idx < 0) | (idx >= K)):
            raise ValueError(f"idx must be a 1D array of component indices in [0, {K}); got {_short(idx)}")
        check_memory(f"{len(idx)} draws of {self!r}", 8.0 * len(idx) * (self.dim**2 + 3 * self.dim), "use fewer")
        _, U, lam, _ = self._params
        eps = jax.random.normal(key, (len(idx), self.dim)) * jnp.sqrt(lam[idx])
        return self.means[idx] + jnp.einsum("nij,nj->ni", U[idx], eps)

    def sample(self, key, t, schedule, n: int):
        """n samples of x_t; returns (n, d)."""
        n = self._check_sample(n, self.dim * self.dim + 4 * self.dim + 2)  # the gathered eigenbases U[k]: n d^2
        th, s2 = self._ts(t, schedule)
        k1, k2 = jax.random.split(key)
        _, U, lam, _ = self._params
        k = jax.random.choice(k1, self.means.shape[0], (n,), p=self.weights)
        eps = jax.random.normal(k2, (n, self.dim)) * jnp.sqrt(th**2 * lam[k] + s2)
        return th * self.means[k] + jnp.einsum("nij,nj->ni", U[k], eps)
