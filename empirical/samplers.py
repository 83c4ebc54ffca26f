r"""Few-step samplers for any ``Denoiser``, and the initial distributions they start from.

Every sampler walks a decreasing grid of forward times t_0 = t_start > t_1 > ... > t_{M-1} = t_end,
carries its state in float64 (the network sees its own dtype), and returns the final denoised
estimate x0_hat(x_{t_end}, t_end) = (x - sigma eps_hat) / theta: the last grid point's evaluation is
the jump to t = 0 (DDIM's last step to alpha_0 = 1). So M = ``n_steps`` grid points cost

=========  =============================================  ===========================================
sampler    algorithm                                      denoiser evaluations (NFE) for M points
=========  =============================================  ===========================================
ddpm       ancestral: x_s ~ q(x_s | x_t, x0_hat)          M
ddim       DDIM, eta = 0 (deterministic)                  M
pndm       3 pseudo-Runge-Kutta steps, then PLMS          M + 9 for M >= 4 (each PRK step costs 4),
                                                          4 M - 3 for M < 4
dpm++2m    DPM-Solver++(2M), multistep in lambda          M
=========  =============================================  ===========================================

(``nfe(sampler, n_steps)`` returns the last column.) M = 1 is the one-shot Tweedie denoiser at t_start.

Grids (``grid=``): "uniform" in t (the default, as in DDPM/DDIM's uniform skip of the 1000 steps),
"logsnr", uniform in lambda = log(theta / sigma) (DPM-Solver's choice for low resolution), or
"sigma", uniform in the noise level sigma / theta (the variable in which DDIM is Euler's method, so
PNDM's equal-step multistep weights are exact there). Orders measured against the exact ODE of
Gaussian data (tests/test_samplers.py): DDIM 1 on every grid; DPM-Solver++(2M) 2 ("logsnr", "sigma"),
~1.8 ("uniform"); PNDM 4 ("sigma"), 2 ("logsnr"), and on "uniform" falling from 3 towards 1 as the
steps shrink, since sigma ~ sqrt(t) is not smooth in t at t = 0.

Initial distributions: ``init_vanilla`` N(0, I) at T; the late start N(0, I) at t_start < T; the
Gaussian late start ``GaussianInit`` N(mu_t, Sigma_t) at t_start. ``generate`` puts them together.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from empirical.denoiser import T_MIN, Denoiser, schedule_coeffs
from theory._checks import check_int, check_memory
from theory.schedules import Schedule

__all__ = [
    "SAMPLERS",
    "GRIDS",
    "INITS",
    "ddpm",
    "ddim",
    "pndm",
    "dpm_solver_pp_2m",
    "sample",
    "nfe",
    "time_grid",
    "init_vanilla",
    "GaussianInit",
    "generate",
]

GRIDS = ("uniform", "logsnr", "sigma")
INITS = ("vanilla", "late", "gls", "gls-analytic")
FULL_COV_MAX_DIM = 4096  # above this, GaussianInit keeps a low-rank plus diagonal covariance
DEFAULT_RANK = 256


# --- the pieces every sampler shares ----------------------------------------------------------
def _on_grid(fn, t: np.ndarray) -> np.ndarray:
    """fn(t) for a 1D float64 array, padded to a power-of-two length: eager jax ops compile once per
    array shape (~0.2 s for t_from_snr at a new length), so grids share a few shapes."""
    n = len(t)
    padded = np.concatenate([t, np.full((1 << (n - 1).bit_length()) - n, t[-1])])
    return np.array(fn(padded), dtype=np.float64)[..., :n]


def _prepare(denoiser: Denoiser, x: torch.Tensor, ts) -> tuple:
    """Float64 state, float64 grid, theta and sigma on the grid, and the dtype the network sees."""
    ts = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)
    if ts.numel() < 1 or bool(torch.any(ts[1:] >= ts[:-1])):
        raise ValueError("ts must be a non-empty, strictly decreasing grid of forward times")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, d); got {tuple(x.shape)}")
    param = next(denoiser.parameters(), None)
    net_dtype = param.dtype if param is not None else torch.float64
    x = x.to(torch.float64)
    return x, ts, *schedule_coeffs(denoiser.schedule, ts, "theta", "sigma", like=x), net_dtype


def _eps(denoiser: Denoiser, x: torch.Tensor, t, dtype: torch.dtype) -> torch.Tensor:
    """eps_hat(x, t) evaluated in the network's dtype, returned in float64."""
    return denoiser(x.to(dtype), float(t)).to(torch.float64)


