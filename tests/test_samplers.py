"""Samplers against the exact probability-flow ODE of Gaussian data, and the Gaussian late start.

For data N(mu, Sigma), Sigma = Q diag(lam) Q^T, the marginal is N(theta mu, theta^2 Sigma + sigma^2 I)
and, in Sigma's eigenbasis, z_k = (Q^T (x_t - theta_t mu))_k / sqrt(theta_t^2 lam_k + sigma_t^2) is
invariant along the ODE. The samplers return E[x_0 | x_{t_end}] = mu + Q diag(theta lam / v) z, v the
variances at t_end, so the exact endpoint of a run from x at t_start is known in closed form.
"""

import numpy as np
import pytest
import torch

from empirical.models.denoiser import T_MIN, ExactDenoiser, schedule_coeffs
from empirical.sampling.samplers import SAMPLERS, GaussianInit, ddim, generate, nfe, sample, time_grid
from theory import GaussianMixture, VPCosine, VPLinear
from theory.systems import TwoDeltas, TwoGaussians

LAM = np.array([0.05, 0.4, 1.5])
MU = np.array([0.5, -1.0, 0.3])
Q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
SIGMA = Q @ np.diag(LAM) @ Q.T


@pytest.fixture(scope="module")
def den():
    return ExactDenoiser(GaussianMixture(MU[None], SIGMA[None]))


def _theta_sigma(t):
    th, s = schedule_coeffs(VPLinear(), np.array([t], dtype=np.float64), "theta", "sigma")
    return float(th[0]), float(s[0])


def exact_endpoint(x, t_start, t_end=T_MIN):
    """E[x_0 | x_{t_end}] where x_{t_end} is the exact ODE image of x (n, 3) at t_start."""
    th0, s0 = _theta_sigma(t_start)
    th1, s1 = _theta_sigma(t_end)
    v0, v1 = th0**2 * LAM + s0**2, th1**2 * LAM + s1**2
    z = (x - th0 * MU) @ Q / np.sqrt(v0)  # the ODE invariant
    return MU + (z * np.sqrt(v1) * th1 * LAM / v1) @ Q.T


def fitted_order(den, sampler, ns, t_start, grid):
    x = np.random.default_rng(1).normal(size=(6, 3))
    ref = exact_endpoint(x, t_start)
    errs = [np.abs(sample(den, sampler, n, torch.tensor(x), t_start, grid=grid).numpy() - ref).max() for n in ns]
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0], errs


@pytest.mark.parametrize(
    "sampler, grid, t_start, ns, lo, hi",
    [
        ("ddim", "logsnr", 1.0, [20, 40, 80, 160], 0.9, 1.1),  # first order
        ("dpm++2m", "logsnr", 1.0, [20, 40, 80, 160], 1.8, 2.2),  # second order in lambda
        # PLMS's Adams-Bashforth weights assume equal steps of DDIM's variable sigma / theta: 4th order
        # on that grid, 2nd order on a grid uniform in lambda.
        ("pndm", "sigma", 0.3, [64, 128, 256], 3.5, 4.5),
        ("pndm", "logsnr", 1.0, [20, 40, 80, 160], 1.8, 2.4),
        # The multistep rules start at first order (iPNDM's AB1, DPM-Solver's and UniPC's first step): that local
        # O(h^2) error caps iPNDM at 2; DPM-Solver++(3M) passes from 3 towards 2 over this range, and UniPC-3's
        # corrector lifts its first steps (errors 7.0e-4, 1.2e-4, 1.2e-5 at 20, 40, 80).
        ("ipndm", "logsnr", 1.0, [10, 20, 40, 80], 1.8, 2.4),
        pytest.param("ipndm", "edm", 1.0, [10, 20, 40, 80], 1.8, 2.4, marks=pytest.mark.slow),
        ("dpm++3m", "logsnr", 1.0, [20, 40, 80], 2.1, 3.0),
        ("unipc", "logsnr", 1.0, [20, 40, 80], 2.6, 3.4),
    ],
)
def test_convergence_order_to_the_exact_ode(den, sampler, grid, t_start, ns, lo, hi):
    order, errs = fitted_order(den, sampler, ns, t_start, grid)
    assert lo < order < hi, (order, errs)
    assert errs[-1] < 1e-3 * (50.0 if sampler == "ddim" else 2.0 if sampler == "ipndm" else 1.0)


def test_higher_order_rules_beat_dpm_solver_2m(den):
    # The same 20 evaluations on the log-SNR grid from T: 3M and UniPC-3 closer to the exact endpoint than 2M.
    err = {s: fitted_order(den, s, [20, 21, 22], 1.0, "logsnr")[1][0] for s in ("dpm++2m", "dpm++3m", "unipc")}
    assert err["unipc"] < err["dpm++3m"] < err["dpm++2m"], err


