r"""Exponential integrators in lambda = log(theta / sigma) with data prediction: DPM-Solver++(2M, 3M) and UniPC.

On the probability-flow ODE written for x / sigma in lambda, the linear part is integrated exactly and the
data prediction x0_hat(x, t) = (x - sigma eps_hat) / theta is extrapolated in lambda from the last evaluations
(Lu et al. 2022, DPM-Solver++; Zhao et al. 2023, UniPC). Same calling convention as ``empirical.sampling.solvers``:
x (n, d) at ts[0], a decreasing grid ts (M,), one evaluation per grid point (NFE = M), the step from ts[-1] to
t = 0 first order (x0_hat at ts[-1]), as diffusers does with ``final_sigmas_type="zero"``.
"""

from __future__ import annotations

import torch

from empirical.models.denoiser import Denoiser
from empirical.sampling.solvers import eps_at, prepare

__all__ = ["dpm_solver_pp", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc"]

LOWER_ORDER_FINAL_BELOW = 15  # diffusers and DPM-Solver: lower the last steps' order on grids of < 15 points


def _x0(denoiser, x, t, theta, sigma, dtype):
    return (x - sigma * eps_at(denoiser, x, t, dtype)) / theta


@torch.no_grad()
def dpm_solver_pp(denoiser: Denoiser, x: torch.Tensor, ts, order: int = 2, lower_order_final: bool = True):
    r"""DPM-Solver++(kM) (Lu et al. 2022, Algorithm 2 and its 3rd-order multistep, App. B), k = ``order`` in
    {2, 3}. With h = lambda_{i+1} - lambda_i, r_j = h_{i-j} / h, m_j the data predictions at t_{i-j}:

        D1_0 = (m_0 - m_1) / r_1,  D1_1 = (m_1 - m_2) / r_2,
        2nd order: x_{i+1} = (sigma_{i+1} / sigma_i) x_i - theta_{i+1} (e^{-h} - 1) (m_0 + D1_0 / 2),
        3rd order: D1 = D1_0 + r_1 / (r_1 + r_2) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r_1 + r_2),
            x_{i+1} = (sigma_{i+1} / sigma_i) x_i - theta_{i+1} [(e^{-h} - 1) m_0 - ((e^{-h} - 1) / h + 1) D1
                      + ((e^{-h} - 1 + h) / h^2 - 1/2) D2].

    Step i uses order min(k, i + 1) (the multistep warm start); with ``lower_order_final`` on a grid of
    fewer than 15 points the second-last step is at most 2nd order (the last, to t = 0, is x0_hat), as in
    diffusers' ``DPMSolverMultistepScheduler``. ts (M,), x (n, d); returns the sample at t = 0; NFE = M.
    """
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3; got {order!r}")
    x, ts, theta, sigma, dtype = prepare(denoiser, x, ts)
    lam = torch.log(theta) - torch.log(sigma)
    m = []  # data predictions, newest last
    for i in range(len(ts)):
        m = (m + [_x0(denoiser, x, ts[i], theta[i], sigma[i], dtype)])[-3:]
        if i == len(ts) - 1:
            return m[-1]
        k = min(order, i + 1)
        if lower_order_final and len(ts) < LOWER_ORDER_FINAL_BELOW and i == len(ts) - 2:
            k = min(k, 2)
        h = lam[i + 1] - lam[i]
        em1 = torch.expm1(-h)
        if k == 1:
            d = m[-1]
        elif k == 2:  # (the committed 2M tables' arithmetic: D = (1 + 1/(2r)) m_0 - 1/(2r) m_1, r = h_{i-1} / h)
            r = (lam[i] - lam[i - 1]) / h
            d = (1.0 + 0.5 / r) * m[-1] - (0.5 / r) * m[-2]
        else:
            r1, r2 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            d1_0, d1_1 = (m[-1] - m[-2]) / r1, (m[-2] - m[-3]) / r2
            d1 = d1_0 + r1 / (r1 + r2) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r1 + r2)
            d = m[-1] - (em1 / h + 1.0) / em1 * d1 + ((em1 + h) / h**2 - 0.5) / em1 * d2
        x = (sigma[i + 1] / sigma[i]) * x - theta[i + 1] * em1 * d
    raise AssertionError("unreachable")


def dpm_solver_pp_2m(denoiser: Denoiser, x: torch.Tensor, ts) -> torch.Tensor:
    """DPM-Solver++(2M): ``dpm_solver_pp`` with order 2."""
    return dpm_solver_pp(denoiser, x, ts, order=2)