def _real(value) -> float | None:
    """``value`` as a float if it is a real number (numpy scalars included: np.float32(0.5) is a number), else
    None; bool is not a number here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _check_start(schedule: Schedule, t_start: float) -> None:
    """Every sampler divides by theta(t) (x0_hat = (x - sigma eps) / theta): refuse a start where theta = 0."""
    (theta,) = schedule_coeffs(schedule, float(t_start), "theta")
    if not float(theta) > 0.0:
        raise ValueError(
            f"t_start must be below {t_start} for {schedule!r}: theta(t_start) = 0 there, so x0_hat = "
            "(x - sigma eps) / theta is undefined; start at a t with theta > 0 (init='late')"
        )


# --- the samplers -------------------------------------------------------------------------------
@torch.no_grad()
def ddim(
    denoiser: Denoiser, x: torch.Tensor, ts, eta: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""DDIM (Song et al. 2021, eq. 12) on a grid ``ts`` (M,) of decreasing forward times; x (n, d).

    From t to s < t, with sigma_ts^2 = sigma_t^2 - (theta_t / theta_s)^2 sigma_s^2 and
    c = eta sigma_s sigma_ts / sigma_t:

        x_s = theta_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,   z ~ N(0, I).

    eta = 0 is the deterministic DDIM; eta = 1 makes c^2 the variance of the posterior
    q(x_s | x_t, x0_hat), i.e. DDPM's ancestral step. Returns x0_hat at ts[-1], (n, d) float64.
    ``generator`` (CPU) draws z.
    """
    if _real(eta) is None or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1]; got {eta!r}")
    x, ts, theta, sigma, dtype = _prepare(denoiser, x, ts)
    for i in range(len(ts)):
        # 1. predict the noise and the data ("predicted x0", eq. 12's first term).
        eps = _eps(denoiser, x, ts[i], dtype)
        x0 = (x - sigma[i] * eps) / theta[i]
        if i == len(ts) - 1:
            return x0  # the last step goes to theta = 1, sigma = 0: x0_hat itself
        # 2. the noise level of the injected randomness, c = eta sigma_s sigma_ts / sigma_t.
        sigma_ts2 = sigma[i] ** 2 - (theta[i] / theta[i + 1]) ** 2 * sigma[i + 1] ** 2
        c = eta * sigma[i + 1] * torch.sqrt(torch.clamp(sigma_ts2, min=0.0)) / sigma[i]
        # 3. "direction pointing to x_t" plus fresh noise.
        x = theta[i + 1] * x0 + torch.sqrt(sigma[i + 1] ** 2 - c**2) * eps
        if eta > 0:
            x = x + c * torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    raise AssertionError("unreachable")


