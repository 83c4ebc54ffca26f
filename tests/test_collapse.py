"""The exact collapse time against closed forms and a brute-force count of minima; Biroli et al.'s times."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from theory import DeltaMixture, VPLinear, collapse_time
from theory.collapse import biroli_times, excess_entropy
from theory.systems import ThreeDeltas, TwoDeltas

SMALL = np.random.default_rng(1).normal(size=(8, 4))  # 8 generic points in d = 4


def reduced_potential(Y, t, schedule, eta=1.0):
    """u = -log p_t(x) - |x|^2 / (2 (1 + eta^2)) in numpy (VP: c = -1/(1 + eta^2)), with its gradient."""
    th, s2 = float(schedule.theta(t)), float(schedule.sigma2(t))
    c = -1.0 / (1.0 + eta**2)

    def u(x):
        logits = -np.sum((x - th * Y) ** 2, axis=1) / (2 * s2)
        r = np.exp(logits - logsumexp(logits))
        return -logsumexp(logits) + 0.5 * c * x @ x, (x - th * r @ Y) / s2 + c * x

    return u


def brute_force_minima(Y, t, schedule, n_random=64, seed=0):
    """Distinct local minima of u at t by L-BFGS from the data attractors and random starts (scipy, numpy)."""
    u = reduced_potential(Y, t, schedule)
    kappa = float(schedule.theta(t)) / (1.0 - 0.5 * float(schedule.sigma2(t)))
    rng = np.random.default_rng(seed)
    jitter = 0.3 * rng.normal(size=(n_random, Y.shape[1]))
    starts = np.concatenate([kappa * Y, kappa * Y[rng.integers(len(Y), size=n_random)] + jitter])
    found = []
    for x0 in starts:
        res = minimize(u, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000})
        if not any(np.linalg.norm(res.x - y) < 1e-4 for y in found):
            found.append(res.x)
    return np.array(found)


def test_two_deltas_collapse_is_the_pitchfork():
    ct = collapse_time(TwoDeltas(1.0).data, VPLinear(), n_grid=16)
    assert abs(ct.t - TwoDeltas(1.0).t_c(VPLinear())) < 1e-8
    assert ct.how == ("crossing", "crossing")


def test_three_deltas_collapse_is_the_saddle_node():
    from theory import critical_time

    ct = collapse_time(ThreeDeltas(1.0).data, VPLinear(), n_grid=16)
    ref = critical_time(ThreeDeltas(1.0).data, VPLinear(), n_mass=0)
    assert ref.kind == "saddle-node"
    assert np.allclose(ct.t_own, ref.t, atol=1e-8)  # the three own attractors are born together, by symmetry


def test_small_set_against_brute_force_count():
    s = VPLinear()
    ct = collapse_time(DeltaMixture(SMALL), s, n_grid=32)
    assert ct.how[int(np.argmin(ct.t_own))] == "fold"
    gap = np.sort(ct.t_own)[1] - ct.t
    dt = min(1e-4, 0.1 * gap)
    below = brute_force_minima(SMALL, ct.t - dt, s)
    above = brute_force_minima(SMALL, ct.t + dt, s)
    assert len(below) == len(SMALL)  # every point its own minimum
    assert len(above) == len(SMALL) - 1  # one of them gone
    assert ct.owned_fraction(ct.t - dt) == 1.0 and ct.owned_fraction(ct.t + dt) == 1.0 - 1.0 / len(SMALL)


def test_biroli_gaussian_closed_form_and_conversion():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(50, 3)) * 2.0
    b = biroli_times(DeltaMixture(Y), VPLinear())
    sig2 = np.trace(np.cov(Y.T, bias=True)) / 3
    assert abs(b.collapse_gaussian_ou - 0.5 * math.log(1 + sig2 / (50 ** (2 / 3) - 1))) < 1e-12
    # The Gaussian excess entropy 1/2 ln(1 + sigma^2 e^{-2s} / Delta_s) equals ln N / d there.
    s = b.collapse_gaussian_ou
    assert abs(0.5 * math.log(1 + sig2 * math.exp(-2 * s) / -math.expm1(-2 * s)) - math.log(50) / 3) < 1e-12
    # VP: the same SNR means theta(t) = e^{-s}.
    assert abs(float(VPLinear().theta(b.collapse_gaussian_t)) - math.exp(-s)) < 1e-12
    assert abs(float(VPLinear().theta(VPLinear().t_from_ou_time(0.3))) - math.exp(-0.3)) < 1e-12
    lam = np.linalg.eigvalsh(np.cov(Y.T, bias=True))[-1]
    assert abs(b.speciation_ou - 0.5 * math.log(lam)) < 1e-12


def test_excess_entropy_of_gaussian_data_at_high_noise():
    # Leave-one-out cross-entropy of many Gaussian points: the population's excess entropy where noise dominates.
    Y = np.random.default_rng(7).normal(size=(2000, 2))  # not the stream of the noise draws (seed 0)
    s = 0.5
    exact = 0.5 * math.log(1 + math.exp(-2 * s) / -math.expm1(-2 * s))
    assert abs(excess_entropy(Y, s, n_draws=1) - exact) < 0.01


def test_bad_inputs():
    from theory import GaussianMixture

    with pytest.raises(TypeError, match="DeltaMixture"):
        collapse_time(GaussianMixture([[0.0], [1.0]], [0.1, 0.1]), VPLinear())
    with pytest.raises(ValueError, match="repeated"):
        collapse_time(DeltaMixture([[0.0], [0.0], [1.0]]), VPLinear())
    with pytest.raises(ValueError, match="t_lo"):
        collapse_time(DeltaMixture([[0.0], [1.0]]), VPLinear(), t_lo=2.0)
    with pytest.raises(ValueError, match="n_grid"):
        collapse_time(DeltaMixture([[0.0], [1.0]]), VPLinear(), n_grid=2)


def test_biroli_cloning_at_speciation():
    from scipy.integrate import quad

    from theory.cloning_curve import biroli_cloning_probability

    for d in (4, 64, 1000):  # sigma = m~ = 1: mu = 1 at t_S = 1/2 ln d for every d
        assert abs(biroli_cloning_probability(0.5 * math.log(d), d) - 0.775) < 5e-4  # the paper's value
    exact = 0.5 + 0.5 * quad(lambda z: np.tanh(1 + z) ** 2 * np.exp(-z * z / 2) / math.sqrt(2 * math.pi), -40, 40)[0]
    assert abs(biroli_cloning_probability(0.5 * math.log(8), 8) - exact) < 1e-12


@pytest.mark.slow
def test_cloning_curve_two_gaussians_against_biroli():
    from theory import GaussianMixture
    from theory.cloning_curve import biroli_cloning_probability, cloning_curve

    d, s = 4, VPLinear()
    m = np.ones(d)
    data = GaussianMixture(np.stack([m, -m]), np.ones((2, d)))  # N(+-m, I), m~ = sigma = 1
    s_ou = np.array([0.5 * math.log(d), 0.5 * math.log(d) + 0.5])
    curve = cloning_curve(data, s, [s.t_from_ou_time(v) for v in s_ou], n=600, n_steps=100, seed=3)
    phi = biroli_cloning_probability(s_ou, d)
    assert np.all(np.abs(curve.p - phi) < 4 * curve.se)  # the simulator, independent of the closed form
    assert np.all(np.abs(curve.posterior - phi) < 0.03)  # the posterior on the same draws
