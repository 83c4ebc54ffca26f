r"""Fixed points of the generative drift, their stability, and the bifurcations met in generation.

At a frozen time t the fixed points of the eta family solve drift = 0. Dividing the drift by
(1 + eta^2)/2 g^2 > 0 changes neither the fixed points nor the signs of the Jacobian's
eigenvalues, so the engine works with the reduced drift and Jacobian

    R(x) = grad log p_t(x) - c x,     Hred(x) = Hess log p_t(x) - c I,     c = 2 a / ((1 + eta^2) g^2),

the gradient and Hessian of -u_red, u_red = -log p_t + c |x|^2 / 2. For VP, c = -1/(1 + eta^2)
at every t; for VE, c = 0 (the fixed points are the modes of p_t). A fixed point is stable in
the generative direction iff every eigenvalue of Hred is negative.

How fixed points are found, with no hand-picked guesses: seeds are the centre kappa E[y] and the
data attractors kappa y_j (kappa = theta / (1 + c sigma^2), where x = kappa E[y | x] holds at a
fixed point of a finite data set); each seed descends u_red by majorise-minimise steps
x <- x + R(x) / L with L >= the largest eigenvalue of -Hred, which never increase u_red (for a
finite data set with c <= 0, L = 1/sigma^2 and the step is x <- theta E[y | x] - c sigma^2 x, with
the fixed points of x = kappa E[y | x]); the limits are polished by saddle-free Newton (Newton
near a minimum, repelled by saddles), deduplicated and classified by the eigenvalues of Hred. Unstable fixed points
come from Newton started at the centre and at midpoints between attractors; in 1D every fixed
point is found by bracketing the sign changes of R on a grid covering kappa [min y, max y].

Bifurcations are located by continuation in t: a branch is carried by Newton steps whose size
halves whenever the next point fails to be a stable fixed point, until the step is below
``tol_t``; the branch's end is where it loses stability (pitchfork) or ceases to exist
(saddle-node).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg as spla
from jax.experimental.sparse.linalg import lobpcg_standard
from scipy.optimize import brentq

from theory._checks import check_eta, check_in_range
from theory.schedules import DDPM, Schedule

__all__ = [
    "FixedPoint",
    "CriticalTime",
    "SpeciationTime",
    "BifurcationDiagram",
    "fixed_points",
    "critical_time",
    "speciation_time",
    "bifurcation_diagram",
    "descend",
    "attractor_labels",
    "attractor_posterior",
    "fixed_point_map",
]

# Up to DENSE_MAX dimensions, Hred is formed from the posterior covariance (cost N d^2, the same as
# d Hessian-vector products) for Newton steps and eigenvalues; above it, GMRES and LOBPCG on
# Hessian-vector products. At d = 784, N = 60,000 (random equal-norm data, 2 cores) forming and
# diagonalising Hred took 1.2 s, LOBPCG on the clustered spectrum 30 s: dense wins up to a few thousand.
DENSE_MAX = 2048
# Above this many flops for one Hessian (N d^2: 2e8 is ~5 ms here), continuation steps use the chord
# method: one factorised Hessian per Newton solve instead of one per iteration.
CHORD_FLOPS = 2e8


# --- jitted kernels, one set per data family --------------------------------------------------
@cache
def _ops(kernels: tuple):
    score, hess, hvp, resp = kernels

    def R1(p, x, th, s2, c):
        return score(*p, x, th, s2) - c * x

    def H1(p, x, th, s2, c):
        return hess(*p, x, th, s2) - c * jnp.eye(x.shape[0])

    def descend(p, X, th, s2, c, L, tol, max_iter, r_max):
        def cond(state):
            _, res, it = state
            return (it < max_iter) & jnp.any(res > tol)

        def body(state):
            X, _, it = state
            Rx = jax.vmap(R1, (None, 0, None, None, None))(p, X, th, s2, c)
            Xn = X + Rx / L
            Xn = jnp.where(jnp.linalg.norm(Xn, axis=1, keepdims=True) > r_max, X, Xn)  # freeze runaways
            return Xn, jnp.linalg.norm(Rx, axis=1) / L, it + 1

        X, res, it = jax.lax.while_loop(cond, body, (X, jnp.full(X.shape[0], jnp.inf), 0))
        return X, res

    def loop(step, x, n_iter, tol):
        """x <- x + step(x) until |R(x)| <= tol (checked before the step) or n_iter steps."""

        def cond(state):
            _, it, res = state
            return (it < n_iter) & (res > tol)

        def body(state):
            x, it, _ = state
            dx, r = step(x)
            return x + dx, it + 1, jnp.linalg.norm(r)

        return jax.lax.while_loop(cond, body, (x, 0, jnp.inf))[0]

    def newton_dense(p, X, th, s2, c, n_iter, tol):
        def one(x):
            def step(x):
                r = R1(p, x, th, s2, c)
                return -jnp.linalg.solve(H1(p, x, th, s2, c), r), r

            return loop(step, x, n_iter, tol)

        return jax.vmap(one)(X)

    def chord_dense(p, X, th, s2, c, n_iter, tol):
        """Newton with the Hessian of the starting point, factorised once (for large N: forming Hred costs N d^2)."""

        def one(x0):
            lu = jax.scipy.linalg.lu_factor(H1(p, x0, th, s2, c))

            def step(x):
                r = R1(p, x, th, s2, c)
                return -jax.scipy.linalg.lu_solve(lu, r), r

            return loop(step, x0, n_iter, tol)

        return jax.vmap(one)(X)

    def top_eigs(p, x, th, s2, c, shift, V0):
        """Largest eigenvalues of Hred by LOBPCG on the PSD operator Hred + shift I (Hessian-vector products)."""
        op = jax.vmap(lambda v: hvp(*p, x, v, th, s2) - c * v + shift * v, in_axes=1, out_axes=1)
        w, V, _ = lobpcg_standard(op, V0, m=300, tol=1e-10)
        return w - shift, V

    def R_scalar(p, x, th, s2, c):  # 1D: R at a scalar x
        return score(*p, jnp.reshape(x, (1,)), th, s2)[0] - c * x

    def bisect(p, lo, hi, th, s2, c):  # vectorised bisection of brackets with R(lo) R(hi) < 0
        R = jax.vmap(R_scalar, (None, 0, 0, 0, 0))
        f_lo = R(p, lo, th, s2, c)

        def body(_, state):
            lo, hi, f_lo = state
            mid = 0.5 * (lo + hi)
            f_mid = R(p, mid, th, s2, c)
            left = jnp.sign(f_mid) == jnp.sign(f_lo)
            return jnp.where(left, mid, lo), jnp.where(left, hi, mid), jnp.where(left, f_mid, f_lo)

        lo, hi, _ = jax.lax.fori_loop(0, 80, body, (lo, hi, f_lo))  # 2^-80 of the bracket: round-off
        x = 0.5 * (lo + hi)
        return x, jax.vmap(jax.grad(R_scalar, argnums=1), (None, 0, 0, 0, 0))(p, x, th, s2, c)

    def sfn_dense(p, X, th, s2, c, n_iter, tol, max_step):
        """Saddle-free Newton on u_red (Dauphin et al. 2014): the Newton step with |eigenvalues| of the
        Hessian. It is Newton near a minimum, but walks away from saddles instead of onto them."""

        def step(x):
            r = R1(p, x, th, s2, c)  # = -grad u_red
            w, V = jnp.linalg.eigh(H1(p, x, th, s2, c))  # = -Hess u_red
            dx = V @ ((V.T @ r) / jnp.maximum(jnp.abs(w), 1e-12 / s2))
            return dx * jnp.minimum(1.0, max_step / jnp.linalg.norm(dx)), r

        return jax.vmap(lambda x: loop(step, x, n_iter, tol))(X)

    return {
        "sfn": jax.jit(sfn_dense),
        "R_grid": jax.jit(jax.vmap(jax.vmap(R_scalar, (None, 0, None, None, None)), (None, 0, 0, 0, 0))),
        "bisect": jax.jit(bisect),
        "R": jax.jit(jax.vmap(R1, (None, 0, None, None, None))),
        "top_eigs": jax.jit(top_eigs),
        "H": jax.jit(H1),
        "Hv": jax.jit(lambda p, x, v, th, s2, c: hvp(*p, x, v, th, s2) - c * v),
        "resp": jax.jit(jax.vmap(lambda p, x, th, s2: resp(*p, x, th, s2), (None, 0, None, None))),
        "descend": jax.jit(descend),
        "newton": jax.jit(newton_dense),
        "chord": jax.jit(chord_dense),
    }


class _Problem:
    """Data + schedule + eta (or an explicit c) at frozen times: residuals, Hessians, solvers."""

    def __init__(self, data, schedule: Schedule, eta: float | None, c_override: float | None = None):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a theory Schedule; got {type(schedule).__name__}")
        self.data, self.schedule = data, schedule
        self.eta = None if eta is None else check_eta(eta)
        self.c_override = c_override
        k = data._k
        self.ops = _ops((k["score"], k["hessian"], k["hvp"], k["resp"]))
        self.p = data._params
        self.d = data.dim
        means = np.asarray(data.means)
        self.n_components = len(means)
        self.scale = float(np.max(np.linalg.norm(means, axis=1))) + math.sqrt(
            max(data.min_component_variance(), 0.0) * self.d
        )
        self.lam_min = data.min_component_variance()
        sch = schedule
        self._coeff_fn = jax.jit(lambda t: jnp.stack([sch.theta(t), sch.sigma2(t), sch.a(t), sch.g2(t)]))
        self._coeff_cache = {}

    def coeffs(self, t):
        """(theta, sigma^2, c) at t (memoised: the continuation asks for the same t many times)."""
        t = float(t)
        if t not in self._coeff_cache:
            th, s2, a, g2 = (float(v) for v in self._coeff_fn(t))
            c = self.c_override if self.c_override is not None else 2.0 * a / ((1.0 + self.eta**2) * g2)
            self._coeff_cache[t] = (th, s2, c)
        return self._coeff_cache[t]

    def coeffs_array(self, ts):
        """(theta, sigma^2, c, k) as arrays over ts; k = (1 + eta^2)/2 g^2 turns Hred into the drift Jacobian."""
        sch, ts = self.schedule, jnp.asarray(ts, dtype=jnp.float64)
        th, s2, a, g2 = (np.asarray(v) for v in (sch.theta(ts), sch.sigma2(ts), sch.a(ts), sch.g2(ts)))
        if self.c_override is not None:
            return th, s2, np.full_like(th, self.c_override), np.ones_like(th)
        return th, s2, 2.0 * a / ((1.0 + self.eta**2) * g2), 0.5 * (1.0 + self.eta**2) * g2

    def kappa(self, t):
        th, s2, c = self.coeffs(t)
        if 1.0 + c * s2 <= 0.0:
            raise ValueError(
                f"at t={t} the fixed points are at infinity (x = E[y|x] / theta with theta = {th:.3g}: the "
                f"probability-flow ODE at theta -> 0); use a t below T"
            )
        return th / (1.0 + c * s2)

    def tol_res(self, t):
        """Residual tolerance on |R|: R is a score, of size |x| / sigma^2, and fixed points lie within
        kappa times the data's scale (kappa = 1/theta for the ODE: large at high noise)."""
        return 1e-10 * (1.0 + self.scale * max(1.0, abs(self.kappa(t)))) / self.coeffs(t)[1]

    def residual(self, X, t):
        return np.asarray(self.ops["R"](self.p, jnp.atleast_2d(X), *self.coeffs(t)))

    def descend(self, X, t, max_iter=5000, tol=None):
        th, s2, c = self.coeffs(t)
        L = 1.0 / (th**2 * self.lam_min + s2) + max(c, 0.0)
        tol = 1e-9 * (1.0 + self.scale) if tol is None else tol
        r_max = 10.0 * (1.0 + self.scale) * max(1.0, abs(self.kappa(t)))
        X, res = self.ops["descend"](self.p, jnp.asarray(X), th, s2, c, L, tol, max_iter, r_max)
        return np.asarray(X), np.asarray(res)

    def newton(self, X, t, n_iter=8):
        """Newton on R = 0 from each row of X; returns (X, converged mask)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if self.d <= DENSE_MAX:
            # Stop once |R| is 1e3 below the acceptance tolerance: one more step is then at round-off.
            tol = 1e-3 * self.tol_res(t)
            if self.n_components * self.d**2 > CHORD_FLOPS:  # chord: linear convergence, more iterations
                Xn = np.asarray(self.ops["chord"](self.p, jnp.asarray(X), *self.coeffs(t), 5 * n_iter, tol))
            else:
                Xn = np.asarray(self.ops["newton"](self.p, jnp.asarray(X), *self.coeffs(t), n_iter, tol))
        else:
            Xn = np.stack([self._newton_krylov(x, t, n_iter) for x in X])
        return Xn, self._converged(Xn, t)

    def _converged(self, X, t):
        """Mask of the rows of X that are fixed points at t: finite, with |R| <= tol_res."""
        ok = np.all(np.isfinite(X), axis=1)
        res = np.full(len(X), np.inf)
        if ok.any():
            res[ok] = np.linalg.norm(self.residual(X[ok], t), axis=1)
        return ok & (res <= self.tol_res(t))

    def minimise(self, X, t, n_iter=100):
        """Polish descent endpoints into minima of u_red; returns (X, converged mask)."""
        if self.d > DENSE_MAX:
            return self.newton(X, t)
        max_step = 0.1 * (1.0 + self.scale) * max(1.0, abs(self.kappa(t)))
        tol = 1e-3 * self.tol_res(t)
        Xn = np.asarray(self.ops["sfn"](self.p, jnp.asarray(X), *self.coeffs(t), n_iter, tol, max_step))
        return Xn, self._converged(Xn, t)

    def _newton_krylov(self, x, t, n_iter):
        th, s2, c = self.coeffs(t)
        x = jnp.asarray(x)
        for _ in range(n_iter):
            r = self.ops["R"](self.p, x[None], th, s2, c)[0]
            if float(jnp.linalg.norm(r)) <= self.tol_res(t):
                break
            op = spla.LinearOperator(
                (self.d, self.d), matvec=lambda v, x=x: np.array(self.ops["Hv"](self.p, x, jnp.asarray(v), th, s2, c))
            )
            dx, _ = spla.gmres(op, -np.array(r), rtol=1e-12, maxiter=200)
            x = x + jnp.asarray(dx)
        return np.asarray(x)

    def eig(self, x, t, k=1):
        """(eigenvalues of Hred ascending, eigenvectors); all of them when d <= DENSE_MAX, else top k."""
        th, s2, c = self.coeffs(t)
        if self.d <= DENSE_MAX:
            w, V = np.linalg.eigh(np.asarray(self.ops["H"](self.p, jnp.asarray(x), th, s2, c)))
            return w, V
        # Hess log p_t >= -max_k S_k^{-1} = -1 / (theta^2 lam_min + sigma^2), so this shift makes it PSD.
        shift = 1.0 / (th**2 * self.lam_min + s2) + c
        V0 = jax.random.normal(jax.random.PRNGKey(0), (self.d, max(k, min(4, (self.d - 1) // 5))))
        w, V = self.ops["top_eigs"](self.p, jnp.asarray(x), th, s2, c, shift, V0)
        order = np.argsort(np.asarray(w))[-k:]
        return np.asarray(w)[order], np.asarray(V)[:, order]

    def centre_lipschitz(self):
        """Bound on |dx/dt| along a smooth branch: a generous multiple of the data scale per unit time."""
        return 1e3 * (1.0 + self.scale) / self.schedule.T

    def stability_margin(self, x, t):
        """Minus the top eigenvalue of Hred, in units of 1/sigma^2: > 0 iff stable (the crossing for continuation)."""
        return -float(self.eig(x, t)[0][-1]) * self.coeffs(t)[1]

    def stable(self, x, t):
        w, _ = self.eig(x, t)
        return bool(w[-1] < -1e-12 / self.coeffs(t)[1])

    def seeds(self, t, n_seeds, seed=0):
        """The centre kappa E[y] and data attractors kappa y_j (a farthest-point subset if N > n_seeds)."""
        means = np.asarray(self.data.means)
        idx = _farthest_points(means, n_seeds, seed) if len(means) > n_seeds else np.arange(len(means))
        centre = np.asarray(self.data.mean())[None]
        return self.kappa(t) * np.concatenate([centre, means[idx]])

    def dedup(self, X, rel_tol=1e-7):
        tol = rel_tol * (1.0 + self.scale)
        kept = []
        for x in X:
            if all(np.linalg.norm(x - y) > tol for y in kept):
                kept.append(x)
        return np.array(kept).reshape(-1, self.d)

    def stable_points(self, t, n_seeds, extra=None):
        """All attractors reached from the seeds (and the rows of ``extra``), polished and deduplicated."""
        X = self.seeds(t, n_seeds)
        if extra is not None and len(extra):
            X = np.concatenate([X, extra])
        # Descent brings each seed into its attractor's basin (slowly near a bifurcation, where its
        # rate -> 1); saddle-free Newton (dense) or Newton-Krylov finishes. Only converged points are kept.
        X, _ = self.descend(X, t, max_iter=1000)
        X = self.dedup(X[np.all(np.isfinite(X), axis=1)], 1e-4)  # merge before the costly polish
        Xp, ok = self.minimise(X, t)
        X = self.dedup(Xp[ok])
        return np.array([x for x in X if self.stable(x, t)]).reshape(-1, self.d)

    def continue_branch(self, x0, t0, t1, accept, tol_t, lipschitz=None, h0=None, crossing=None):
        """Carry a fixed point from t0 towards t1 while ``accept(x, t)``; halve the step on failure.

        With ``crossing(x, t)`` (continuous, > 0 where accepted, e.g. minus the top eigenvalue), a
        branch that goes on but is rejected at the next point has its end located by Brent's method
        on the crossing instead of by halving (a few Newton solves instead of ~40).

        A Newton limit further than ``jump`` from the last point, or (with ``lipschitz``) further than
        lipschitz |dt|, is another branch, not this one: past a pitchfork Newton started on the
        centre can land on a child branch, which is O(sqrt|dt|) away.
        Returns (x, t, reached): the last accepted point, its time, and whether t1 was reached.
        """
        x, t, h = np.asarray(x0, dtype=np.float64), float(t0), float(t1) - float(t0)
        if h0 is not None:  # a first step smaller than the whole way saves failed Newton solves
            h = math.copysign(min(abs(h), h0), h)
        jump = 0.05 * (1.0 + self.scale)
        while abs(h) > tol_t:
            t_try = t + h
            if (h < 0 and t_try < t1) or (h > 0 and t_try > t1):
                t_try, h = float(t1), float(t1) - t
            xn, ok = self.newton(x[None], t_try)
            dx = np.linalg.norm(xn[0] - x)
            near = dx <= jump and (lipschitz is None or dx <= lipschitz * abs(t_try - t))
            if ok[0] and near and accept(xn[0], t_try):
                x, t = xn[0], t_try
                if t == t1:
                    return x, t, True
                h *= 2.0
                continue
            if ok[0] and near and crossing is not None and crossing(xn[0], t_try) <= 0:
                end = self._locate_crossing(x, t, t_try, crossing, tol_t)
                if end is not None:
                    return end[0], end[1], False
            h *= 0.5
        return x, t, False

    def _locate_crossing(self, x, t_in, t_out, crossing, tol_t):
        """Root of crossing along the branch through x between t_in (> 0) and t_out (<= 0), or None."""

        def f(s):
            xs, ok = self.newton(x[None], s)
            if not ok[0]:
                raise ArithmeticError
            return crossing(xs[0], s)

        try:
            root = brentq(f, t_in, t_out, xtol=tol_t, rtol=4 * np.finfo(float).eps)
        except (ArithmeticError, ValueError):
            return None
        xr, ok = self.newton(x[None], root)
        return (xr[0], root) if ok[0] else None


def _farthest_points(P, n, seed):
    """Deterministic farthest-point subset of the rows of P (the first one chosen by ``seed``)."""
    rng = np.random.default_rng(seed)
    idx = [int(rng.integers(len(P)))]
    dist = np.linalg.norm(P - P[idx[0]], axis=1)
    for _ in range(n - 1):
        idx.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(P - P[idx[-1]], axis=1))
    return np.array(idx)


def _scale_eig(prob: _Problem, t, w):
    """Eigenvalues of Hred -> eigenvalues of the drift Jacobian ((1 + eta^2)/2 g^2 Hred)."""
    return np.asarray(w) * 0.5 * (1.0 + prob.eta**2) * float(prob.schedule.g2(t))


# --- public results ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FixedPoint:
    """A fixed point x (d,) of the drift at time t, its drift-Jacobian eigenvalues, and stability.

    ``eigenvalues`` are all d eigenvalues (ascending) when d <= 2048, else the largest one.
    """

    x: np.ndarray
    eigenvalues: np.ndarray
    stable: bool


@dataclass(frozen=True)
class CriticalTime:
    """The first bifurcation met in the generative direction (t decreasing from T).

    Attributes:
        t: forward time of the bifurcation (nan when kind is "none").
        theta: theta(t).
        sigma: sigma(t).
        snr: theta^2 / sigma^2 at t.
        ou_time: the Ornstein-Uhlenbeck time with the same SNR, 1/2 ln(1 + 1/snr).
        kind: "pitchfork" (the centre loses stability and the new attractors are born from it),
            "saddle-node" (new attractors appear away from the centre), or "none" (no bifurcation
            in (t_min, T]; then ``message`` says why and the numbers are nan).
        x: the bifurcation point (d,).
        direction: the unit eigenvector of the zero eigenvalue at x.
        centre_t: where the branch continued from the centre at T loses stability (nan if it never
            does above t_min).
        centre_theta: theta(centre_t).
        eta: the member of the eta family.
        step: for a DDPM schedule, the last forward step past the bifurcation, max{k : theta_k > theta_c}.
        generative_step: N - step.
        message: why kind is "none".
    """

    t: float
    theta: float
    sigma: float
    snr: float
    ou_time: float
    kind: str
    x: np.ndarray
    direction: np.ndarray
    centre_t: float
    centre_theta: float
    eta: float
    step: int | None = None
    generative_step: int | None = None
    message: str = ""


@dataclass(frozen=True)
class SpeciationTime:
    """Where -log p_t loses convexity at the centre (the mode continued from T), with the
    Biroli et al. (2024) estimate t_S = 1/2 ln Lambda in OU time (Lambda: top eigenvalue of the
    data covariance), mapped to this schedule's time through the SNR."""

    t: float
    theta: float
    snr: float
    ou_time: float
    biroli_ou_time: float
    biroli_t: float
    Lambda: float