def test_uniform_grid_converges(den):
    # The default grid: every sampler approaches the exact endpoint as the steps grow.
    x = np.random.default_rng(2).normal(size=(4, 3))
    ref = exact_endpoint(x, 1.0)
    for sampler in ("ddim", "pndm", "dpm++2m"):
        errs = [np.abs(sample(den, sampler, n, torch.tensor(x), 1.0).numpy() - ref).max() for n in (20, 80)]
        assert errs[1] < errs[0] / 2.5 and errs[1] < 0.07, (sampler, errs)


def test_ddpm_marginal_statistics(den):
    # Ancestral sampling from the exact marginal at t = 0.5 (the analytic Gaussian late start from a
    # training set with exactly the data's moments); x0_hat at t_end has mean mu and, in the eigenbasis,
    # variances theta^2 lam^2 / v (v = theta^2 lam + sigma^2 at t_end). DDPM's weak error is ~5.5 / N
    # in the variance here (1.1% at N = 500); the sampling error of a variance from 8000 draws is 1.6%.
    n = 8000
    x_train = _exact_moments_set()
    x = generate(den, "ddpm", 500, n, init="gls-analytic", t_start=0.5, x_train=x_train, grid="logsnr", batch_size=n)
    th, s = _theta_sigma(T_MIN)
    z = (x.numpy() - MU) @ Q
    var_ratio = z.var(0) / (th**2 * LAM**2 / (th**2 * LAM + s**2))
    assert np.all(np.abs(var_ratio - 1.0) < 0.07), var_ratio
    assert np.all(np.abs(z.mean(0)) / np.sqrt(LAM / n) < 4.5)


def _exact_moments_set(n=50, seed=3):
    """n points whose sample mean is MU and unbiased sample covariance SIGMA, exactly."""
    z = np.random.default_rng(seed).normal(size=(n, 3))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / (n - 1))).T  # white: z^T z / (n-1) = I
    return MU + z @ np.linalg.cholesky(SIGMA).T


@pytest.mark.parametrize("t_start", [0.05, 0.3, 1.0])
def test_gls_analytic_is_the_exact_marginal(t_start):
    # theory's Gaussian mixture: the score vanishes at the mean, and -Hess log p_t is the inverse covariance.
    data, sch = GaussianMixture(MU[None], SIGMA[None]), VPLinear()
    for init in (
        GaussianInit.analytic(_exact_moments_set(), sch, t_start),
        GaussianInit.from_moments(MU, SIGMA, sch, t_start),
    ):
        mean, cov = init.mean.numpy(), init.covariance().numpy()
        assert np.abs(np.asarray(data.score(mean, t_start, sch))).max() < 1e-9
        np.testing.assert_allclose(cov, -np.linalg.inv(np.asarray(data.hessian(mean, t_start, sch))), atol=1e-12)


def test_gls_empirical_and_sample_statistics():
    sch, t = VPLinear(), 0.3
    x_train = np.random.default_rng(4).multivariate_normal(MU, SIGMA, size=40000)
    init = GaussianInit.empirical(x_train, sch, t, torch.Generator().manual_seed(0))
    exact = GaussianInit.from_moments(MU, SIGMA, sch, t)
    assert torch.allclose(init.mean, exact.mean, atol=0.02)
    assert torch.allclose(init.covariance(), exact.covariance(), atol=0.03)
    draws = exact.sample(40000, torch.Generator().manual_seed(1)).numpy()
    np.testing.assert_allclose(draws.mean(0), exact.mean.numpy(), atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), exact.covariance().numpy(), atol=0.03)


