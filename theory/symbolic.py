r"""Closed forms (sympy) for the symmetry-breaking transition of variance-preserving diffusion.

Conventions: x_t = theta x_0 + sigma eps with sigma^2 = 1 - theta^2 (substituted in every result),
f = -beta x / 2, g^2 = beta. The generative family dx = [-f + (1 + eta^2)/2 g^2 grad log p_t] dt + eta g dW
(eta = 1: reverse SDE, eta = 0: probability-flow ODE) has drift -grad u with the potential

    u_eta(x) = beta * ( -(1 + eta^2)/2 log p_t(x) - x^2 / 4 ),

and a fixed point is stable iff u'' > 0 there. The centre x = 0 of a symmetric distribution loses
stability at theta_c, where u''(0) = 0.

Symbols: ``x`` (real); ``theta``, ``a``, ``beta``, ``lam`` (printed lambda), ``m``, ``v0`` (positive); ``eta`` (>= 0).

Examples:
    >>> import sympy as sp
    >>> from theory.symbolic import a, eta, two_delta_theta_c
    >>> sp.simplify(two_delta_theta_c().subs({a: 1, eta: 1}))
    sqrt(-1 + sqrt(2))
"""

from __future__ import annotations

from functools import cache

import sympy as sp

__all__ = [
    "a", "beta", "critical_quadratic", "equal_norm_theta_c", "eta", "lam", "lambdify", "latex", "m", "sigma2",
    "speciation_theta", "theta", "two_delta_fixed_point_equation", "two_delta_log_density", "two_delta_normal_form",
    "two_delta_potential", "two_delta_score", "two_delta_theta_c", "two_delta_u2_at_centre",
    "two_gaussian_critical_condition", "two_gaussian_theta_c", "v0", "x",
]  # fmt: skip

x = sp.Symbol("x", real=True)
theta, a, beta, m, v0 = sp.symbols("theta a beta m v0", positive=True)
lam = sp.Symbol("lambda", positive=True)
eta = sp.Symbol("eta", nonnegative=True)
sigma2 = 1 - theta**2
_s2 = sp.Symbol("sigma2", positive=True)  # sigma^2 kept as a symbol while differentiating in x
_z = theta * a * x / _s2


def _vp(expr):
    """Substitute the variance-preserving sigma^2 = 1 - theta^2."""
    return expr.subs(_s2, sigma2)


def _quadratic(condition):
    """(A, B, C): F(theta) = 0 <=> A s^2 + B s + C = 0 in s = theta^2, signed so that A >= 0 (then C <= 0)."""
    s = sp.Symbol("s", nonnegative=True)
    coeffs = [sp.factor(c) for c in sp.Poly(sp.expand(condition.subs(theta, sp.sqrt(s))), s).all_coeffs()]
    point = {sym: sp.Rational(k + 2, 7) for k, sym in enumerate(sorted(condition.free_symbols, key=str))}
    return tuple(-c for c in coeffs) if coeffs[0].subs(point) < 0 else tuple(coeffs)


def _critical_theta(condition):
    """theta_c from F(theta) = 0, quadratic in s = theta^2: sqrt of the root of A s^2 + B s + C = 0 with s >= 0.

    Every condition here has C / A = -eta^2 / (1 - v0)^2 <= 0 (v0 = 0 for deltas), so one branch of the quadratic
    formula is >= 0 and the other <= 0 for all parameters; evaluating both at one generic point (eta > 0)
    identifies the nonnegative branch. (For numbers, ``theory.systems`` evaluates the root from ``_quadratic``
    in a form without cancellation: this one loses s_+ ~ eta^2 / B to round-off when B is large.)
    """
    s = sp.Symbol("s", nonnegative=True)
    coeffs = _quadratic(condition)
    A, B, C = sp.symbols("A B C")
    roots = [r.subs({A: coeffs[0], B: coeffs[1], C: coeffs[2]}) for r in sp.solve(A * s**2 + B * s + C, s)]
    point = {sym: sp.Rational(k + 2, 7) for k, sym in enumerate(sorted(condition.free_symbols, key=str))}
    (root,) = [r for r in roots if r.subs(point) >= 0]
    return sp.sqrt(root)


