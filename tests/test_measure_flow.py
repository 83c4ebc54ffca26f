"""The flow search of ``empirical.measure.flow`` against independent computations: a linear map's fixed point
(solved directly) where the plain iteration diverges, the theory's fixed points and critical time of analytic
data, and the dense Jacobian's eigenvalues."""

import numpy as np
import pytest
import torch

import theory
from empirical.measure.fixed_points import map_coeffs, measure_critical_time
from empirical.measure.flow import FlowSearch, damped_flow, newton_krylov, top_eig_krylov
from empirical.models.denoiser import ExactDenoiser
from theory import DeltaMixture, VPLinear


class _Linear:
    """x0(x) = A x + b (kappa = 1): Phi's eigenvalues are A's."""

    def __init__(self, A, b):
        self.A, self.b = torch.as_tensor(A, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)

    def x0(self, x, t):
        return x @ self.A.T + self.b


def test_damped_flow_converges_where_the_map_oscillates():
    # Eigenvalues -3 and 0.5 (Re mu < 1: an attractor of the flow), spectral radius 3: x <- Phi(x) diverges.
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    A, b = Q @ np.diag([-3.0, 0.5]) @ Q.T, np.array([1.0, -2.0])
    want = np.linalg.solve(np.eye(2) - A, b)
    starts = torch.as_tensor(rng.normal(size=(6, 2)), dtype=torch.float32)
    x, res, status = damped_flow(_Linear(A, b), starts, 0.5, 1.0, tol=1e-6)
    heads = (status == -1).nonzero().ravel()
    assert len(heads) >= 1 and bool((status >= -1).all())  # every start converged or merged into one that did
    for i in heads:
        np.testing.assert_allclose(x[i].numpy(), want, atol=1e-4)
    y = starts.clone()
    for _ in range(50):
        y = y @ torch.as_tensor(A.T, dtype=torch.float32) + torch.as_tensor(b, dtype=torch.float32)
    assert float(y.norm()) > 1e6  # the plain iteration diverges from the same starts


def test_newton_and_eigenvalue_match_dense():
    # Newton-Krylov lands on the theory's fixed point; ARPACK's top eigenvalue is the dense Jacobian's.
    rng = np.random.default_rng(2)
    P = rng.normal(size=(5, 4))
    data, t = DeltaMixture(P), 0.12
    den = ExactDenoiser(data)
    kappa, _ = map_coeffs(den, t)
    stable = [p for p in theory.fixed_points(data, VPLinear(), t) if p.stable]
    x, res = newton_krylov(den, den, stable[0].x + 1e-3 * rng.normal(size=4), t, kappa, tol=1e-11)
    assert res < 1e-11
    np.testing.assert_allclose(x, stable[0].x, atol=1e-8)
    J = kappa * den.x0_jacobian(torch.as_tensor(x), t).numpy()
    ev = np.linalg.eigvals(J)
    assert abs(top_eig_krylov(den, x, t, kappa, tol=1e-10) - ev[np.argmax(ev.real)]) < 1e-6


@pytest.mark.parametrize(
    "points",
    [
        pytest.param([[-1.0], [1.0]], marks=pytest.mark.slow),  # the paper's pitchfork (20 s)
        [[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]],  # a saddle-node away from the centre
    ],
)
def test_flow_search_brackets_theory(points):
    data = DeltaMixture(np.array(points))
    expected = theory.critical_time(data, VPLinear(), eta=1.0)
    den = ExactDenoiser(data)
    m = measure_critical_time(den, np.array(points), n_starts=8, tol_t=1e-3, n_grid=8, search=FlowSearch(den))
    assert m.t_lo - 1e-3 <= expected.t <= m.t_hi + 1e-3
    assert m.t_hi - m.t_lo <= 1e-3
    assert len(m.points) >= 2 and all(p.stable for p in m.points)


class _CountJvps:
    """A denoiser whose x0_jvp calls are counted (the GMRES work of a Newton solve)."""

    def __init__(self, den):
        self.den, self.jvps = den, 0

    def x0_jvp(self, x, t, v):
        self.jvps += 1
        return self.den.x0_jvp(x, t, v)


def test_newton_forcing_reaches_the_same_root_with_fewer_jvps():
    # Eisenstat-Walker tolerances (rtol=None) against the tight fixed tolerance, from a start far from the root:
    # the same root as theory.fixed_points (the theory's own search on the exact mixture), to 1e-8, with fewer
    # GMRES steps.
    rng = np.random.default_rng(3)
    P = rng.normal(size=(60, 20))  # more images than dimensions: GMRES needs many steps for a tight solve
    data, t = DeltaMixture(P), 0.5
    den = ExactDenoiser(data)
    kappa, _ = map_coeffs(den, t)
    stable = [p for p in theory.fixed_points(data, VPLinear(), t) if p.stable]
    start = stable[0].x + 0.5 * rng.normal(size=20)
    roots, jvps = [], []
    for rtol in (1e-7, None):
        counted = _CountJvps(den)
        x, res = newton_krylov(den, counted, start, t, kappa, n_iter=20, tol=1e-11, rtol=rtol)
        assert res < 1e-11
        roots.append(x)
        jvps.append(counted.jvps)
    for x in roots:
        np.testing.assert_allclose(x, stable[0].x, atol=1e-8)
    assert jvps[1] < 0.6 * jvps[0]  # measured here: 15 against 32


def test_limits_on_one_unstable_root_pay_one_eigenvalue(monkeypatch):
    # Two deltas at (+-1, 0) after their split: the centre is a saddle (Re mu > 1) that attracts along the symmetry
    # line x = 0. Three starts on that line, stopped before they converge, all polish onto the centre: one ARPACK
    # call, not three, and no stable point.
    import empirical.measure.flow as mf

    data = DeltaMixture(np.array([[-1.0, 0.0], [1.0, 0.0]]))
    t = 0.5 * theory.critical_time(data, VPLinear(), eta=1.0).t
    den = ExactDenoiser(data)
    calls = []
    monkeypatch.setattr(mf, "top_eig_krylov", lambda *a, **k: calls.append(a) or top_eig_krylov(*a, **k))
    search = FlowSearch(den, max_iter=2)
    starts = torch.tensor([[0.0, 0.5], [0.0, 1.0], [0.0, 1.5]], dtype=torch.float64)
    assert search(t, starts) == []
    assert search.log[-1]["limits"] == 3
    assert len(calls) == 1
    centre = [p for p in theory.fixed_points(data, VPLinear(), t) if np.linalg.norm(p.x) < 1e-9]
    assert len(centre) == 1 and not centre[0].stable  # the theory's fixed points: the centre is a saddle here
