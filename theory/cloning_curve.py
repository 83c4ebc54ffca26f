r"""Cloning: branch a generative trajectory at t into copies with independent noise; do they end alike?

**Biroli, Bonnaire, de Bortoli & Mezard (2024), two Gaussians.** Data p_0 = N(m, sigma^2 I)/2 + N(-m, sigma^2 I)/2
in d dimensions, |m|^2 = d m~^2, Ornstein-Uhlenbeck time s (theta = e^{-s}, Delta_s = 1 - e^{-2s}). The exact
reverse SDE (eta = 1) carries a point x_s to x_0 drawn from the posterior p(x_0 | x_s), so two copies branched
at x_s end in the same class with probability P(+|x_s)^2 + P(-|x_s)^2. Given the class, the projection
q = x.m/|m| is N(+-|m| e^{-s}, Gamma_s), Gamma_s = sigma^2 e^{-2s} + Delta_s, and the log-odds of + are
2 |m| e^{-s} q / Gamma_s, i.e. 2 (mu + sqrt(mu) z) with z ~ N(0, 1) and mu = |m|^2 e^{-2s} / Gamma_s. Hence

    phi(s) = 1/2 + 1/2 E_z[ tanh^2(mu_s + sqrt(mu_s) z) ],   mu_s = d m~^2 e^{-2s} / (sigma^2 e^{-2s} + 1 - e^{-2s}).

At their speciation time s_S = 1/2 ln(d m~^2) with sigma = m~ = 1, Gamma = 1 and mu = 1 for every d:
phi(s_S) = 1/2 + 1/2 E[tanh^2(1 + z)] = 0.7752..., their 0.775.

**Any finite data set**, by the theory's simulator (``theory.dynamics.simulate``, the exact score): x_t is drawn
from p_t (the marginal of every member of the eta family), copied, and each copy integrated from t to t_end
with its own noise; their end labels are compared. For eta = 1 the same probability is also
E_{x ~ p_t}[ sum_L (sum_{j in L} r_j(x))^2 ] with the posterior r (``posterior``), computed on the same draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from theory._checks import (
    check_data,
    check_eta,
    check_finite_array,
    check_in_range,
    check_int,
    check_nonnegative,
    check_positive,
    check_schedule,
)

__all__ = ["CloningCurve", "biroli_cloning_probability", "cloning_curve"]


def biroli_cloning_probability(s, d: int, m_tilde: float = 1.0, sigma: float = 1.0, n_nodes: int = 201):
    """phi(s) of the two Gaussians N(+-m, sigma^2 I), |m|^2 = d m_tilde^2, at OU time s (scalar or array).

    E_z by Gauss-Hermite quadrature with ``n_nodes`` nodes (probabilists').

    >>> round(float(biroli_cloning_probability(0.5 * np.log(100), 100)), 4)
    0.7752
    """
    d = check_int("d", d)
    m_tilde, sigma = check_positive("m_tilde", m_tilde), check_nonnegative("sigma", sigma)
    s = check_finite_array("s (Ornstein-Uhlenbeck time)", s)
    if np.any(s <= 0):
        raise ValueError(f"s (Ornstein-Uhlenbeck time) must be > 0; got {float(s[s <= 0].ravel()[0])!r}")
    z, w = np.polynomial.hermite_e.hermegauss(check_int("n_nodes", n_nodes, 2))
    w = w / w.sum()
    e2 = np.exp(-2.0 * s)
    mu = d * m_tilde**2 * e2 / (sigma**2 * e2 - np.expm1(-2.0 * s))
    mu = mu[..., None]
    return 0.5 + 0.5 * np.sum(w * np.tanh(mu + np.sqrt(mu) * z) ** 2, axis=-1)


@dataclass(frozen=True)
class CloningCurve:
    """``t`` (M,) branching times; ``p`` (M,) the share of copy pairs that end with the same label and its
    standard error ``se``; ``posterior`` (M,) the eta = 1 formula on the same draws (module docstring)."""

    t: np.ndarray
    p: np.ndarray
    se: np.ndarray
    posterior: np.ndarray
    n: int

    def __repr__(self):
        pts = ", ".join(f"{t:.3g}: {p:.3f}" for t, p in zip(self.t, self.p, strict=True))
        return f"CloningCurve(n={self.n}, p(t)={{{pts}}})"


def cloning_curve(
    data, schedule, ts, eta: float = 1.0, *, labels=None, n: int = 256, n_steps: int = 200, t_end=None, seed: int = 0
) -> CloningCurve:
    """The cloning probability of a data set at each branching time of ``ts`` (see the module docstring).

    ``labels`` (N,): the class of each data point or component (default: each its own); the end label of a copy
    is that of the point with the largest posterior weight at t_end (default 1e-3 T). ``n`` pairs a time,
    ``n_steps`` Euler-Maruyama steps from t to t_end.
    """
    from theory.dynamics import _check_path_memory, simulate

    check_data(data)
    check_schedule(schedule)
    check_eta(eta)
    ts = np.atleast_1d(check_finite_array("ts", ts))
    n, n_steps, seed = check_int("n", n, 2), check_int("n_steps", n_steps), check_int("seed", seed, lo=0)
    t_end = 1e-3 * schedule.T if t_end is None else check_in_range("t_end", t_end, 0.0, schedule.T, open_hi=True)
    t_end = float(t_end)
    N = data.means.shape[0]
    lab = np.arange(N) if labels is None else np.asarray(labels)
    if lab.shape != (N,):
        raise ValueError(f"labels must have shape ({N},), one per data point or component; got {lab.shape}")
    check_in_range(f"ts (above t_end={t_end})", ts, t_end, schedule.T, open_lo=True)
    # Before the first draw: the 2n paths of each branching time are the largest arrays (n draws come first,
    # and an allocation that fails inside XLA aborts the process instead of raising).
    _check_path_memory("cloning_curve", 2 * n, n_steps, data.dim, data)

    classes, code = np.unique(lab, return_inverse=True)
    onehot = np.eye(len(classes))[code]  # (N, L)
    p, se, post = [], [], []
    for k, t in enumerate(ts):
        x = np.asarray(data.sample(jax.random.PRNGKey(seed + k), float(t), schedule, n))
        tr = simulate(
            data, schedule, 2 * n, eta=eta, n_steps=n_steps, t_start=float(t), t_end=t_end, seed=seed + k + 1,
            x_start=np.concatenate([x, x]),
        )  # fmt: skip
        r_end = np.asarray(data.responsibilities(tr.x[-1], t_end, schedule))
        end = code[np.argmax(r_end, axis=1)]
        same = end[:n] == end[n:]
        p.append(same.mean())
        se.append(math.sqrt(max(same.mean() * (1 - same.mean()), 1e-12) / n))
        q = np.asarray(data.responsibilities(x, float(t), schedule)) @ onehot
        post.append(float(np.mean(np.sum(q**2, axis=1))))
    return CloningCurve(ts, np.array(p), np.array(se), np.array(post), n)
