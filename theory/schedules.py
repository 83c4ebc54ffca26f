r"""Noise schedules: the one place where theta(t), sigma(t), f and g are defined.

Forward time t in [0, T] (t = 0 data, t = T noise); marginal x_t = theta(t) x_0 + sigma(t) eps.
The forward SDE is dx = f(x, t) dt + g(t) dW with a linear drift f(x, t) = a(t) x, where
a = d log theta / dt and g^2 = d sigma^2 / dt - 2 a sigma^2. Every function is written in jax,
float64, vectorised over ``t`` and differentiable.

Examples:
    >>> s = VPLinear()
    >>> float(s.theta(0.2926416543))  # doctest: +ELLIPSIS
    0.64359425...
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod

import jax.numpy as jnp
import numpy as np

from theory._checks import (
    _as_float,
    _real_array,
    _short,
    check_finite_array,
    check_in_range,
    check_int,
    check_positive,
    is_traced,
)

__all__ = ["Schedule", "VPLinear", "VPCosine", "VE", "DDPM"]


class Schedule(ABC):
    """Base class. Subclasses define ``_log_theta``, ``_a`` and ``t_from_theta`` (VE: ``_sigma2``, ``_g2`` too).

    Every public method of t checks that t is real and lies in the schedule's domain [0, T] (NaN refused) before
    it computes: beyond T the formulas extrapolate to numbers of no schedule. Inside jit (traced t) it cannot.
    """

    T: float = 1.0
    variance_preserving: bool = True

    # Two schedules with the same parameters are equal (their repr lists every parameter), so caches of
    # compiled functions keyed by the schedule hit for a fresh VPLinear() as for the same object.
    def __eq__(self, other):
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))

    # --- the defining functions, on checked t ---------------------------------------------------
    @abstractmethod
    def _log_theta(self, t):
        """ln theta(t)."""

    @abstractmethod
    def _a(self, t):
        """d log theta / dt."""

    def _sigma2(self, t):
        return -jnp.expm1(2.0 * self._log_theta(t))  # VP: 1 - theta^2, exact near t = 0

    def _g2(self, t):
        return -2.0 * self._a(t)  # VP: beta(t)

    def _t(self, t, name: str = "t"):
        """t as float64, after the domain check."""
        self.check_t(t, name)
        return jnp.asarray(t, dtype=jnp.float64)

    # --- public functions of t -------------------------------------------------------------------
    def log_theta(self, t):
        """ln theta(t)."""
        return self._log_theta(self._t(t))

    def a(self, t):
        """Drift coefficient a(t) = d log theta / dt, so that f(x, t) = a(t) x."""
        return self._a(self._t(t))

    def sigma2(self, t):
        """sigma(t)^2; for VP 1 - theta^2, computed as -expm1(2 log theta) (exact near t = 0)."""
        return self._sigma2(self._t(t))

    def g2(self, t):
        """Diffusion g(t)^2 = d sigma^2/dt - 2 a sigma^2; for VP this is beta(t) = -2 a(t)."""
        return self._g2(self._t(t))

    def theta(self, t):
        return jnp.exp(self.log_theta(t))

    def sigma(self, t):
        return jnp.sqrt(self.sigma2(t))

    def f(self, x, t):
        """Forward drift f(x, t) = a(t) x; ``x`` of shape (..., d), ``t`` broadcastable to (...)."""
        x = x if is_traced(x) else check_finite_array("x", x)
        return jnp.asarray(self.a(t))[..., None] * x

    def log_snr(self, t):
        t = self._t(t)
        return 2.0 * self._log_theta(t) - jnp.log(self._sigma2(t))

    def snr(self, t):
        """Signal-to-noise ratio theta^2 / sigma^2."""
        return jnp.exp(self.log_snr(t))

    def ou_time(self, t):
        """Ornstein-Uhlenbeck time s with the same SNR: theta_OU = e^{-s}, i.e. s = 1/2 ln(1 + 1/snr)."""
        return 0.5 * jnp.log1p(jnp.exp(-self.log_snr(t)))

    def t_from_ou_time(self, s: float) -> float:
        """Inverse of ``ou_time`` (a scalar): the t whose SNR is that of OU time s, 1 / (e^{2s} - 1); nan where
        no t in [0, T] has it (s <= 0, or less noise at T than at s)."""
        s = _as_float("s", s)
        if not math.isfinite(s) or s <= 0:
            return math.nan
        snr = 1.0 / math.expm1(2.0 * s)
        return float(self.t_from_snr(snr)) if float(self.snr(self.T)) <= snr else math.nan

    def edm_sigma(self, t):
        """EDM noise level sigma / theta (the noise of x_t / theta)."""
        t = self._t(t)
        return jnp.exp(0.5 * jnp.log(self._sigma2(t)) - self._log_theta(t))

    @abstractmethod
    def t_from_theta(self, theta):
        """Inverse of theta(t) on [0, T]; ``theta`` must lie in [theta(T), 1]."""

    def t_from_snr(self, snr):
        """Inverse of snr(t); VP schedules go through theta = (1 + 1/snr)^(-1/2) (snr = inf gives t = 0)."""
        snr = jnp.asarray(_check_snr(snr), dtype=jnp.float64)
        return self.t_from_theta(1.0 / jnp.sqrt(1.0 + 1.0 / snr))

    def check_t(self, t, name: str = "t"):
        """Raise unless every t is real and lies in [0, T]."""
        return check_in_range(name, t, 0.0, self.T)

    def _check_theta(self, theta):
        """theta must lie in [theta(T), 1]; a relative 1e-12 of round-off below theta(T) is allowed."""
        if is_traced(theta):
            return theta
        lo = float(self.theta(self.T))
        check_in_range("theta", theta, 0.0, 1.0, open_lo=lo > 0)  # theta = 0 only where theta(T) = 0 (cosine)
        return check_in_range(f"theta (this schedule spans [theta(T)={lo:.6g}, 1])", theta, lo * (1 - 1e-12), 1.0)


def _check_snr(snr):
    """snr >= 0 (inf allowed: t = 0); NaN and negative values are refused by name."""
    if is_traced(snr):
        return snr
    a = _real_array("snr", snr)
    if np.any(np.isnan(a) | (a < 0)):
        raise ValueError(f"snr must be a number >= 0 (inf: t = 0); got {float(a[np.isnan(a) | (a < 0)][0])!r}")
    return a


class VPLinear(Schedule):
    r"""Variance-preserving SDE with beta(t) = beta_min + t (beta_max - beta_min) (Song et al. 2021).

    theta(t) = exp(-1/2 (beta_min t + (beta_max - beta_min) t^2 / 2)), sigma^2 = 1 - theta^2.
    Defaults are the paper's: beta_min = 0.1, beta_max = 20, T = 1.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min; got beta_min={beta_min}, beta_max={beta_max}")
        self.T = check_positive("T", T)

    def __repr__(self):
        return f"VPLinear(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"

    def beta(self, t):
        """beta(t) = g^2(t)."""
        return self._beta(self._t(t))

    def _beta(self, t):
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def _log_theta(self, t):
        return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T)

    def _a(self, t):
        return -0.5 * self._beta(t)

    def t_from_theta(self, theta):
        """Closed form: the positive root of (beta_max - beta_min)/(2T) t^2 + beta_min t + 2 ln theta = 0."""
        self._check_theta(theta)
        L = -2.0 * jnp.log(jnp.asarray(theta, dtype=jnp.float64))  # = beta_min t + k t^2
        k = 0.5 * (self.beta_max - self.beta_min) / self.T
        # Citardauq form of the root: stable also when k -> 0.
        return 2.0 * L / (self.beta_min + jnp.sqrt(self.beta_min**2 + 4.0 * k * L))


