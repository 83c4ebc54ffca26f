"""Analytic teleportation (Wang & Vastola 2023) and what it is relative to the Gaussian late start (gls).

Data N(MU, SIGMA) in 3D (tests/test_samplers.py's): the teleport is then the exact probability-flow ODE, checked
against scipy's RK45 on the exact score. Relative to gls: the same Gaussian at the hand-over time (exactly, from
the Gaussian's own marginal at T; to O(theta_T^2) from the N(0, I) prior), but a deterministic function of x_T.
"""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from empirical.models.denoiser import T_MIN, ExactDenoiser, schedule_coeffs
from empirical.sampling.samplers import GaussianInit, Teleport, generate
from theory import DeltaMixture, GaussianMixture, VPLinear

LAM = np.array([0.05, 0.4, 1.5])
MU = np.array([0.5, -1.0, 0.3])
Q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
SIGMA = Q @ np.diag(LAM) @ Q.T
SCH = VPLinear()


def _theta_sigma(t):
    th, s = schedule_coeffs(SCH, float(t), "theta", "sigma")
    return float(th), float(s)


def _exact_moments_set(n=50, seed=3):
    """n points whose sample mean is MU and unbiased sample covariance SIGMA, exactly."""
    z = np.random.default_rng(seed).normal(size=(n, 3))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / (n - 1))).T
    return MU + z @ np.linalg.cholesky(SIGMA).T


def test_teleport_is_the_gaussian_probability_flow_ode():
    # scipy's RK45 on dx/dt = a x - g^2 / 2 score(x, t), the exact score of N(MU, SIGMA), from T = 1 to 0.35.
    den = ExactDenoiser(GaussianMixture(MU[None], SIGMA[None]), SCH)
    x_T = np.random.default_rng(1).normal(size=(4, 3))

    def rhs(t, y):  # the generative drift with eta = 0 is minus the PF-ODE's velocity in forward time
        return -den.drift(torch.tensor(y.reshape(4, 3)), float(t), eta=0.0).numpy().ravel()

    ref = solve_ivp(rhs, (1.0, 0.35), x_T.ravel(), rtol=1e-10, atol=1e-10).y[:, -1].reshape(4, 3)
    for tele in (Teleport.from_moments(MU, SIGMA, SCH), Teleport.fit(_exact_moments_set(), SCH)):
        np.testing.assert_allclose(tele(torch.tensor(x_T), 0.35).numpy(), ref, atol=1e-7)
    back = Teleport.from_moments(MU, SIGMA, SCH).flow(torch.tensor(ref), 0.35, 1.0).numpy()
    np.testing.assert_allclose(back, x_T, atol=1e-7)  # the flow map is invertible: run it forward again


@pytest.mark.parametrize("t_skip", [0.2, 0.5])
def test_same_marginal_as_gls_at_the_hand_over_time(t_skip):
    tele, gls = Teleport.from_moments(MU, SIGMA, SCH), GaussianInit.from_moments(MU, SIGMA, SCH, t_skip)
    th_T, s_T = _theta_sigma(1.0)
    # 1. From the Gaussian's own marginal at T, N(theta_T mu, theta_T^2 Sigma + sigma_T^2 I), the flow map A
    #    (linear part) gives exactly gls's moments: A C_T A^T = C_s, A theta_T mu + shift = theta_s mu.
    a = tele.flow(torch.eye(3, dtype=torch.float64), 1.0, t_skip) - tele.flow(torch.zeros(1, 3), 1.0, t_skip)
    c_T = th_T**2 * SIGMA + s_T**2 * np.eye(3)
    np.testing.assert_allclose(a.T.numpy() @ c_T @ a.numpy(), gls.covariance().numpy(), atol=1e-12)
    mean_T = tele.flow(torch.tensor(th_T * MU)[None], 1.0, t_skip)[0]
    torch.testing.assert_close(mean_T, gls.mean, atol=1e-12, rtol=0)
    # 2. From the prior N(0, I) (what the vanilla sampler draws): off by O(theta_T^2) = 4.3e-5 only.
    mean, cov = tele.marginal_from_prior(t_skip)
    d_cov = np.abs(cov.numpy() - gls.covariance().numpy()).max()
    d_mean = np.abs(mean.numpy() - gls.mean.numpy()).max()
    assert 0 < d_cov < 2 * th_T**2 and 0 < d_mean < 2 * th_T * np.abs(MU).max(), (d_cov, d_mean)
    # 3. The closed-form prior marginal, against 40000 teleported N(0, I) draws.
    x = tele(torch.randn(40000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64), t_skip).numpy()
    np.testing.assert_allclose(x.mean(0), mean.numpy(), atol=0.02)
    np.testing.assert_allclose(np.cov(x.T), cov.numpy(), atol=0.03)


