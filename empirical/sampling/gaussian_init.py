r"""The Gaussian late start: N(mu_t, Sigma_t) at t_start, the first two moments of the diffused training set.

``init_vanilla`` draws N(0, I), the VP prior at T; ``GaussianInit`` is the Gaussian late start (analytic from the
training set's moments, empirical from one forward draw per image as the paper estimates it, or from given
moments), with a full covariance up to d = 4096 and a low-rank plus diagonal one above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from empirical.models.denoiser import schedule_coeffs
from empirical.sampling.grids import _real
from theory.checks import check_int, check_memory
from theory.schedules import Schedule

__all__ = ["init_vanilla", "GaussianInit", "FULL_COV_MAX_DIM", "DEFAULT_RANK"]

FULL_COV_MAX_DIM = 4096  # above this, GaussianInit keeps a low-rank plus diagonal covariance
DEFAULT_RANK = 256


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


def check_rows(name: str, x) -> torch.Tensor:
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
        th, s = theta_sigma(schedule, t_start)
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
        x = check_rows("x_train", x_train)
        th, s = theta_sigma(schedule, t_start)
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
        x = check_rows("x_train", x_train)
        th, s = theta_sigma(schedule, t_start)
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


def theta_sigma(schedule: Schedule, t_start) -> tuple[float, float]:
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