@dataclass
class BifurcationDiagram:
    """Fixed points over a time grid: ``t`` (M,), and per time a list of FixedPoint."""

    t: np.ndarray
    points: list = field(default_factory=list)


# --- public functions --------------------------------------------------------------------------
def fixed_points(data, schedule: Schedule, t: float, eta: float = 1.0, *, n_seeds: int = 256) -> list[FixedPoint]:
    """All fixed points of the eta-family drift at forward time t, with eigenvalues and stability.

    In 1D the set is exhaustive (sign changes of the drift on a fine grid, refined by Newton);
    in higher dimension it holds the attractors reached from the seeds and the unstable points
    found by Newton from the centre and from midpoints between attractors. Sorted by x[0].

    Examples:
        >>> import numpy as np
        >>> from theory import DeltaMixture, VPLinear, fixed_points
        >>> pts = fixed_points(DeltaMixture([[-1.0], [1.0]]), VPLinear(), 0.1)
        >>> [(round(float(p.x[0]), 4) + 0.0, p.stable) for p in pts]
        [(-0.9985, True), (0.0, False), (0.9985, True)]
    """
    schedule.check_t(t)
    prob = _Problem(data, schedule, eta)
    t = float(t)
    stable = prob.stable_points(t, n_seeds)
    if prob.d == 1:
        X = _roots_1d(prob, t)[0][0][:, None]
    else:
        cand = [prob.seeds(t, 1)[:1]]
        if len(stable) > 1:
            i, j = np.triu_indices(len(stable), 1)
            cand.append(0.5 * (stable[i] + stable[j])[:200])
        Xn, ok = prob.newton(np.concatenate(cand), t, n_iter=30)
        X = np.concatenate([stable, Xn[ok]])
    out = []
    for x in prob.dedup(X):
        w, _ = prob.eig(x, t)
        out.append(FixedPoint(x=x, eigenvalues=_scale_eig(prob, t, w), stable=prob.stable(x, t)))
    return sorted(out, key=lambda p: float(p.x[0]))