class VPCosine(Schedule):
    r"""Cosine schedule (Nichol & Dhariwal 2021): theta(t) = cos(phi(t)) / cos(phi(0)),
    phi(t) = (t/T + s) / (1 + s) * pi/2, s = 0.008. theta(T) = 0 exactly and g^2(T) = inf (the limits, not
    round-off): samplers and simulators start at some t < T.
    """

    def __init__(self, s: float = 0.008, T: float = 1.0):
        self.s = check_positive("s", s)
        self.T = check_positive("T", T)

    def __repr__(self):
        return f"VPCosine(s={self.s}, T={self.T})"

    def _phi(self, t):
        return (jnp.asarray(t, dtype=jnp.float64) / self.T + self.s) / (1.0 + self.s) * (jnp.pi / 2)

    def _log_theta(self, t):
        # cos(phi0 + d) / cos(phi0) = 1 - 2 sin^2(d/2) - tan(phi0) sin(d): no cancellation at small t.
        d = t / (self.T * (1.0 + self.s)) * (jnp.pi / 2)  # phi(t) - phi(0)
        value = jnp.log1p(-2.0 * jnp.sin(0.5 * d) ** 2 - jnp.tan(self._phi(0.0)) * jnp.sin(d))
        # At t = T, cos(pi/2) rounds to 6e-17, not 0: return the limit theta = 0 exactly (so sigma^2 = 1, snr = 0).
        return jnp.where(t >= self.T, -jnp.inf, value)

    def _a(self, t):
        # tan(pi/2) rounds to 1.6e16: return the limit a = -inf (g^2 = inf) at t = T.
        return jnp.where(t >= self.T, -jnp.inf, -jnp.tan(self._phi(t)) * jnp.pi / (2.0 * self.T * (1.0 + self.s)))

    def t_from_theta(self, theta):
        """Closed form: phi = arccos(theta cos phi(0)), t = T ((1 + s) 2 phi / pi - s)."""
        self._check_theta(theta)
        phi = jnp.arccos(jnp.asarray(theta, dtype=jnp.float64) * jnp.cos(self._phi(0.0)))
        return self.T * ((1.0 + self.s) * 2.0 * phi / jnp.pi - self.s)