def test_low_rank_matches_full():
    sch, t = VPLinear(), 0.4
    rng = np.random.default_rng(5)
    d, k = 20, 5
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    x_train = (rng.normal(size=(400, d)) * np.r_[np.linspace(3, 2, k), 0.1 * np.ones(d - k)]) @ basis.T
    # rank = d: the same covariance as the Cholesky path, for either estimator.
    full = GaussianInit.analytic(x_train, sch, t)
    low = GaussianInit.analytic(x_train, sch, t, rank=d)
    assert full.chol is not None and low.chol is None
    torch.testing.assert_close(low.covariance(), full.covariance(), atol=1e-12, rtol=0)
    torch.testing.assert_close(low.mean, full.mean, atol=1e-14, rtol=0)
    emp = [GaussianInit.empirical(x_train, sch, t, torch.Generator().manual_seed(0), rank=r) for r in (None, d)]
    torch.testing.assert_close(emp[1].covariance(), emp[0].covariance(), atol=1e-12, rtol=0)
    # rank = k < d: the top-k eigenpairs (numpy's eigh of the full covariance) plus the exact diagonal.
    low = GaussianInit.analytic(x_train, sch, t, rank=k)
    lam, u = np.linalg.eigh(full.covariance().numpy())
    top = (u[:, -k:] * lam[-k:]) @ u[:, -k:].T
    factor = low.factor.numpy()
    np.testing.assert_allclose(factor @ factor.T, top - _theta_sigma(t)[1] ** 2 * u[:, -k:] @ u[:, -k:].T, atol=1e-9)
    np.testing.assert_allclose(np.diag(low.covariance().numpy()), np.diag(full.covariance().numpy()), atol=1e-12)
    draws = low.sample(20000, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(np.cov(draws.T), low.covariance().numpy(), atol=0.2)


def test_large_dimension_defaults_to_low_rank():
    x_train = np.random.default_rng(6).normal(size=(30, 5000))
    init = GaussianInit.analytic(x_train, VPLinear(), 0.5)
    assert init.chol is None and init.factor.shape == (5000, 30)  # 30 points: at most 30 directions
    th, s = _theta_sigma(0.5)
    want = th**2 * x_train.var(0, ddof=1) + s**2
    np.testing.assert_allclose((init.factor**2).sum(1).numpy() + init.diag.numpy(), want, rtol=1e-10)


class CountingDenoiser(ExactDenoiser):
    calls = 0

    def forward(self, x, t):
        type(self).calls += 1
        return super().forward(x, t)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_nfe_counts_the_denoiser_calls(sampler):
    den = CountingDenoiser(GaussianMixture(MU[None], SIGMA[None]))
    for m in (1, 2, 3, 4, 5, 10):
        CountingDenoiser.calls = 0
        out = sample(den, sampler, m, torch.zeros(2, 3), 0.8, generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 3) and out.dtype == torch.float64
        expected = {1: 1, 2: 5, 3: 9, 4: 13, 5: 14, 10: 19}[m] if sampler == "pndm" else m
        assert CountingDenoiser.calls == nfe(sampler, m) == expected


def test_grids():
    sch = VPLinear()
    ts = time_grid(sch, 5, 0.9, 0.01, "logsnr").numpy()
    lam = 0.5 * np.asarray(sch.log_snr(ts))
    np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / 4, rtol=1e-9)
    ts = time_grid(sch, 5, 0.9, 0.01, "sigma").numpy()
    np.testing.assert_allclose(np.diff(np.asarray(sch.edm_sigma(ts))), np.diff(np.asarray(sch.edm_sigma(ts)))[0])
    assert ts[0] == 0.9 and ts[-1] == 0.01
    np.testing.assert_array_equal(time_grid(sch, 1, 0.9).numpy(), [0.9])
    # EDM: sigma^(1/7) equally spaced; quadratic: sqrt(t - t_end) equally spaced (finer near the data).
    ts = time_grid(sch, 6, 1.0, 0.002, "edm").numpy()
    root = np.asarray(sch.edm_sigma(ts)) ** (1 / 7)
    np.testing.assert_allclose(np.diff(root), (root[-1] - root[0]) / 5, rtol=1e-9)
    ts = time_grid(sch, 5, 0.8, 0.01, "quadratic").numpy()
    np.testing.assert_allclose(np.sqrt(ts - 0.01), np.linspace(np.sqrt(0.79), 0, 5), atol=1e-12)
    # leading: the DDIM / PNDM codes' range(0, 1000, 100) on 10 steps, t = (k + 1) / 1000.
    np.testing.assert_allclose(time_grid(sch, 10, 1.0, 0.001, "leading").numpy(), np.arange(900, -1, -100) / 1e3 + 1e-3)
    with pytest.raises(ValueError, match="grid='leading' needs t_end < t_start / n_steps"):
        time_grid(sch, 10, 0.5, 0.06, "leading")