def _roots_1d(prob: _Problem, ts, n_grid=4001):
    """Every fixed point in 1D at each time of ``ts``: sign changes of R on a grid over
    kappa [min y, max y] (padded by the components' spread), refined by vectorised bisection.

    Returns per time (roots (n,), slopes dR/dx (n,)); a root is stable iff its slope is < 0.
    """
    ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
    th, s2, c, _ = prob.coeffs_array(ts)
    k = th / (1.0 + c * s2)
    means = np.asarray(prob.data.means)[:, 0]
    pad = 1e-6 + 8.0 * np.sqrt(prob.lam_min) * th * np.abs(k)
    ends = np.stack([k * means.min() - pad, k * means.max() + pad])
    lo, hi = ends.min(axis=0), ends.max(axis=0)
    X = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, n_grid)[None, :]
    R = np.asarray(prob.ops["R_grid"](prob.p, jnp.asarray(X), th, s2, c))
    it, j = np.nonzero(np.sign(R[:, :-1]) * np.sign(R[:, 1:]) < 0)
    lo_x, hi_x = X[it, j], X[it, j + 1]
    iz, jz = np.nonzero(R == 0)  # roots exactly on the grid (e.g. the centre of symmetric data): [x, x]
    it, lo_x, hi_x = np.concatenate([it, iz]), np.concatenate([lo_x, X[iz, jz]]), np.concatenate([hi_x, X[iz, jz]])
    # Pad the brackets to a power of two so that repeated calls reuse one compiled kernel.
    n = len(it)
    roots = slopes = np.zeros(0)
    if n:
        pad = np.concatenate([np.arange(n), np.zeros((1 << (n - 1).bit_length()) - n, dtype=int)])
        ip = it[pad]
        roots, slopes = prob.ops["bisect"](
            prob.p, jnp.asarray(lo_x[pad]), jnp.asarray(hi_x[pad]), th[ip], s2[ip], c[ip]
        )
        roots, slopes = np.asarray(roots)[:n], np.asarray(slopes)[:n]
    out = [([], []) for _ in ts]
    for i, x, sl in zip(it, roots, slopes, strict=True):
        out[i][0].append(x)
        out[i][1].append(sl)
    result = []
    for r, sl in out:
        order = np.argsort(r)
        result.append((np.asarray(r)[order], np.asarray(sl)[order]))
    return result


