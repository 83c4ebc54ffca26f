r"""The stable fixed points of a learned drift at d = 784 on a CPU: a damped flow instead of the iterated map.

``empirical.measure.fixed_points.stable_fixed_points`` iterates x <- Phi(x). For a finite data set that is the
mean-shift iteration and converges; for a 28x28 U-Net it does not: away from the noisy images' shell the network's
dPhi/dx has eigenvalues far below -1 (measured: mu down to -6.7 on Fashion-MNIST at t = 0.68, all with Re mu < 1), so
the map oscillates around attractors that the drift itself converges to. Here each start follows the drift's own flow,
explicit Euler steps x <- x + h (Phi(x) - x) with a step h of its own: halved whenever its residual |Phi(x) - x|
grows by half in one step, enlarged by 1.1 (up to ``h_max``) otherwise. The search runs in float32 (the network's native
precision, 4-6x faster than float64 here); trajectories that come within ``merge_tol`` of an earlier one stop
there (they share its limit), those that leave beyond ``escape`` times the starts' largest norm are dropped (a
network's eps does not grow with |x| the way the exact (x - theta x0) / sigma does, so its drift need not confine).
Each limit is then polished by Newton in float64 (GMRES on float32 Jacobian-vector products, to Eisenstat and
Walker's tolerances: an inexact Newton whose float64 residual certifies the root) and kept when the eigenvalue of
dPhi/dx of largest real part, from ARPACK on the same products, is below 1.

``FlowSearch`` is the search as a callable for ``empirical.measure.fixed_points.measure_critical_time(search=...)``; it
counts the network evaluations (rows through the network; one Jacobian-vector product counts one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse.linalg as sla
import torch

from empirical.measure.fixed_points import MeasuredFixedPoint, _device, _jvp_operator, _near, _phi, map_coeffs
from empirical.models.denoiser import Denoiser
from theory.checks import check_int, check_tolerance

__all__ = ["FlowSearch", "damped_flow", "newton_krylov", "top_eig_krylov", "count_rows"]


def count_rows(denoiser) -> list[int]:
    """A one-element list that counts the rows through ``denoiser.net`` from now on (a forward hook)."""
    counter = [0]

    def hook(_module, args):
        counter[0] += int(args[0].shape[0]) if args[0].dim() > 1 else 1

    denoiser.net.register_forward_pre_hook(hook)
    return counter


def damped_flow(den, starts, t, kappa, *, max_iter=400, tol=1e-5, h0=0.15, h_max=0.2, merge_tol=1e-3, escape=4.0):
    """Euler steps of dx/dtau = Phi(x) - x from ``starts`` (n, d), each with its own adaptive step (module docstring).

    Returns (x (n, d), residual (n,) relative to 1 + |x|, status (n,)): status -1 converged (residual < tol),
    -2 escaped, -3 still moving after ``max_iter``, j >= 0 merged into trajectory j.
    """
    x = starts.detach().clone()
    n = len(x)
    h = torch.full((n,), float(h0), dtype=x.dtype, device=x.device)
    res = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    status = torch.full((n,), -3, dtype=torch.long, device=x.device)
    radius = escape * (1.0 + float(starts.norm(dim=1).max()))
    with torch.no_grad():
        for it in range(max_iter):
            idx = (status == -3).nonzero().ravel()
            if len(idx) == 0:
                break
            F = _phi(den, x[idx], t, kappa) - x[idx]
            r = F.norm(dim=1) / (1.0 + x[idx].norm(dim=1))
            grew = r > 1.5 * res[idx]  # an explicit step past its stability bound: the residual blows up
            h[idx] = torch.where(grew, 0.5 * h[idx], torch.clamp(1.1 * h[idx], max=h_max))
            res[idx] = r
            x[idx] = x[idx] + h[idx, None] * F
            status[idx[r < tol]] = -1
            status[idx[x[idx].norm(dim=1) > radius]] = -2
            if it % 10 == 9:
                _merge(x, status, merge_tol)
    for i in range(n):  # a trajectory merged into one that merged later: point it at the end of the chain
        while status[i] >= 0 and status[int(status[i])] >= 0:
            status[i] = status[int(status[i])]
    return x, res, status


def _merge(x, status, merge_tol):
    """Stop each moving trajectory that is within merge_tol (1 + |x|) of an earlier non-escaped one."""
    live = (status != -2).nonzero().ravel()
    if len(live) < 2:
        return
    D = torch.cdist(x[live], x[live])
    close = D < merge_tol * (1.0 + x[live].norm(dim=1))[None, :]
    for a in range(1, len(live)):
        i = int(live[a])
        if status[i] == -3:
            earlier = close[a, :a].nonzero().ravel()
            if len(earlier):
                j = int(live[int(earlier[0])])
                status[i] = j if status[j] < 0 else status[j]


def newton_krylov(den64, den32, x, t, kappa, *, n_iter=8, tol=1e-9, krylov=60, rtol=None):
    """Newton on F(x) = Phi(x) - x in float64 from x (d,) numpy; GMRES (``krylov`` steps, one restart cycle) on the
    float32 network's jvps. Returns (x, |F(x)| / (1 + |x|)), stopping once that is below ``tol``.

    Each GMRES solve stops at a relative residual ``rtol``; None chooses it by Eisenstat and Walker's rule
    (``_forcing``): loose while Newton is far from the root, tight once it converges. Far from a root a tight
    solve is wasted (``benchmarks/newton_forcing.py``, a 28x28 U-Net at t = 0.9: 132-142 jvps a limit instead of
    520-534 at rtol = 1e-7, and converged where the fixed tolerance had not after 8 steps)."""
    x, dev = np.asarray(x, dtype=np.float64), _device(den64)
    prev = eta = None
    for _ in range(n_iter + 1):
        with torch.no_grad():
            F = (_phi(den64, torch.as_tensor(x, device=dev)[None], t, kappa)[0]).cpu().numpy() - x
        res = float(np.linalg.norm(F) / (1.0 + np.linalg.norm(x)))
        if not math.isfinite(res) or res < tol:
            break
        eta = rtol if rtol is not None else _forcing(res, prev, eta, tol)
        op = _jvp_operator(den32, torch.as_tensor(x, dtype=torch.float32, device=dev), t, kappa, shift=1.0)
        step, _ = sla.gmres(op, -F, rtol=eta, restart=krylov, maxiter=1)
        x, prev = x + step, res
    return x, res


def _forcing(res, prev, eta_prev, tol, eta_max=0.5, floor=1e-7):
    """GMRES's relative tolerance for the next Newton step: Eisenstat & Walker (1996), choice 2 (gamma 0.9,
    alpha 2) with their safeguard, no tighter than needed to reach ``tol`` (0.5 tol / res) nor than ``floor``
    (float32 jvps carry no more digits). ``res`` and ``prev`` are the residuals the search certifies,
    |F| / (1 + |x|), not their |F|: the ratio differs by (1 + |x_prev|) / (1 + |x|), near 1 once x settles."""
    if prev is None:
        return eta_max
    eta = 0.9 * (res / prev) ** 2
    if 0.9 * eta_prev**2 > 0.1:  # a sudden drop of the residual does not make the next solve tight at once
        eta = max(eta, 0.9 * eta_prev**2)
    return min(eta_max, max(eta, 0.5 * tol / res, floor))


def top_eig_krylov(den32, x, t, kappa, tol=1e-4) -> complex:
    """The eigenvalue of dPhi/dx of largest real part at x (ARPACK on the float32 network's jvps)."""
    op = _jvp_operator(den32, torch.as_tensor(x, dtype=torch.float32, device=_device(den32)), t, kappa, shift=0.0)
    if op.shape[0] <= 16:  # ARPACK needs d > k + 1; a small J is cheaper column by column
        ev = np.linalg.eigvals(np.stack([op.matvec(e) for e in np.eye(op.shape[0])], axis=1))
        return complex(ev[np.argmax(ev.real)])
    return complex(sla.eigs(op, k=1, which="LR", tol=tol, return_eigenvectors=False)[0])


@dataclass
class FlowSearch:
    """``search(t, starts, eta)`` -> stable points, for ``measure_critical_time(search=...)`` (module docstring).

    ``den64`` is the float64 denoiser; a float32 copy runs the flow and the jvps. ``evaluations`` counts the rows
    through the network (both copies); ``log`` has one line per time searched (starts, limits, stable points)."""

    den64: object
    max_iter: int = 400
    tol: float = 1e-5
    merge_tol: float = 1e-3
    newton_tol: float = 1e-8
    log: list = field(default_factory=list)

    def __post_init__(self):
        import copy

        if not isinstance(self.den64, Denoiser):
            raise TypeError(f"den64 must be an empirical Denoiser; got {type(self.den64).__name__}")
        self.max_iter = check_int("max_iter", self.max_iter, 1)
        for name in ("tol", "merge_tol", "newton_tol"):  # a zero tolerance divides by zero or never stops
            setattr(self, name, check_tolerance(name, getattr(self, name)))
        if not isinstance(self.log, list):
            raise TypeError(f"log must be a list; got {type(self.log).__name__}")
        self.den32 = copy.deepcopy(self.den64).float()
        self._counters = [count_rows(self.den64), count_rows(self.den32)]

    @property
    def evaluations(self) -> int:
        return sum(c[0] for c in self._counters)

    def __call__(self, t, starts, eta=1.0) -> list[MeasuredFixedPoint]:
        kappa, _ = map_coeffs(self.den64, t, eta)
        starts = starts.to(_device(self.den32), torch.float32)
        x, _, status = damped_flow(
            self.den32, starts, t, kappa, max_iter=self.max_iter, tol=self.tol, merge_tol=self.merge_tol
        )
        status = status.cpu()
        heads = [i for i in range(len(x)) if status[i] in (-1, -3)]
        basin = {i: 1 + int((status == i).sum()) for i in heads}
        points, unstable = [], []  # unstable: roots with Re mu >= 1, so that a limit polished onto one skips ARPACK
        for i in sorted(heads, key=lambda i: -basin[i]):
            y, r = newton_krylov(self.den64, self.den32, x[i].double().cpu().numpy(), t, kappa, tol=self.newton_tol)
            if not r < self.newton_tol or _near(y, unstable, self.merge_tol) is not None:
                continue
            k = _near(y, [p.x for p in points], self.merge_tol)
            if k is not None:  # two limits polished onto one point
                points[k] = replace(points[k], basin=points[k].basin + basin[i])
                continue
            mu = top_eig_krylov(self.den32, y, t, kappa)
            if mu.real < 1.0:
                points.append(MeasuredFixedPoint(y, mu, r, basin[i], float("nan")))
            else:
                unstable.append(y)
        self.log.append(
            {
                "t": float(t),
                "starts": len(x),
                "escaped": int((status == -2).sum()),
                "limits": len(heads),
                "stable": len(points),
                "mu": [p.mu.real for p in points],
                "basin": [p.basin for p in points],
                "evaluations": self.evaluations,
            }  # fmt: skip
        )
        return points