def dpm_solver_pp_3m(denoiser: Denoiser, x: torch.Tensor, ts) -> torch.Tensor:
    """DPM-Solver++(3M): ``dpm_solver_pp`` with order 3 (lower order final on grids of < 15 points)."""
    return dpm_solver_pp(denoiser, x, ts, order=3)


def _b_of_h(h: torch.Tensor, variant: str) -> torch.Tensor:
    """UniPC's B(-h): "bh1" -h, "bh2" e^{-h} - 1."""
    return -h if variant == "bh1" else torch.expm1(-h)


def _unipc_weights(rks: list, h: torch.Tensor, k: int, predictor: bool, variant: str) -> torch.Tensor:
    r"""UniPC's weights rho (Zhao et al. 2023, Algorithms 1-2 with the phi_n of eq. 8): solve R rho = b with
    R_{nj} = r_j^{n-1}, b_n = n! h phi_{n+1}(-h) / B(h), n = 1..k (the predictor drops the last row and
    column). The predictor of order 2 and the corrector of order 1 use rho = 1/2 (as the reference code)."""
    if (predictor and k == 2) or (not predictor and k == 1):
        return torch.full((1,), 0.5, dtype=torch.float64)
    hh = -h
    b_h = _b_of_h(h, variant)
    phi, fact, rows, b = torch.expm1(hh) / hh - 1.0, 1.0, [], []
    r = torch.stack([*rks, torch.ones((), dtype=torch.float64)])
    for n in range(1, k + 1):
        rows.append(r ** (n - 1))
        b.append(phi * fact / b_h)
        fact *= n + 1
        phi = phi / hh - 1.0 / fact
    R, b = torch.stack(rows), torch.stack(b)
    return torch.linalg.solve(R[:-1, :-1], b[:-1]) if predictor else torch.linalg.solve(R, b)


def _unipc_step(x, m, lam, theta, sigma, i, k, variant, m_new=None):
    """From grid point i to i + 1 with order k: UniP, or UniC when m_new (the data prediction at i + 1) is given."""
    j, predictor = i + 1, m_new is None
    h = lam[j] - lam[i]
    rks = [(lam[i - q] - lam[i]) / h for q in range(1, k)]
    d1s = [(m[-1 - q] - m[-1]) / rk for q, rk in zip(range(1, k), rks, strict=True)]
    rho = _unipc_weights(rks, h, k, predictor, variant) if (k > 1 or not predictor) else None
    out = (sigma[j] / sigma[i]) * x - theta[j] * torch.expm1(-h) * m[-1]
    res = sum(rho[q] * d for q, d in enumerate(d1s)) if d1s else 0.0
    if not predictor:
        res = res + rho[-1] * (m_new - m[-1])
    return out - theta[j] * _b_of_h(h, variant) * res


@torch.no_grad()
def unipc(
    denoiser: Denoiser, x: torch.Tensor, ts, order: int = 3, variant: str = "bh2", lower_order_final: bool = True
) -> torch.Tensor:
    r"""UniPC (Zhao et al. 2023), data prediction, multistep order ``order`` (3: the recommendation for
    unconditional models), B(h) = e^{-h} - 1 ("bh2") or -h ("bh1").

    At each grid point: evaluate m_i = x0_hat(x_i, t_i); correct x_i with UniC (its order the previous
    predictor's, using m_i: no extra evaluation, m_i is not re-evaluated at the corrected x_i); then predict
    x_{i+1} with UniP of order min(order, i + 1, M - i if ``lower_order_final``). As diffusers'
    ``UniPCMultistepScheduler`` (solver_type "bh2", ``final_sigmas_type="zero"``): the last step returns m at
    ts[-1]. ts (M,), x (n, d); NFE = M.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3; got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2'; got {variant!r}")
    x, ts, theta, sigma, dtype = prepare(denoiser, x, ts)
    lam = torch.log(theta) - torch.log(sigma)
    m, last_x, last_k = [], None, 0
    for i in range(len(ts)):
        m_new = _x0(denoiser, x, ts[i], theta[i], sigma[i], dtype)
        if i > 0:  # UniC: correct x_i with the evaluation just made
            x = _unipc_step(last_x, m, lam, theta, sigma, i - 1, last_k, variant, m_new=m_new)
        m = (m + [m_new])[-order:]
        if i == len(ts) - 1:
            return m_new
        k = min(order, i + 1, len(ts) - i if lower_order_final else order)
        last_x, last_k = x, k
        x = _unipc_step(x, m, lam, theta, sigma, i, k, variant)
    raise AssertionError("unreachable")
