r"""The eps-prediction preconditioning, kept apart from the backbone network (as EDM's ``EDMPrecond``).

A ``Denoiser`` wraps any backbone ``net(x, c_noise)`` (x of shape (n, d), c_noise of shape (n,)) and
the *same* ``theory.Schedule`` object the theory uses; theta(t) and sigma(t) are never recomputed
here. From eps_hat(x, t) it gives the learned score, posterior mean and the generative drift of the
eta family, so the learned model plugs into the drift and potential of ``theory.dynamics``:

    score(x, t) = -eps_hat(x, t) / sigma(t),    x0_hat = (x - sigma eps_hat) / theta,
    drift(x, t) = -a(t) x + (1 + eta^2)/2 g^2(t) score(x, t).

Every array is a flat row of pixels, (n, d), as ``empirical.data.datasets`` returns them.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import torch
from torch import nn

from theory.checks import check_data, check_schedule
from theory.family import EtaFamily
from theory.schedules import Schedule, VPLinear

__all__ = ["Denoiser", "ExactDenoiser", "schedule_coeffs", "T_MIN"]

T_MIN = 1e-3  # smallest forward time trained and sampled: the score of data is singular at t = 0


def schedule_coeffs(
    schedule: Schedule | EtaFamily, t, *names: str, like: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Evaluate ``schedule.<name>(t)`` for each name in float64 (jax on the CPU) and return torch tensors.

    ``schedule`` may also be a ``theory.EtaFamily`` (names "a", "k", "c", "kappa"): its coefficients are jax too.

    ``t`` is a tensor, array or float of forward times; the results have the dtype and device of
    ``like`` (default float64 on the CPU) and the shape of ``t``.

    >>> th, s = schedule_coeffs(VPLinear(), torch.tensor([0.2926416543], dtype=torch.float64), "theta", "sigma")
    >>> round(float(th), 8), round(float(th**2 + s**2), 12)
    (0.64359425, 1.0)
    """
    t64 = np.asarray(t.detach().cpu().double() if isinstance(t, torch.Tensor) else t, dtype=np.float64)
    dtype, device = (like.dtype, like.device) if like is not None else (torch.float64, "cpu")
    return tuple(torch.tensor(np.array(c), dtype=dtype, device=device) for c in _compiled(schedule, names)(t64))


@functools.lru_cache(maxsize=64)
def _compiled(schedule: Schedule | EtaFamily, names: tuple[str, ...]):
    """One jitted call for several schedule functions (eager jax costs ~1 ms a call, a training step ~10 ms)."""
    return jax.jit(lambda t: tuple(getattr(schedule, n)(t) for n in names))