class VE(Schedule):
    r"""Variance-exploding SDE: theta = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^(t/T)."""

    variance_preserving = False

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min; got {sigma_min=}, {sigma_max=}")
        self.T = check_positive("T", T)

    def __repr__(self):
        return f"VE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"

    def _log_theta(self, t):
        return jnp.zeros_like(t)

    def _a(self, t):
        return jnp.zeros_like(t)

    def _sigma2(self, t):
        return self.sigma_min**2 * (self.sigma_max / self.sigma_min) ** (2.0 * t / self.T)

    def _g2(self, t):
        return self._sigma2(t) * 2.0 * np.log(self.sigma_max / self.sigma_min) / self.T

    def t_from_theta(self, theta):
        raise ValueError("VE has theta = 1 at every t; invert the noise level with t_from_snr or t_from_sigma")

    def t_from_sigma(self, sigma):
        """Closed form t = T ln(sigma / sigma_min) / ln(sigma_max / sigma_min); 1e-12 relative round-off allowed."""
        check_in_range("sigma", sigma, self.sigma_min * (1 - 1e-12), self.sigma_max * (1 + 1e-12))
        r = jnp.log(jnp.asarray(sigma, dtype=jnp.float64) / self.sigma_min)
        return self.T * r / np.log(self.sigma_max / self.sigma_min)

    def t_from_snr(self, snr):
        return self.t_from_sigma(1.0 / jnp.sqrt(jnp.asarray(_check_snr(snr), dtype=jnp.float64)))


