r"""Few-step samplers for any ``Denoiser``, and the initial distributions they start from.

Every sampler walks a decreasing grid of forward times t_0 = t_start > t_1 > ... > t_{M-1} = t_end (M =
``n_steps``; ``empirical.sampling.grids``), carries its state in float64 (the network sees its own dtype) and evaluates
the denoiser at every grid point; the step from t_{M-1} to t = 0 is DDIM's last step to alpha_0 = 1 (x0_hat;
``pndm`` and ``ipndm`` also offer their reference code's multistep last step, ``final="multistep"``). So M grid
points cost

=========  ==================================================  ============================================
sampler    algorithm (module)                                  denoiser evaluations (NFE) for M points
=========  ==================================================  ============================================
ddpm       ancestral: x_s ~ q(x_s | x_t, x0_hat) (solvers)     M
ddim       DDIM, eta = 0 (solvers)                             M
pndm       3 pseudo-Runge-Kutta steps, then PLMS (solvers)     M + 9 for M >= 4 (each PRK step costs 4),
                                                               4 M - 3 for M < 4
ipndm      PLMS with a lower-order warm start (solvers)        M
dpm++2m    DPM-Solver++(2M), multistep in lambda (solvers_dpm) M
dpm++3m    DPM-Solver++(3M) (solvers_dpm)                      M
unipc      UniPC-3, B(h) = e^-h - 1 ("bh2") (solvers_dpm)      M
=========  ==================================================  ============================================

(``nfe(sampler, n_steps)`` returns the last column.) M = 1 is the one-shot Tweedie denoiser at t_start.
``RECOMMENDED_GRID`` is each sampler's grid as its authors run it (see ``empirical.sampling.grids`` for the grids).

Orders measured against the exact ODE of Gaussian data (tests/test_samplers.py): DDIM 1 on every grid;
DPM-Solver++(2M) 2 ("logsnr", "sigma"), ~1.8 ("uniform"); PNDM 4 ("sigma"), 2 ("logsnr"), and on "uniform"
falling from 3 towards 1 as the steps shrink, since sigma ~ sqrt(t) is not smooth in t at t = 0; iPNDM 2
(its Euler first step), DPM-Solver++(3M) 2.1-3.0 and UniPC-3 2.6-3.4 ("logsnr", 20-80 steps: their
first-order first step).

Initial distributions: ``init_vanilla`` N(0, I) at T; the late start N(0, I) at t_start < T; the Gaussian late
start ``GaussianInit`` N(mu_t, Sigma_t) at t_start; ``empirical.sampling.teleport.Teleport``, the vanilla x_T carried to
t_start by the Gaussian's probability-flow ODE in closed form. ``generate`` puts them together.
"""

from __future__ import annotations

import math

import torch

from empirical.models.denoiser import T_MIN, Denoiser
from empirical.sampling.gaussian_init import (
    DEFAULT_RANK,
    FULL_COV_MAX_DIM,
    GaussianInit,
    check_rows,
    init_vanilla,
    theta_sigma,
)
from empirical.sampling.grids import GRIDS, time_grid
from empirical.sampling.solvers import ddim, ddpm, ipndm, pndm
from empirical.sampling.solvers_dpm import dpm_solver_pp_2m, dpm_solver_pp_3m, unipc
from empirical.sampling.teleport import Teleport
from theory.checks import check_int

__all__ = [
    "SAMPLERS",
    "GRIDS",
    "INITS",
    "RECOMMENDED_GRID",
    "AUTHOR_GRIDS",
    "DEFAULT_RANK",
    "FULL_COV_MAX_DIM",
    "ddpm",
    "ddim",
    "pndm",
    "ipndm",
    "dpm_solver_pp_2m",
    "dpm_solver_pp_3m",
    "unipc",
    "sample",
    "nfe",
    "time_grid",
    "init_vanilla",
    "GaussianInit",
    "Teleport",
    "generate",
]

