r"""The Gaussian late start in your own diffusers sampling loop.

After ``scheduler.set_timesteps(n)``, ``diffusers_late_start(scheduler, t_start, x_train, n_samples)`` returns the
scheduler's timesteps at or below ``t_start`` and a draw from the Gaussian that matches the forward-diffused
training images at the first of them, N(theta mu_0, theta^2 Sigma_0 + sigma^2 I) with theta^2 the scheduler's
alphas_cumprod there; the loop of the diffusers README then runs unchanged on the kept timesteps:

    scheduler.set_timesteps(50)
    timesteps, x = diffusers_late_start(scheduler, t_start, x_train, 16, generator=torch.Generator().manual_seed(0))
    for k in timesteps:
        eps = unet(x.float(), k).sample
        x = scheduler.step(eps, k, x.float()).prev_sample

Timestep k of an N-step schedule sits at forward time t = (k + 1) T / N (``empirical.sampling.grids.t_of_timestep``):
``t_start`` is a time of ``schedule_of(scheduler)``, the ``theory.DDPM`` of the scheduler's alphas_cumprod, so
``theory.critical_time(data, schedule_of(scheduler)).t`` is a valid ``t_start``.

Schedulers that carry x in the VP scale (``init_noise_sigma == 1``: DDPM, DDIM, DPM-Solver, UniPC, ...) are
supported; sigma-scaled ones (Euler, Heun, ...) are refused rather than started at the wrong scale.
"""

from __future__ import annotations

import numpy as np
import torch

from empirical.sampling.gaussian_init import GaussianInit
from empirical.sampling.grids import t_of_timestep
from theory import DDPM
from theory.checks import check_int

__all__ = ["schedule_of", "diffusers_late_start"]


def schedule_of(scheduler) -> DDPM:
    """The theory's discrete schedule that a diffusers scheduler steps with: ``theory.DDPM.from_betas`` of the betas
    1 - a_k / a_{k-1} of its own ``alphas_cumprod`` a (diffusers computes them in float32; these are those numbers),
    so theta(t_k)^2 = a_k at t_k = (k + 1) T / N to float64 round-off."""
    a = np.asarray(torch.as_tensor(scheduler.alphas_cumprod).double().cpu().numpy())
    if a.ndim != 1 or a.size < 2 or not (np.all(np.diff(a) < 0) and a[0] < 1 and a[-1] > 0):
        raise ValueError("scheduler.alphas_cumprod must decrease strictly inside (0, 1)")
    return DDPM.from_betas(1.0 - a / np.concatenate([[1.0], a[:-1]]))


def diffusers_late_start(scheduler, t_start: float, x_train, n_samples: int, *, generator=None, rank=None):
    """(timesteps, x): the timesteps of ``scheduler`` (after ``set_timesteps``) at forward times <= ``t_start``
    (a 1-D tensor, in the scheduler's order) and ``n_samples`` draws (float64, shape (n_samples, *image shape) of
    ``x_train`` (N, ...)) of the Gaussian late start at the first kept timestep (``GaussianInit.analytic``; ``rank``
    as there). ``generator``: a CPU ``torch.Generator`` for the draws."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:
        raise ValueError("scheduler has no timesteps: call scheduler.set_timesteps(n) first")
    if float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0:
        raise ValueError(
            f"{type(scheduler).__name__} carries x scaled by sigma (init_noise_sigma != 1); the Gaussian late start "
            "supports schedulers in the VP scale (DDPM, DDIM, DPMSolverMultistep, UniPC, PNDM)"
        )
    schedule = schedule_of(scheduler)
    T = schedule.T
    if not (isinstance(t_start, (int, float, np.floating)) and 0.0 < float(t_start) <= T):
        raise ValueError(f"t_start must be a number in (0, T={T}]; got {t_start!r}")
    n_samples = check_int("n_samples", n_samples)
    ks = np.asarray(torch.as_tensor(timesteps).cpu().numpy(), dtype=np.int64)
    t_of_k = t_of_timestep(ks, schedule.n_steps, T)
    keep = t_of_k <= float(t_start) * (1 + 1e-12)
    if not keep.any():
        raise ValueError(f"t_start={t_start} lies below every timestep (smallest t = {t_of_k.min()}); raise it")
    x_train = np.asarray(x_train, dtype=np.float64)
    first = int(np.flatnonzero(keep)[0])
    init = GaussianInit.analytic(x_train.reshape(len(x_train), -1), schedule, float(t_of_k[first]), rank=rank)
    x = init.sample(n_samples, generator).reshape(n_samples, *x_train.shape[1:])
    return torch.as_tensor(timesteps)[torch.as_tensor(keep)], x