def test_teleport_is_coupled_to_the_vanilla_noise_and_gls_is_not():
    # Data: four deltas (rotated, unequal spreads). The teleport keeps the vanilla run's x_T (same seed, the same
    # draws) and carries it along the Gaussian's flow: its samples land on the vanilla run's delta; the paper's gls
    # (GaussianInit.empirical: its draws come after the training set's forward noise) on an independent one, i.e.
    # on the same delta at chance, 1/4.
    deltas = np.array([[2.0, 1.0], [-2.0, -1.0], [0.6, -1.2], [-0.6, 1.2]])
    den = ExactDenoiser(DeltaMixture(deltas), SCH)
    x_train = np.repeat(deltas, 25, axis=0)

    def label(x):
        return torch.cdist(x, torch.tensor(deltas)).argmin(1)

    vanilla = label(generate(den, "dpm++2m", 20, 400, seed=4, grid="logsnr", dim=2))
    kw = {"t_start": 0.6, "x_train": x_train, "seed": 4, "grid": "logsnr"}
    tele = generate(den, "dpm++2m", 20, 400, init="teleport", **kw)
    agree = {i: float((label(generate(den, "dpm++2m", 20, 400, init=i, **kw)) == vanilla).double().mean())
             for i in ("gls", "teleport")}  # fmt: skip
    assert agree["teleport"] > 0.95 and abs(agree["gls"] - 0.25) < 0.07, agree
    torch.testing.assert_close(generate(den, "dpm++2m", 20, 400, init="teleport", **kw), tele, atol=0, rtol=0)


def test_teleport_and_the_cholesky_draw_of_the_same_noise_differ():
    # GaussianInit.analytic(...).sample draws mean + L z (L Cholesky) from the same z as the vanilla x_T: the same
    # law as the teleport's image of z (both N(mu_t, Sigma_t) to O(theta_T^2)), another coupling (L = A R, R a
    # rotation), which nears the flow's only where Sigma_t is near isotropic (sigma_t^2 dominating).
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tele, gls = Teleport.from_moments(MU, SIGMA, SCH), GaussianInit.from_moments(MU, SIGMA, SCH, 0.1)
    chol = gls.mean + z @ gls.chol.T
    assert float((tele(z, 0.1) - chol).abs().max()) > 0.1
    r = torch.linalg.solve(tele.flow(torch.eye(3), 1.0, 0.1) - tele.flow(torch.zeros(1, 3), 1.0, 0.1), gls.chol)
    torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-3, rtol=0)


def test_teleport_of_gaussian_data_is_exact():
    # For Gaussian data the teleport is the exact flow: the vanilla run's exact endpoint is the teleport to t_end
    # followed by Tweedie. Teleport to 0.4 then DPM-Solver++(2M) carries only the step error of [0, 0.4]: at the
    # same 10 evaluations 0.019 against the vanilla run's 0.139 (max over 50 samples); 40 steps of UniPC, 4e-4.
    den = ExactDenoiser(GaussianMixture(MU[None], SIGMA[None]), SCH)
    x_train = _exact_moments_set()
    x_T = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = den.x0(Teleport.fit(x_train, SCH)(x_T, T_MIN), T_MIN)
    kw = {"t_start": 0.4, "x_train": x_train, "seed": 1, "grid": "logsnr"}
    err_vanilla = float((generate(den, "dpm++2m", 10, 50, seed=1, grid="logsnr", dim=3) - exact).abs().max())
    err_tele = float((generate(den, "dpm++2m", 10, 50, init="teleport", **kw) - exact).abs().max())
    assert err_tele < err_vanilla / 4, (err_tele, err_vanilla)
    assert float((generate(den, "unipc", 40, 50, init="teleport", **kw) - exact).abs().max()) < 1e-3


def test_low_rank_teleport():
    # Covariance = top-2 directions + an isotropic rest: rank 2 is then exact, and rank = d is the full path.
    rng = np.random.default_rng(5)
    d, k = 6, 2
    u = np.linalg.qr(rng.normal(size=(d, d)))[0]
    cov = u @ np.diag([3.0, 2.0] + [0.1] * (d - k)) @ u.T
    z = rng.normal(size=(200, d))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / 199)).T
    x_train = 0.3 + z @ np.linalg.cholesky(cov).T
    x = torch.tensor(rng.normal(size=(5, d)))
    full = Teleport.fit(x_train, SCH)
    for rank in (k, d):
        low = Teleport.fit(x_train, SCH, rank=rank)
        torch.testing.assert_close(low(x, 0.3), full(x, 0.3), atol=1e-9, rtol=0)
    assert Teleport.fit(x_train, SCH, rank=k).rest == pytest.approx(0.1, rel=1e-9)


def test_teleport_errors():
    tele = Teleport.from_moments(MU, SIGMA, SCH)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\)"):
        tele(torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match=r"t_start must be a number in \(0, T=1.0\]"):
        tele(torch.zeros(2, 3), 1.5)
    with pytest.raises(ValueError, match=r"cov0 must have shape \(3, 3\)"):
        Teleport.from_moments(MU, np.eye(2), SCH)
    with pytest.raises(ValueError, match="init='teleport' needs x_train"):
        generate(ExactDenoiser(GaussianMixture(MU[None], SIGMA[None])), "ddim", 5, 4, init="teleport", t_start=0.5)
