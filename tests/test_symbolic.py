"""Checks of theory.symbolic against numbers computed independently (numpy/scipy densities, finite differences)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from jax.scipy.special import logsumexp
from scipy.stats import norm

from theory import symbolic as S
from theory.symbolic import a, beta, eta, lam, m, theta, v0, x

jax.config.update("jax_enable_x64", True)

PAIRS = [(0.5, 1.0), (1.0, 0.5), (2.0, 1.0), (1.0, 2.0), (0.7, 0.0)]
BETA = 1.7
theta_c = S.lambdify(S.two_delta_theta_c(), (a, eta))
u2_centre = S.lambdify(S.two_delta_u2_at_centre(), (theta, a, eta, beta))


# --- independent numerics: mixtures of normals, written directly ---------------------------------
def log_mix(xs, th, mean, var):
    """log[N(x; th mean, s)/2 + N(x; -th mean, s)/2] with s = th^2 var + 1 - th^2 (var = 0: two deltas)."""
    sd = np.sqrt(th**2 * var + 1 - th**2)
    return np.logaddexp(norm.logpdf(xs, th * mean, sd), norm.logpdf(xs, -th * mean, sd)) - np.log(2)


def potential(xs, th, mean, et, var=0.0, b=BETA):
    return b * (-(1 + et**2) / 2 * log_mix(xs, th, mean, var) - xs**2 / 4)


def d2(f, h=1e-3):
    """Fourth-order central second derivative at 0."""
    return (-f(2 * h) + 16 * f(h) - 30 * f(0.0) + 16 * f(-h) - f(-2 * h)) / (12 * h**2)


def fd_u2(th, mean, et, var=0.0):
    return d2(lambda z: potential(z, th, mean, et, var))


# --- two deltas ---------------------------------------------------------------------------------
def test_theta_c_exact_value():
    expr = S.two_delta_theta_c()
    assert sp.simplify(expr.subs({a: 1, eta: 1}) - sp.sqrt(sp.sqrt(2) - 1)) == 0
    assert abs(theta_c(1.0, 1.0) - 0.6435942529) < 1e-10


@pytest.mark.parametrize("av, ev", PAIRS)
def test_theta_c_zeroes_fd_curvature(av, ev):
    tc = theta_c(av, ev)
    assert 0 < tc < 1
    assert abs(fd_u2(tc, av, ev)) < 1e-7
    assert fd_u2(tc - 0.01, av, ev) > 0 > fd_u2(tc + 0.01, av, ev)  # stable centre at more noise


@pytest.mark.parametrize("av, ev", PAIRS)
def test_u2_centre_matches_fd(av, ev):
    for th in np.random.default_rng(0).uniform(0.05, 0.95, 4):
        assert u2_centre(th, av, ev, BETA) == pytest.approx(fd_u2(th, av, ev), rel=1e-7, abs=1e-8)


def test_theta_c_ode_limit():
    assert S.two_delta_theta_c().subs({eta: 0, a: 2}) == 0
    assert theta_c(0.6, 0.0) == pytest.approx(0.8, abs=1e-14)


def test_score_matches_fd_of_log_density():
    score = S.lambdify(S.two_delta_score(), (x, theta, a))
    logp = S.lambdify(S.two_delta_log_density(), (x, theta, a))
    h = 1e-5
    for xv, th, av in [(0.3, 0.5, 1.0), (-1.2, 0.8, 0.7), (2.0, 0.3, 2.0), (0.0, 0.9, 1.5)]:
        fd = (log_mix(xv + h, th, av, 0.0) - log_mix(xv - h, th, av, 0.0)) / (2 * h)
        assert score(xv, th, av) == pytest.approx(fd, rel=1e-8, abs=1e-8)
        assert logp(xv, th, av) == pytest.approx(log_mix(xv, th, av, 0.0), rel=1e-12)


def test_potential_and_fixed_point_equation():
    th, av, ev, h = 0.7, 1.2, 0.5, 1e-5
    u = S.lambdify(S.two_delta_potential(), (x, theta, a, eta, beta))
    fp = S.lambdify(S.two_delta_fixed_point_equation().lhs, (x, theta, a, eta))
    for xv in (-0.8, 0.4, 1.3):
        shift = potential(xv, th, av, ev) - potential(0.0, th, av, ev)
        assert u(xv, th, av, ev, BETA) == pytest.approx(shift, rel=1e-12)
        drift = -(potential(xv + h, th, av, ev) - potential(xv - h, th, av, ev)) / (2 * h)
        assert BETA / 2 * fp(xv, th, av, ev) == pytest.approx(drift, rel=1e-7)  # drift = beta/2 (x + (1+eta^2) score)


@pytest.mark.parametrize("av, ev", PAIRS)
def test_normal_form(av, ev):
    mu_e, c3_e = S.two_delta_normal_form()
    mu = S.lambdify(mu_e, (theta, a, eta))
    c3 = S.lambdify(c3_e, (theta, a, eta))
    tc = theta_c(av, ev)
    assert c3(tc, av, ev) < 0  # supercritical
    assert abs(mu(tc, av, ev)) < 1e-10
    assert mu(tc - 0.01, av, ev) < 0 < mu(tc + 0.01, av, ev)
    th = 0.6 * tc + 0.3
    assert mu(th, av, ev) == pytest.approx(-2 * fd_u2(th, av, ev) / ((1 + ev**2) * BETA), rel=1e-7, abs=1e-8)

    def reduced(z):  # score from the posterior over the two points (not the tanh form) + x / (1 + eta^2)
        s2 = 1 - th**2
        r = 1 / (1 + np.exp(-2 * th * av * z / s2))
        return (th * av * (2 * r - 1) - z) / s2 + z / (1 + ev**2)

    hh = 1e-2
    third = (reduced(2 * hh) - 2 * reduced(hh) + 2 * reduced(-hh) - reduced(-2 * hh)) / (2 * hh**3)
    assert c3(th, av, ev) == pytest.approx(third / 6, rel=1e-3)


# --- centred equal-norm data sets ----------------------------------------------------------------
def test_equal_norm_reduces_to_two_delta():
    assert sp.simplify(S.equal_norm_theta_c().subs(lam, a**2) - S.two_delta_theta_c()) == 0


@pytest.mark.parametrize("ev", [0.5, 1.0, 2.0])
def test_equal_norm_hessian_in_d10(ev):
    rng = np.random.default_rng(1)
    d, r = 10, 2.0
    u_ = rng.normal(size=(6, d))
    Y = r * np.concatenate([u_, -u_]) / np.linalg.norm(np.concatenate([u_, -u_]), axis=1, keepdims=True)
    C = Y.T @ Y / len(Y)
    lam_max = np.linalg.eigvalsh(C)[-1]
    th = float(S.lambdify(S.equal_norm_theta_c(), (lam, eta))(lam_max, ev))
    assert 0 < th < 1
    s2 = 1 - th**2
    H = -np.eye(d) / s2 + th**2 / s2**2 * C

    def logp(z):  # log of the uniform mixture of N(theta y_j, sigma^2 I), up to a constant
        return logsumexp(-jnp.sum((z - th * Y) ** 2, axis=1) / (2 * s2))

    np.testing.assert_allclose(jax.hessian(logp)(jnp.zeros(d)), H, atol=1e-10)
    assert abs(np.linalg.eigvalsh((1 + ev**2) * H + np.eye(d))[-1]) < 1e-9


def test_speciation_theta():
    lv = 0.8
    ts = float(S.speciation_theta().subs(lam, lv))
    assert ts**2 * lv == pytest.approx(1 - ts**2, rel=1e-14)
    en = S.lambdify(S.equal_norm_theta_c(), (lam, eta))
    assert en(lv, 1e4) == pytest.approx(ts, rel=1e-6)  # eta -> infinity limit
    assert en(lv, 0.5) < en(lv, 1.0) < en(lv, 2.0) < ts  # the centre destabilises before convexity is lost


# --- two-Gaussian mixture ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mv, vv, ev", [(1.0, 0.25, 1.0), (1.5, 0.5, 0.5), (0.8, 0.1, 2.0), (0.5, 0.3, 0.0), (2.0, 1.5, 1.0)]
)
def test_two_gaussian_theta_c(mv, vv, ev):
    assert (1 + ev**2) * mv**2 > vv * (1 + ev**2 - vv)  # a transition exists
    tc = float(S.lambdify(S.two_gaussian_theta_c(), (m, v0, eta))(mv, vv, ev))
    assert 0 < tc < 1
    assert abs(fd_u2(tc, mv, ev, vv)) < 1e-7
    assert fd_u2(tc - 0.01, mv, ev, vv) > 0 > fd_u2(tc + 0.01, mv, ev, vv)
    cond = S.two_gaussian_critical_condition()
    assert S.lambdify(cond.lhs - cond.rhs, (theta, m, v0, eta))(tc, mv, vv, ev) == pytest.approx(0, abs=1e-12)


def test_two_gaussian_exact_and_delta_limit():
    assert S.two_gaussian_theta_c().subs({m: 1, v0: sp.Rational(1, 4), eta: 1}) == sp.Rational(2, 3)
    assert sp.simplify(S.two_gaussian_theta_c().subs({v0: 0, m: a}) - S.two_delta_theta_c()) == 0
    tg = S.lambdify(S.two_gaussian_theta_c(), (m, v0, eta))
    for av, ev in PAIRS[:4]:
        assert tg(av, 1e-9, ev) == pytest.approx(theta_c(av, ev), rel=1e-7)
    assert tg(0.5, 0.3, 0.0) == pytest.approx(np.sqrt(0.7 - 0.25) / 0.7, rel=1e-14)  # eta = 0: s = (q - m^2) / q^2
    assert tg(2.0, 0.3, 0.0) == 0  # eta = 0 and m^2 > 1 - v0: the ODE centre is never stable


# --- helpers -------------------------------------------------------------------------------------
def test_latex_and_jax_backend():
    tex = S.latex(S.two_delta_theta_c())
    assert isinstance(tex, str) and "\\sqrt" in tex
    f_jax = S.lambdify(S.two_delta_theta_c(), (a, eta), backend="jax")
    for av, ev in PAIRS:
        out = f_jax(jnp.float64(av), jnp.float64(ev))
        assert out.dtype == jnp.float64
        assert float(out) == pytest.approx(theta_c(av, ev), rel=1e-14)
    with pytest.raises(ValueError):
        S.lambdify(S.two_delta_theta_c(), (a, eta), backend="torch")
