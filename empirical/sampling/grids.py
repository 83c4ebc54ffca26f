r"""Time grids for the few-step samplers: each sampler's recommended grid, by name, on any ``theory.Schedule``.

A grid is a decreasing array of forward times t_0 = t_start > ... > t_{M-1} = t_end (M = ``n_steps``); the
samplers evaluate the denoiser at every point and jump from the last one to t = 0 (see ``empirical.sampling.samplers``).

==========  ===============================================================  ===================================
grid        points                                                           recommended by
==========  ===============================================================  ===================================
uniform     equal steps in t                                                 DDPM / DDIM ("uniform" skip)
quadratic   t_end + (t_start - t_end) u^2, u uniform in [0, 1]               DDIM paper, sec. D.2 ("quadratic")
logsnr      equal steps in lambda = log(theta / sigma)                       DPM-Solver, DPM-Solver++, UniPC
sigma       equal steps in the noise level sigma / theta                     (DDIM is Euler's method in it)
edm         Karras et al. 2022, eq. 5: sigma_i^(1/rho) equally spaced,       EDM, rho = 7; sigma = sigma/theta
            rho = 7, sigma = sigma / theta (for VP: sqrt(1 - abar) /
            sqrt(abar))
leading     t_end + j t_start / M, j = M-1 .. 0: the integer skip           DDIM and PNDM code
            range(0, N, N // M) of the DDIM/PNDM code (starts one step       (PNDM paper's grid)
            below t_start: the noise is placed at t_start (M-1)/M + t_end)
==========  ===============================================================  ===================================

``discrete_timesteps`` gives the integer timesteps of a 1000-step DDPM as diffusers' schedulers space them
("linspace", "leading", "trailing"), and ``t_of_timestep`` the forward time of ``theory.DDPM`` at a timestep.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from empirical.models.denoiser import T_MIN, schedule_coeffs
from theory.checks import check_int
from theory.schedules import Schedule

__all__ = ["GRIDS", "SPACINGS", "EDM_RHO", "time_grid", "discrete_timesteps", "t_of_timestep"]

GRIDS = ("uniform", "quadratic", "logsnr", "sigma", "edm", "leading")
SPACINGS = ("linspace", "leading", "trailing")  # diffusers' timestep_spacing
EDM_RHO = 7.0  # Karras et al. 2022: rho = 7 balances the step error near sigma_min and sigma_max


def _real(value) -> float | None:
    """``value`` as a float if it is a real number (numpy scalars included), else None; bool is not a number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _on_grid(fn, t: np.ndarray) -> np.ndarray:
    """fn(t) for a 1D float64 array, padded to a power-of-two length: eager jax ops compile once per
    array shape (~0.2 s for t_from_snr at a new length), so grids share a few shapes."""
    n = len(t)
    padded = np.concatenate([t, np.full((1 << (n - 1).bit_length()) - n, t[-1])])
    return np.array(fn(padded), dtype=np.float64)[..., :n]


def check_start(schedule: Schedule, t_start: float) -> None:
    """Every sampler divides by theta(t) (x0_hat = (x - sigma eps) / theta): refuse a start where theta = 0."""
    (theta,) = schedule_coeffs(schedule, float(t_start), "theta")
    if not float(theta) > 0.0:
        raise ValueError(
            f"t_start must be below {t_start} for {schedule!r}: theta(t_start) = 0 there, so x0_hat = "
            "(x - sigma eps) / theta is undefined; start at a t with theta > 0 (init='late')"
        )


def _from_noise_levels(schedule: Schedule, noise: np.ndarray) -> np.ndarray:
    """Forward times at the noise levels sigma / theta = ``noise`` (snr = noise^-2)."""
    return _on_grid(schedule.t_from_snr, noise**-2.0)


