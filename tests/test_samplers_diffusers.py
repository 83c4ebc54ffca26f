"""Our samplers against diffusers' schedulers: the same eps at the same timesteps gives the same sample.

The data is a tiny Gaussian mixture in 2D, its exact eps (``ExactDenoiser``) on the discrete DDPM schedule of
diffusers' defaults (``theory.DDPM``: 1000 steps, betas linear from 1e-4 to 0.02). diffusers' timestep k has
alphas_cumprod[k] = theta^2 at our t = (k + 1) / 1000 (``empirical.sampling.grids.t_of_timestep``), so each scheduler's
own timesteps, converted, are our grid, and every eps it asks for is our denoiser's at that t. diffusers computes
its alphas_cumprod in float32 (1e-4 relative off at small t, where 1 - alphas_cumprod cancels; the first test
checks they are ours to that precision): we hand each scheduler ours in float64, so the comparison is of the
step rules. DPM-Solver and UniPC still keep their state in float32: we assert agreement to 1e-5.
"""

import numpy as np
import pytest
import torch

from empirical.models.denoiser import ExactDenoiser
from empirical.sampling.grids import discrete_timesteps, t_of_timestep, time_grid
from empirical.sampling.solvers import ddim, ipndm, pndm
from empirical.sampling.solvers_dpm import dpm_solver_pp, unipc
from theory import DDPM, GaussianMixture

diffusers = pytest.importorskip("diffusers")  # the "diffusers" extra; imported here only
# diffusers calls np.array on torch tensors (numpy 2's copy keyword): not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

BETAS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
TOL = 1e-5
ALPHAS_CUMPROD = torch.tensor(DDPM().theta_steps()[1:] ** 2)  # diffusers' alphas_cumprod[k] = theta^2 at knot k + 1


def _make(cls, n, **kwargs):
    """A diffusers scheduler on the DDPM betas, our float64 alphas_cumprod, set to n inference steps."""
    sch = cls(**BETAS, **kwargs)
    sch.alphas_cumprod = ALPHAS_CUMPROD.clone()
    sch.set_timesteps(n)
    return sch


def test_diffusers_ddpm_schedule_is_ours():
    sch = diffusers.DDIMScheduler(**BETAS)
    np.testing.assert_allclose(sch.alphas_cumprod.numpy(), ALPHAS_CUMPROD.numpy(), rtol=1e-6)
    np.testing.assert_allclose(1.0 - sch.alphas_cumprod.numpy(), 1.0 - ALPHAS_CUMPROD.numpy(), rtol=1e-3)


@pytest.fixture(scope="module")
def den():
    means = [[-1.5, 0.5], [1.0, 1.0], [0.3, -1.2]]
    covs = [np.diag([0.05, 0.1]), np.diag([0.2, 0.02]), np.array([[0.1, 0.03], [0.03, 0.08]])]
    return ExactDenoiser(GaussianMixture(means, covs, weights=[0.5, 0.3, 0.2]), DDPM())


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _run(scheduler, den, x, t_of=None, noise=None):
    """Drive a diffusers scheduler with our eps: at each of its timesteps k, eps(x, t_of(k))."""
    t_of = t_of or (lambda k: float(t_of_timestep(int(k))))
    for j, k in enumerate(scheduler.timesteps):
        eps = den(x, t_of(k))
        kwargs = {} if noise is None else {"variance_noise": noise[j]}
        x = scheduler.step(eps, k, x, **kwargs).prev_sample
    return x


def _ts(timesteps) -> torch.Tensor:
    return torch.tensor(t_of_timestep(np.asarray(timesteps, dtype=np.int64)))


SLOW = pytest.mark.slow  # the same rule at more step counts: `pytest -m slow`


@pytest.mark.parametrize(
    "spacing, n",
    [
        ("leading", 10),
        ("trailing", 5),
        pytest.param("leading", 3, marks=SLOW),
        pytest.param("trailing", 10, marks=SLOW),
    ],
)
def test_ddim_matches_diffusers(den, x_T, spacing, n):
    # DDIMScheduler, eta = 0, set_alpha_to_one (the last step goes to alpha = 1: our x0_hat), no clipping.
    # It steps from k to k - 1000 // n whatever its next timestep is: with "linspace" (and "trailing" when n does
    # not divide 1000) it then evaluates eps at another timestep than it stepped to; we compare where it does not.
    sch = _make(diffusers.DDIMScheduler, n, clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing)
    np.testing.assert_array_equal(sch.timesteps.numpy(), discrete_timesteps(n, spacing))
    ours = ddim(den, x_T, _ts(sch.timesteps))
    torch.testing.assert_close(_run(sch, den, x_T.clone()), ours, atol=TOL, rtol=0)


