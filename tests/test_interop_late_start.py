"""The Gaussian late start in a diffusers loop (``empirical.interop.late_start``): its draw is the project's
``GaussianInit`` at the first kept timestep, and the README loop of diffusers' DDIM and DPM-Solver++ on the kept
timesteps gives the project's own solvers' samples on the same times, to round-off, on the exact denoiser."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from empirical import diffusers_late_start, schedule_of  # noqa: E402
from empirical.models.denoiser import ExactDenoiser  # noqa: E402
from empirical.sampling.gaussian_init import GaussianInit  # noqa: E402
from empirical.sampling.grids import t_of_timestep  # noqa: E402
from empirical.sampling.solvers import ddim  # noqa: E402
from empirical.sampling.solvers_dpm import dpm_solver_pp  # noqa: E402
from theory import DeltaMixture  # noqa: E402

X_TRAIN = np.random.default_rng(0).uniform(-1, 1, size=(12, 2, 2))  # 12 "images" of 2 x 2 pixels


def readme_loop(scheduler, den, timesteps, x):
    """The sampling loop of the diffusers README, with eps from ``den`` on flat rows."""
    n = scheduler.config.num_train_timesteps
    for k in timesteps:
        eps = den(x.reshape(len(x), -1), float(t_of_timestep(int(k), n))).reshape(x.shape)
        x = scheduler.step(eps, k, x).prev_sample
    return x


@pytest.mark.parametrize(
    "make, ours",
    [
        (lambda: diffusers.DDIMScheduler(clip_sample=False), lambda den, x, ts: ddim(den, x, ts)),
        (lambda: diffusers.DPMSolverMultistepScheduler(), lambda den, x, ts: dpm_solver_pp(den, x, ts, order=2)),
    ],
)
def test_the_readme_loop_from_the_late_start_is_the_projects_sampler(make, ours):
    scheduler = make()
    scheduler.set_timesteps(10)
    schedule = schedule_of(scheduler)
    den = ExactDenoiser(DeltaMixture(X_TRAIN.reshape(12, -1)), schedule)
    timesteps, x = diffusers_late_start(scheduler, 0.55, X_TRAIN, 5, generator=torch.Generator().manual_seed(3))
    ts = t_of_timestep(timesteps.numpy(), 1000)
    assert len(timesteps) < len(scheduler.timesteps) and ts.max() <= 0.55 < t_of_timestep(scheduler.timesteps[0], 1000)
    assert x.shape == (5, 2, 2)
    init = GaussianInit.analytic(X_TRAIN.reshape(12, -1), schedule, float(ts[0]))
    assert torch.equal(x.reshape(5, -1), init.sample(5, torch.Generator().manual_seed(3)))
    theirs = readme_loop(scheduler, den, timesteps, x).reshape(5, -1)
    mine = ours(den, x.reshape(5, -1), torch.tensor(ts))
    # diffusers forms its step coefficients from float32 alphas_cumprod (sqrt, logs in float32): 1e-6 is float32's
    # round-off on O(1) samples; a wrong start time or step would differ by O(0.1)
    assert torch.allclose(theirs, mine, atol=1e-6, rtol=0)


def test_schedule_of_is_the_schedulers_alphas_cumprod():
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    schedule = schedule_of(scheduler)
    t = t_of_timestep(np.arange(1000), 1000)
    assert np.allclose(np.asarray(schedule.theta(t)) ** 2, scheduler.alphas_cumprod.double().numpy(), rtol=1e-13)


def test_bad_calls_are_refused_by_name():
    scheduler = diffusers.DDIMScheduler()
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match=r"t_start must be a number in \(0, T=1.0\]; got 1.5"):
        diffusers_late_start(scheduler, 1.5, X_TRAIN, 2)
    with pytest.raises(ValueError, match="t_start=0.0005 lies below every timestep"):
        diffusers_late_start(scheduler, 0.0005, X_TRAIN, 2)
    with pytest.raises(ValueError, match="n_samples must be"):
        diffusers_late_start(scheduler, 0.5, X_TRAIN, 0)
    euler = diffusers.EulerDiscreteScheduler()
    euler.set_timesteps(10)
    with pytest.raises(ValueError, match="EulerDiscreteScheduler carries x scaled by sigma"):
        diffusers_late_start(euler, 0.5, X_TRAIN, 2)
    odd = diffusers.DDIMScheduler()
    odd.alphas_cumprod = odd.alphas_cumprod.flip(0)
    with pytest.raises(ValueError, match="alphas_cumprod must decrease strictly"):
        schedule_of(odd)
