r"""Step rules that move x along DDIM's transfer function: DDIM, DDPM (DDIM with eta = 1), PNDM and iPNDM.

Each takes a ``Denoiser``, a state x (n, d) at ts[0] and a decreasing grid ``ts`` (M,) of forward times, carries
the state in float64 (the network sees its own dtype) and returns the sample at t = 0, (n, d) float64. DDIM's
transfer from (theta_t, sigma_t) to (theta_s, sigma_s) with a noise estimate e is

    phi(x, e; t -> s) = theta_s (x - sigma_t e) / theta_t + sigma_s e,

Euler's method in (x / theta, sigma / theta); to t = 0 (theta = 1, sigma = 0) it is x0_hat = (x - sigma e) / theta.
The multistep rules (PNDM's PLMS, iPNDM) replace e by an Adams-Bashforth combination of the last eps.
The exponential integrators in lambda (DPM-Solver++, UniPC) are in ``empirical.sampling.solvers_dpm``.
"""

from __future__ import annotations

import torch

from empirical.models.denoiser import Denoiser, schedule_coeffs
from empirical.sampling.grids import _real

__all__ = ["ddim", "ddpm", "pndm", "ipndm", "AB_COEFFS", "FINALS"]

# The step from the last grid point to t = 0: "ddim" uses the eps there alone (x0_hat, Tweedie's estimate, exact
# for the denoiser at any step size), "multistep" the Adams-Bashforth combination, whose equal-step weights are
# right only when that step is as long as the others (diffusers' grids that end at sigma = 0 after an ordinary
# step); after a short last step (t_end = 1e-3) it is off by O(sigma(t_end) h), so "ddim" is the default.
FINALS = ("ddim", "multistep")

# Adams-Bashforth weights on equal steps as (numerators, newest eps first; denominator), orders 1-4: PLMS, and
# iPNDM's lower-order warm start. Integer numerators over one division: PLMS's arithmetic, bit for bit.
AB_COEFFS = {
    1: ((1.0,), 1.0),
    2: ((3.0, -1.0), 2.0),
    3: ((23.0, -16.0, 5.0), 12.0),
    4: ((55.0, -59.0, 37.0, -9.0), 24.0),
}


def prepare(denoiser: Denoiser, x: torch.Tensor, ts) -> tuple:
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


def eps_at(denoiser: Denoiser, x: torch.Tensor, t, dtype: torch.dtype) -> torch.Tensor:
    """eps_hat(x, t) evaluated in the network's dtype, returned in float64."""
    return denoiser(x.to(dtype), float(t)).to(torch.float64)


def _phi(x, e, th_t, s_t, th_s, s_s):
    """DDIM's transfer from (th_t, s_t) to (th_s, s_s)."""
    return th_s * (x - s_t * e) / th_t + s_s * e


def _check_final(final) -> None:
    if final not in FINALS:
        raise ValueError(f"final must be one of {FINALS}; got {final!r}")