class DDPM(Schedule):
    r"""Discrete DDPM schedule (Ho et al. 2020): betas = linspace(beta_1, beta_N, N),
    theta_k^2 = prod_{i <= k} (1 - beta_i), k = 0..N (theta_0 = 1).

    Step k sits at continuous time t_k = k T / N; in between, log theta is linear in t, so
    a(t) = N/(2T) ln(1 - beta_k) on (t_{k-1}, t_k]. With N = 1000 it is the discretisation of
    VPLinear(0.1, 20): beta_k ~ beta(t_k) T / N. ``DDPM.from_betas`` takes any other beta sequence
    (a diffusers scheduler's, ``empirical.interop.diffusers_unet``); the model's timestep index j = 0..N-1
    (beta_{j+1}, alpha-bar_j in diffusers) sits at t = (j + 1) T / N.

    >>> s = DDPM.from_betas([0.1, 0.2], T=1.0)
    >>> [round(float(v), 12) for v in s.theta_steps() ** 2]  # 1, 0.9, 0.9 * 0.8
    [1.0, 0.9, 0.72]
    """

    def __init__(self, n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, T: float = 1.0):
        self.n_steps = check_int("n_steps", n_steps)
        self.beta_start = check_positive("beta_start", beta_start)
        self.beta_end = check_positive("beta_end", beta_end)
        if not (beta_start <= beta_end < 1):
            raise ValueError(f"need 0 < beta_start <= beta_end < 1; got {beta_start=}, {beta_end=}")
        self._set_betas(np.linspace(beta_start, beta_end, self.n_steps), T)
        self._explicit = False

    @classmethod
    def from_betas(cls, betas, T: float = 1.0) -> DDPM:
        """The schedule of an explicit sequence beta_1..beta_N, each in (0, 1) (float64 copy)."""
        b = np.array(check_finite_array("betas", betas))
        if b.ndim != 1 or b.size < 1:
            raise ValueError(f"betas must be a non-empty 1D sequence; got shape {b.shape}")
        bad = ~(np.isfinite(b) & (b > 0) & (b < 1))
        if bad.any():
            raise ValueError(f"betas must lie in (0, 1) (so theta(T) > 0); got {float(b[bad][0])!r}")
        self = cls.__new__(cls)
        self.n_steps, self.beta_start, self.beta_end = b.size, float(b[0]), float(b[-1])
        self._set_betas(b, T)
        self._explicit = True
        return self

    def _set_betas(self, betas: np.ndarray, T: float) -> None:
        self.T = check_positive("T", T)
        self.betas = betas
        # log theta at the knots t_k = k T / N, k = 0..N.
        self._knots_log_theta = np.concatenate([[0.0], np.cumsum(0.5 * np.log1p(-self.betas))])
        self._knots_t = np.arange(self.n_steps + 1) * self.T / self.n_steps

    def __repr__(self):
        if self._explicit:  # the digest makes repr (hence == and hash) tell any two beta sequences apart
            digest = hashlib.sha256(self.betas.tobytes()).hexdigest()[:16]
            return f"DDPM.from_betas(<{self.n_steps} betas, sha256 {digest}>, T={self.T})"
        return f"DDPM(n_steps={self.n_steps}, beta_start={self.beta_start}, beta_end={self.beta_end}, T={self.T})"

    def _log_theta(self, t):
        return jnp.interp(t, self._knots_t, self._knots_log_theta)

    def _a(self, t):
        k = jnp.clip(jnp.ceil(t * self.n_steps / self.T).astype(int), 1, self.n_steps)
        return self.n_steps / (2.0 * self.T) * jnp.log1p(-jnp.asarray(self.betas)[k - 1])

    def t_from_theta(self, theta):
        self._check_theta(theta)
        lt = jnp.log(jnp.asarray(theta, dtype=jnp.float64))
        return jnp.interp(lt, self._knots_log_theta[::-1], self._knots_t[::-1])

    def theta_steps(self) -> np.ndarray:
        """theta_k for k = 0..N as a numpy array (theta_k^2 = alpha-bar_k)."""
        return np.exp(self._knots_log_theta)

    def t_of_step(self, k):
        """t_k = k T / N for steps k in [0, N] (scalar or array)."""
        a = _real_array("k", k)
        if np.any((a != np.round(a)) | (a < 0) | (a > self.n_steps)):
            raise ValueError(f"k must be integer steps in [0, {self.n_steps}]; got {_short(k)}")
        return a * self.T / self.n_steps

    def forward_step(self, theta_c: float) -> int:
        """The last forward step that is past the bifurcation: max{k : theta_k > theta_c}.

        In generation (k = N down to 0) it is the first step whose dynamics has broken symmetry;
        the generative step is N - k. ``theta_c`` in [0, 1) (theta_0 = 1 is never past it).
        """
        check_in_range("theta_c", theta_c, 0.0, 1.0, open_hi=True)
        return int(np.nonzero(self.theta_steps() > theta_c)[0].max())