def bifurcation_diagram(
    data, schedule: Schedule, ts, eta: float = 1.0, *, n_seeds: int = 256, n_grid: int = 1001
) -> BifurcationDiagram:
    """``fixed_points`` at every time of ``ts`` (any order).

    In 1D the whole diagram is computed at once: R on a (time x ``n_grid``) grid, one vectorised
    bisection of every bracket, stability from the sign of dR/dx (two roots closer than the grid
    spacing, 2 kappa max|y| / n_grid, are missed: only just past a bifurcation). In higher
    dimension, one ``fixed_points`` call per time.
    """
    ts = np.asarray(ts, dtype=np.float64)
    schedule.check_t(ts, "ts")
    if data.dim > 1:
        return BifurcationDiagram(t=ts, points=[fixed_points(data, schedule, t, eta, n_seeds=n_seeds) for t in ts])
    prob = _Problem(data, schedule, eta)
    k = prob.coeffs_array(ts)[3]
    points = [
        [
            FixedPoint(x=np.array([x]), eigenvalues=np.array([sl * ki]), stable=bool(sl < 0))
            for x, sl in zip(r, sls, strict=True)
        ]
        for (r, sls), ki in zip(_roots_1d(prob, ts, n_grid), k, strict=True)
    ]
    return BifurcationDiagram(t=ts, points=points)


