r"""Certificates of a finite data set's fixed-point map F(x) = kappa E[y | x]: contraction and uniqueness.

F's Jacobian is kappa theta Cov[y | x] / sigma^2, and for two posteriors r, r' over the points
Cov_r'[y] <= E_r'[(y - m)(y - m)^T] <= max_j(r'_j / r_j) E_r[(y - m)(y - m)^T] for any m. So a bound on how much
the posterior can move bounds the rate of F over a region, with one posterior pass and no Hessian:

* ``contraction_bounds``: the rate near x, against the prior weights (r = w);
* ``one_attractor``: F contracts all of R^d (Banach: one fixed point, which every descent reaches);
* ``contraction_radius``: a ball around a stable fixed point that F maps into itself and contracts (there the
  posterior moves by at most exp(a |u| max_j |y_j - E[y | x]|), by the convexity of the log-partition).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from theory._placement import PAD_LOGW, _pad_rows


def _data_moments(field):
    """(top eigenvalue of Cov[y], mean, largest squared distance from the mean), computed once per field."""
    if field._moments is None:
        Y, mu = field._host[0][: field.n_components], np.asarray(field.data.mean())
        lam = float(np.linalg.eigvalsh(np.asarray(field.data.covariance()))[-1])
        field._moments = lam, mu, float(np.max(np.sum((Y - mu) ** 2, axis=1)))
    return field._moments


@jax.jit
def _posterior_moments(Y, logw, ysq, X, th, s2):
    """At the rows of X: max_j log(r_j / w_j) over the real points (not the padding), m = E[y | x], and
    tr Cov[y | x] = E[|y|^2 | x] - |m|^2 with a bound on the cancellation's round-off added."""
    log_r = jax.nn.log_softmax(logw[None, :] + (th * (X @ Y.T) - 0.5 * th**2 * ysq[None, :]) / s2, axis=1)
    r = jnp.exp(log_r)
    m, ey2 = r @ Y, r @ ysq
    log_rho = jnp.max(jnp.where(logw[None, :] > 0.5 * PAD_LOGW, log_r - logw[None, :], -jnp.inf), axis=1)
    return log_rho, m, ey2 - jnp.sum(m * m, axis=1) + 1e-12 * ey2


def posterior_moments(field, X, t):
    """(max_j log(r_j / w_j), E[y | x], tr Cov[y | x] bound) at the rows of X (k, d) of a finite data set: one
    pass over the data for all rows."""
    th, s2, _ = field.coeffs(t)
    out = _posterior_moments(*field.p, jnp.asarray(_pad_rows(np.atleast_2d(X))), th, s2)
    return tuple(np.array(a)[: len(X)] for a in out)


def certified_stable(field, X, t):
    """Rows of X (k, d) that are stable fixed points' neighbourhoods by a bound, with no Hessian: the contraction
    bound below 0.9, or the trace bound lam_max(Cov[y | x]) <= tr Cov[y | x], stable where
    1 + c sigma^2 - theta^2 tr / sigma^2 > 1e-12 (``MixtureField.margin``'s test). Near a data point, where the
    posterior holds a few points, the trace is small: the attractors of outlying data pass without Lanczos."""
    if not field.finite:
        return np.zeros(len(X), dtype=bool)
    th, s2, c = field.coeffs(t)
    log_rho, m, tr = posterior_moments(field, X, t)
    return (_contraction(field, t, log_rho, m) < 0.9) | (1.0 + c * s2 - th**2 * tr / s2 > 1e-12)


def contraction_bounds(field, X, t):
    """An upper bound of F's contraction rate near each row of X (k, d) (inf for a Gaussian mixture).

    Cov[y | x] <= rho (Cov[y] + (mu - m)(mu - m)^T) with rho = max_j r_j / w_j (posterior over prior weight),
    mu = E[y], m = E[y | x]: the bound is kappa theta rho (Lambda + |mu - m|^2) / sigma^2 (Lambda: the top
    eigenvalue of Cov[y]). At high noise the posterior is close to the prior and the bound is tight. Below 1 the
    point is a stable fixed point's neighbourhood: -lam_max(H) sigma^2 >= (1 + c sigma^2)(1 - b)."""
    if not field.finite:
        return np.full(len(X), math.inf)
    log_rho, m, _ = posterior_moments(field, X, t)
    return _contraction(field, t, log_rho, m)


def _contraction(field, t, log_rho, m):
    lam, mu, _ = _data_moments(field)
    th, s2, _ = field.coeffs(t)
    with np.errstate(over="ignore"):  # a posterior far from the prior: no bound (inf)
        rho = np.exp(log_rho)
    return field.kappa(t) * th * rho * (lam + np.sum((mu - m) ** 2, axis=1)) / s2


def one_attractor(field, t):
    """Is F a contraction of all of R^d at t? Cov[y | x] <= E[(y - mean)(y - mean)^T | x] has norm at most
    rho^2, rho the largest distance of a point from the mean, so below kappa theta rho^2 / sigma^2 < 1 F has a
    single fixed point (Banach), a stable one: the search needs no seeds there (about half of the grid above
    t_c on 28 x 28 images)."""
    if not field.finite:
        return False
    th, s2, c = field.coeffs(t)
    return 1.0 + c * s2 > 0.0 and field.kappa(t) * th * _data_moments(field)[2] / s2 < 1.0


def contraction_radius(field, x, t):
    """The radius of a ball around the stable fixed point x that F maps into itself and contracts (0 where none
    is certified): every point of it converges to x.

    log r_j(x + u) - log r_j(x) = a y_j.u - (lse(x + u) - lse(x)) <= a (y_j - m).u <= a |u| R, with a = theta /
    sigma^2, the log-partition lse convex with gradient a m (m = E[y | x]) and R = max_j |y_j - m|. So on the ball
    of radius delta F's rate is at most q exp(a R delta), q = 1 + lam sigma^2 / (1 + c sigma^2) its rate at x (lam:
    H's top eigenvalue). With q exp(a R delta) = (1 + q) / 2 the ball maps into itself where
    |F(x) - x| <= (1 - q) delta / 2."""
    if not field.finite:
        return 0.0
    th, s2, c = field.coeffs(t)
    q = 1.0 + field.top_eig(x, t)[0] * s2 / (1.0 + c * s2)
    if not (0.0 < q < 1.0 and th > 0.0):
        return 0.0
    Y = field._host[0]
    m = field.responsibilities(x, t)[0] @ Y
    spread = float(np.sqrt(np.max(np.sum((Y - m) ** 2, axis=1))))
    delta = math.log((1.0 + q) / (2.0 * q)) / (th / s2 * spread)
    return delta if np.linalg.norm(field.kappa(t) * m - x) <= 0.5 * (1.0 - q) * delta else 0.0
