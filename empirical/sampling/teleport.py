r"""Analytic teleportation (Wang & Vastola 2023, "The hidden linear structure in score-based models and its
application"): follow the probability-flow ODE of the Gaussian approximation N(mu, Sigma) of the data in closed
form from T down to t_skip, then hand the state over to the network.

For Gaussian data the marginal at t is N(theta mu, theta^2 Sigma + sigma^2 I). In Sigma's eigenbasis
(Sigma = U diag(lam) U^T) the ODE decouples, and along it

    z_k = u_k^T (x_t - theta_t mu) / sqrt(v_k(t)),   v_k(t) = theta_t^2 lam_k + sigma_t^2,

is constant (d/dt log y_k = a + g^2 / (2 v_k) = d/dt log sqrt(v_k) for y_k = u_k^T (x - theta mu)), so the
flow map from t to s is x_s = theta_s mu + U diag(sqrt(v(s) / v(t))) U^T (x_t - theta_t mu): linear, exact,
and one matrix product for any t_skip.

Relation to the Gaussian late start (``GaussianInit``): the flow map carries the Gaussian's marginal at T onto its
marginal at t_skip, so teleporting x_T ~ N(theta_T mu, v(T)) lands exactly on gls's N(theta mu, theta^2 Sigma +
sigma^2 I) at t_skip; from the prior N(0, I) (what the vanilla sampler draws) it lands on it up to
O(theta_T^2) (VPLinear: theta(1)^2 = 4.3e-5). Where they differ is the coupling: teleport is a deterministic
function of x_T (the same x_T as a vanilla run of the same seed, so the two runs are paired), gls draws fresh
noise at t_skip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from empirical.sampling.gaussian_init import (
    FULL_COV_MAX_DIM,
    _check_cov_memory,
    _check_rank,
    _top_eigs,
    check_rows,
    theta_sigma,
)
from theory.schedules import Schedule

__all__ = ["Teleport"]


@dataclass(frozen=True)
class Teleport:
    r"""The closed-form PF-ODE flow of N(mean, Sigma) under ``schedule``, with Sigma = U diag(eigvals) U^T +
    rest (I - U U^T): U (d, k) orthonormal; k = d (rest unused) for a full covariance, else the top k
    directions plus an isotropic remainder ``rest`` (the mean of the other eigenvalues). Float64 CPU tensors.
    """

    mean: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    schedule: Schedule
    rest: float = 0.0

    @classmethod
    def from_moments(cls, mean0, cov0, schedule: Schedule) -> Teleport:
        """From the data's mean (d,) and covariance (d, d) (full eigendecomposition)."""
        mean0 = torch.as_tensor(mean0, dtype=torch.float64).reshape(-1)
        cov0 = torch.as_tensor(cov0, dtype=torch.float64)
        if cov0.shape != (mean0.numel(), mean0.numel()):
            raise ValueError(f"cov0 must have shape ({mean0.numel()}, {mean0.numel()}); got {tuple(cov0.shape)}")
        if not bool(torch.isfinite(mean0).all() and torch.isfinite(cov0).all()):
            raise ValueError("mean0 and cov0 must be finite; they contain NaN or inf")
        lam, u = torch.linalg.eigh(0.5 * (cov0 + cov0.T))
        return cls(mean=mean0, eigvals=lam.clamp(min=0.0), eigvecs=u, schedule=schedule)

    @classmethod
    def fit(cls, x_train, schedule: Schedule, rank: int | None = None) -> Teleport:
        """From the training set (n, d): its mean and unbiased covariance, as ``GaussianInit.analytic``.
        rank=None: the full covariance for d <= 4096, else the top 256 directions plus an isotropic rest."""
        x = check_rows("x_train", x_train)
        n, d = x.shape
        k = _check_rank(rank, d)
        mean0 = x.mean(0)
        a = (x - mean0) / (n - 1) ** 0.5
        if k is None or k == d:
            _check_cov_memory(d, n)
            return cls.from_moments(mean0, a.T @ a, schedule)
        lam, u = _top_eigs(a, k, torch.Generator().manual_seed(0))
        rest = float(((a**2).sum() - lam.sum()).clamp(min=0.0)) / (d - lam.numel())
        return cls(mean=mean0, eigvals=lam, eigvecs=u, schedule=schedule, rest=rest)

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def _scales(self, t_from: float, t_to: float) -> tuple[torch.Tensor, float, float, float]:
        """sqrt(v(t_to) / v(t_from)) per eigen-direction and for the rest, and theta at both ends."""
        th0, s0 = theta_sigma(self.schedule, t_from)
        th1, s1 = theta_sigma(self.schedule, t_to)
        ratio = ((th1**2 * self.eigvals + s1**2) / (th0**2 * self.eigvals + s0**2)).sqrt()
        rest = ((th1**2 * self.rest + s1**2) / (th0**2 * self.rest + s0**2)) ** 0.5
        return ratio, rest, th0, th1

    def flow(self, x: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
        """The exact PF-ODE image at t_to of x (n, d) at t_from (either direction in time); (n, d) float64."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}); got {tuple(x.shape)}")
        ratio, rest, th0, th1 = self._scales(t_from, t_to)
        y = x.cpu() - th0 * self.mean
        coef = y @ self.eigvecs  # (n, k)
        out = th1 * self.mean + (coef * ratio) @ self.eigvecs.T
        if self.eigvecs.shape[1] < self.dim:  # the isotropic rest: the part of y outside span(U)
            out = out + rest * (y - coef @ self.eigvecs.T)
        return out.to(x.device)

    def __call__(self, x_T: torch.Tensor, t_skip: float) -> torch.Tensor:
        """Teleport x_T (n, d), drawn at T, to t_skip."""
        return self.flow(x_T, self.schedule.T, t_skip)

    def marginal_from_prior(self, t_skip: float) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean (d,) and covariance (d, d) at t_skip of teleported x_T ~ N(0, I), in closed form: with
        A = U diag(sqrt(v(t_skip) / v(T))) U^T, N(theta_s mu - A theta_T mu, A A^T). Full covariance only."""
        if self.eigvecs.shape[1] < self.dim:
            raise ValueError("marginal_from_prior needs the full covariance (a Teleport with rank=None, d <= 4096)")
        if self.dim > FULL_COV_MAX_DIM:
            _check_cov_memory(self.dim)
        ratio, _, th0, th1 = self._scales(self.schedule.T, t_skip)
        u = self.eigvecs
        a = (u * ratio) @ u.T
        return th1 * self.mean - th0 * (a @ self.mean), a @ a.T
