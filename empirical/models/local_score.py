r"""The local score (LS) and equivariant local score (ELS) machines of Kamb & Ganguli (ICML 2025) as denoisers.

A convolutional denoiser sees each output pixel through a finite receptive field. The Bayes-optimal denoiser under
that constraint estimates pixel i of x_0 from the P x P patch of x_t centred on i alone: the posterior mean of the
patch's centre when the clean patch is drawn from the training set's patches,

    x0_hat(x, t)_i = sum_k w_k c_k,   w_k ∝ m_k exp(-|x[patch_i] - theta(t) p_k|^2 / (2 sigma(t)^2)),

where p_k runs over the training patches with centre pixel c_k and multiplicity m_k:

- LS (``equivariant=False``): p_k = y_j[patch_i], the patch of each training image y_j at the same location i;
- ELS (``equivariant=True``): p_k = y_j[patch_q] for every training image j and every location q (translation
  equivariance); identical patches are merged into one with their count m_k (exact: they share one weight).

Patches run past the border into zeros, as a zero-padded CNN sees them, for x and for the training images alike.
With P = 2 max(H, W) - 1 every LS patch covers the whole image, and LS is the exact denoiser of the training set
(``ExactDenoiser``). |x[patch_i]|^2 is the same for every k and cancels from w. The LS cross term
x[patch_i] . y_j[patch_i] is a box sum of the product image x * y_j, read off its integral image (summed-area
table) at a cost independent of P, and one integral image serves every P (``x0_by_patch``, the calibration).
Training images are processed in chunks with a running log-sum-exp, so memory stays under ``max_bytes``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from empirical.models.denoiser import Denoiser, schedule_coeffs
from theory.checks import check_finite_array, check_int
from theory.schedules import Schedule

__all__ = ["LocalScoreDenoiser", "check_patch"]


def check_patch(patch, shape: tuple[int, int]) -> int:
    """``patch`` as an int if it is an odd integer in [1, 2 max(H, W) - 1] (the largest covers the whole image from
    any pixel), else raise naming it."""
    hi = 2 * max(shape) - 1
    p = check_int("patch", patch, lo=1, hi=hi)
    if p % 2 == 0:
        raise ValueError(f"patch must be an odd integer in [1, {hi}] (a patch has a centre pixel); got {p}")
    return p


class LocalScoreDenoiser(Denoiser):
    """eps-prediction of the LS or ELS machine (module docstring): ``forward(x, t)`` on flat rows (n, d).

    ``images``: the training images, (N, H, W), or (N, d) with ``image_shape`` = (H, W). ``patch``: the odd patch
    size P, or a callable t -> P (a patch size calibrated per time). ``equivariant``: ELS instead of LS.
    ``max_bytes``: the memory of one chunk's work arrays. The images are stored in ``dtype`` (float64 by default);
    ``.float()`` gives the float32 machine.

    >>> y = np.array([[[-1.0, 1.0], [1.0, -1.0]], [[1.0, 1.0], [-1.0, -1.0]]])  # two 2x2 images
    >>> den = LocalScoreDenoiser(y, patch=3)  # 3 = 2 * 2 - 1: every patch is the whole image, LS is exact
    >>> den.x0(torch.tensor(y[:1].reshape(1, 4)), 0.05).round(decimals=4).tolist()
    [[-1.0, 1.0, 1.0, -1.0]]
    """

    def __init__(self, images, patch: int | Callable[[float], int], *, equivariant: bool = False,
                 schedule: Schedule | None = None, image_shape=None, max_bytes: int = 2**26,
                 dtype: torch.dtype = torch.float64):  # fmt: skip
        y = _images(images, image_shape)
        if not isinstance(equivariant, (bool, np.bool_)):
            raise TypeError(f"equivariant must be a bool (False: LS, True: ELS); got {equivariant!r}")
        if not callable(patch):
            check_patch(patch, y.shape[1:])
        super().__init__(_LocalScoreNet(torch.as_tensor(y, dtype=dtype), bool(equivariant),
                                        check_int("max_bytes", max_bytes, lo=1)), schedule)  # fmt: skip
        self.patch = patch

    @property
    def dim(self) -> int:
        return int(np.prod(self.net.image_shape))

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.net.image_shape

    def patch_at(self, t: float) -> int:
        """The patch size P used at forward time ``t``, checked."""
        return check_patch(self.patch(float(t)) if callable(self.patch) else self.patch, self.image_shape)

    def _coeffs(self, t: torch.Tensor):
        return schedule_coeffs(self.schedule, t, "theta", "sigma", like=self.net.y)

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"x must have shape (n, {self.dim}) (flat {self.image_shape} images); got {tuple(x.shape)}"
            )
        theta, sigma = self._coeffs(t)
        patches = [self.patch_at(s) for s in t.tolist()]
        groups = {p: [i for i, q in enumerate(patches) if q == p] for p in sorted(set(patches))}
        if len(groups) == 1:
            x0 = self.net(x, theta, sigma**2, patches[0])
        else:  # rows of one batch may sit at times with different patch sizes
            order = torch.tensor([i for rows in groups.values() for i in rows], device=x.device)
            parts = [self.net(x[rows], theta[rows], sigma[rows] ** 2, p) for p, rows in groups.items()]
            x0 = torch.cat(parts)[torch.argsort(order)]
        return ((x.to(x0.dtype) - theta[:, None] * x0) / sigma[:, None]).to(x.dtype)

    def _x0_at(self, t: float, like: torch.Tensor):
        """x -> x0_hat(x) at a fixed t for the Jacobian products, with the coefficients and P fixed outside autodiff
        (numpy cannot read a tensor inside torch.func's transforms)."""
        self._t(like[None], t)
        theta, sigma = schedule_coeffs(self.schedule, float(t), "theta", "sigma", like=self.net.y)
        patch = self.patch_at(t)
        return lambda v: self.net(v[None], theta.reshape(1), sigma.reshape(1) ** 2, patch)[0].to(v.dtype)

    def x0_by_patch(self, x: torch.Tensor, t, patches) -> torch.Tensor:
        """x0_hat(x, t) for every P in ``patches``: (len(patches), n, d). For LS one pass over the training images
        serves all P (the integral image of x * y_j is shared)."""
        theta, sigma = self._coeffs(self._t(x, t))
        patches = [check_patch(p, self.image_shape) for p in patches]
        x = x.to(self.net.y.dtype)
        if self.net.equivariant:
            return torch.stack([self.net(x, theta, sigma**2, p) for p in patches])
        return self.net.local(x, theta, sigma**2, patches)


def _images(images, image_shape) -> np.ndarray:
    """The training images as a float64 array (N, H, W), checked."""
    y = check_finite_array("images", images)
    if y.ndim == 2:
        if image_shape is None:
            raise ValueError(
                f"images of shape {y.shape} are flat rows: give image_shape=(H, W) with H * W = {y.shape[1]}"
            )
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 2 or min(shape) < 1 or shape[0] * shape[1] != y.shape[1]:
            raise ValueError(f"image_shape must be (H, W) with H * W = {y.shape[1]}; got {image_shape!r}")
        y = y.reshape(len(y), *shape)
    if y.ndim != 3 or len(y) == 0:
        raise ValueError(f"images must have shape (N, H, W) or (N, d) with N >= 1; got {y.shape}")
    return y


class _LocalScoreNet(nn.Module):
    """The machine's posterior mean x0_hat(x; theta, sigma^2, P) on flat rows; the training images are a buffer, so
    ``.float()`` and ``.to(device)`` move them."""

    def __init__(self, y: torch.Tensor, equivariant: bool, max_bytes: int):
        super().__init__()
        self.register_buffer("y", y)
        self.equivariant, self.max_bytes = equivariant, max_bytes
        self.image_shape = tuple(y.shape[1:])
        self._patch_sets: dict = {}  # (P, dtype, device) -> merged ELS patches

    def forward(self, x, theta, s2, patch: int) -> torch.Tensor:
        x = x.to(self.y.dtype)
        if self.equivariant:
            return self.equivariant_local(x, theta, s2, patch)
        return self.local(x, theta, s2, [patch])[0]

    def _chunk(self, per_item: int) -> int:
        """Items per chunk so that a chunk's work arrays (about eight of ``per_item`` numbers each) fit max_bytes."""
        return max(1, self.max_bytes // (8 * per_item * self.y.element_size()))

    def local(self, x, theta, s2, patches: list[int]) -> torch.Tensor:
        """LS: (len(patches), n, d). The logit of training image j at pixel i is box(z_j)_i, the P x P window sum
        (zero padding) of z_j = theta / sigma^2 y_j (x - theta y_j / 2), read off z_j's integral image; a running
        log-sum-exp over chunks of images. A patch that covers the image from every pixel gives one logit per image
        (the exact denoiser)."""
        n, (H, W) = len(x), self.image_shape
        X = x.reshape(n, 1, H, W)
        a, half = (theta / s2)[:, None, None, None], (theta / 2)[:, None, None, None]
        radii = [min(p // 2, max(H, W) - 1) for p in patches]  # a window past every border is the whole image
        whole = [r >= max(H, W) - 1 for r in radii]
        R = max([r for r, w in zip(radii, whole, strict=True) if not w], default=0)
        acc = [_RunningSoftmax() for _ in patches]
        for y in self.y.split(self._chunk(n * (H + 1 + 2 * R) * (W + 1 + 2 * R))):
            S = _integral(a * y * (X - half * y), R)  # (n, C, H + 1 + 2R, W + 1 + 2R)
            for r, w, run in zip(radii, whole, acc, strict=True):
                logits = S[..., -1:, -1] if w else _box(S, r, R, H, W).flatten(2)
                run.add(logits, y.flatten(1)[None])
        return torch.stack([run.mean() for run in acc])

    def equivariant_local(self, x, theta, s2, patch: int) -> torch.Tensor:
        """ELS: (n, d). Logit of merged training patch k at pixel i: (theta x[patch_i] . p_k - theta^2/2 |p_k|^2)
        / sigma^2 + log m_k; a running log-sum-exp over chunks of patches."""
        n, (H, W) = len(x), self.image_shape
        p, centre, log_m = self._patches(patch)
        xp = F.unfold(x.reshape(n, 1, H, W), patch, padding=patch // 2)  # (n, P^2, d)
        a, b = (theta / s2)[:, None, None], (theta**2 / (2 * s2))[:, None, None]
        run = _RunningSoftmax()
        size = self._chunk(n * H * W)
        for pk, ck, lk in zip(p.split(size), centre.split(size), log_m.split(size), strict=True):
            run.add(a * (pk @ xp) - b * (pk * pk).sum(1)[:, None] + lk[:, None], ck[None, :, None])
        return run.mean()

    def _patches(self, patch: int):
        """(patches (K, P^2), centres (K,), log multiplicities (K,)) of every training image at every location,
        identical patches merged; cached per P (ELS on a few thousand images reuses them at every call)."""
        key = (patch, self.y.dtype, self.y.device)
        if key not in self._patch_sets:
            if len(self._patch_sets) >= 4:
                self._patch_sets.clear()
            merged, counts = [], []
            per_image = int(np.prod(self.image_shape)) * patch**2
            for y in self.y.split(self._chunk(per_image)):  # merge within chunks, then across them
                u, c = torch.unique(_unfold(y, patch).reshape(-1, patch**2), dim=0, return_counts=True)
                merged.append(u)
                counts.append(c)
            u, inverse = torch.unique(torch.cat(merged), dim=0, return_inverse=True)
            m = torch.zeros(len(u), dtype=self.y.dtype, device=u.device).index_add_(
                0, inverse, torch.cat(counts).to(self.y.dtype)
            )
            self._patch_sets[key] = (u, u[:, patch**2 // 2].clone(), torch.log(m))
        return self._patch_sets[key]


class _RunningSoftmax:
    """sum_j softmax_j(L)_i v_ji accumulated over chunks of j: logits L (n, C, d), values v (1 or n, C, d). The shift
    m is detached (the result does not depend on it), so forward-mode autodiff sees only smooth operations."""

    def __init__(self):
        self.m = self.s = self.num = None

    def add(self, logits: torch.Tensor, values: torch.Tensor) -> None:
        top = logits.detach().amax(1)
        m = top if self.m is None else torch.maximum(self.m, top)
        e = torch.exp(logits - m[:, None])
        s = e.sum(1)
        num = e[..., 0] @ values[0] if logits.shape[-1] == 1 else (e * values).sum(1)  # one weight for every pixel
        if self.m is not None:
            scale = torch.exp(self.m - m)
            s, num = self.s * scale + s, self.num * scale + num
        self.m, self.s, self.num = m, s, num

    def mean(self) -> torch.Tensor:
        return self.num / self.s


def _integral(z: torch.Tensor, R: int) -> torch.Tensor:
    """Summed-area table S[a, b] = sum of z[:a, :b] (..., H + 1, W + 1), its edges repeated R times on every side:
    then every clipped window of radius r <= R is a difference of shifted slices (``_box``), with no index arrays."""
    S = F.pad(z.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return F.pad(S, (R, R, R, R), mode="replicate") if R else S


def _box(S: torch.Tensor, r: int, R: int, H: int, W: int) -> torch.Tensor:
    """Window sums of radius r (..., H, W) from ``_integral(z, R)``: rows [u - r, u + r] clipped to the image are
    S[clip(u + r + 1)] - S[clip(u - r)], and the padded table holds S[clip(k - R)] at row k."""
    rows = S[..., R + r + 1 : R + r + 1 + H, :] - S[..., R - r : R - r + H, :]
    return rows[..., R + r + 1 : R + r + 1 + W] - rows[..., R - r : R - r + W]


def _unfold(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(n, H, W) -> (n, H W, P^2): the zero-padded P x P patch around every pixel, in row-major pixel order."""
    return F.unfold(images[:, None], patch, padding=patch // 2).transpose(1, 2)