INITS = ("vanilla", "late", "gls", "gls-analytic", "teleport")
SAMPLERS = {
    "ddpm": ddpm,
    "ddim": ddim,
    "pndm": pndm,
    "ipndm": ipndm,
    "dpm++2m": dpm_solver_pp_2m,
    "dpm++3m": dpm_solver_pp_3m,
    "unipc": unipc,
}
# Each sampler's grid as its authors recommend it: DDIM's paper uses "quadratic" for CIFAR-10 and "uniform"
# elsewhere (both are run in the tables); PNDM's code skips uniformly; DPM-Solver(++) and UniPC space in
# log-SNR; iPNDM's tables (Zhang & Chen 2023; Zhou et al. 2024) use EDM's rho = 7 grid (their "time-uniform"
# grid for VP is its close cousin).
# The grids each sampler's authors (and the field's comparisons) run it on; a table's vanilla start takes the best.
AUTHOR_GRIDS = {
    "ddpm": ("uniform", "quadratic"),
    "ddim": ("uniform", "quadratic", "edm"),
    "pndm": ("uniform", "leading"),
    "ipndm": ("edm", "logsnr"),
    "dpm++2m": ("logsnr", "edm", "uniform"),
    "dpm++3m": ("logsnr", "edm"),
    "unipc": ("logsnr", "edm"),
}
RECOMMENDED_GRID = {
    "ddpm": "uniform",
    "ddim": "quadratic",
    "pndm": "uniform",
    "ipndm": "edm",
    "dpm++2m": "logsnr",
    "dpm++3m": "logsnr",
    "unipc": "logsnr",
}


# --- NFE and the common entry point ----------------------------------------------------------------
def _check_sampler(sampler) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    return sampler


def nfe(sampler: str, n_steps: int) -> int:
    """Denoiser evaluations that ``sample(.., sampler, n_steps, ..)`` makes (see the module table).

    >>> nfe("ddim", 10), nfe("pndm", 10), nfe("pndm", 2), nfe("unipc", 10)
    (10, 19, 5, 10)
    """
    m = check_int("n_steps", n_steps)
    if _check_sampler(sampler) == "pndm":
        return 4 * min(3, m - 1) + max(m - 4, 0) + 1
    return m


def sample(
    denoiser: Denoiser,
    sampler: str,
    n_steps: int,
    x_start: torch.Tensor,
    t_start: float,
    t_end: float = T_MIN,
    generator: torch.Generator | None = None,
    grid: str = "uniform",
) -> torch.Tensor:
    """Run ``sampler`` (one of SAMPLERS) from x_start (n, d) at t_start over ``time_grid(n_steps)`` down
    to t_end; returns the sample at t = 0, (n, d) float64 on x_start's device. ``generator`` (CPU) is used
    by "ddpm" only. ``nfe(sampler, n_steps)`` counts the denoiser evaluations.

    >>> from empirical.models.denoiser import ExactDenoiser
    >>> from theory import DeltaMixture
    >>> den = ExactDenoiser(DeltaMixture([[-1.0], [1.0]]))
    >>> x = sample(den, "dpm++2m", 20, torch.tensor([[0.5], [-0.2]]), t_start=1.0, grid="logsnr")
    >>> [round(v, 3) for v in x[:, 0].tolist()]
    [1.0, -1.0]
    """
    fn = SAMPLERS[_check_sampler(sampler)]
    ts = time_grid(denoiser.schedule, n_steps, t_start, t_end, grid)
    if not isinstance(x_start, torch.Tensor) or x_start.ndim != 2:
        raise ValueError(f"x_start must be a torch tensor of shape (n, d); got {getattr(x_start, 'shape', x_start)}")
    if not bool(torch.isfinite(x_start).all()):
        raise ValueError("x_start must be finite; it contains NaN or inf")
    if sampler == "ddpm":
        out = ddpm(denoiser, x_start, ts, generator=generator)
    elif sampler == "pndm" and len(ts) > 1 and grid != "leading":
        # PRK's midpoints halve each step in the grid's own variable ("leading": in t, as the PNDM code)
        out = pndm(denoiser, x_start, ts, time_grid(denoiser.schedule, 2 * len(ts) - 1, t_start, t_end, grid)[1::2])
    else:
        out = fn(denoiser, x_start, ts)
    if not bool(torch.isfinite(out).all()):  # a model that returned NaN or inf: stop, do not pass it on
        bad = int((~torch.isfinite(out)).any(1).sum())
        raise FloatingPointError(
            f"{sampler} with n_steps={n_steps} from t_start={float(t_start)} gave NaN or inf in {bad} of "
            f"{len(out)} samples: the denoiser returned non-finite values"
        )
    return out


