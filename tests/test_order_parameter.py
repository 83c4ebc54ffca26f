"""The order parameter m(t) and the macroscopic breaking time against closed forms on deltas in 1D.

Deltas at -1 and +1 with weights (w_-, w_+), VP linear, eta = 1: the reduced field on the line is
R(x) = (theta tanh(theta x / sigma^2 + 1/2 ln(w_+ / w_-)) - x) / sigma^2 + x / 2 (written here in numpy).
Below the birth of the lighter point's attractor R has three roots x_- < x_s < x_+; the centre branch is the
heavier side's attractor x_+, whose basin is (x_s, inf), so
m(t) = w_+ P(N(theta, sigma^2) > x_s) + w_- P(N(-theta, sigma^2) > x_s), and m = 1 above the birth.
For equal weights the centre loses stability at the paper's pitchfork: m = 1 above it and 0 below.
"""

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from theory import DeltaMixture, VPLinear, critical_time, order_parameter
from theory._order import BISECT_TOL

T_C = 0.2926416543  # the paper's 1D example
W_MINUS = 0.3


def theta(t):
    return math.exp(-0.5 * (0.1 * t + 9.95 * t**2))  # VP linear, beta 0.1 .. 20


def field(x, t, w_minus):
    th = theta(t)
    s2 = 1.0 - th**2
    return (th * np.tanh(th * x / s2 + 0.5 * math.log((1 - w_minus) / w_minus)) - x) / s2 + 0.5 * x


def roots(t, w_minus):
    xs = np.linspace(-1.5, 1.5, 30001)
    v = field(xs, t, w_minus)
    idx = np.nonzero(v[:-1] * v[1:] < 0)[0]
    return [brentq(field, xs[k], xs[k + 1], args=(t, w_minus), xtol=1e-15) for k in idx]


def m_exact(t, w_minus):
    r = roots(t, w_minus)
    if len(r) < 3:
        return 1.0
    th, s = theta(t), math.sqrt(1.0 - theta(t) ** 2)
    return (1 - w_minus) * norm.sf((r[1] - th) / s) + w_minus * norm.sf((r[1] + th) / s)


def birth(w_minus):
    """The lighter point's birth: the largest t with three roots (a 1e-3 scan, then bisection to 1e-12)."""
    ts = np.arange(0.5, 0.01, -1e-3)
    k = next(i for i, t in enumerate(ts) if len(roots(t, w_minus)) == 3)
    lo, hi = ts[k], ts[k - 1]
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if len(roots(mid, w_minus)) == 3 else (lo, mid)
    return lo


def weighted():
    return DeltaMixture([[-1.0], [1.0]], [W_MINUS, 1 - W_MINUS])


def test_m_is_one_above_the_pitchfork_and_zero_below():
    # At T_C + 1e-5 the centre contracts so slowly that no draw's descent converges: Newton finishes them.
    times = [0.9, 0.5, T_C + 1e-5, T_C - 1e-3, 0.1]
    op = order_parameter(DeltaMixture([[-1.0], [1.0]]), VPLinear(), times, n_samples=500)
    assert op.m.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0] and not op.stderr.any()
    assert abs(op.centre_t - T_C) < 1e-8
    assert op.macroscopic_time() == T_C - 1e-3  # the largest of the times with 1 - m > 0.01


def test_m_against_the_closed_form_basin_of_weighted_deltas():
    t_b, n = birth(W_MINUS), 2000
    times = [t_b + 0.02, t_b + 1e-4, t_b - 1e-3, 0.15, 0.1, 0.05]
    op = order_parameter(weighted(), VPLinear(), times, n_samples=n, seed=3)
    exact = np.array([m_exact(t, W_MINUS) for t in op.t])
    assert exact[0] == exact[1] == 1.0 and op.m[0] == op.m[1] == 1.0
    se = np.sqrt(exact * (1 - exact) / n)
    assert np.all(np.abs(op.m - exact) <= 4 * se + 1.0 / n)
    assert np.allclose(op.stderr, np.sqrt(op.m * (1 - op.m) / n))
    assert math.isnan(op.centre_t)  # the centre branch goes on to the heavier point


def test_macroscopic_time_is_the_birth_where_m_jumps():
    """In 1D the new attractor's basin is a half-line: at its birth m jumps to m(t_b-) < 0.99 (closed form), so
    the macroscopic time at threshold 0.01 is the critical time itself, to the bisection's bracket."""
    t_b = birth(W_MINUS)
    assert 1.0 - m_exact(t_b - 1e-9, W_MINUS) > 0.1
    ct = critical_time(weighted(), VPLinear())
    assert ct.kind == "saddle-node" and abs(ct.t - t_b) < 1e-9
    assert 0.0 <= ct.t - ct.macroscopic.t <= BISECT_TOL * VPLinear().T and ct.macroscopic.threshold == 0.01


def test_macroscopic_time_against_the_closed_form_crossing():
    """At threshold 0.25, above the jump, 1 - m crosses continuously: the bisected time lies where the exact
    1 - m is within 3 standard errors (n = 4096) of the threshold."""
    n, thr = 4096, 0.25
    t_b = birth(W_MINUS)
    ct = critical_time(weighted(), VPLinear(), threshold=thr, n_mass=n)
    band = 3 * math.sqrt(thr * (1 - thr) / n)
    t_hi = brentq(lambda t: 1 - m_exact(t, W_MINUS) - (thr - band), 0.02, t_b - 1e-9)
    t_lo = brentq(lambda t: 1 - m_exact(t, W_MINUS) - (thr + band), 0.02, t_b - 1e-9)
    assert t_lo <= ct.macroscopic.t <= t_hi < ct.t
    assert 1 - ct.macroscopic.m > thr and ct.order.n_samples == n


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"times": []}, "times"),
        ({"times": [[0.1, 0.2]]}, "times"),
        ({"times": [0.0]}, "times"),
        ({"times": [1.5]}, "times"),
        ({"times": [0.1], "n_samples": 0}, "n_samples"),
        ({"times": [0.1], "eta": -1.0}, "eta"),
    ],
)
def test_bad_inputs_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        order_parameter(weighted(), VPLinear(), **kwargs)


def test_no_central_attractor_and_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="no central attractor"):
        order_parameter(DeltaMixture([[-1.0], [1.0]]), VPLinear(), [0.5], eta=0.0)  # bistable at every t
    op = order_parameter(weighted(), VPLinear(), [0.5], n_samples=16)
    with pytest.raises(ValueError, match="threshold"):
        op.macroscopic_time(1.0)
    with pytest.raises(ValueError, match="threshold"):
        critical_time(weighted(), VPLinear(), threshold=-0.1)
