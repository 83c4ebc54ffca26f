r"""Drive diffusers' schedulers with any ``Denoiser``, and run ours on the same timesteps (the cross-check).

A diffusers scheduler walks integer timesteps k of an N-step discrete schedule with alphas_cumprod[k]; we put
timestep k at our forward time t_k = (k + 1) T / N and hand the scheduler alphas_cumprod[k] = theta(t_k)^2 of the
denoiser's own schedule (float64), so a model trained on a continuous schedule (VPLinear) is sampled by diffusers'
step rules at exactly the noise levels it was trained on; on ``theory.DDPM(N)`` these are diffusers' own
alphas_cumprod. ``sample_diffusers`` runs the scheduler; ``sample_ours`` runs our solver on the same t_k (with
the scheduler's conventions: PNDM's PRK midpoints and multistep last step), and the two agree to float32 round-off
(tests/test_samplers_diffusers.py). diffusers is imported lazily (the "diffusers" extra).

=========  =================================================================  ==========================
sampler    diffusers scheduler (settings)                                      timestep spacing
=========  =================================================================  ==========================
ddim       DDIMScheduler (eta = 0, set_alpha_to_one, no clipping)              leading
pndm       PNDMScheduler (PRK warm-up, set_alpha_to_one); n >= 4, 1000 // n    leading
           even (else diffusers' PRK half-steps are not on its timesteps)
dpm++2m    DPMSolverMultistepScheduler (dpmsolver++, order 2, final sigma 0)   linspace
dpm++3m    the same, order 3                                                   linspace
unipc      UniPCMultistepScheduler (order 3, bh2, final sigma 0)               linspace
=========  =================================================================  ==========================
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from empirical.models.denoiser import Denoiser, schedule_coeffs
from empirical.sampling.grids import t_of_timestep
from empirical.sampling.solvers import ddim, pndm
from empirical.sampling.solvers_dpm import dpm_solver_pp, unipc
from theory.checks import check_int

__all__ = ["DIFFUSERS_SAMPLERS", "make_scheduler", "sample_diffusers", "sample_ours"]

DIFFUSERS_SAMPLERS = {
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True, "timestep_spacing": "leading"}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": False, "set_alpha_to_one": True, "timestep_spacing": "leading"}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++"}),
    "dpm++3m": ("DPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2", "predict_x0": True}),
}
_MULTISTEP = {"final_sigmas_type": "zero", "lower_order_final": True}


def _check(sampler, n_steps, n_train) -> tuple[int, int]:
    if sampler not in DIFFUSERS_SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; diffusers' are {tuple(DIFFUSERS_SAMPLERS)}")
    n_steps, n_train = check_int("n_steps", n_steps), check_int("n_train", n_train, lo=2)
    if n_steps > n_train:
        raise ValueError(f"n_steps must be <= n_train={n_train}; got {n_steps}")
    if sampler == "pndm" and (n_steps < 4 or (n_train // n_steps) % 2):
        raise ValueError(f"pndm needs n_steps >= 4 with n_train // n_steps even; got n_steps={n_steps}")
    return n_steps, n_train


def make_scheduler(sampler: str, n_steps: int, schedule, n_train: int = 1000):
    """The diffusers scheduler for ``sampler`` (see the module table), on ``schedule``'s alphas_cumprod at
    t_k = (k + 1) T / n_train, set to ``n_steps`` inference steps."""
    n_steps, n_train = _check(sampler, n_steps, n_train)
    diffusers = importlib.import_module("diffusers")
    name, kwargs = DIFFUSERS_SAMPLERS[sampler]
    if "solver_order" in kwargs:
        kwargs = {**kwargs, **_MULTISTEP}
    sch = getattr(diffusers, name)(num_train_timesteps=n_train, **kwargs)
    t = t_of_timestep(np.arange(n_train), n_train, schedule.T)
    (theta,) = schedule_coeffs(schedule, t, "theta")
    sch.alphas_cumprod = theta**2  # float64; set_timesteps reads it
    sch.set_timesteps(n_steps)
    return sch


def _net_dtype(denoiser: Denoiser) -> torch.dtype:
    param = next(denoiser.parameters(), None)
    return param.dtype if param is not None else torch.float64


@torch.no_grad()
def sample_diffusers(denoiser: Denoiser, sampler: str, n_steps: int, x_T: torch.Tensor, n_train: int = 1000):
    """Run diffusers' scheduler from x_T (n, d) at its first timestep, with eps from ``denoiser``; (n, d) float64."""
    sch = make_scheduler(sampler, n_steps, denoiser.schedule, n_train)
    x, dtype = torch.as_tensor(x_T, dtype=torch.float64), _net_dtype(denoiser)
    for k in sch.timesteps:
        t = float(t_of_timestep(int(k), n_train, denoiser.schedule.T))
        eps = denoiser(x.to(dtype), t).to(torch.float64)
        x = sch.step(eps, k, x).prev_sample.to(torch.float64)
    return x


def sample_ours(denoiser: Denoiser, sampler: str, n_steps: int, x_T: torch.Tensor, n_train: int = 1000):
    """Our solver on the timesteps (and conventions) of ``make_scheduler(sampler, n_steps)``; (n, d) float64."""
    n_steps, n_train = _check(sampler, n_steps, n_train)
    T = denoiser.schedule.T
    if sampler == "pndm":  # diffusers' PRK runs on the leading timesteps; half-steps at k + ratio / 2
        ratio = n_train // n_steps
        ks = np.arange(n_steps - 1, -1, -1) * ratio
        ts, mids = t_of_timestep(ks, n_train, T), t_of_timestep(ks[1:] + ratio // 2, n_train, T)
        return pndm(denoiser, x_T, torch.tensor(ts), t_mid=torch.tensor(mids), final="multistep")
    sch = make_scheduler(sampler, n_steps, denoiser.schedule, n_train)
    ts = torch.tensor(t_of_timestep(sch.timesteps.numpy(), n_train, T))
    if sampler == "ddim":
        return ddim(denoiser, x_T, ts)
    if sampler == "unipc":
        return unipc(denoiser, x_T, ts, order=3, variant="bh2")
    return dpm_solver_pp(denoiser, x_T, ts, order=2 if sampler == "dpm++2m" else 3)