def ddpm(denoiser: Denoiser, x: torch.Tensor, ts, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Ancestral sampling (Ho et al. 2020, Algorithm 2) on the continuous schedule: each step draws
    x_s ~ q(x_s | x_t, x0_hat) = N(mu, c^2 I), the Gaussian posterior of the forward process with
    the step's alpha = theta_t^2 / theta_s^2; this is ``ddim`` with eta = 1. Returns x0_hat at ts[-1].
    """
    return ddim(denoiser, x, ts, eta=1.0, generator=generator)


@torch.no_grad()
def pndm(denoiser: Denoiser, x: torch.Tensor, ts, t_mid=None) -> torch.Tensor:
    r"""PNDM (Liu et al. 2022): pseudo numerical methods with DDIM's transfer function

        phi(x_t, e, t, s) = theta_s (x_t - sigma_t e) / theta_t + sigma_s e.

    The first three steps are pseudo Runge-Kutta (PRK, eq. 13: four evaluations, at t, the midpoint
    twice and s); the rest pseudo linear multistep (PLMS, eq. 12: one evaluation, the 4th-order
    Adams-Bashforth combination e' = (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24 of the last four eps at
    the grid points). The PLMS weights assume equal steps of sigma / theta, so the order is 4 on the
    "sigma" grid and 2 on others. ts (M,), x (n, d); t_mid (M - 1,) the PRK midpoints (default the
    midpoints in t; ``sample`` halves each step in the grid's own variable). Returns x0_hat at ts[-1].
    NFE = 4 min(3, M - 1) + max(M - 4, 0) + 1.
    """
    x, ts, theta, sigma, dtype = _prepare(denoiser, x, ts)
    mids = 0.5 * (ts[:-1] + ts[1:]) if t_mid is None else torch.as_tensor(t_mid, dtype=torch.float64).reshape(-1)
    if mids.shape != (len(ts) - 1,) or not bool(torch.all((mids < ts[:-1]) & (mids > ts[1:]))):
        raise ValueError(f"t_mid must hold one time inside each of the {len(ts) - 1} steps of ts")
    theta_m, sigma_m = schedule_coeffs(denoiser.schedule, mids, "theta", "sigma", like=x)

    def phi(x, e, th_t, s_t, th_s, s_s):  # DDIM's transfer from (th_t, s_t) to (th_s, s_s)
        return th_s * (x - s_t * e) / th_t + s_s * e

    history = []  # eps at the grid points, newest last
    for i in range(len(ts) - 1):
        now, mid, nxt = (theta[i], sigma[i]), (theta_m[i], sigma_m[i]), (theta[i + 1], sigma[i + 1])
        e1 = _eps(denoiser, x, ts[i], dtype)
        history.append(e1)
        if i < 3:
            # PRK: e1 at t; e2, e3 at the midpoint; e4 at s; e' = (e1 + 2 e2 + 2 e3 + e4) / 6.
            e2 = _eps(denoiser, phi(x, e1, *now, *mid), mids[i], dtype)
            e3 = _eps(denoiser, phi(x, e2, *now, *mid), mids[i], dtype)
            e4 = _eps(denoiser, phi(x, e3, *now, *nxt), ts[i + 1], dtype)
            e = (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0
        else:
            # PLMS: the linear multistep combination of the last four grid evaluations.
            e = (55.0 * history[-1] - 59.0 * history[-2] + 37.0 * history[-3] - 9.0 * history[-4]) / 24.0
            history.pop(0)
        x = phi(x, e, *now, *nxt)
    eps = _eps(denoiser, x, ts[-1], dtype)
    return (x - sigma[-1] * eps) / theta[-1]


@torch.no_grad()
def dpm_solver_pp_2m(denoiser: Denoiser, x: torch.Tensor, ts) -> torch.Tensor:
    r"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): data prediction, multistep, 2nd order in
    lambda = log(theta / sigma). With h_i = lambda_{i+1} - lambda_i and r_i = h_{i-1} / h_i:

        D_i = (1 + 1 / (2 r_i)) x0_hat_i - 1 / (2 r_i) x0_hat_{i-1}     (D_0 = x0_hat_0),
        x_{i+1} = (sigma_{i+1} / sigma_i) x_i - theta_{i+1} (e^{-h_i} - 1) D_i.

    ts (M,), x (n, d); returns x0_hat at ts[-1]; M evaluations.
    """
    x, ts, theta, sigma, dtype = _prepare(denoiser, x, ts)
    lam = torch.log(theta) - torch.log(sigma)
    x0_prev = None
    for i in range(len(ts)):
        # 1. data prediction x0_hat(x_i, t_i), from the network's eps.
        x0 = (x - sigma[i] * _eps(denoiser, x, ts[i], dtype)) / theta[i]
        if i == len(ts) - 1:
            return x0
        # 2. the multistep correction D_i (first step: first order, D_0 = x0_hat_0).
        h = lam[i + 1] - lam[i]
        if x0_prev is None:
            d = x0
        else:
            r = (lam[i] - lam[i - 1]) / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        # 3. the exponential-integrator update of the linear part.
        x = (sigma[i + 1] / sigma[i]) * x - theta[i + 1] * torch.expm1(-h) * d
        x0_prev = x0
    raise AssertionError("unreachable")


SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "pndm": pndm, "dpm++2m": dpm_solver_pp_2m}


# --- grid, NFE and the common entry point --------------------------------------------------------
def _check_steps(n_steps) -> int:
    return check_int("n_steps", n_steps)


def _check_sampler(sampler) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    return sampler


def nfe(sampler: str, n_steps: int) -> int:
    """Denoiser evaluations that ``sample(.., sampler, n_steps, ..)`` makes (see the module table).

    >>> nfe("ddim", 10), nfe("pndm", 10), nfe("pndm", 2)
    (10, 19, 5)
    """
    m = _check_steps(n_steps)
    if _check_sampler(sampler) == "pndm":
        return 4 * min(3, m - 1) + max(m - 4, 0) + 1
    return m


def time_grid(schedule: Schedule, n_steps: int, t_start: float, t_end: float = T_MIN, grid: str = "uniform"):
    """Decreasing forward times (n_steps,) float64 from t_start to t_end, both included.

    "uniform": equal steps in t; "logsnr": equal steps in lambda = log(theta / sigma).
    n_steps = 1 gives [t_start].

    >>> from theory import VPLinear
    >>> time_grid(VPLinear(), 3, 1.0, 0.5).tolist()
    [1.0, 0.75, 0.5]
    """
    m = _check_steps(n_steps)
    T = schedule.T
    if _real(t_end) is None or not 0.0 < t_end < T:
        raise ValueError(f"t_end must be a number in (0, T={T}); got {t_end!r}")
    if _real(t_start) is None or not t_end < t_start <= T:
        raise ValueError(f"t_start must be a number in (t_end={t_end}, T={T}]; got {t_start!r}")
    t_start, t_end = float(t_start), float(t_end)
    _check_start(schedule, t_start)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose one of {GRIDS}")
    if m == 1:
        return torch.tensor([float(t_start)], dtype=torch.float64)
    if grid == "uniform":
        return torch.tensor(np.linspace(t_start, t_end, m), dtype=torch.float64)
    log_snr = np.array(schedule.log_snr(np.array([t_start, t_end], dtype=np.float64)))
    if grid == "logsnr":
        snr = np.exp(np.linspace(log_snr[0], log_snr[1], m))
    else:  # equal steps in the noise level sigma / theta = snr^(-1/2)
        snr = np.linspace(np.exp(-0.5 * log_snr[0]), np.exp(-0.5 * log_snr[1]), m) ** -2.0
    ts = _on_grid(schedule.t_from_snr, snr)
    ts[0], ts[-1] = t_start, t_end  # exact ends (the inverse is exact only to round-off)
    return torch.tensor(ts, dtype=torch.float64)


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
    to t_end; returns x0_hat at t_end, (n, d) float64 on x_start's device. ``generator`` (CPU) is used
    by "ddpm" only. ``nfe(sampler, n_steps)`` counts the denoiser evaluations.

    >>> from empirical.denoiser import ExactDenoiser
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
    elif sampler == "pndm":  # PRK's midpoints halve each step in the grid's own variable
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


# --- initial distributions ------------------------------------------------------------------------
def init_vanilla(n: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) draws (n, d) float64: the VP prior at T (and the "late start" at t_start < T)."""
    n, d = check_int("n", n), check_int("d", d)
    return torch.randn(n, d, generator=generator, dtype=torch.float64)


def _top_eigs(a: torch.Tensor, k: int, generator: torch.Generator, n_iter: int = 8):
    """Top-k eigenpairs of a^T a for a (n, d), by subspace iteration (randomised SVD, Halko et al. 2011)
    with k + 10 columns; exact when k + 10 >= min(n, d). Returns eigenvalues (k,) and vectors (d, k)."""
    q = min(k + 10, min(a.shape))
    basis = torch.linalg.qr(torch.randn(a.shape[1], q, generator=generator, dtype=a.dtype)).Q
    for _ in range(n_iter):
        basis = torch.linalg.qr(a.T @ (a @ basis)).Q
    b = a @ basis
    lam, v = torch.linalg.eigh(b.T @ b)  # the Rayleigh-Ritz step
    k = min(k, q)
    return lam.flip(0)[:k].clamp(min=0.0), (basis @ v).flip(1)[:, :k]


def _check_rank(rank, d: int) -> int | None:
    """None for a full covariance, or the rank of the low-rank part."""
    if rank is None:
        return None if d <= FULL_COV_MAX_DIM else min(DEFAULT_RANK, d)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= d:
        raise ValueError(f"rank must be None or an integer in [1, d={d}]; got {rank!r}")
    return int(rank)


def _check_cov_memory(d: int, n: int = 0) -> None:
    """A full covariance needs a few (d, d) float64 matrices (and the (n, d) centred data): refuse beyond memory."""
    check_memory(f"a full {d} x {d} covariance", 8.0 * (4 * d * d + 2 * n * d), "pass rank=k for low rank + diagonal")


def _check_rows(name: str, x) -> torch.Tensor:
    try:
        x = torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError) as err:  # ragged lists, strings
        raise ValueError(f"{name} must be a rectangular (n, d) array of numbers ({err})") from None
    x = x.to(torch.float64).cpu()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, d) with n >= 2; got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite; it contains NaN or inf")
    return x


@dataclass(frozen=True)
class GaussianInit:
    r"""The Gaussian late start: N(mean, C) at forward time t_start, with C either full (``chol`` (d, d),
    C = chol chol^T) or low-rank plus diagonal (``factor`` (d, k), ``diag`` (d,), C = factor factor^T +
    diag(diag)). Build it with ``analytic``, ``empirical`` or ``from_moments``; all tensors float64 CPU.
    """

    mean: torch.Tensor
    t_start: float
    chol: torch.Tensor | None = None
    factor: torch.Tensor | None = None
    diag: torch.Tensor | None = None

    @classmethod
    def from_moments(cls, mean0, cov0, schedule: Schedule, t_start: float) -> GaussianInit:
        r"""Push data moments mu_0 (d,), Sigma_0 (d, d) through the forward process:
        N(theta mu_0, theta^2 Sigma_0 + sigma^2 I) at t_start. Full covariance (Cholesky)."""
        th, s = _theta_sigma(schedule, t_start)
        mean0 = torch.as_tensor(mean0, dtype=torch.float64).reshape(-1)
        _check_cov_memory(mean0.numel())
        cov0 = torch.as_tensor(cov0, dtype=torch.float64)
        if cov0.shape != (mean0.numel(), mean0.numel()):
            raise ValueError(f"cov0 must have shape ({mean0.numel()}, {mean0.numel()}); got {tuple(cov0.shape)}")
        if not bool(torch.isfinite(mean0).all() and torch.isfinite(cov0).all()):
            raise ValueError("mean0 and cov0 must be finite; they contain NaN or inf")
        cov = th**2 * cov0 + s**2 * torch.eye(mean0.numel(), dtype=torch.float64)
        return cls(mean=th * mean0, t_start=float(t_start), chol=_cholesky(cov))

    @classmethod
    def analytic(cls, x_train, schedule: Schedule, t_start: float, rank: int | None = None) -> GaussianInit:
        r"""N(theta mu_0, theta^2 Sigma_0 + sigma^2 I) from the training set's mean and covariance
        (x_train (n, d)). rank=None: full for d <= 4096, else rank 256 plus the diagonal."""
        x = _check_rows("x_train", x_train)
        th, s = _theta_sigma(schedule, t_start)
        k = _check_rank(rank, x.shape[1])
        if k is None:
            _check_cov_memory(x.shape[1], x.shape[0])
        mean0 = x.mean(0)
        a = (x - mean0) / math.sqrt(x.shape[0] - 1)
        if k is None:
            return cls.from_moments(mean0, a.T @ a, schedule, t_start)
        factor, diag = _low_rank(a, k)
        return cls(mean=th * mean0, t_start=float(t_start), factor=th * factor, diag=th**2 * diag + s**2)

    @classmethod
    def empirical(
        cls, x_train, schedule: Schedule, t_start: float, generator: torch.Generator | None = None, rank=None
    ) -> GaussianInit:
        r"""Mean and covariance of the forward-diffused training set, x_t = theta x_0 + sigma eps (one draw
        per image, from ``generator``), as the paper estimates them. rank as in ``analytic``."""
        x = _check_rows("x_train", x_train)
        th, s = _theta_sigma(schedule, t_start)
        k = _check_rank(rank, x.shape[1])
        if k is None:
            _check_cov_memory(x.shape[1], x.shape[0])
        xt = th * x + s * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        mean = xt.mean(0)
        a = (xt - mean) / math.sqrt(x.shape[0] - 1)
        if k is None:
            return cls(mean=mean, t_start=float(t_start), chol=_cholesky(a.T @ a))
        factor, diag = _low_rank(a, k)
        return cls(mean=mean, t_start=float(t_start), factor=factor, diag=diag)

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def covariance(self) -> torch.Tensor:
        """The covariance as a dense (d, d) matrix."""
        if self.chol is not None:
            return self.chol @ self.chol.T
        return self.factor @ self.factor.T + torch.diag(self.diag)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, d) float64: mean + chol z, or mean + factor z_1 + sqrt(diag) z_2."""
        z = init_vanilla(n, self.dim, generator)
        if self.chol is not None:
            return self.mean + z @ self.chol.T
        z1 = torch.randn(n, self.factor.shape[1], generator=generator, dtype=torch.float64)
        return self.mean + z1 @ self.factor.T + self.diag.sqrt() * z


def _theta_sigma(schedule: Schedule, t_start) -> tuple[float, float]:
    if _real(t_start) is None or not 0.0 < t_start <= schedule.T:
        raise ValueError(f"t_start must be a number in (0, T={schedule.T}]; got {t_start!r}")
    th, s = schedule_coeffs(schedule, float(t_start), "theta", "sigma")
    return float(th), float(s)


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Cholesky factor; for a singular (PSD) estimate, the eigen-factor U sqrt(max(lam, 0))."""
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) == 0:
        return chol
    lam, u = torch.linalg.eigh(cov)
    return u * lam.clamp(min=0.0).sqrt()


def _low_rank(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C = a^T a as factor (d, k) = U_k sqrt(lam_k) plus the diagonal remainder diag(C) - diag(U L U^T) >= 0."""
    lam, u = _top_eigs(a, k, torch.Generator().manual_seed(0))
    factor = u * lam.sqrt()
    diag = ((a**2).sum(0) - (factor**2).sum(1)).clamp(min=0.0)
    return factor, diag


# --- generation ------------------------------------------------------------------------------------
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
    "gls-analytic" ``GaussianInit.analytic``. d is x_train's width, or ``dim`` when x_train is None.
    The denoiser runs on its parameters' device, ``batch_size`` rows at a time.

    >>> from empirical.denoiser import ExactDenoiser
    >>> from theory import GaussianMixture
    >>> den = ExactDenoiser(GaussianMixture([[2.0]], [[0.25]]))
    >>> x = generate(den, "ddim", 10, 3, init="gls-analytic", t_start=0.5, x_train=[[1.5], [2.5]])
    >>> x.shape
    torch.Size([3, 1])
    """
    _check_sampler(sampler)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    n, batch_size, seed = check_int("n", n), check_int("batch_size", batch_size), check_int("seed", seed, lo=0)
    T = denoiser.schedule.T
    if init == "vanilla":
        if t_start not in (None, T):
            raise ValueError(f"init='vanilla' starts at T={T}; got t_start={t_start!r} (use init='late')")
        t_start = T
    elif t_start is None:
        raise ValueError(f"init={init!r} needs t_start, a number in (t_end={t_end}, T={T}]")
    if init.startswith("gls") and x_train is None:
        raise ValueError(f"init={init!r} needs x_train, the (n, d) training images")
    if x_train is not None:
        x_train = _check_rows("x_train", x_train)
        dim = x_train.shape[1]
    elif dim is None:
        raise ValueError(f"init={init!r} without x_train needs dim, the data dimension (an integer >= 1)")
    generator = torch.Generator().manual_seed(seed)
    if init == "gls":
        draw = GaussianInit.empirical(x_train, denoiser.schedule, t_start, generator, rank=rank).sample
    elif init == "gls-analytic":
        draw = GaussianInit.analytic(x_train, denoiser.schedule, t_start, rank=rank).sample
    else:
        # N(0, (theta^2 + sigma^2) I): N(0, I) under VP, where theta^2 + sigma^2 = 1.
        th, s = _theta_sigma(denoiser.schedule, t_start)
        draw = lambda m, gen: math.sqrt(th**2 + s**2) * init_vanilla(m, dim, gen)
    param = next(denoiser.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    out = []
    for lo in range(0, n, batch_size):
        x0 = draw(min(batch_size, n - lo), generator).to(device)
        out.append(sample(denoiser, sampler, n_steps, x0, t_start, t_end, generator=generator, grid=grid).cpu())
    return torch.cat(out)