# --- generation ------------------------------------------------------------------------------------
def _check_init(init, t_start, t_end, x_train, dim, T) -> tuple:
    """Validated (t_start, x_train, dim) for ``generate``."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if init == "vanilla":
        if t_start not in (None, T):
            raise ValueError(f"init='vanilla' starts at T={T}; got t_start={t_start!r} (use init='late')")
        t_start = T
    elif t_start is None:
        raise ValueError(f"init={init!r} needs t_start, a number in (t_end={t_end}, T={T}]")
    if (init.startswith("gls") or init == "teleport") and x_train is None:
        raise ValueError(f"init={init!r} needs x_train, the (n, d) training images")
    if x_train is not None:
        x_train = check_rows("x_train", x_train)
        dim = x_train.shape[1]
    elif dim is None:
        raise ValueError(f"init={init!r} without x_train needs dim, the data dimension (an integer >= 1)")
    return t_start, x_train, dim


def _initial_draw(init, denoiser, t_start, x_train, dim, generator, rank):
    """draw(m, generator) -> (m, d) float64 states at t_start."""
    schedule = denoiser.schedule
    if init == "gls":
        return GaussianInit.empirical(x_train, schedule, t_start, generator, rank=rank).sample
    if init == "gls-analytic":
        return GaussianInit.analytic(x_train, schedule, t_start, rank=rank).sample
    if init == "teleport":  # the vanilla x_T of the same seed, carried to t_start in closed form
        tele = Teleport.fit(x_train, schedule, rank=rank)
        return lambda m, gen: tele(init_vanilla(m, dim, gen), t_start)
    # N(0, (theta^2 + sigma^2) I): N(0, I) under VP, where theta^2 + sigma^2 = 1.
    th, s = theta_sigma(schedule, t_start)
    return lambda m, gen: math.sqrt(th**2 + s**2) * init_vanilla(m, dim, gen)


def generate(
    denoiser: Denoiser,
    sampler: str,
    n_steps: int,
    n: int,
    init: str = "vanilla",
    t_start: float | None = None,
    x_train=None,
    seed: int = 0,
    batch_size: int = 1000,
    *,
    dim: int | None = None,
    t_end: float = T_MIN,
    grid: str = "uniform",
    rank: int | None = None,
) -> torch.Tensor:
    """n samples (n, d) float64 on the CPU, seeded: draw x_start from ``init`` at t_start and run ``sample``.

    init: "vanilla" N(0, I) at T (t_start must be None or T); "late" N(0, I) at t_start; "gls" the
    Gaussian late start fitted to the diffused x_train (``GaussianInit.empirical``, the paper's);
    "gls-analytic" ``GaussianInit.analytic``; "teleport" the vanilla start's N(0, I) draws at T (the same
    draws as "vanilla" with the same seed) carried to t_start by ``Teleport.fit(x_train)``. d is x_train's
    width, or ``dim`` when x_train is None. The denoiser runs on its parameters' device, ``batch_size`` rows
    at a time. On the "leading" grid, which starts below t_start, the late inits are drawn at its first
    point; the vanilla N(0, I) is placed there, as the DDIM and PNDM code do.

    >>> from empirical.models.denoiser import ExactDenoiser
    >>> from theory import GaussianMixture
    >>> den = ExactDenoiser(GaussianMixture([[2.0]], [[0.25]]))
    >>> x = generate(den, "ddim", 10, 3, init="gls-analytic", t_start=0.5, x_train=[[1.5], [2.5]])
    >>> x.shape
    torch.Size([3, 1])
    """
    _check_sampler(sampler)
    n, batch_size, seed = check_int("n", n), check_int("batch_size", batch_size), check_int("seed", seed, lo=0)
    t_start, x_train, dim = _check_init(init, t_start, t_end, x_train, dim, denoiser.schedule.T)
    generator = torch.Generator().manual_seed(seed)
    t_init = t_start if init == "vanilla" else float(time_grid(denoiser.schedule, n_steps, t_start, t_end, grid)[0])
    draw = _initial_draw(init, denoiser, t_init, x_train, dim, generator, rank)
    param = next(denoiser.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    out = []
    for lo in range(0, n, batch_size):
        x0 = draw(min(batch_size, n - lo), generator).to(device)
        out.append(sample(denoiser, sampler, n_steps, x0, t_start, t_end, generator=generator, grid=grid).cpu())
    return torch.cat(out)