class Denoiser(nn.Module):
    """eps-prediction wrapper: ``forward(x, t)`` returns eps_hat of the same shape as x.

    The backbone sees the unscaled x_t (unit variance under VP) and c_noise = 1000 t / T, the
    DDPM convention for its sinusoidal time embedding.
    """

    def __init__(self, net: nn.Module, schedule: Schedule | None = None):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch nn.Module; got {type(net).__name__}")
        self.net = net
        self.schedule = VPLinear() if schedule is None else check_schedule(schedule)

    @property
    def dim(self) -> int:
        """d, the length of a flat image row."""
        net = self.net
        return int(np.prod(net.image_shape)) if hasattr(net, "image_shape") else int(net.inp.in_features)

    def _t(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},); got {tuple(t.shape)}")
        lo, hi = float(t.min()), float(t.max())
        if not (0.0 < lo and hi <= self.schedule.T):
            raise ValueError(f"t must lie in (0, T={self.schedule.T}]; got values in [{lo}, {hi}]")
        return t

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        return self._eps(x, self._t(x, t).to(device=x.device, dtype=x.dtype))

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, (1000.0 / self.schedule.T) * t).to(x.dtype)

    def _x0_at(self, t: float, like: torch.Tensor):
        """x -> x0_hat(x) for one point at a fixed t, with the coefficients computed outside autodiff."""
        self._t(like[None], t)
        theta, sigma = (float(c) for c in schedule_coeffs(self.schedule, float(t), "theta", "sigma"))
        tt = torch.full((1,), float(t), dtype=like.dtype, device=like.device)
        return lambda v: (v - sigma * self._eps(v[None], tt)[0]) / theta

    def loss(self, x0: torch.Tensor, generator: torch.Generator | None = None, t_range=None) -> torch.Tensor:
        """Denoising score matching, E ||eps_hat(theta x0 + sigma eps, t) - eps||^2 / d, t ~ U(T_MIN, T), or
        U(lo, hi) for ``t_range = (lo, hi)`` within [T_MIN, T] (a network that learns one window of times).

        ``generator`` (on the CPU) draws t and eps, so a seeded run is reproducible on any device.
        """
        lo, hi = (T_MIN, self.schedule.T) if t_range is None else (float(v) for v in t_range)
        if not T_MIN <= lo < hi <= self.schedule.T:
            raise ValueError(f"t_range must satisfy T_MIN={T_MIN} <= lo < hi <= T={self.schedule.T}; got {t_range!r}")
        n = x0.shape[0]
        t = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        theta, sigma = schedule_coeffs(self.schedule, t, "theta", "sigma", like=x0)
        xt = theta[:, None] * x0 + sigma[:, None] * eps
        return torch.mean((self(xt, t) - eps) ** 2)

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """Learned grad log p_t(x) = -eps_hat / sigma(t)."""
        (sigma,) = schedule_coeffs(self.schedule, self._t(x, t), "sigma", like=x)
        return -self(x, t) / sigma[:, None]

    def x0(self, x: torch.Tensor, t) -> torch.Tensor:
        """Learned posterior mean E[x_0 | x_t = x] = (x - sigma eps_hat) / theta (Tweedie); needs theta(t) > 0."""
        theta, sigma = schedule_coeffs(self.schedule, self._t(x, t), "theta", "sigma", like=x)
        if not bool((theta > 0).all()):
            raise ValueError(f"t must be below T for x0 on {self.schedule!r}: theta = 0 there, x0_hat is undefined")
        return (x - sigma[:, None] * self(x, t)) / theta[:, None]

    def x0_jacobian(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """d x0_hat / dx at one point x (d,) -> (d, d), by reverse-mode autodiff (exact for the network)."""
        return torch.func.jacrev(self._x0_at(t, x))(x)

    def x0_jvp(self, x: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
        """(d x0_hat / dx) v at one point x (d,), by forward-mode autodiff, without forming the Jacobian."""
        return torch.func.jvp(self._x0_at(t, x), (x,), (v,))[1]

    def drift(self, x: torch.Tensor, t, eta: float = 1.0) -> torch.Tensor:
        """Generative drift -a x + k score, k = (1 + eta^2)/2 g^2 (``theory.EtaFamily``), as ``theory.drift`` with
        the learned score."""
        a, k = schedule_coeffs(EtaFamily(self.schedule, eta), self._t(x, t), "a", "k", like=x)
        return -a[:, None] * x + k[:, None] * self.score(x, t)


class ExactDenoiser(Denoiser):
    """The exact eps of a ``theory`` data model (DeltaMixture or GaussianMixture): eps = -sigma grad log p_t.

    It has the Denoiser interface, so samplers and measurements can be checked against the theory
    with no training error. Computed by jax in float64 and returned in x's floating dtype and device (float64 for
    an integer x: eps is not an integer).

    >>> from theory import DeltaMixture
    >>> den = ExactDenoiser(DeltaMixture([[-1.0], [1.0]]))
    >>> x = torch.tensor([[0.3]], dtype=torch.float64)
    >>> th = 0.6435942529055827  # theta(t) at t = 0.2926416543: E[x0 | x] = tanh(theta x / sigma^2)
    >>> round(float(den.x0(x, 0.2926416543)[0, 0]), 6), round(float(np.tanh(th * 0.3 / (1 - th**2))), 6)
    (0.318166, 0.318166)
    """

    def __init__(self, data, schedule: Schedule | None = None):
        super().__init__(nn.Identity(), schedule)
        self.data = check_data(data)

    @property
    def dim(self) -> int:
        return int(self.data.dim)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = self._t(x, t)
        x64 = x.detach().cpu().double().numpy()
        score = np.array(self.data.score(x64, t.numpy(), self.schedule))
        (sigma,) = schedule_coeffs(self.schedule, t, "sigma")
        return torch.tensor(-sigma.numpy()[:, None] * score, dtype=_float(x), device=x.device)

    # Tweedie: x0_hat = (x + sigma^2 grad log p_t) / theta, so d x0_hat / dx = (I + sigma^2 Hess log p_t) / theta.
    def x0_jacobian(self, x: torch.Tensor, t: float) -> torch.Tensor:
        theta, s2 = (float(c) for c in schedule_coeffs(self.schedule, float(t), "theta", "sigma2"))
        H = np.array(self.data.hessian(x.detach().cpu().double().numpy(), float(t), self.schedule))
        return torch.tensor((np.eye(len(H)) + s2 * H) / theta, dtype=_float(x), device=x.device)

    def x0_jvp(self, x: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
        theta, s2 = (float(c) for c in schedule_coeffs(self.schedule, float(t), "theta", "sigma2"))
        x64, v64 = (y.detach().cpu().double().numpy() for y in (x, v))
        Hv = np.array(self.data.hvp(x64, v64, float(t), self.schedule))
        return torch.tensor((v64 + s2 * Hv) / theta, dtype=_float(x), device=x.device)


def _float(x: torch.Tensor) -> torch.dtype:
    """The dtype of a result computed from ``x``: its own if floating, else float64 (a uint8 image gives real eps)."""
    return x.dtype if x.is_floating_point() else torch.float64