def _time_grid(schedule: Schedule, t_min: float, n_grid: int):
    """Times from T down to t_min, uniform in log-SNR (where the structure changes).

    Where snr(T) < 1e-8 (cosine: theta(T) = 0, where the ODE's fixed points x = E[y|x] / theta are at
    infinity) the grid starts at snr = 1e-8 instead of T.
    """
    lo, hi = float(schedule.log_snr(schedule.T)), float(schedule.log_snr(t_min))
    start = schedule.T
    if lo < math.log(1e-8):
        lo, start = math.log(1e-8), float(schedule.t_from_snr(1e-8))
    grid = np.exp(np.linspace(lo, hi, n_grid))
    ts = np.asarray(schedule.t_from_snr(grid[1:-1]))
    return np.concatenate([[start], ts, [t_min]])


def critical_time(
    data,
    schedule: Schedule,
    eta: float = 1.0,
    *,
    t_min: float | None = None,
    n_grid: int = 64,
    n_seeds: int = 256,
    tol_t: float = 1e-13,
) -> CriticalTime:
    """The first bifurcation of the fixed-point set in the generative direction (DESIGN.md).

    Scans a grid uniform in log-SNR from T down to ``t_min`` (default 1e-4 T) for the first time
    with a second stable fixed point, then locates the bifurcation inside that grid cell by
    continuation to ``tol_t`` in t: the centre branch's loss of stability (pitchfork) or the
    birth of a new attractor away from the centre (saddle-node), whichever comes first.

    Examples:
        >>> import numpy as np
        >>> from theory import DeltaMixture, VPLinear, critical_time
        >>> ct = critical_time(DeltaMixture([[-1.0], [1.0]]), VPLinear())
        >>> ct.kind, round(ct.theta, 10), round(ct.t, 10)
        ('pitchfork', 0.6435942529, 0.2926416543)
    """
    eta = check_eta(eta)
    prob = _Problem(data, schedule, eta)
    return _first_bifurcation(prob, schedule, eta, t_min, n_grid, n_seeds, tol_t)


