"""The flow search of ``empirical.measure_flow`` against independent computations: a linear map's fixed point
(solved directly) where the plain iteration diverges, the theory's fixed points and critical time of analytic
data, and the dense Jacobian's eigenvalues."""

import numpy as np
import pytest
import torch

import theory
from empirical.denoiser import ExactDenoiser
from empirical.measure import map_coeffs, measure_critical_time
from empirical.measure_flow import FlowSearch, damped_flow, newton_krylov, top_eig_krylov
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