def _adams_bashforth(history: list) -> torch.Tensor:
    """The AB combination of order len(history) <= 4 (history oldest first)."""
    coeffs, den = AB_COEFFS[len(history)]
    return sum(c * e for c, e in zip(coeffs, reversed(history), strict=True)) / den


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
    x, ts, theta, sigma, dtype = prepare(denoiser, x, ts)
    for i in range(len(ts)):
        # 1. predict the noise and the data ("predicted x0", eq. 12's first term).
        eps = eps_at(denoiser, x, ts[i], dtype)
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
def pndm(denoiser: Denoiser, x: torch.Tensor, ts, t_mid=None, final: str = "ddim") -> torch.Tensor:
    r"""PNDM (Liu et al. 2022): pseudo numerical methods with DDIM's transfer function phi.

    The first three steps are pseudo Runge-Kutta (PRK, eq. 13: four evaluations, at t, the midpoint
    twice and s); the rest pseudo linear multistep (PLMS, eq. 12: one evaluation, the 4th-order
    Adams-Bashforth combination e' = (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24 of the last four eps at
    the grid points). The PLMS weights assume equal steps of sigma / theta, so the order is 4 on the
    "sigma" grid and 2 on others. ts (M,), x (n, d); t_mid (M - 1,) the PRK midpoints (default the
    midpoints in t; ``sample`` halves each step in the grid's own variable).

    ``final``: "ddim" (the default) jumps from ts[-1] to t = 0 with the eps at ts[-1] alone (x0_hat);
    "multistep" makes that last step a PLMS step too, as the PNDM code and diffusers' ``PNDMScheduler`` do
    (needs M >= 4; see ``FINALS``). Both cost NFE = 4 min(3, M - 1) + max(M - 4, 0) + 1.
    """
    _check_final(final)
    x, ts, theta, sigma, dtype = prepare(denoiser, x, ts)
    if final == "multistep" and len(ts) < 4:
        raise ValueError(f"final='multistep' needs a grid of >= 4 points (3 PRK steps first); got {len(ts)}")
    mids = 0.5 * (ts[:-1] + ts[1:]) if t_mid is None else torch.as_tensor(t_mid, dtype=torch.float64).reshape(-1)
    if mids.shape != (len(ts) - 1,) or not bool(torch.all((mids < ts[:-1]) & (mids > ts[1:]))):
        raise ValueError(f"t_mid must hold one time inside each of the {len(ts) - 1} steps of ts")
    theta_m, sigma_m = schedule_coeffs(denoiser.schedule, mids, "theta", "sigma", like=x)

    history = []  # eps at the grid points, oldest first
    for i in range(len(ts) - 1):
        now, mid, nxt = (theta[i], sigma[i]), (theta_m[i], sigma_m[i]), (theta[i + 1], sigma[i + 1])
        e1 = eps_at(denoiser, x, ts[i], dtype)
        history = (history + [e1])[-4:]
        if i < 3:
            # PRK: e1 at t; e2, e3 at the midpoint; e4 at s; e' = (e1 + 2 e2 + 2 e3 + e4) / 6.
            e2 = eps_at(denoiser, _phi(x, e1, *now, *mid), mids[i], dtype)
            e3 = eps_at(denoiser, _phi(x, e2, *now, *mid), mids[i], dtype)
            e4 = eps_at(denoiser, _phi(x, e3, *now, *nxt), ts[i + 1], dtype)
            e = (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0
        else:
            e = _adams_bashforth(history)  # PLMS: the last four grid evaluations
        x = _phi(x, e, *now, *nxt)
    e = eps_at(denoiser, x, ts[-1], dtype)
    if final == "multistep":
        e = _adams_bashforth((history + [e])[-4:])
    return (x - sigma[-1] * e) / theta[-1]


@torch.no_grad()
def ipndm(denoiser: Denoiser, x: torch.Tensor, ts, final: str = "ddim") -> torch.Tensor:
    r"""iPNDM (Zhang & Chen 2023, DEIS, sec. 4; the fixed-coefficient variant of Zhou et al. 2024's tables):
    PLMS without PNDM's Runge-Kutta warm-up. At every grid point one evaluation, then DDIM's transfer with the
    Adams-Bashforth combination of the eps so far, of order min(i + 1, 4): e, (3 e_0 - e_1) / 2,
    (23 e_0 - 16 e_1 + 5 e_2) / 12, then PLMS's 4th order. ``final`` as in ``pndm``: "multistep" makes the last
    step, to t = 0, such a step too, as diffusers' ``IPNDMScheduler`` does. ts (M,), x (n, d); NFE = M.
    """
    _check_final(final)
    x, ts, theta, sigma, dtype = prepare(denoiser, x, ts)
    history = []
    for i in range(len(ts)):
        history = (history + [eps_at(denoiser, x, ts[i], dtype)])[-4:]
        e = _adams_bashforth(history)
        if i == len(ts) - 1:
            e = e if final == "multistep" else history[-1]
            return (x - sigma[i] * e) / theta[i]
        x = _phi(x, e, theta[i], sigma[i], theta[i + 1], sigma[i + 1])
    raise AssertionError("unreachable")