def _first_bifurcation(prob, schedule, eta, t_min, n_grid, n_seeds, tol_t):
    T = schedule.T
    t_min = 1e-4 * T if t_min is None else float(t_min)
    check_in_range("t_min", t_min, 0.0, T, open_lo=True, open_hi=True)
    ts = _time_grid(schedule, t_min, n_grid)
    nan = float("nan")

    def result(kind, t, x, direction, centre_t, message=""):
        th = float(schedule.theta(t)) if np.isfinite(t) else nan
        ct = float(schedule.theta(centre_t)) if np.isfinite(centre_t) else nan
        step = gen = None
        if isinstance(schedule, DDPM) and np.isfinite(th):
            step = schedule.forward_step(th)
            gen = schedule.n_steps - step
        snr = float(schedule.snr(t)) if np.isfinite(t) else nan
        return CriticalTime(
            t=float(t),
            theta=th,
            sigma=float(schedule.sigma(t)) if np.isfinite(t) else nan,
            snr=snr,
            ou_time=float(schedule.ou_time(t)) if np.isfinite(t) else nan,
            kind=kind,
            x=x,
            direction=direction,
            centre_t=float(centre_t),
            centre_theta=ct,
            eta=eta,
            step=step,
            generative_step=gen,
            message=message,
        )

    empty = np.full(prob.d, nan)
    start = prob.stable_points(ts[0], n_seeds)
    if len(start) >= 2:
        return result(
            "none",
            nan,
            empty,
            empty,
            nan,
            f"already {len(start)} stable fixed points at t = {ts[0]} (T = {T}): no bifurcation in (t_min, T]",
        )

    # The centre branch: carried cell by cell from the unique attractor at T until it loses stability.
    centre_t, path = nan, []  # path: (t, x) points of the centre branch, t decreasing
    if len(start) == 1:
        path.append((ts[0], start[0]))
        for i in range(1, len(ts)):
            x, t, reached = prob.continue_branch(
                path[-1][1],
                ts[i - 1],
                ts[i],
                prob.stable,
                tol_t,
                prob.centre_lipschitz(),
                crossing=prob.stability_margin,
            )
            path.append((t, x))
            if not reached:
                centre_t = t
                break

    # Scan for the first grid time with a second attractor.
    prev = start
    for i in range(1, len(ts)):
        cur = prob.stable_points(ts[i], n_seeds, extra=prev)
        if len(cur) >= 2:
            break
        prev = cur
    else:
        return result(
            "none",
            nan,
            empty,
            empty,
            centre_t,
            f"at most one stable fixed point on the whole grid down to t_min = {t_min}",
        )
    t_lo = ts[i]

    def centre_at(t):
        """The centre branch at t (stable or not): Newton from its recorded point nearest in t."""
        if not path:
            return None
        x0 = min(path, key=lambda p: abs(p[0] - t))[1]
        x, ok = prob.newton(x0[None], t, n_iter=30)
        return x[0] if ok[0] else None

    sep = 1e-6 * (1.0 + prob.scale)

    def new_attractor(x, t):
        c = centre_at(t)
        return prob.stable(x, t) and (c is None or np.linalg.norm(x - c) > sep)

    # Each new attractor is carried back up (t increasing) to where it is born: first every one to
    # a coarse tolerance, then the earliest-born to tol_t. The search may leave the grid cell: a
    # seed that descended too slowly at an earlier grid time can have hidden an attractor there.
    births = []
    c_lo = centre_at(t_lo)
    coarse = max(tol_t, 1e-7 * T)
    for x in cur:
        if c_lo is not None and np.linalg.norm(x - c_lo) <= sep:
            continue  # the centre branch itself
        xb, tb, reached = prob.continue_branch(x, t_lo, T, new_attractor, coarse, h0=ts[i - 1] - t_lo)
        if not reached:
            births.append((tb, xb))
    if births:
        tb, xb = max(births, key=lambda b: b[0])
        xb, tb, _ = prob.continue_branch(xb, tb, T, new_attractor, tol_t, h0=2 * coarse)
        births = [(tb, xb)]
    pf = np.isfinite(centre_t) and centre_t >= t_lo  # the centre has lost stability by t_lo

    def _dist_to_centre(x, t):
        c = centre_at(t)
        return np.inf if c is None else float(np.linalg.norm(x - c))

    if births:
        tb, xb = max(births, key=lambda b: b[0])
    # A birth next to the centre branch where the centre has lost stability is the pitchfork itself,
    # seen through Newton's limited accuracy where the potential is flat.
    at_centre = births and pf and (tb <= centre_t + 1e-6 * T or _dist_to_centre(xb, tb) < 1e-3 * (1.0 + prob.scale))
    if births and not at_centre:
        w, V = prob.eig(xb, tb)
        return result("saddle-node", tb, xb, V[:, -1], centre_t)
    if pf:
        xc = path[-1][1]
        w, V = prob.eig(xc, centre_t)
        return result("pitchfork", centre_t, xc, V[:, -1], centre_t)
    raise RuntimeError(  # pragma: no cover  (a new attractor whose birth continuation failed)
        f"a second attractor exists at t={t_lo}, but neither its birth nor a loss of stability of the "
        f"centre could be located above it; try a finer grid (n_grid) or more seeds (n_seeds)"
    )


