"""Critical times against the paper's value, sympy closed forms and independent computations."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from theory import (
    DDPM,
    VE,
    DeltaMixture,
    GaussianMixture,
    VPCosine,
    VPLinear,
    critical_time,
    fixed_points,
    speciation_time,
)
from theory import symbolic as S

THETA_C = math.sqrt(math.sqrt(2.0) - 1.0)  # the paper's 1D example, closed form
T_C = 0.2926416543  # published: Raya & Ambrogioni (2023), 1D example


def two_deltas(a=1.0, w=None):
    return DeltaMixture([[-a], [a]], w)


def equal_norm(d, n_dirs, radius, seed):
    """Centred equal-norm set: random unit vectors and their negatives, scaled to ``radius``."""
    V = np.random.default_rng(seed).normal(size=(n_dirs, d))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return np.concatenate([V, -V]) * radius


def test_paper_reference_value():
    ct = critical_time(two_deltas(), VPLinear())
    assert ct.kind == "pitchfork"
    assert abs(ct.theta - THETA_C) < 1e-10
    assert abs(ct.t - T_C) < 1e-8
    assert abs(ct.centre_theta - THETA_C) < 1e-10
    assert abs(abs(ct.direction[0]) - 1.0) < 1e-12
    assert abs(ct.snr - THETA_C**2 / (1 - THETA_C**2)) < 1e-9
    assert ct.step is None


def test_paper_reference_on_ddpm_steps():
    ct = critical_time(two_deltas(), DDPM())
    assert ct.kind == "pitchfork"
    assert abs(ct.theta - THETA_C) < 1e-8
    assert ct.step in (292, 293)  # the paper: generative step ~707 of 1000
    assert ct.generative_step in (707, 708)
    # The step is where the discrete theta_k crosses theta_c (independent numpy cumprod).
    theta_k = np.sqrt(np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000)))
    assert theta_k[ct.step - 1] > THETA_C > theta_k[ct.step]


@pytest.mark.parametrize("a_val, eta_val", [(0.5, 1.0), (1.0, 0.5), (2.0, 1.0), (1.0, 2.0), (0.7, 0.0), (1.3, 0.3)])
def test_two_deltas_match_sympy(a_val, eta_val):
    theta_c = S.lambdify(S.two_delta_theta_c(), (S.a, S.eta))(a_val, eta_val)
    ct = critical_time(two_deltas(a_val), VPLinear(), eta=eta_val)
    assert ct.kind == "pitchfork"
    assert abs(ct.theta - theta_c) < 1e-8
    assert abs(ct.t - float(VPLinear().t_from_theta(theta_c))) < 1e-8


def test_ode_centre_never_stable_for_unit_deltas():
    # eta = 0, a = 1: theta_c = 0 in closed form, i.e. the dynamics is bistable at every t <= T.
    assert S.lambdify(S.two_delta_theta_c(), (S.a, S.eta))(1.0, 0.0) == 0.0
    ct = critical_time(two_deltas(), VPLinear(), eta=0.0)
    assert ct.kind == "none" and math.isnan(ct.t)
    assert "already 2 stable" in ct.message


@pytest.mark.parametrize("d, eta_val", [(10, 1.0), (12, 0.5), (16, 2.0)])
def test_equal_norm_centre_matches_closed_form(d, eta_val):
    Y = equal_norm(d, d, 1.5, seed=d)
    lam_max = np.linalg.eigvalsh(Y.T @ Y / len(Y))[-1]  # covariance of the centred set
    theta_c = S.lambdify(S.equal_norm_theta_c(), (S.lam, S.eta))(lam_max, eta_val)
    ct = critical_time(DeltaMixture(Y), VPLinear(), eta=eta_val)
    assert abs(ct.centre_theta - theta_c) < 1e-6
    assert ct.t >= ct.centre_t - 1e-12  # the first bifurcation is never after the centre's loss


def test_local_posterior_sums_equal_the_full_ones():
    """Point-local Hessians drop the points below e^-60 of the largest posterior weight: round-off only."""
    from theory._field import MixtureField

    rng = np.random.default_rng(0)
    Y = rng.normal(size=(30000, 80))
    f = MixtureField(DeltaMixture(Y), VPLinear(), 1.0)
    t = 0.05
    x = f.kappa(t) * Y[7] + 0.01 * rng.normal(size=80)
    local = f.local_params(x, t)
    assert len(local[0]) < 1000  # near a data point few points carry weight
    H_full = np.asarray(f.k["H"](f.p, x, *f.coeffs(t)))
    assert np.max(np.abs(f.hessian(x, t) - H_full)) <= 1e-12 * np.max(np.abs(H_full))


@pytest.mark.parametrize("m_val, v0_val, eta_val", [(1.0, 0.1, 1.0), (1.0, 0.25, 1.0), (1.5, 0.3, 0.5)])
def test_symmetric_gaussian_mixture_matches_sympy(m_val, v0_val, eta_val):
    theta_c = S.lambdify(S.two_gaussian_theta_c(), (S.m, S.v0, S.eta))(m_val, v0_val, eta_val)
    gm = GaussianMixture([[-m_val], [m_val]], [v0_val, v0_val])
    ct = critical_time(gm, VPLinear(), eta=eta_val)
    assert ct.kind == "pitchfork"
    assert abs(ct.theta - theta_c) < 1e-8


def _fold_residuals(w_plus, x, t, schedule, eta):
    """R and dR/dx for deltas at +-1 with weights (1 - w_plus, w_plus), written independently in numpy."""
    th, s2 = float(schedule.theta(t)), float(schedule.sigma2(t))
    m = np.tanh(th * x / s2 + 0.5 * np.log(w_plus / (1 - w_plus)))
    c = -1.0 / (1.0 + eta**2)  # VP
    R = (th * m - x) / s2 - c * x
    dR = -1.0 / s2 + th**2 / s2**2 * (1 - m**2) - c
    return R, dR


def n_stable(data, schedule, t, eta=1.0):
    return sum(p.stable for p in fixed_points(data, schedule, t, eta))


@pytest.mark.parametrize("w_plus", [0.7, 0.55])
def test_unequal_weights_give_a_saddle_node(w_plus):
    s = VPLinear()
    data = two_deltas(w=[1 - w_plus, w_plus])
    ct = critical_time(data, s)
    assert ct.kind == "saddle-node"
    R, dR = _fold_residuals(w_plus, ct.x[0], ct.t, s, 1.0)
    # A fold: R = 0 and R' = 0 (R' ~ sqrt(t - t_b) along the branch: 1e-4 means |t - t_b| ~ 1e-10).
    assert abs(R) < 1e-8 and abs(dR) < 1e-4
    assert ct.x[0] < 0  # the new attractor is the lighter point's
    assert n_stable(data, s, ct.t + 1e-7) == 1 and n_stable(data, s, ct.t - 1e-7) == 2


def test_subcritical_symmetric_data_break_by_saddle_node_first():
    # Heavy-tailed symmetric data (positive effective kurtosis): the outer attractors appear by a
    # saddle-node before the centre loses stability at a subcritical pitchfork.
    s = VPLinear()
    pts, w = np.array([-1.0, -0.2, 0.2, 1.0]), np.array([0.05, 0.45, 0.45, 0.05])
    data = DeltaMixture(pts[:, None], w)
    ct = critical_time(data, s)
    assert ct.kind == "saddle-node"
    assert ct.t > ct.centre_t
    assert n_stable(data, s, ct.t + 1e-6) == 1 and n_stable(data, s, ct.t - 1e-6) == 3

    # The centre's loss, independently: Hred(0) = 0 with the posterior at x = 0 written in numpy.
    def hred_at_0(theta):
        s2 = 1 - theta**2
        r = w * np.exp(-(theta**2) * pts**2 / (2 * s2))
        r /= r.sum()
        return -1 / s2 + theta**2 / s2**2 * (r @ pts**2) + 0.5

    theta_centre = brentq(hred_at_0, 0.3, 0.99, xtol=1e-15)
    assert abs(ct.centre_theta - theta_centre) < 1e-8


def test_three_fold_symmetry_breaks_by_saddle_node():
    s = VPLinear()
    ang = 2 * np.pi * np.arange(3) / 3
    data = DeltaMixture(np.c_[np.cos(ang), np.sin(ang)])
    ct = critical_time(data, s)
    assert ct.kind == "saddle-node"
    assert ct.t > ct.centre_t
    # At the centre the posterior covariance is the data covariance I/2: closed form of its loss.
    theta_centre = S.lambdify(S.equal_norm_theta_c(), (S.lam, S.eta))(0.5, 1.0)
    assert abs(ct.centre_theta - theta_centre) < 1e-8
    assert n_stable(data, s, ct.t + 1e-6) == 1 and n_stable(data, s, ct.t - 1e-6) == 4


def test_critical_point_is_a_fixed_snr_across_schedules():
    ref = critical_time(two_deltas(), VPLinear())
    for s in (VPCosine(), VPLinear(beta_min=0.5, beta_max=10.0)):
        ct = critical_time(two_deltas(), s)
        assert abs(ct.snr - ref.snr) < 1e-8
        assert abs(ct.t - float(s.t_from_theta(THETA_C))) < 1e-8


def test_ve_critical_point_is_the_mode_split():
    # VE: drift = g^2 score for every eta, so the centre loses stability where -log p_t does:
    # 1/sigma^2 = 1/sigma^4  <=>  sigma = 1 (theta = 1, a = 1).
    ct = critical_time(two_deltas(), VE())
    assert ct.kind == "pitchfork"
    assert abs(float(VE().sigma(ct.t)) - 1.0) < 1e-8


def test_speciation_of_equal_norm_data():
    Y = equal_norm(10, 10, 3.0, seed=1)
    lam_max = np.linalg.eigvalsh(Y.T @ Y / len(Y))[-1]
    sp_ = speciation_time(DeltaMixture(Y), VPLinear())
    assert abs(sp_.theta - 1.0 / math.sqrt(1.0 + lam_max)) < 1e-6  # theta^2 lam = sigma^2
    assert abs(sp_.Lambda - lam_max) < 1e-10
    assert abs(sp_.biroli_ou_time - 0.5 * math.log(lam_max)) < 1e-12
    # OU time t_S maps to theta = e^{-t_S} on VP.
    assert abs(float(VPLinear().theta(sp_.biroli_t)) - math.exp(-sp_.biroli_ou_time)) < 1e-10


def test_speciation_comes_after_the_dynamical_critical_time_in_generation():
    # theta_c(eta = 1) < theta_S: the reverse SDE's centre destabilises at more noise than -log p_t's.
    sp_ = speciation_time(two_deltas(), VPLinear())
    assert abs(sp_.theta - 1 / math.sqrt(2)) < 1e-8
    assert sp_.t < T_C


@pytest.mark.slow
def test_larger_equal_norm_set():
    """N = 2000 points in d = 50 (about 20 s): the centre's loss against the closed form."""
    Y = equal_norm(50, 1000, 0.35 * math.sqrt(50), seed=0)
    lam_max = np.linalg.eigvalsh(Y.T @ Y / len(Y))[-1]
    theta_c = S.lambdify(S.equal_norm_theta_c(), (S.lam, S.eta))(lam_max, 1.0)
    ct = critical_time(DeltaMixture(Y), VPLinear(), n_seeds=32)
    assert abs(ct.centre_theta - theta_c) < 1e-6
    assert ct.t > ct.centre_t  # memorisation: attractors at single points appear first (saddle-nodes)
    assert ct.kind == "saddle-node"