def test_ddpm_as_ddim_eta_1_matches_diffusers(den, x_T):
    # eta = 1 (the paper's "DDPM" row): the same noise, drawn in our order and handed to diffusers.
    sch = _make(diffusers.DDIMScheduler, 5, clip_sample=False, set_alpha_to_one=True)
    gen = torch.Generator().manual_seed(3)
    noise = [torch.randn(x_T.shape, generator=gen, dtype=torch.float64) for _ in range(4)] + [torch.zeros_like(x_T)]
    ours = ddim(den, x_T, _ts(sch.timesteps), eta=1.0, generator=torch.Generator().manual_seed(3))
    theirs = _run_eta(sch, den, x_T.clone(), noise)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def _run_eta(sch, den, x, noise):
    for j, k in enumerate(sch.timesteps):
        x = sch.step(den(x, float(t_of_timestep(int(k)))), k, x, eta=1.0, variance_noise=noise[j]).prev_sample
    return x


@pytest.mark.parametrize("n", [10, pytest.param(5, marks=SLOW)])
def test_pndm_matches_diffusers(den, x_T, n):
    # PNDMScheduler with its PRK warm-up ("leading" spacing; 1000 // n even, so the PRK midpoints are integers):
    # our pndm with the PRK midpoints at k + step_ratio / 2 and the PLMS last step (final="multistep"). NFE = n + 9.
    sch = _make(diffusers.PNDMScheduler, n, skip_prk_steps=False, set_alpha_to_one=True)
    assert len(sch.timesteps) == n + 9
    ks = discrete_timesteps(n, "leading")
    mids = _ts(ks[1:] + (1000 // n) // 2)
    ours = pndm(den, x_T, _ts(ks), t_mid=mids, final="multistep")
    torch.testing.assert_close(_run(sch, den, x_T.clone()), ours, atol=TOL, rtol=0)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("n", [5, pytest.param(3, marks=SLOW), pytest.param(10, marks=SLOW)])
def test_dpm_solver_pp_matches_diffusers(den, x_T, order, n):
    # DPMSolverMultistepScheduler, dpmsolver++, its default "linspace" spacing, final sigma 0, lower order final.
    sch = _make(
        diffusers.DPMSolverMultistepScheduler,
        n,
        solver_order=order,
        algorithm_type="dpmsolver++",
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    ours = dpm_solver_pp(den, x_T, _ts(sch.timesteps), order=order)
    torch.testing.assert_close(_run(sch, den, x_T.clone()), ours, atol=TOL, rtol=0)


@pytest.mark.parametrize("order, variant", [(2, "bh2"), (3, "bh2"), (3, "bh1")])
@pytest.mark.parametrize("n", [6, pytest.param(3, marks=SLOW), pytest.param(10, marks=SLOW)])
def test_unipc_matches_diffusers(den, x_T, order, variant, n):
    # diffusers' "linspace" spacing, final sigma 0, lower order final, the corrector at every step.
    sch = _make(diffusers.UniPCMultistepScheduler, n, solver_order=order, solver_type=variant, final_sigmas_type="zero")
    ts = _ts(sch.timesteps)
    ours = unipc(den, x_T, ts, order=order, variant=variant)
    if variant == "bh2":
        torch.testing.assert_close(_run(sch, den, x_T.clone()), ours, atol=TOL, rtol=0)
    else:  # bh1's last step to sigma = 0 is NaN in diffusers (B(h) = -h = -inf times 0): compare x0_hat before it
        x = x_T.clone()
        for k in sch.timesteps[:-1]:
            x = sch.step(den(x, float(t_of_timestep(int(k)))), k, x).prev_sample
        assert torch.isnan(sch.step(den(x, float(ts[-1])), sch.timesteps[-1], x).prev_sample).all()
        torch.testing.assert_close(den.x0(x, float(ts[-1])), ours, atol=TOL, rtol=0)


def _noise_level(ts) -> np.ndarray:
    return np.asarray(DDPM().edm_sigma(np.asarray(ts)))


@pytest.mark.parametrize("option, grid", [("use_karras_sigmas", "edm"), ("use_lu_lambdas", "logsnr")])
def test_edm_and_logsnr_grids_are_diffusers_karras_and_lu(den, x_T, option, grid):
    # diffusers' Karras (rho = 7) and Lu (uniform lambda) noise levels between its timesteps 999 and 0 are our
    # "edm" and "logsnr" grids from t = 1 to t = 0.001. It rounds the timesteps it passes to the model, but steps
    # with the unrounded noise levels: evaluated at the exact noise level, DPM-Solver++(2M) agrees with ours.
    n = 8
    sch = _make(diffusers.DPMSolverMultistepScheduler, n, final_sigmas_type="zero", **{option: True})
    ts = time_grid(DDPM(), n, 1.0, 0.001, grid)
    np.testing.assert_allclose(_noise_level(ts), sch.sigmas[:-1].numpy(), rtol=2e-6)
    t_at = dict(zip(sch.timesteps.tolist(), ts.tolist(), strict=True))  # the rounded timesteps are distinct here
    ours = dpm_solver_pp(den, x_T, ts, order=2)
    torch.testing.assert_close(_run(sch, den, x_T.clone(), t_of=lambda k: t_at[int(k)]), ours, atol=TOL, rtol=0)


@pytest.mark.parametrize("n", [7, pytest.param(2, marks=SLOW), pytest.param(4, marks=SLOW)])
def test_ipndm_matches_diffusers(den, x_T, n):
    # IPNDMScheduler runs on angles (alpha = cos, sigma = sin); trained_betas hands it our grid's sigma (and 0 at
    # the end), so its alphas are our theta. It wants the v-prediction: v = (eps - sigma x) / theta. Our EDM grid.
    ts = time_grid(DDPM(), n, 1.0, 0.001, "edm")
    sigma = np.sqrt(1.0 - np.exp(2.0 * np.asarray(DDPM().log_theta(ts.numpy()))))
    sch = diffusers.IPNDMScheduler(num_train_timesteps=n, trained_betas=np.r_[sigma, 0.0].tolist())
    sch.set_timesteps(n)
    sch.alphas, sch.betas = (
        torch.tensor(np.r_[np.exp(np.asarray(DDPM().log_theta(ts.numpy()))), 1.0]),
        torch.tensor(np.r_[sigma, 0.0]),
    )  # float64: its float32 alphas = sqrt(1 - betas^2) cancel at sigma ~ 1
    x = x_T.clone()
    for j, k in enumerate(sch.timesteps):
        a, s = sch.alphas[j].double(), sch.betas[j].double()
        x = sch.step((den(x, float(ts[j])) - s * x) / a, k, x).prev_sample
    torch.testing.assert_close(x, ipndm(den, x_T, ts, final="multistep"), atol=TOL, rtol=0)


# --- the bridge: diffusers driven by any Denoiser on its own (continuous) schedule ---------------------------
@pytest.mark.parametrize(
    "sampler, n",
    [
        ("pndm", 10),
        ("unipc", 5),
        *(pytest.param(s, n, marks=SLOW) for s, n in (("ddim", 5), ("dpm++2m", 5), ("dpm++3m", 10))),
    ],
)
def test_bridge_agrees_with_ours_on_a_network(sampler, n):
    # A float32 MLP (random weights) on VPLinear: diffusers sees theta(t_k)^2 at t_k = (k + 1) / 1000, the network
    # eps in float32; ours runs the same timesteps. Same samples to float32 round-off (DPM-Solver and UniPC keep
    # their state in float32, and the network's eps of two float32-rounded states differ: up to 4e-5).
    from empirical.interop.diffusers_schedulers import sample_diffusers, sample_ours
    from empirical.models.denoiser import Denoiser
    from empirical.models.nets import MLP
    from theory import VPLinear

    torch.manual_seed(0)
    net_den = Denoiser(MLP(3, width=32, depth=2, emb=16), VPLinear()).eval()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theirs, ours = sample_diffusers(net_den, sampler, n, x), sample_ours(net_den, sampler, n, x)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_bridge_errors():
    from empirical.interop.diffusers_schedulers import make_scheduler
    from theory import VPLinear

    with pytest.raises(ValueError, match="unknown sampler 'ipndm'"):
        make_scheduler("ipndm", 5, VPLinear())
    with pytest.raises(ValueError, match="pndm needs n_steps >= 4 with n_train // n_steps even; got n_steps=3"):
        make_scheduler("pndm", 3, VPLinear())
    with pytest.raises(ValueError, match="n_steps must be <= n_train=1000"):
        make_scheduler("ddim", 2000, VPLinear())
