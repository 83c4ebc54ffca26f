r"""The generative dynamics of the eta family, its potential, and a simulator with the exact score.

Generation runs in forward time from T down to 0 (DESIGN.md); with s = -t,

    dx = [ -f(x, t) + (1 + eta^2)/2 g^2(t) grad log p_t(x) ] ds + eta g(t) dW,

eta = 1 the reverse SDE, eta = 0 the probability-flow ODE. The drift is -grad u_eta with

    u_eta(x, t) = -(1 + eta^2)/2 g^2 log p_t(x) + a(t) |x|^2 / 2     (f = a x).

For VP and eta = 1 this is the paper's u = beta(t) (-log p_t(x) - |x|^2 / 4).

Examples:
    >>> import numpy as np
    >>> from theory import DeltaMixture, VPLinear, drift
    >>> drift(DeltaMixture([[-1.0], [1.0]]), VPLinear(), np.array([0.0]), 0.5).tolist()
    [0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from theory._checks import (
    check_data,
    check_finite_array,
    check_in_range,
    check_int,
    check_memory,
    check_nonnegative,
    check_schedule,
)
from theory.family import EtaFamily
from theory.schedules import Schedule

__all__ = [
    "drift",
    "potential",
    "data_potential",
    "drift_jacobian",
    "simulate",
    "simulate_forward",
    "Trajectories",
    "commitment",
]


def _x(data, x):
    """The checks every function of (x, t) makes first: data a theory mixture, x (..., d) real and finite."""
    return check_data(data)._check_x(x)


def drift(data, schedule: Schedule, x, t, eta: float = 1.0):
    """Generative drift -f + (1 + eta^2)/2 g^2 grad log p_t; x (..., d) -> (..., d)."""
    x = _x(data, x)
    fam = EtaFamily(schedule, eta)
    return fam.drift(x, data.score(x, t, schedule), t)


def potential(data, schedule: Schedule, x, t, eta: float = 1.0):
    """u_eta(x, t) = -(1 + eta^2)/2 g^2 log p_t(x) + a |x|^2 / 2, up to a constant in x; -> (...)."""
    x = _x(data, x)
    fam = EtaFamily(schedule, eta)
    return -fam.k(t) * data.log_prob(x, t, schedule) + 0.5 * fam.a(t) * jnp.sum(x**2, axis=-1)


def data_potential(data, schedule: Schedule, x, t):
    """-log p_t(x), the potential of the data alone (its convexity defines speciation)."""
    return -check_data(data).log_prob(x, t, schedule)


def drift_jacobian(data, schedule: Schedule, x, t, eta: float = 1.0):
    """d drift / dx = -a I + (1 + eta^2)/2 g^2 Hess log p_t (symmetric: minus Hess u_eta); -> (..., d, d)."""
    check_data(data)
    fam = EtaFamily(schedule, eta)
    a, k = fam.a(t), fam.k(t)
    H = data.hessian(x, t, schedule)
    eye = jnp.eye(H.shape[-1])
    return -jnp.asarray(a)[..., None, None] * eye + jnp.asarray(k)[..., None, None] * H


@dataclass(frozen=True)
class Trajectories:
    """Simulated paths: ``t`` (K + 1,) decreasing forward times, ``x`` (K + 1, n, d)."""

    t: np.ndarray
    x: np.ndarray


def _check_path_memory(what: str, n: int, n_steps: int, d: int, data=None) -> None:
    """Every path is kept: (n_steps + 1) n d float64 numbers, twice over (jax, then numpy), plus the score's
    n N temporaries for a data set of N points."""
    extra = n * data.means.shape[0] if data is not None else 0
    check_memory(f"{what} of {n} paths of {n_steps} steps in d = {d}", 8.0 * (2 * (n_steps + 1) * n * d + 4 * extra),
                 "use fewer paths or steps, or several runs")  # fmt: skip


def simulate(
    data,
    schedule: Schedule,
    n: int,
    *,
    eta: float = 1.0,
    n_steps: int = 1000,
    t_start: float | None = None,
    t_end: float | None = None,
    method: str = "euler",
    seed: int = 0,
    x_start=None,
) -> Trajectories:
    """Integrate the eta family with the exact score from t_start down to t_end.

    Steps are uniform in t: t_k = t_start - k (t_start - t_end) / n_steps. Euler-Maruyama:
    x_{k+1} = x_k + h b(x_k, t_k) + eta g(t_k) sqrt(h) xi_k. Heun: the same predictor, then the
    trapezoidal drift (b(x_k, t_k) + b(x~, t_{k+1})) / 2 with the same noise (exact-order 2 for the
    ODE, eta = 0). The start is drawn from the exact marginal p_{t_start} unless ``x_start`` (n, d)
    is given. Defaults: t_start = T, t_end = 1e-3 T (the score of a finite data set blows up at 0).
    Heun on a finite data set with sigma(t_end) = 0 takes its last step by Euler (the corrector would need
    the singular score at t_end). A schedule with g^2(T) = inf (VPCosine) needs t_start < T.

    Returns ``Trajectories`` with x of shape (n_steps + 1, n, d).
    """
    check_data(data)
    fam = EtaFamily(check_schedule(schedule), eta)
    eta = fam.eta
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun'; got {method!r}")
    n, n_steps, seed = check_int("n", n), check_int("n_steps", n_steps), check_int("seed", seed, lo=0)
    T = schedule.T
    t_start = T if t_start is None else check_nonnegative("t_start", t_start)
    t_end = 1e-3 * T if t_end is None else check_nonnegative("t_end", t_end)
    check_in_range("t_start", t_start, 0.0, T)
    check_in_range(f"t_end (below t_start={t_start})", t_end, 0.0, t_start, open_hi=True)
    if not np.isfinite(float(schedule.g2(t_start))):
        raise ValueError(f"t_start must be below T: g^2 is infinite at t_start={t_start} for {schedule!r}")
    _check_path_memory("simulate", n, n_steps, data.dim, data)
    key_start, key_noise = jax.random.split(jax.random.PRNGKey(seed))
    if x_start is None:
        x0 = data.sample(key_start, t_start, schedule, n)
    else:
        x0 = jnp.asarray(check_finite_array("x_start", x_start))
        if x0.shape != (n, data.dim):
            raise ValueError(f"x_start must have shape ({n}, {data.dim}); got {x0.shape}")
    ts = jnp.linspace(t_start, t_end, n_steps + 1)
    h = (t_start - t_end) / n_steps
    # Heun's corrector needs the drift at t_{k+1}; where sigma(t_end) = 0 the score of a finite data set is
    # singular, so the last step stays Euler (EDM's sampler does the same at sigma = 0).
    singular_end = getattr(data, "_singular_at_zero", False) and float(schedule.sigma2(t_end)) <= 0.0
    correct = jnp.arange(n_steps) < (n_steps - 1 if singular_end else n_steps)

    def b(x, t):
        th, s2 = schedule.theta(t), schedule.sigma2(t)
        return fam.drift(x, jax.vmap(lambda xi: data.score_ts(xi, th, s2))(x), t)

    def step(x, inputs):
        t0, t1, key, corrector = inputs
        noise = eta * jnp.sqrt(schedule.g2(t0) * h) * jax.random.normal(key, x.shape)
        b0 = b(x, t0)
        x_pred = x + h * b0 + noise
        if method == "heun":
            x_pred = jnp.where(corrector, x + 0.5 * h * (b0 + b(x_pred, t1)) + noise, x_pred)
        return x_pred, x_pred

    keys = jax.random.split(key_noise, n_steps)
    _, xs = jax.lax.scan(jax.jit(step), x0, (ts[:-1], ts[1:], keys, correct))
    return Trajectories(t=np.asarray(ts), x=np.asarray(jnp.concatenate([x0[None], xs])))


def simulate_forward(data, schedule: Schedule, n: int, *, n_steps: int = 1000, seed: int = 0):
    """Forward paths x_0 ~ data to x_T by the exact Gaussian transitions of the linear SDE:

        x_{t+h} = r x_t + sqrt(sigma^2(t+h) - r^2 sigma^2(t)) xi,   r = theta(t+h) / theta(t),

    so there is no discretisation error. Returns (Trajectories with t increasing from 0 to T,
    the index of the data point or component each path starts from (n,)).
    """
    check_data(data)
    check_schedule(schedule)
    n, n_steps, seed = check_int("n", n), check_int("n_steps", n_steps), check_int("seed", seed, lo=0)
    _check_path_memory("simulate_forward", n, n_steps, data.dim)
    k_idx, k_eps, k_path = jax.random.split(jax.random.PRNGKey(seed), 3)
    idx = jax.random.choice(k_idx, data.means.shape[0], (n,), p=data.weights)
    x0 = data.means[idx]
    if data.min_component_variance() > 0:  # a Gaussian mixture: add the component's own noise
        x0 = data.sample_components(k_eps, idx)
    ts = jnp.linspace(0.0, schedule.T, n_steps + 1)
    lt, s2 = schedule.log_theta(ts), schedule.sigma2(ts)
    r = jnp.exp(lt[1:] - lt[:-1])
    std = jnp.sqrt(jnp.maximum(s2[1:] - r**2 * s2[:-1], 0.0))  # >= 0 exactly; max() guards round-off

    def step(x, inputs):
        ri, si, key = inputs
        x = ri * x + si * jax.random.normal(key, x.shape)
        return x, x

    _, xs = jax.lax.scan(step, x0, (r, std, jax.random.split(k_path, n_steps)))
    return Trajectories(t=np.asarray(ts), x=np.asarray(jnp.concatenate([x0[None], xs]))), np.asarray(idx)


def commitment(data, schedule: Schedule, traj: Trajectories, eta: float = 1.0, labels=None, every: int = 10):
    """Probability that the basin a sample is in at time t is the one it ends in.

    At each kept time t_k (every ``every``-th step), each sample is carried to its attractor by the
    frozen-time gradient flow of u_eta, and the statistic is the posterior probability, at that
    attractor, of the label the sample ends with (``theory.bifurcations.attractor_posterior``),
    averaged over samples: a shared attractor (the centre before the critical time) gives the
    chance level, a committed one 1. ``labels`` (length N) groups points into classes (default:
    each point its own). The final label is the attractor's most probable one at the last time.
    Returns (t (M,), p (M,)).
    """
    from theory.bifurcations import attractor_posterior

    check_data(data)
    if not isinstance(traj, Trajectories):
        raise TypeError(f"traj must be the Trajectories of simulate; got {type(traj).__name__}")
    x = check_finite_array("traj.x", traj.x)
    if x.ndim != 3 or x.shape[0] != len(traj.t) or x.shape[2] != data.dim:
        raise ValueError(f"traj.x must have shape ({len(traj.t)}, n, {data.dim}) for traj.t; got {x.shape}")
    every = check_int("every", every)
    n_points = data.means.shape[0]
    lab = np.arange(n_points) if labels is None else np.asarray(labels)
    if lab.shape != (n_points,):
        raise ValueError(f"labels must have shape ({n_points},), one per data point or component; got {lab.shape}")
    idx = np.arange(0, len(traj.t), every)
    final = lab[np.argmax(attractor_posterior(data, schedule, traj.x[-1], traj.t[-1], eta), axis=1)]
    same = lab[None, :] == final[:, None]  # (n, N): point j carries the sample's final label
    p = [np.mean(np.sum(attractor_posterior(data, schedule, traj.x[i], traj.t[i], eta) * same, axis=1)) for i in idx]
    return traj.t[idx], np.asarray(p)
