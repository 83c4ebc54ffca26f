"""The measurement of the breaking time, run on the exact denoiser of analytic data, must reproduce
``theory.critical_time`` (an independent code path: continuation and Brent on the theory's side,
counting attractors of the iterated map and bisection on this side)."""

import numpy as np
import pytest
import torch

import theory
from empirical.measure.fixed_points import centre_branch, map_coeffs, measure_critical_time, stable_fixed_points
from empirical.models.denoiser import ExactDenoiser
from theory import DeltaMixture, VPLinear
from theory.systems import TwoDeltas


@pytest.mark.parametrize(
    "points",
    [
        [[-1.0], [1.0]],  # the paper's pitchfork, t_c = 0.2926416543
        [[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]],  # asymmetric: a saddle-node away from the centre
    ],
)
def test_measured_critical_time_brackets_theory(points):
    data = DeltaMixture(np.array(points))
    expected = theory.critical_time(data, VPLinear(), eta=1.0)
    m = measure_critical_time(ExactDenoiser(data), np.array(points), n_starts=8, tol_t=1e-3)
    assert m.t_lo <= expected.t <= m.t_hi
    assert m.t_hi - m.t_lo <= 1e-3
    assert len(m.points) >= 2 and all(p.stable for p in m.points)


def test_stable_points_match_theory_fixed_points():
    # Three deltas at t = 0.1: the theory's stable fixed points, found by an independent code path.
    P = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    data, t = DeltaMixture(P), 0.1
    want = sorted(tuple(np.round(p.x, 6)) for p in theory.fixed_points(data, VPLinear(), t) if p.stable)
    starts = torch.as_tensor(np.vstack([P * 0.9, P * 0.1]), dtype=torch.float64)
    got = sorted(tuple(np.round(p.x, 6)) for p in stable_fixed_points(ExactDenoiser(data), t, starts))
    assert got == want


def test_centre_branch_crosses_at_the_pitchfork():
    P = np.array([[-1.0], [1.0]])
    cb = centre_branch(ExactDenoiser(DeltaMixture(P)), P, n_grid=40)
    # Exact eigenvalue at the centre x = 0: grad R = -1/sigma^2 + theta^2/sigma^4 + 1/2 (theory's u''(0) / -beta)
    th2 = np.exp(2 * np.asarray(VPLinear().log_theta(cb.t)))
    s2 = 1 - th2
    np.testing.assert_allclose(cb.lam, -1 / s2 + th2 / s2**2 + 0.5, rtol=1e-8, atol=1e-10)
    # theory's continuation on the LearnedField: Brent's method on 1 - Re mu, to h_min = 1e-4
    assert abs(cb.crossing_t - TwoDeltas(1.0).t_c(VPLinear())) < 1e-4


def test_map_coefficients_vp_ode():
    # eta = 0 on VP: Phi(x) = x0_hat / theta ... kappa = k theta / (a s2 + k) with k = beta / 2, a = -beta / 2
    kappa, rho = map_coeffs(ExactDenoiser(DeltaMixture([[1.0]])), 0.4, eta=0.0)
    th = float(VPLinear().theta(0.4))
    assert kappa == pytest.approx(1 / th, rel=1e-12)
    assert rho == pytest.approx(th**2 / (1 - th**2), rel=1e-12)


def test_bad_input():
    den = ExactDenoiser(DeltaMixture([[1.0]]))
    with pytest.raises(ValueError, match="t_min"):
        measure_critical_time(den, np.ones((2, 1)), t_min=0.5, t_max=0.4)
    with pytest.raises(ValueError, match="eta"):
        map_coeffs(den, 0.3, eta=-1.0)
    with pytest.raises(ValueError, match="t must lie"):
        stable_fixed_points(den, 1.5, torch.zeros(1, 1, dtype=torch.float64))


def test_krylov_path_agrees_with_dense(monkeypatch):
    # Above DENSE_MAX: Newton-Krylov (GMRES on jvps) and Arnoldi for the top eigenvalue; same points, same mu.
    import empirical.measure.fixed_points as M

    rng = np.random.default_rng(1)
    P = rng.normal(size=(6, 5))
    den, t = ExactDenoiser(DeltaMixture(P)), 0.15
    starts = torch.as_tensor(np.vstack([P * 0.7, P * 0.2]), dtype=torch.float64)
    dense = stable_fixed_points(den, t, starts)
    monkeypatch.setattr(M, "DENSE_MAX", 0)
    krylov = stable_fixed_points(den, t, starts)
    assert len(dense) == len(krylov) >= 2
    for a, b in zip(sorted(dense, key=lambda p: tuple(p.x)), sorted(krylov, key=lambda p: tuple(p.x)), strict=True):
        np.testing.assert_allclose(a.x, b.x, atol=1e-8)
        assert abs(a.mu - b.mu) < 1e-6
