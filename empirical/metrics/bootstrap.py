r"""Bootstrap standard errors of FID: resample the generated features with replacement against a fixed reference.

A paired bootstrap draws one set of resampled indices (``bootstrap_indices``) and applies it to every feature set of
a sweep (the same sample sizes, the same seed of the generated samples), so that replicate b of a curve is coherent
and the spread of a difference FID(t) - FID(t') is measured with its correlation. ``Reference`` holds the reference's
Gaussian with its covariance's square root computed once (one eigendecomposition per replicate instead of two).

>>> rng = np.random.default_rng(0)
>>> ref = Reference.of(rng.normal(size=(500, 3)))
>>> boot = bootstrap_fid(rng.normal(size=(50, 3)), ref, bootstrap_indices(50, 30, seed=1))
>>> boot.shape, bool(boot.std() > 0)
((30,), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from empirical._util.cli import is_int

__all__ = ["Reference", "bootstrap_indices", "bootstrap_fid"]


@dataclass
class Reference:
    """The Gaussian of the reference features (mean, covariance, its square root and trace), computed once."""

    mu: np.ndarray
    cov: np.ndarray
    root: np.ndarray
    trace: float

    @classmethod
    def of(cls, feats) -> Reference:
        """The reference of features (n, k): sample mean and unbiased covariance, as ``empirical.metrics.fid``."""
        feats = np.asarray(feats, dtype=np.float64)
        cov = np.atleast_2d(np.cov(feats.T))
        lam, u = np.linalg.eigh(cov)
        return cls(feats.mean(0), cov, (u * np.sqrt(np.clip(lam, 0.0, None))) @ u.T, float(np.trace(cov)))

    def fid(self, mu: np.ndarray, cov: np.ndarray) -> float:
        """|mu - mu_r|^2 + tr(C + C_r - 2 (C_r^1/2 C C_r^1/2)^1/2), as ``empirical.metrics.frechet_distance``."""
        middle = self.root @ cov @ self.root
        tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0, None)).sum()
        d = mu - self.mu
        return float(max(d @ d + np.trace(cov) + self.trace - 2.0 * tr_sqrt, 0.0))

    def score(self, feats) -> float:
        """FID of features (n, k) against the reference: ``empirical.metrics.fid(feats, reference features)``."""
        feats = np.asarray(feats, dtype=np.float64)
        return self.fid(feats.mean(0), np.atleast_2d(np.cov(feats.T)))


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement (seeded); applied to every feature set of a
    sweep, they make a paired bootstrap."""
    for name, v, lo in (("n", n, 2), ("n_boot", n_boot, 2), ("seed", seed, 0)):
        if not (is_int(v) and v >= lo):
            raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_fid(feats, ref: Reference, idx: np.ndarray) -> np.ndarray:
    """FID of feats[idx[b]] against ``ref`` for every replicate b: (n_boot,). feats (n, k), idx (n_boot, n)."""
    feats = np.asarray(feats, dtype=np.float64)
    idx = np.asarray(idx)
    if feats.ndim != 2 or feats.shape[1] != len(ref.mu):
        raise ValueError(f"feats must have shape (n, {len(ref.mu)}); got {feats.shape}")
    if idx.ndim != 2 or idx.shape[1] != len(feats) or idx.min() < 0 or idx.max() >= len(feats):
        raise ValueError(f"idx must be (n_boot, {len(feats)}) indices in [0, {len(feats)}); got shape {idx.shape}")
    return np.array([ref.score(feats[i]) for i in idx])
