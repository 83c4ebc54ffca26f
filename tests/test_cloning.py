"""Generation with a learned score, cloning and the potential along a path (empirical.measure.cloning), run on the exact
denoiser of analytic data and held against closed forms and the theory's own simulator and potential."""

import numpy as np
import pytest
import torch

import theory
from empirical.measure.cloning import cloning, euler_maruyama, potential_along_path
from empirical.models.denoiser import ExactDenoiser
from theory import DeltaMixture, VPLinear

S = VPLinear()
PLUS_MINUS = DeltaMixture([[-1.0], [1.0]])
T_GRID = (1.0 - 1e-3) / 200  # the step of cloning's grid (n_steps = 200): branch times snap to it


def beta(t):
    """g^2 of VPLinear, written out: beta_min + t (beta_max - beta_min)."""
    return 0.1 + 19.9 * t


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, 2.5])
def test_denoiser_drift_matches_closed_form(eta):
    # +-1 deltas: drift = beta/2 x + (1 + eta^2)/2 beta score, score = (theta tanh(theta x / s2) - x) / s2.
    x, t = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None], 0.4
    th, s2 = float(S.theta(t)), float(S.sigma2(t))
    score = (th * np.tanh(th * x[:, 0].numpy() / s2) - x[:, 0].numpy()) / s2
    want = beta(t) / 2 * x[:, 0].numpy() + (1 + eta**2) / 2 * beta(t) * score
    got = ExactDenoiser(PLUS_MINUS).drift(x, t, eta)[:, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_probability_flow_matches_theory_simulator():
    # eta = 0 is deterministic: Euler on the same uniform grid must give the theory's jax scan to round-off.
    data = DeltaMixture([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    x0 = np.random.default_rng(0).normal(size=(16, 2))
    want = theory.simulate(data, S, 16, eta=0.0, n_steps=100, t_start=1.0, t_end=0.05, x_start=x0).x
    got = euler_maruyama(ExactDenoiser(data), torch.as_tensor(x0), np.linspace(1.0, 0.05, 101), eta=0.0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.0])
def test_every_eta_keeps_the_marginal(eta):
    # Data = one delta at 0: p_t = N(0, sigma^2(t)) for every member of the family, so the noise eta g and the
    # score weight (1 + eta^2)/2 g^2 must balance; a wrong k changes the variance at t = 0.3 by >= 10%.
    n = 4000
    gen = torch.Generator().manual_seed(1)
    x = euler_maruyama(ExactDenoiser(DeltaMixture([[0.0]])), torch.randn(n, 1, generator=gen, dtype=torch.float64),
                 np.linspace(1.0, 0.3, 401), eta=eta, generator=gen)[-1, :, 0]  # fmt: skip
    s2 = float(S.sigma2(0.3))
    assert float(x.var()) == pytest.approx(s2, rel=4 * np.sqrt(2 / n) + 0.01)  # 4 standard errors + Euler bias


def test_potential_along_path_is_the_theory_potential_to_second_order():
    # The trapezoidal line integral of the exact drift, over k, converges to (u(s) - u(0)) / k at rate h^2.
    data, t, eta = DeltaMixture([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]), 0.4, 0.7
    xa, xb = np.array([-0.6, 0.3]), np.array([0.8, 0.5])
    k = (1 + eta**2) / 2 * beta(t)
    errs = []
    for n in (61, 121, 241):  # s = 0 on every grid
        s, u = potential_along_path(ExactDenoiser(data), xa, xb, t, eta=eta, n=n)
        exact = np.asarray(theory.potential(data, S, xa + s[:, None] * (xb - xa), t, eta)) / k
        errs.append(np.max(np.abs(u - (exact - exact[np.argmin(np.abs(s))]))))
    slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(slopes - 2.0) < 0.2), (errs, slopes)
    assert errs[-1] < 1e-5


def test_cloning_agreement_matches_the_posterior():
    # +-1 deltas, reverse SDE: a path at x_t ends at +1 with the posterior p = (1 + tanh(theta x / s2)) / 2, so two
    # clones agree with probability (1 + tanh^2(theta x / s2)) / 2, averaged over x ~ p_t (Gauss-Hermite).
    t_branch = np.array([0.7, 0.4, 0.3, 0.2, 0.1])
    curve = cloning(ExactDenoiser(PLUS_MINUS), lambda x0: (x0[:, 0] > 0).long(), t_branch,
                    n_parents=256, n_clones=4, n_steps=200, seed=3)  # fmt: skip
    z, w = np.polynomial.hermite_e.hermegauss(80)
    want = []
    for t in curve.t:
        th, s2 = float(S.theta(t)), float(S.sigma2(t))
        want.append(np.sum(w * (1 + np.tanh(th * (th + np.sqrt(s2) * z) / s2) ** 2) / 2) / np.sum(w))
    np.testing.assert_allclose(curve.t, np.sort(t_branch)[::-1], atol=T_GRID / 2)
    np.testing.assert_allclose(curve.p_agree, want, atol=0.07)  # ~3 standard errors of 256 parents
    assert curve.chance == pytest.approx(0.5, abs=0.05)
    assert want[0] < 0.6 and want[-1] > 0.95  # the curve spans the transition, so the check has teeth