def speciation_time(data, schedule: Schedule, *, t_min: float | None = None, tol_t: float = 1e-13) -> SpeciationTime:
    """Where -log p_t loses convexity at the centre, and the Biroli et al. estimate.

    The centre is the mode of p_t continued from t = T (for centred symmetric data, x = 0); its
    loss of convexity is where Hess log p_t first gets a zero eigenvalue there. For centred
    equal-norm data: theta^2 lambda_max = sigma^2. Biroli et al.: t_S = 1/2 ln Lambda in OU time.
    """
    T = schedule.T
    t_min = 1e-4 * T if t_min is None else float(t_min)
    check_in_range("t_min", t_min, 0.0, T, open_lo=True, open_hi=True)
    prob = _Problem(data, schedule, None, c_override=0.0)
    ts = _time_grid(schedule, t_min, 64)
    start = prob.stable_points(ts[0], 64)
    nan = float("nan")
    t = nan
    if len(start) == 1:
        x = start[0]
        for i in range(1, len(ts)):
            x, tc, reached = prob.continue_branch(
                x, ts[i - 1], ts[i], prob.stable, tol_t, prob.centre_lipschitz(), crossing=prob.stability_margin
            )
            if not reached:
                t = tc
                break
    Lam = float(np.linalg.eigvalsh(np.asarray(data.covariance()))[-1])
    s_biroli = 0.5 * math.log(Lam) if Lam > 0 else nan
    biroli_t = nan
    if np.isfinite(s_biroli) and s_biroli > 0:
        snr_b = 1.0 / math.expm1(2.0 * s_biroli)  # OU: theta = e^{-s}, sigma^2 = 1 - e^{-2s}
        if float(schedule.snr(T)) <= snr_b <= float(schedule.snr(t_min)):
            biroli_t = float(schedule.t_from_snr(snr_b))
    ok = np.isfinite(t)
    return SpeciationTime(
        t=t,
        theta=float(schedule.theta(t)) if ok else nan,
        snr=float(schedule.snr(t)) if ok else nan,
        ou_time=float(schedule.ou_time(t)) if ok else nan,
        biroli_ou_time=s_biroli,
        biroli_t=biroli_t,
        Lambda=Lam,
    )