def time_grid(schedule: Schedule, n_steps: int, t_start: float, t_end: float = T_MIN, grid: str = "uniform"):
    """Decreasing forward times (n_steps,) float64 from t_start to t_end, both included (see the module table;
    "leading" starts below t_start). n_steps = 1 gives [t_start].

    >>> from theory import VPLinear
    >>> time_grid(VPLinear(), 3, 1.0, 0.5).tolist()
    [1.0, 0.75, 0.5]
    >>> time_grid(VPLinear(), 3, 1.0, 0.5, "quadratic").tolist()
    [1.0, 0.625, 0.5]
    """
    m = check_int("n_steps", n_steps)
    T = schedule.T
    if _real(t_end) is None or not 0.0 < t_end < T:
        raise ValueError(f"t_end must be a number in (0, T={T}); got {t_end!r}")
    if _real(t_start) is None or not t_end < t_start <= T:
        raise ValueError(f"t_start must be a number in (t_end={t_end}, T={T}]; got {t_start!r}")
    t_start, t_end = float(t_start), float(t_end)
    check_start(schedule, t_start)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose one of {GRIDS}")
    if m == 1:
        return torch.tensor([t_start], dtype=torch.float64)
    u = np.linspace(1.0, 0.0, m)  # 1 at t_start, 0 at t_end
    # (uniform, logsnr and sigma keep the committed tables' np.linspace arithmetic, bit for bit)
    if grid == "uniform":
        ts = np.linspace(t_start, t_end, m)
    elif grid == "quadratic":
        ts = t_end + (t_start - t_end) * u**2
    elif grid == "leading":
        ts = t_end + np.arange(m - 1, -1, -1) * (t_start / m)
        if ts[0] >= t_start:  # t_end > t_start / m: the skip would leave [t_end, t_start]
            raise ValueError(f"grid='leading' needs t_end < t_start / n_steps; got t_end={t_end}, t_start={t_start}")
    else:
        log_snr = np.array(schedule.log_snr(np.array([t_start, t_end], dtype=np.float64)))
        noise = np.exp(-0.5 * log_snr)  # sigma / theta at the two ends
        if grid == "logsnr":
            ts = _on_grid(schedule.t_from_snr, np.exp(np.linspace(log_snr[0], log_snr[1], m)))
        elif grid == "sigma":
            ts = _on_grid(schedule.t_from_snr, np.linspace(noise[0], noise[1], m) ** -2.0)
        else:  # edm: equal steps in sigma^(1/rho)
            lo, hi = noise[1] ** (1.0 / EDM_RHO), noise[0] ** (1.0 / EDM_RHO)
            ts = _from_noise_levels(schedule, (lo + (hi - lo) * u) ** EDM_RHO)
        ts[0], ts[-1] = t_start, t_end  # exact ends (the inverse is exact only to round-off)
    return torch.tensor(ts, dtype=torch.float64)


def discrete_timesteps(n_steps: int, spacing: str = "leading", n_train: int = 1000, steps_offset: int = 0):
    """The decreasing integer timesteps (n_steps,) of a discrete n_train-step DDPM as diffusers'
    ``set_timesteps`` spaces them (``timestep_spacing``; DDIM/PNDM schedulers, ``steps_offset`` for "leading"):

    "linspace": round(linspace(0, n_train - 1, n_steps)); "leading": j (n_train // n_steps) + steps_offset;
    "trailing": round(arange(n_train, 0, -n_train / n_steps)) - 1 (Lin et al. 2024, which starts at n_train - 1).

    >>> discrete_timesteps(4, "leading").tolist(), discrete_timesteps(4, "trailing").tolist()
    ([750, 500, 250, 0], [999, 749, 499, 249])
    """
    m, n_train = check_int("n_steps", n_steps), check_int("n_train", n_train, lo=2)
    offset = check_int("steps_offset", steps_offset, lo=0)
    if m > n_train:
        raise ValueError(f"n_steps must be <= n_train={n_train}; got {m}")
    if spacing == "linspace":
        k = np.linspace(0, n_train - 1, m).round()
    elif spacing == "leading":
        k = np.arange(m) * (n_train // m) + offset
    elif spacing == "trailing":
        k = np.round(np.arange(n_train, 0, -n_train / m))[::-1] - 1
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    if k.max() >= n_train:
        raise ValueError(f"steps_offset={offset} puts a timestep past n_train - 1 = {n_train - 1}")
    return np.ascontiguousarray(k[::-1]).astype(np.int64)


def t_of_timestep(k, n_train: int = 1000, T: float = 1.0) -> np.ndarray:
    """The forward time of ``theory.DDPM(n_train)`` at diffusers' integer timestep k: its alphas_cumprod[k] is
    prod_{i <= k} (1 - beta_i) = theta^2 at the knot k + 1, so t = (k + 1) T / n_train.

    >>> t_of_timestep([999, 0]).tolist()
    [1.0, 0.001]
    """
    k = np.asarray(k)
    if not np.issubdtype(k.dtype, np.integer) or k.min() < 0 or k.max() >= n_train:
        raise ValueError(f"timesteps must be integers in [0, n_train - 1 = {n_train - 1}]; got {k.tolist()}")
    return (k.astype(np.float64) + 1.0) * T / n_train
