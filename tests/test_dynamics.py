"""The eta family: drift, potential, Jacobian, fixed points, simulator and commitment."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import (
    DDPM,
    VE,
    GaussianMixture,
    VPCosine,
    VPLinear,
    bifurcation_diagram,
    commitment,
    data_potential,
    drift,
    drift_jacobian,
    fixed_points,
    potential,
    simulate,
)
from theory.systems import EqualNormSet, ThreeDeltas, TwoDeltas, TwoGaussians, reference_systems

S = VPLinear()
TWO = TwoDeltas(1.0).data


def two_delta_score(x, t):
    """Independent closed form: -x/sigma^2 + theta/sigma^2 tanh(theta x / sigma^2)."""
    th, s2 = float(S.theta(t)), float(S.sigma2(t))
    return -x / s2 + th / s2 * np.tanh(th * x / s2)


@pytest.mark.parametrize("eta", [0.0, 1.0, 2.5])
def test_drift_matches_closed_form(eta):
    x, t = np.linspace(-2, 2, 9)[:, None], 0.4
    beta = 0.1 + 19.9 * t
    want = beta / 2 * x[:, 0] + (1 + eta**2) / 2 * beta * two_delta_score(x[:, 0], t)
    np.testing.assert_allclose(np.asarray(drift(TWO, S, x, t, eta))[:, 0], want, rtol=1e-12, atol=1e-12)


def test_paper_potential_for_vp_reverse_sde():
    # u = beta (-log p_t - x^2/4) up to a constant in x (the paper's eq.), with log p_t from numpy.
    x, t = np.linspace(-2, 2, 7), 0.35
    th, s2 = float(S.theta(t)), float(S.sigma2(t))
    logp = np.logaddexp(-((x - th) ** 2) / (2 * s2), -((x + th) ** 2) / (2 * s2))
    u_paper = (0.1 + 19.9 * t) * (-logp - x**2 / 4)
    u = np.asarray(potential(TWO, S, x[:, None], t, 1.0))
    np.testing.assert_allclose(u - u[0], u_paper - u_paper[0], rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("schedule", [VPLinear(), VE()])
def test_drift_is_minus_grad_potential_and_jacobian_is_autodiff(schedule):
    gm = GaussianMixture([[-1.0, 0.5], [1.0, 0.0], [0.0, 1.2]], [[0.1, 0.3], [0.2, 0.2], [0.5, 0.1]], [0.2, 0.5, 0.3])
    x, t, eta = jnp.array([0.3, -0.4]), 0.3, 0.7
    grad_u = jax.grad(lambda y: potential(gm, schedule, y, t, eta))(x)
    np.testing.assert_allclose(drift(gm, schedule, x, t, eta), -grad_u, rtol=1e-10, atol=1e-10)
    J = jax.jacobian(lambda y: drift(gm, schedule, y, t, eta))(x)
    np.testing.assert_allclose(drift_jacobian(gm, schedule, x, t, eta), J, rtol=1e-10, atol=1e-10)
    grad_v = jax.grad(lambda y: data_potential(gm, schedule, y, t))(x)
    np.testing.assert_allclose(grad_v, -gm.score(x, t, schedule), rtol=1e-12)


def test_fixed_points_of_two_deltas_after_the_split():
    t, eta = 0.15, 1.0
    pts = fixed_points(TWO, S, t, eta)
    assert [p.stable for p in pts] == [True, False, True]
    th, s2 = float(S.theta(t)), float(S.sigma2(t))
    beta = 0.1 + 19.9 * t
    for p in pts:  # drift = 0 by the independent closed form
        assert abs(beta / 2 * p.x[0] + beta * two_delta_score(p.x[0], t)) < 1e-9
    # Centre eigenvalue: beta/2 + beta (-1/sigma^2 + theta^2/sigma^4), written out.
    assert abs(pts[1].eigenvalues[0] - (beta / 2 + beta * (-1 / s2 + th**2 / s2**2))) < 1e-9
    assert pts[0].x[0] == pytest.approx(-pts[2].x[0], abs=1e-12)


def test_fixed_points_in_2d_eigenvalues_from_autodiff():
    gm = GaussianMixture([[-1.0, 0.0], [1.0, 0.2]], [0.05, 0.05])
    t = 0.1
    pts = fixed_points(gm, S, t)
    assert sum(p.stable for p in pts) == 2 and len(pts) == 3
    for p in pts:
        H = jax.hessian(lambda y: potential(gm, S, y, t, 1.0))(jnp.asarray(p.x))
        want = np.sort(-np.linalg.eigvalsh(np.asarray(H)))  # drift Jacobian = -Hess u, ascending
        np.testing.assert_allclose(p.eigenvalues, want, rtol=1e-8, atol=1e-8)


def test_bifurcation_diagram_counts_change_at_theta_c():
    t_c = TwoDeltas(1.0).t_c(S)
    assert t_c == pytest.approx(float(S.t_from_theta(math.sqrt(math.sqrt(2) - 1))), abs=1e-14)  # the paper's theta_c
    diag = bifurcation_diagram(TWO, S, [t_c + 0.05, t_c - 0.05])
    assert [len(p) for p in diag.points] == [1, 3]


# --- the reference systems: their closed forms against the numeric drift --------------------------------------
CENTRED = [s for s in reference_systems() if not (isinstance(s, TwoDeltas) and not s.symmetric)]


@pytest.mark.parametrize("system", CENTRED, ids=[s.name for s in CENTRED])
@pytest.mark.parametrize("schedule", [VPLinear(), VPCosine(), DDPM(), VE()], ids=["linear", "cosine", "ddpm", "ve"])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_centre_loses_stability_at_the_closed_form_time(system, schedule, eta):
    """The top eigenvalue of the drift Jacobian at x = 0 (jax, from the data's Hessian) changes sign at the
    system's centre_t_c: negative (stable) at more noise, positive after."""
    t_c = system.centre_t_c(schedule, eta)
    assert 0 < t_c < schedule.T
    x0 = np.zeros(system.data.dim)

    def top(t):
        return float(np.linalg.eigvalsh(np.asarray(drift_jacobian(system.data, schedule, x0, t, eta)))[-1])

    scale = abs(top(min(t_c + 0.1, 0.99 * schedule.T)))  # the eigenvalue's size nearby, for a relative zero
    assert abs(top(t_c)) < 1e-9 * scale
    assert top(t_c + 1e-4) < 0 < top(t_c - 1e-4)


@pytest.mark.parametrize("weights", [None, [0.3, 0.7]])
def test_two_delta_reduced_drift_is_the_drift(weights):
    """numpy's R = score + x / (1 + eta^2) of the system against theory's drift = -(1 + eta^2) a R (VP)."""
    system, x, t, eta = TwoDeltas(1.5, weights), np.linspace(-2, 2, 9), 0.3, 0.7
    R, dR = system.reduced_drift(x, float(S.theta(t)), eta)
    scale = -(1 + eta**2) * float(S.a(t))
    np.testing.assert_allclose(np.asarray(drift(system.data, S, x[:, None], t, eta))[:, 0], scale * R, atol=1e-10)
    jac = np.asarray(drift_jacobian(system.data, S, x[:, None], t, eta))[:, 0, 0]
    np.testing.assert_allclose(jac, scale * dR, atol=1e-10)


def test_systems_closed_forms():
    # Equal-norm sets: lam is the top eigenvalue of the covariance, and the three deltas have lam = r^2 / 2.
    assert ThreeDeltas(2.0).lam == pytest.approx(2.0, abs=1e-14)
    en = EqualNormSet.random(6, 4, 1.5, seed=0)
    assert en.lam == pytest.approx(np.linalg.eigvalsh(np.asarray(en.data.covariance()))[-1], rel=1e-12)
    # Deltas at +-a are the equal-norm set {a, -a}: the same closed form, lam = a^2.
    assert TwoDeltas(1.3).centre_theta_c(0.8) == pytest.approx(EqualNormSet([[1.3], [-1.3]]).centre_theta_c(0.8))
    # Two Gaussians: v0 -> 0 gives the deltas; v0 = 1 (the linear case) s = eta^2 / ((1 + eta^2) m^2).
    assert TwoGaussians(1.0, 1e-9).centre_theta_c(1.0) == pytest.approx(TwoDeltas(1.0).theta_c(1.0), rel=1e-7)
    assert TwoGaussians(2.0, 1.0).centre_theta_c(1.0) == pytest.approx(math.sqrt(1 / 8), rel=1e-14)
    assert math.isnan(TwoGaussians(0.1, 0.5).centre_theta_c(1.0))  # no transition: the centre stays stable
    # The ODE on deltas at +-1: theta_c = 0, the centre is never stable, so no crossing on [0, T].
    assert TwoDeltas(1.0).centre_theta_c(0.0) == 0.0 and math.isnan(TwoDeltas(1.0).centre_t_c(S, 0.0))


def gaussian_flow_map(x_T, mu, v0, t, T):
    """Exact probability-flow ODE map for N(mu, v0) data: affine in x (independent closed form)."""
    th_t, th_T = float(S.theta(t)), float(S.theta(T))
    v_t, v_T = th_t**2 * v0 + 1 - th_t**2, th_T**2 * v0 + 1 - th_T**2
    return th_t * mu + math.sqrt(v_t / v_T) * (x_T - th_T * mu)


def test_ode_solvers_converge_at_their_order():
    gm = GaussianMixture([[0.4]], [0.3])
    x0 = np.array([[-1.0], [0.5], [2.0]])
    want = np.array([gaussian_flow_map(x, 0.4, 0.3, 0.05, 1.0) for x in x0[:, 0]])
    slopes = {}
    for method in ("euler", "heun"):
        errs = []
        steps = [50, 100, 200, 400]
        for n in steps:
            tr = simulate(gm, S, 3, eta=0.0, n_steps=n, t_end=0.05, method=method, x_start=x0)
            errs.append(np.max(np.abs(tr.x[-1, :, 0] - want)))
        slopes[method] = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert 0.9 < slopes["euler"] < 1.1
    assert 1.9 < slopes["heun"] < 2.1


def test_reverse_sde_reaches_the_diffused_marginal():
    gm = GaussianMixture([[0.4]], [0.3])
    n, t_end = 4000, 0.2
    tr = simulate(gm, S, n, eta=1.0, n_steps=400, t_end=t_end, method="heun", seed=3)
    th = float(S.theta(t_end))
    mean, var = th * 0.4, th**2 * 0.3 + 1 - th**2
    xs = tr.x[-1, :, 0]
    assert abs(xs.mean() - mean) < 4 * math.sqrt(var / n) + 5e-3  # + the O(h) bias of 400 steps
    assert abs(xs.var() - var) < 4 * var * math.sqrt(2 / n) + 5e-3


def test_simulator_is_seeded():
    a = simulate(TWO, S, 5, n_steps=20, seed=7).x
    b = simulate(TWO, S, 5, n_steps=20, seed=7).x
    c = simulate(TWO, S, 5, n_steps=20, seed=8).x
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_commitment_rises_from_chance_to_one():
    n = 400
    tr = simulate(TWO, S, n, n_steps=200, seed=0)
    t, p = commitment(TWO, S, tr, every=20)
    assert t[0] == pytest.approx(1.0) and t[-1] < 0.3
    assert abs(p[0] - 0.5) < 4 * math.sqrt(0.25 / n)  # before the split: one basin, a coin flip
    assert p[-1] == 1.0


def test_fixed_point_map_is_the_papers_tanh():
    from theory import fixed_point_map

    t, x = 0.2, np.linspace(-1.5, 1.5, 7)[:, None]
    th, s2 = float(S.theta(t)), float(S.sigma2(t))
    kappa = 2 * th / (1 + th**2)  # eta = 1: theta (1 + eta^2) / (1 + eta^2 - sigma^2)
    want = kappa * np.tanh(th * x[:, 0] / s2)
    np.testing.assert_allclose(np.asarray(fixed_point_map(TWO, S, x, t))[:, 0], want, rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match="DeltaMixture"):
        fixed_point_map(GaussianMixture([[0.0]], [1.0]), S, x, t)


def test_forward_paths_have_the_exact_marginals():
    from theory import simulate_forward

    gm = GaussianMixture([[-1.0], [2.0]], [0.2, 0.5], [0.3, 0.7])
    n = 20000
    tr, idx = simulate_forward(gm, S, n, n_steps=50, seed=1)
    assert np.array_equal(tr.t, np.linspace(0, 1, 51))
    for k in (10, 30, 50):  # mixture mean and variance at t_k, closed form
        th = float(S.theta(tr.t[k]))
        w, mu, v = np.array([0.3, 0.7]), np.array([-1.0, 2.0]), np.array([0.2, 0.5])
        mean = th * w @ mu
        var = w @ (th**2 * v + 1 - th**2 + (th * mu) ** 2) - mean**2
        xs = tr.x[k, :, 0]
        assert abs(xs.mean() - mean) < 5 * math.sqrt(var / n)
        assert abs(xs.var() - var) < 5 * var * math.sqrt(2 / n)
    assert abs(np.mean(idx == 1) - 0.7) < 5 * math.sqrt(0.21 / n)
    paths, start = simulate_forward(TWO, S, 100, n_steps=10)
    np.testing.assert_array_equal(paths.x[0, :, 0], np.where(start == 1, 1.0, -1.0))