_shape = sp.log(sp.cosh(_z)) - x**2 / (2 * _s2)  # the x-dependent part of log p_t for two deltas
_score = sp.diff(_shape, x).subs(sp.sinh(_z), sp.tanh(_z) * sp.cosh(_z))
_potential = beta * (-(1 + eta**2) / 2 * _shape - x**2 / 4)


def two_delta_log_density():
    r"""log p_t for p_0 = (delta_a + delta_{-a}) / 2, i.e. log[N(x; theta a, sigma^2)/2 + N(x; -theta a, sigma^2)/2]:

    log p_t = log cosh(theta a x / sigma^2) - (x^2 + theta^2 a^2) / (2 sigma^2) - log(2 pi sigma^2) / 2.

    >>> sp.integrate(sp.exp(two_delta_log_density().subs({a: 1, theta: sp.S.Half})), (x, -sp.oo, sp.oo))
    1
    """
    return _vp(_shape - theta**2 * a**2 / (2 * _s2) - sp.log(2 * sp.pi * _s2) / 2)


def two_delta_score():
    r"""Score d/dx log p_t = -x / sigma^2 + theta a / sigma^2 tanh(theta a x / sigma^2).

    >>> two_delta_score().subs({a: 1, theta: sp.S.Half, x: 0})
    0
    """
    return _vp(_score)


def two_delta_potential():
    r"""u_eta(x) = beta * ( -(1 + eta^2)/2 log p_t(x) - x^2/4 ), up to the constant that makes u_eta(0) = 0.

    >>> sp.diff(two_delta_potential(), x).subs(x, 0)  # the centre is always a fixed point
    0
    """
    return _vp(_potential)


def two_delta_fixed_point_equation():
    r"""Fixed points (drift = 0): x + (1 + eta^2) score(x) = 0, with the score of ``two_delta_score``.

    >>> eq = two_delta_fixed_point_equation().subs({a: 1, eta: 1, theta: sp.Rational(9, 10)})
    >>> round(float(sp.nsolve(eq.lhs, x, 1)), 6)  # the positive (stable) fixed point
    0.994314
    """
    return sp.Eq(x + (1 + eta**2) * two_delta_score(), 0)


def two_delta_u2_at_centre():
    r"""u''(0) = beta/2 * [ (1 + eta^2)(sigma^2 - theta^2 a^2) / sigma^4 - 1 ]; the centre is stable iff it is > 0.

    >>> two_delta_u2_at_centre().subs(theta, 0)  # pure noise: stable iff eta > 0
    beta*eta**2/2
    """
    return _vp(sp.diff(_potential, x, 2).subs(x, 0))


@cache
def two_delta_theta_c():
    r"""Critical theta_c(a, eta) where u''(0) = 0: (1 + eta^2)(sigma^2 - theta^2 a^2) = sigma^4, i.e. with s = theta^2

        s^2 + s ((1 + eta^2)(1 + a^2) - 2) - eta^2 = 0,   theta_c = sqrt(s_+),  s_+ in [0, 1).

    The centre is stable for theta < theta_c (more noise) and unstable for theta > theta_c. For eta = 0
    (probability-flow ODE) theta_c = sqrt(max(0, 1 - a^2)): for a >= 1 it is 0, the ODE centre is never stable.

    >>> sp.simplify(two_delta_theta_c().subs({a: 1, eta: 1}))
    sqrt(-1 + sqrt(2))
    """
    return _critical_theta((1 + eta**2) * (sigma2 - theta**2 * a**2) - sigma2**2)


@cache
def two_delta_normal_form():
    r"""Pitchfork normal form of the reduced drift R(x) = score(x) + x / (1 + eta^2) (true drift: (1 + eta^2) beta/2 R):

        dx/dtau = mu x + c3 x^3 + O(x^5),  mu = -1/sigma^2 + theta^2 a^2/sigma^4 + 1/(1 + eta^2),
                                           c3 = -theta^4 a^4 / (3 sigma^8),

    the Taylor coefficients at x = 0. mu = -2 u''(0) / ((1 + eta^2) beta) vanishes at theta_c; c3 < 0: supercritical.

    >>> two_delta_normal_form()[1]
    -a**4*theta**4/(3*(1 - theta**2)**4)
    """
    series = sp.series(_score + x / (1 + eta**2), x, 0, 5).removeO()
    return _vp(series.coeff(x, 1)), _vp(series.coeff(x, 3))


