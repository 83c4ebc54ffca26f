r"""Generation with a learned score, cloning, and the potential along a path.

Euler-Maruyama for the eta family with the learned score (``Denoiser.drift``, whose coefficient
k = (1 + eta^2)/2 g^2 comes from ``theory.EtaFamily``): in the generative direction, h_i = t_i - t_{i+1} > 0,

    x_{i+1} = x_i + h_i [ -a x_i + k score(x_i, t_i) ] + eta g(t_i) sqrt(h_i) xi_i.

Cloning branches each generated path into copies at a time t and measures how often the copies end in
the same class; the potential along a straight path is the line integral of the drift, divided by k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from empirical.measure.fixed_points import _device
from empirical.models.denoiser import T_MIN, Denoiser, schedule_coeffs
from theory.family import EtaFamily

__all__ = ["euler_maruyama", "MeasuredCloningCurve", "cloning", "potential_along_path"]


def euler_maruyama(denoiser: Denoiser, x_start, ts, *, eta: float = 1.0, generator: torch.Generator | None = None):
    """Euler-Maruyama for the eta family with the learned score on the decreasing grid ``ts`` (M,):

        x_{i+1} = x_i + h_i b(x_i, t_i) + eta g(t_i) sqrt(h_i) xi_i,   h_i = t_i - t_{i+1} > 0,

    from x_start (n, d) at ts[0] (noise drawn on the CPU from ``generator``, so runs are reproducible
    on any device). Returns every state, (M, n, d); the last is at ts[-1].
    """
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or len(ts) < 2 or np.any(np.diff(ts) >= 0):
        raise ValueError("ts must be a strictly decreasing grid of at least 2 forward times")
    x = torch.as_tensor(x_start).detach().clone()
    out = [x]
    with torch.no_grad():
        for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
            h = t0 - t1
            x = x + h * denoiser.drift(x, t0, eta)
            if eta > 0:
                (g2,) = schedule_coeffs(denoiser.schedule, t0, "g2")
                xi = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device, x.dtype)
                x = x + eta * math.sqrt(float(g2) * h) * xi
            out.append(x)
    return torch.stack(out)


@dataclass(frozen=True)
class MeasuredCloningCurve:
    """Probability that two clones branched at ``t`` end in the same class; ``chance`` = sum_c p_c^2 of
    the parents' final classes (the value before any commitment); ``midpoint`` where the curve crosses
    (chance + 1) / 2 (linear interpolation; nan if it does not)."""

    t: np.ndarray
    p_agree: np.ndarray
    chance: float
    midpoint: float
    n_parents: int
    n_clones: int


def cloning(
    denoiser: Denoiser,
    classify,
    t_branch,
    *,
    n_parents: int = 64,
    n_clones: int = 8,
    n_steps: int = 200,
    eta: float = 1.0,
    seed: int = 0,
    t_end: float = T_MIN,
) -> MeasuredCloningCurve:
    """Generate ``n_parents`` paths from N(0, I) at T, branch each into ``n_clones`` copies at every
    time of ``t_branch`` (copies share the state, not the noise), finish them, and classify the
    denoised end points (``classify``: (n, d) tensor -> (n,) int labels).

    The grid is uniform in t with n_steps steps from T to t_end; branch times are snapped to it.
    """
    T, d = denoiser.schedule.T, denoiser.dim
    if n_parents < 1 or n_clones < 2:
        raise ValueError(f"need n_parents >= 1 and n_clones >= 2; got {n_parents}, {n_clones}")
    ts = np.linspace(T, t_end, n_steps + 1)
    gen = torch.Generator().manual_seed(seed)
    parents = euler_maruyama(
        denoiser,
        torch.randn(n_parents, d, generator=gen).to(_device(denoiser), _dtype(denoiser)),
        ts,
        eta=eta,
        generator=gen,
    )

    def finish(x, i):
        end = euler_maruyama(denoiser, x, ts[i:], eta=eta, generator=gen)[-1] if i < n_steps else x
        with torch.no_grad():
            return np.asarray(classify(denoiser.x0(end, t_end)))

    final = finish(parents[-1], n_steps)
    freq = np.bincount(final) / len(final)
    chance = float(np.sum(freq**2))
    t_snapped, p = [], []
    for tb in t_branch:
        i = int(np.argmin(np.abs(ts - tb)))
        labels = finish(parents[i].repeat_interleave(n_clones, 0), i).reshape(n_parents, n_clones)
        agree = [np.sum(c * (c - 1)) / (n_clones * (n_clones - 1)) for c in map(np.bincount, labels)]
        t_snapped.append(ts[i])
        p.append(float(np.mean(agree)))
    order = np.argsort(t_snapped)[::-1]
    t_arr, p_arr = np.array(t_snapped)[order], np.array(p)[order]
    half, mid = 0.5 * (chance + 1.0), float("nan")
    for j in range(1, len(t_arr)):  # first upward crossing of the half level in the generative direction
        if p_arr[j - 1] < half <= p_arr[j]:
            w = (half - p_arr[j - 1]) / (p_arr[j] - p_arr[j - 1])
            mid = float(t_arr[j - 1] + w * (t_arr[j] - t_arr[j - 1]))
            break
    return MeasuredCloningCurve(t_arr, p_arr, chance, mid, n_parents, n_clones)


def potential_along_path(denoiser: Denoiser, xa, xb, t: float, *, eta: float = 1.0, n: int = 101, extend: float = 0.25):
    """The potential u_eta / k along the straight path gamma(s) = xa + s (xb - xa), s in [-extend, 1 + extend],
    as the line integral u(s) = -(1/k) int b(gamma) . gamma' ds (trapezoidal rule), zero at s = 0.

    For an exact score this is the theory's potential difference (``theory.potential`` / k); a learned
    drift need not be a gradient, so it is the work along this path. Returns (s (n,), u (n,)).
    """
    xa, xb = (torch.as_tensor(v).detach().cpu().double() for v in (xa, xb))
    s = np.linspace(-extend, 1.0 + extend, n)
    path = xa[None] + torch.as_tensor(s)[:, None] * (xb - xa)[None]
    k = float(schedule_coeffs(EtaFamily(denoiser.schedule, eta), float(t), "k")[0])
    with torch.no_grad():
        b = denoiser.drift(path.to(_device(denoiser), _dtype(denoiser)), float(t), eta).double().cpu()
    db = (b @ (xb - xa)).numpy() / k
    u = -np.concatenate([[0.0], np.cumsum(0.5 * (db[1:] + db[:-1]) * np.diff(s))])
    return s, u - np.interp(0.0, s, u)


def _dtype(denoiser):
    return next(denoiser.parameters(), torch.zeros((), dtype=torch.float64)).dtype