def test_generate_is_seeded_and_starts_where_asked(den):
    a = generate(den, "ddpm", 5, 6, init="late", t_start=0.6, dim=3, seed=7, batch_size=4)
    b = generate(den, "ddpm", 5, 6, init="late", t_start=0.6, dim=3, seed=7, batch_size=4)
    c = generate(den, "ddpm", 5, 6, init="late", t_start=0.6, dim=3, seed=8, batch_size=4)
    assert a.shape == (6, 3) and torch.equal(a, b) and not torch.equal(a, c)
    v = generate(den, "ddim", 1, 5, dim=3)  # one step: the Tweedie denoiser of N(0, I) draws at T
    th, s = _theta_sigma(1.0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    post = MU + (x - th * MU) @ np.linalg.inv(th**2 * SIGMA + s**2 * np.eye(3)) @ SIGMA * th
    np.testing.assert_allclose(v.numpy(), post, atol=1e-12)


def test_leading_grid_draws_the_late_start_at_its_first_point(den):
    # "leading" starts below t_start (10 steps from 0.8: at 0.721): gls is fitted there, not at t_start.
    x_train, sch = _exact_moments_set(), VPLinear()
    ts = time_grid(sch, 10, 0.8, grid="leading")
    assert ts[0] == pytest.approx(0.721)
    x = generate(den, "ddim", 10, 7, init="gls-analytic", t_start=0.8, x_train=x_train, seed=2, grid="leading")
    start = GaussianInit.analytic(x_train, sch, float(ts[0])).sample(7, torch.Generator().manual_seed(2))
    torch.testing.assert_close(x, ddim(den, start, ts), atol=1e-12, rtol=0)


def test_errors(den):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sample(den, "euler", 10, x, 1.0)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1; got 0"):
        sample(den, "ddim", 0, x, 1.0)
    for bad in (2.5, True):  # the wrong type: TypeError, by name
        with pytest.raises(TypeError, match="n_steps must be an integer; got"):
            sample(den, "ddim", bad, x, 1.0)
    with pytest.raises(ValueError, match=r"t_start must be a number in \(t_end=0.001, T=1.0\]"):
        sample(den, "ddim", 10, x, 1.5)
    with pytest.raises(ValueError, match="t_start must be a number in"):
        sample(den, "ddim", 10, x, 0.001)
    with pytest.raises(ValueError, match=r"t_end must be a number in \(0, T=1.0\)"):
        sample(den, "ddim", 10, x, 0.5, t_end=0.0)
    with pytest.raises(ValueError, match="unknown grid 'cosine'"):
        sample(den, "ddim", 10, x, 0.5, grid="cosine")
    with pytest.raises(ValueError, match=r"x_start must be a torch tensor of shape \(n, d\)"):
        sample(den, "ddim", 10, torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="unknown init 'prior'"):
        generate(den, "ddim", 10, 4, init="prior", dim=3)
    with pytest.raises(ValueError, match="init='gls' needs x_train"):
        generate(den, "ddim", 10, 4, init="gls", t_start=0.5)
    with pytest.raises(ValueError, match="init='late' needs t_start"):
        generate(den, "ddim", 10, 4, init="late", dim=3)
    with pytest.raises(ValueError, match="init='vanilla' starts at T=1.0"):
        generate(den, "ddim", 10, 4, t_start=0.5, dim=3)
    with pytest.raises(ValueError, match="needs dim"):
        generate(den, "ddim", 10, 4)
    with pytest.raises(ValueError, match=r"rank must be None or an integer in \[1, d=3\]"):
        GaussianInit.analytic(np.ones((5, 3)), VPLinear(), 0.5, rank=4)
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]"):
        ddim(den, x, torch.tensor([0.5, 0.1]), eta=1.5)


# --- the reference systems ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "pndm", "ipndm", "dpm++3m", "unipc"])
@pytest.mark.parametrize("schedule", [VPLinear(), VPCosine()], ids=["linear", "cosine"])
def test_ode_samplers_carry_the_sign_to_the_nearest_delta(sampler, schedule):
    """Deltas at +-a: the probability-flow ODE is odd and x = 0 is a trajectory, so no path crosses it; every
    run from T (just below it on the cosine schedule, where theta(T) = 0) ends at a sign(x_start)."""
    system = TwoDeltas(2.0)
    den = ExactDenoiser(system.data, schedule)
    x = torch.tensor([[-1.5], [-0.2], [0.05], [0.9]], dtype=torch.float64)
    out = sample(den, sampler, 10, x, 1.0 if isinstance(schedule, VPLinear) else 1 - 1e-3)
    torch.testing.assert_close(out, system.a * torch.sign(x), atol=1e-6, rtol=0)


def test_gaussian_late_start_of_two_gaussians_is_their_moment_match():
    """GaussianInit.from_moments of N(-m, v0)/2 + N(m, v0)/2 at the system's critical time: mean 0 and variance
    theta^2 (m^2 + v0) + sigma^2, the Gaussian with the diffused mixture's first two moments (closed form)."""
    system, sch = TwoGaussians(1.0, 0.1), VPLinear()
    t_c = system.t_c(sch)
    init = GaussianInit.from_moments(np.array(system.data.mean()), np.array(system.data.covariance()), sch, t_c)
    th, s = _theta_sigma(t_c)
    assert th == pytest.approx(system.theta_c(), rel=1e-12)
    assert float(init.mean.abs().max()) == 0.0
    assert float(init.covariance()[0, 0]) == pytest.approx(th**2 * (system.m**2 + system.v0) + s**2, rel=1e-12)
    # Before t_c (more noise) the exact marginal is unimodal with the same two moments: its density at 0 is a
    # maximum; after t_c, a minimum (the centre of -log p_t first turns at speciation, later than t_c for eta = 1).
    for t, sign in ((t_c + 0.05, -1.0), (t_c - 0.15, 1.0)):
        h = float(np.asarray(system.data.hessian(np.zeros(1), t, sch))[0, 0])
        assert np.sign(h) == sign, (t, h)