@cache
def equal_norm_theta_c():
    r"""theta_c(lam, eta) for a centred finite data set with equal norms and top covariance eigenvalue lam.

    At x = 0 the posterior is uniform, so Hess log p_t(0) = -I/sigma^2 + theta^2 C / sigma^4 and the centre loses
    stability where (1 + eta^2)(sigma^2 - theta^2 lam) = sigma^4: the two-delta formula with a^2 -> lam.

    >>> sp.simplify(equal_norm_theta_c().subs(lam, a**2) - two_delta_theta_c())
    0
    """
    return _critical_theta((1 + eta**2) * (sigma2 - theta**2 * lam) - sigma2**2)


def speciation_theta():
    r"""theta_S = 1 / sqrt(1 + lam), where theta^2 lam = sigma^2: -log p_t stops being convex at the centre.

    This is the eta -> infinity limit of ``equal_norm_theta_c``.

    >>> speciation_theta().subs(lam, 1)
    sqrt(2)/2
    """
    return 1 / sp.sqrt(1 + lam)


def two_gaussian_critical_condition():
    r"""u''(0) = 0 for p_0 = N(m, v0)/2 + N(-m, v0)/2: (1 + eta^2)(v - theta^2 m^2) = v^2, v = theta^2 v0 + sigma^2.

    >>> two_gaussian_critical_condition().subs({v0: 0, m: a})  # the two-delta condition
    Eq((eta**2 + 1)*(-a**2*theta**2 - theta**2 + 1), (1 - theta**2)**2)
    """
    v = theta**2 * v0 + sigma2
    return sp.Eq((1 + eta**2) * (v - theta**2 * m**2), v**2)


@cache
def two_gaussian_theta_c():
    r"""Closed-form theta_c(m, v0, eta) for the symmetric two-Gaussian mixture; with q = 1 - v0, s = theta^2:

        q^2 s^2 + s ((1 + eta^2)(q + m^2) - 2 q) - eta^2 = 0,   theta_c = sqrt(s_+).

    Valid for v0 != 1 (at v0 = 1 the equation is linear, s = eta^2 / ((1 + eta^2) m^2)); s_+ < 1, i.e. a
    transition exists, iff (1 + eta^2) m^2 > v0 (1 + eta^2 - v0). For eta = 0, s_+ = max(0, q - m^2) / q^2.
    v0 -> 0 gives ``two_delta_theta_c`` with a = m.

    >>> two_gaussian_theta_c().subs({m: 1, v0: sp.Rational(1, 4), eta: 1})
    2/3
    """
    cond = two_gaussian_critical_condition()
    return _critical_theta(cond.lhs - cond.rhs)


@cache
def critical_quadratic(name: str):
    r"""(A, B, C) of the centre's condition as A s^2 + B s + C = 0 in s = theta^2 (A >= 0 >= C), for ``name`` in
    "two_delta" (a, eta), "equal_norm" (lam, eta), "two_gaussian" (m, v0, eta): theta_c = sqrt(s_+).

    >>> critical_quadratic("two_delta")
    (1, a**2*eta**2 + a**2 + eta**2 - 1, -eta**2)
    """
    conditions = {
        "two_delta": (1 + eta**2) * (sigma2 - theta**2 * a**2) - sigma2**2,
        "equal_norm": (1 + eta**2) * (sigma2 - theta**2 * lam) - sigma2**2,
        "two_gaussian": two_gaussian_critical_condition().lhs - two_gaussian_critical_condition().rhs,
    }
    if name not in conditions:
        raise ValueError(f"name must be one of {sorted(conditions)}; got {name!r}")
    return _quadratic(conditions[name])


def lambdify(expr, args, backend="numpy"):
    """Numerical callable of ``expr`` in ``args`` (sympy.lambdify with modules "numpy" or "jax").

    >>> round(float(lambdify(two_delta_theta_c(), (a, eta))(1.0, 1.0)), 10)
    0.6435942529
    """
    if backend not in ("numpy", "jax"):
        raise ValueError(f"backend must be 'numpy' or 'jax'; got {backend!r}")
    return sp.lambdify(args, expr, modules=backend)


def latex(expr):
    r"""LaTeX string of ``expr`` (sympy.latex).

    >>> latex(speciation_theta())
    '\\frac{1}{\\sqrt{\\lambda + 1}}'
    """
    return sp.latex(expr)