def fixed_point_map(data, schedule: Schedule, x, t, eta: float = 1.0):
    """kappa(t) E[y | x_t = x] for a finite data set: fixed points solve x = fixed_point_map(x).

    kappa = theta / (1 + c sigma^2) with c = 2a / ((1 + eta^2) g^2) (VP: c = -1/(1 + eta^2)). For
    +-1 deltas this is the paper's kappa tanh(theta x / sigma^2). x (..., d) -> (..., d).
    """
    from theory.data import DeltaMixture

    if not isinstance(data, DeltaMixture):
        raise TypeError("fixed_point_map needs a DeltaMixture (x = kappa E[y|x] holds for finite data sets only)")
    prob = _Problem(data, schedule, eta)
    schedule.check_t(t)
    return prob.kappa(float(t)) * data.responsibilities(x, t, schedule) @ data.points


def descend(data, schedule: Schedule, X, t, eta: float = 1.0, max_iter: int = 20000):
    """Carry each row of X (n, d) to its attractor by the frozen-time gradient flow of u_eta at t."""
    prob = _Problem(data, schedule, eta)
    schedule.check_t(t)
    return prob.descend(np.atleast_2d(X), float(t), max_iter=max_iter)[0]


def attractor_posterior(data, schedule: Schedule, X, t, eta: float = 1.0):
    """Posterior weights over the points/components at the attractor each row of X flows to at t.

    The attractor is reached by the frozen-time gradient flow of u_eta (``descend``); returns (n, N).
    A shared attractor (the centre before the critical time) spreads its weight over the points.
    """
    prob = _Problem(data, schedule, eta)
    schedule.check_t(t)
    A, _ = prob.descend(np.atleast_2d(X), float(t))
    return np.asarray(prob.ops["resp"](prob.p, jnp.asarray(A), *prob.coeffs(float(t))[:2]))


def attractor_labels(data, schedule: Schedule, X, t, eta: float = 1.0, labels=None):
    """Label of the attractor each row of X flows to at t: the point/component with the largest
    posterior weight there, mapped through ``labels`` (default: its index)."""
    j = np.argmax(attractor_posterior(data, schedule, X, t, eta), axis=1)
    return j if labels is None else np.asarray(labels)[j]
