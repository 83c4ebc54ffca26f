r"""The exact frozen-time field of a mixture: one implementation of the field protocol (``theory._continuation``).

At a frozen time t the reduced field of the eta family (``theory.family``) and its Jacobian are

    R(x) = grad log p_t(x) - c x,     H(x) = Hess log p_t(x) - c I,

for a finite data set H = -(1/sigma^2 + c) I + theta^2 Cov[y | x] / sigma^4. A fixed point is stable
in the generative direction iff every eigenvalue of H is negative.

Speed on large data sets (N points in d dimensions):
* Point-local quantities (H, its eigenpairs, the derivatives of the fold system) use only the points
  whose posterior weight is within e^-60 of the largest, which changes sums by less than N e^-60
  (< 1e-20 relative for N < 1e6): round-off, not an approximation. Near the data the posterior
  holds a handful of points, so H costs far less than the N d^2 of the whole set.
* Residuals always use every point (the Newton test of convergence is exact).
* The seed descent can run in float32: it only chooses candidates, which Newton polishes in float64.
* With several jax devices the points are sharded over them (``jax.sharding``): every posterior sum is
  a reduction over the data axis, which XLA splits across devices with no change for the caller.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from theory import _certify, _krylov
from theory._kernels import _kernels, _posterior_kernels, _time_kernels
from theory._placement import PAD_LOGW, _pad_rows, _place, farthest_points
from theory.family import EtaFamily

LOG_CUT = 60.0  # posterior weights below e^-60 of the largest are dropped from point-local sums
LOCAL_MIN_WORK = 2e6  # N d below which point-local sums use every point (fewer compiled shapes)
EIG_CACHE = 1024  # top eigenpairs memoised (matrix-free): a scan's candidates are tested, then carried up
DESCENT_CHUNK = 64  # descent iterations between two removals of the converged rows from the batch
BALLS_MAX = 64  # attractors whose certified balls a descent tests (k d a row and step, against the step's N d)
DESCENT_CHUNK0 = 8  # the first chunk: most rows converge in a few steps, and a chunk runs every row to its end


def _pad_batch(X):
    """X (n, d) padded (copies of its first row) to a power of two up to 32 rows, above that to a multiple of an
    eighth of the power of two below n: a descent costs the padded rows, and the 1 + 256 + k seeds of a scan
    padded to 512 cost twice 288; 8 compiled shapes an octave."""
    n = len(X)
    step = 1 << max(0, int(n - 1).bit_length() - (4 if n > 32 else 0))
    m = -(-n // step) * step
    return X if m == n else np.concatenate([X, np.repeat(X[:1], m - n, axis=0)])


class MixtureField:
    """The exact field of a ``DeltaMixture`` or ``GaussianMixture`` at frozen times.

    ``eta=None`` gives the field of the data alone (c = 0: the modes of p_t, for speciation).
    ``devices``: the jax devices to shard the data over (default: every local device when there are
    several; one device means no sharding).
    """

    def __init__(self, data, schedule, eta: float | None, devices=None):
        from theory._checks import check_data

        check_data(data)
        self.data, self.schedule = data, schedule
        self.family = None if eta is None else EtaFamily(schedule, eta)
        self.eta = None if eta is None else self.family.eta
        self.T = float(schedule.T)
        self.k = _kernels(data._k["score"], data._k["hessian"], data._k["hvp"], data._k["resp"])
        post = data._k.get("posterior"), data._k.get("cov_matmat")
        self.k_post = _posterior_kernels(*post) if None not in post else None  # products at a fixed posterior
        self.d = int(data.dim)
        self.finite = data.min_component_variance() == 0.0  # a DeltaMixture: posterior truncation applies
        means = np.asarray(data.means)
        self.n_components = len(means)
        self.lam_min = float(data.min_component_variance())
        self.scale = float(np.max(np.linalg.norm(means, axis=1))) + math.sqrt(self.lam_min * self.d)
        self._host = tuple(np.asarray(a) for a in data._params)
        self.p = _place(self._host, devices)
        self._p32 = None
        self.coeffs_of_t, self._coeff_fn, self._R_t, self._quad_t = _time_kernels(
            self.k["R1"], self.k["quad"], schedule, self.eta
        )
        self._cache, self._hcache, self._ecache = {}, {}, {}
        self._moments = None  # the data's moments for the certificates (theory._certify)
        self._seed_idx = {}  # (n_seeds, seed) -> the farthest-point subset
        self.matrix_free = self.d >= _krylov.MATRIX_FREE_D  # products H v instead of H (theory._krylov)
        self._v_top = None  # the last top eigenvector: Lanczos starts there

    # --- coefficients -------------------------------------------------------------------------
    def coeffs(self, t):
        """(theta, sigma^2, c) at t, memoised (continuation asks for the same t many times)."""
        t = float(t)
        if t not in self._cache:
            self._cache[t] = tuple(float(v) for v in self._coeff_fn(t))
        return self._cache[t]

    def kappa(self, t):
        th, s2, c = self.coeffs(t)
        if 1.0 + c * s2 <= 0.0:
            raise ValueError(
                f"at t={t} the fixed points are at infinity (x = E[y|x] / theta with theta = {th:.3g}: the "
                f"probability-flow ODE at theta -> 0); use a t below T"
            )
        return th / (1.0 + c * s2)

    def coeffs_array(self, ts):
        """(theta, sigma^2, c, k) as arrays over ts; k turns H into the drift Jacobian (1 for c = 0)."""
        ts = jnp.asarray(ts, dtype=jnp.float64)
        th, s2, c = (np.broadcast_to(np.asarray(v), ts.shape) for v in self.coeffs_of_t(ts))
        k = np.ones(ts.shape) if self.family is None else np.asarray(self.family.k(ts))
        return th, s2, c, k

    def jacobian_scale(self, t):
        """k(t): the drift's Jacobian is k H (1 for the data-only field)."""
        return 1.0 if self.family is None else float(self.family.k(t))

    def tol_res(self, t):
        """Tolerance on |R|: R is a score, of size |x| / sigma^2, and fixed points lie within kappa
        times the data's scale (kappa = 1/theta for the ODE: large at high noise)."""
        return 1e-10 * (1.0 + self.scale * max(1.0, abs(self.kappa(t)))) / self.coeffs(t)[1]

    # --- residuals and Newton -------------------------------------------------------------------
    def residual(self, X, t):
        X = np.atleast_2d(X)
        return np.asarray(self.k["R"](self.p, jnp.asarray(_pad_rows(X)), *self.coeffs(t)))[: len(X)]

    def converged(self, X, t):
        """Mask of the rows of X that are fixed points at t: finite, with |R| <= tol_res."""
        X = np.atleast_2d(X)
        ok = np.all(np.isfinite(X), axis=1)
        res = np.full(len(X), np.inf)
        if ok.any():
            res[ok] = np.linalg.norm(self.residual(X[ok], t), axis=1)
        return ok & (res <= self.tol_res(t))

    def local_params(self, x, t, cut=LOG_CUT):
        """The data restricted to the points that carry posterior weight at x (all of a Gaussian mixture)."""
        if not self.finite or self.n_components * self.d < LOCAL_MIN_WORK:
            return self.p
        Y, logw, ysq = self._host
        th, s2, _ = self.coeffs(t)
        logits = logw + (th * (Y @ np.asarray(x)) - 0.5 * th**2 * ysq) / s2
        idx = np.nonzero(logits >= logits.max() - cut)[0]
        if len(idx) > 0.5 * len(Y):
            return self.p
        n = 1 << max(0, int(len(idx) - 1).bit_length())  # pad to a power of two: few compiled shapes
        lw = np.full(n, PAD_LOGW)
        lw[: len(idx)] = logw[idx]
        pad = np.concatenate([idx, np.full(n - len(idx), idx[0])])
        return (jnp.asarray(Y[pad]), jnp.asarray(lw), jnp.asarray(ysq[pad]))

    def hessian(self, x, t):
        """H(x) at t, (d, d), from the points with posterior weight at x (the last few are memoised:
        a stability test, an eigenvalue and a Newton step often ask at the same point)."""
        key = (float(t), np.asarray(x, dtype=np.float64).tobytes())
        if key not in self._hcache:
            if len(self._hcache) >= 8:
                self._hcache.pop(next(iter(self._hcache)))
            self._hcache[key] = np.asarray(self.k["H"](self.local_params(x, t), jnp.asarray(x), *self.coeffs(t)))
        return self._hcache[key]

    def newton(self, X, t, n_iter=8, prev=None):
        """Newton on R = 0 from each row of X; returns (X, converged mask).

        ``prev`` = (t0, x0), a solved point nearby (the last point of a continued branch): its Hessian,
        already computed for its stability, serves as the chord Jacobian first (one Hessian costs N d^2;
        a chord step a residual, N d). Stops once |R| is 1e3 below the acceptance tolerance, and with ``prev``
        where |R| grows (the step of a continuation has gone past a fold: no fixed point to converge to).
        """
        X = np.array(np.atleast_2d(X), dtype=np.float64)
        tol = 1e-3 * self.tol_res(t)
        for i, x in enumerate(X):
            if self.contraction_bound(x, t) < 0.5:  # the fixed-point map contracts: no Hessian needed
                x = self._iterate_map(x, t, 4 * n_iter, tol)
            elif prev is not None and not self.matrix_free:
                x = self._chord(x, t, self.hessian(prev[1], prev[0]), 3 * n_iter, tol)
            last = math.inf
            for _ in range(n_iter):
                r = self.residual(x, t)[0]
                norm = np.linalg.norm(r)
                if not np.isfinite(norm) or norm <= tol or (prev is not None and norm > last):
                    break  # continuing a branch (prev): a growing residual means no fixed point near the guess
                last = norm
                try:  # inexact Newton: the next residual is about rtol |R|, so no more accuracy than tol needs
                    rtol = min(1e-2, max(1e-12, 0.1 * tol / norm))
                    x = x - _krylov.solve(self.jacobian(x, t), r, rtol=rtol)
                except np.linalg.LinAlgError:
                    break
            X[i] = x
        return X, self.converged(X, t)

    # --- certificates (theory._certify) ------------------------------------------------------------
    def contraction_bound(self, x, t):
        """``theory._certify.contraction_bounds`` at one point."""
        return float(_certify.contraction_bounds(self, np.atleast_2d(x), t)[0])

    def contraction_bounds(self, X, t):
        return _certify.contraction_bounds(self, X, t)

    def one_attractor(self, t):
        return _certify.one_attractor(self, t)

    def contraction_radius(self, x, t):
        return _certify.contraction_radius(self, x, t)

    def stable_many(self, X, t):
        """``stable`` at every row of X (k, d): the bounds of ``theory._certify.certified_stable``, then the top
        eigenvalues of the rest at once (matrix-free, finite data: Lanczos runs in lock-step,
        ``theory._krylov.top_eigpairs_many``), memoised."""
        X = np.atleast_2d(X)
        out = _certify.certified_stable(self, X, t)
        rest = [i for i in np.nonzero(~out)[0] if self._eig_key(X[i], t) not in self._ecache]
        if self.matrix_free and self.k_post is not None and len(rest) > 1:
            lams, vecs, ok = _krylov.top_eigpairs_many(self, X[rest], t)
            for i, lam, v in zip(np.asarray(rest)[ok], lams[ok], vecs[ok], strict=True):
                self._remember(self._eig_key(X[i], t), (float(lam), v))
        s2 = self.coeffs(t)[1]  # ``margin`` where the bound is inconclusive, without computing the bound again
        return np.array([o or -self.top_eig(x, t)[0] * s2 > 1e-12 for o, x in zip(out, X, strict=True)], dtype=bool)

    def _iterate_map(self, x, t, n_iter, tol):
        """x <- kappa E[y | x] (one posterior pass a step) while |R| > tol."""
        kappa, Y = self.kappa(t), self._host[0]
        for _ in range(n_iter):
            r = self.residual(x, t)[0]
            if not np.all(np.isfinite(r)) or np.linalg.norm(r) <= tol:
                break
            x = kappa * (self.responsibilities(x, t)[0] @ Y)
        return x

    def _chord(self, x, t, H, n_iter, tol):
        """Chord iterations x <- x - H^-1 R(x) with one factorised H, while |R| decreases fast enough."""
        lu = scipy.linalg.lu_factor(H)
        best, norm = x, np.inf
        for _ in range(n_iter):
            r = self.residual(x, t)[0]
            rn = np.linalg.norm(r)
            if not np.isfinite(rn) or rn > 0.5 * norm:
                return best  # not contracting: Newton takes over from the best point
            best, norm = x, rn
            if rn <= tol:
                break
            x = x - scipy.linalg.lu_solve(lu, r)
        return best

    def minimise(self, X, t, n_iter=100):
        """Saddle-free Newton on u (Dauphin et al. 2014) from each row of X: the Newton step with the
        |eigenvalues| of H, so it is Newton near a minimum but walks away from saddles. Returns (X, ok).
        With ``matrix_free`` (no eigendecomposition): ``_escape``."""
        X = np.array(np.atleast_2d(X), dtype=np.float64)
        if self.matrix_free:
            return self._escape(X, t)
        tol, s2 = 1e-3 * self.tol_res(t), self.coeffs(t)[1]
        max_step = 0.1 * (1.0 + self.scale) * max(1.0, abs(self.kappa(t)))
        for i, x in enumerate(X):
            for _ in range(n_iter):
                r = self.residual(x, t)[0]
                if not np.all(np.isfinite(r)) or np.linalg.norm(r) <= tol:
                    break
                w, V = np.linalg.eigh(self.hessian(x, t))
                dx = V @ ((V.T @ r) / np.maximum(np.abs(w), 1e-12 / s2))
                x = x + dx * min(1.0, max_step / max(np.linalg.norm(dx), 1e-300))
            X[i] = x
        return X, self.converged(X, t)

    def _escape(self, X, t, rounds=4):
        """From a saddle, a step along the top eigenvector each way, descent of the potential, and Newton;
        the first stable end is kept (the matrix-free stand-in of saddle-free Newton)."""
        step = 1e-3 * (1.0 + self.scale) * max(1.0, abs(self.kappa(t)))
        for i, x in enumerate(X):
            for _ in range(rounds):
                lam, v = self.top_eig(x, t)
                if lam < 0.0:
                    break
                Xc, _ = self.descend(np.stack([x + step * v, x - step * v]), t, max_iter=3000)
                Xc, ok = self.newton(Xc, t, n_iter=30)
                good = [j for j in range(2) if ok[j] and self.stable(Xc[j], t)]
                x = Xc[good[0] if good else 0]
                if good:
                    break
            X[i] = x
        return X, self.converged(X, t)

    def jacobian(self, x, t):
        """H at (x, t): the dense matrix, or with ``matrix_free`` an operator (theory._krylov)."""
        return _krylov.HessianOperator(self, x, t) if self.matrix_free else self.hessian(x, t)

    def top_eig(self, x, t):
        """(largest eigenvalue of H, its unit eigenvector) at x: < 0 iff x is stable."""
        if self.matrix_free:  # memoised like ``hessian``: margin and the fold system ask at the same point
            key = self._eig_key(x, t)
            if key not in self._ecache:
                self._remember(key, _krylov.top_eigpair(self.jacobian(x, t), self._v_top))
                self._v_top = self._ecache[key][1]
            return self._ecache[key]
        w, V = np.linalg.eigh(self.hessian(x, t))
        return float(w[-1]), V[:, -1]

    @staticmethod
    def _eig_key(x, t):
        return float(t), np.asarray(x, dtype=np.float64).tobytes()

    def _remember(self, key, pair):
        """Memoise a top eigenpair (EIG_CACHE of them, d floats each: a scan tests hundreds of candidates)."""
        if len(self._ecache) >= EIG_CACHE:
            self._ecache.pop(next(iter(self._ecache)))
        self._ecache[key] = pair

    def eigenvalues(self, x, t):
        return np.linalg.eigvalsh(self.hessian(x, t))

    def margin(self, x, t):
        """Minus the top eigenvalue of H in units of 1/sigma^2 (> 0 iff stable), or where the contraction
        bound b < 0.9 certifies stability, the lower bound (1 + c sigma^2)(1 - b) > 0 of it, without a
        Hessian. Only its sign is used away from a crossing, and near one the bound is inconclusive."""
        b = self.contraction_bound(x, t)
        if b < 0.9:
            th, s2, c = self.coeffs(t)
            return (1.0 + c * s2) * (1.0 - b)
        return -self.top_eig(x, t)[0] * self.coeffs(t)[1]

    def stable(self, x, t):
        return self.margin(x, t) > 1e-12

    # --- the fold system: R = 0 and lambda_max(H) = 0 in the unknowns (x, t) ----------------------
    def fold_system(self, x, t):
        """At (x, t): R, H, dR/dt, the top eigenpair (lam, v) of H, d lam/dx and d lam/dt.

        d lam = v^T dH v for a simple eigenvalue (Hellmann-Feynman), by autodiff of v^T H v with v fixed.
        H is the dense matrix, or with ``matrix_free`` an operator (``theory._krylov.solve`` takes both).
        """
        p = self.local_params(x, t)
        xj, tj = jnp.asarray(x), jnp.asarray(float(t))
        H = self.jacobian(x, t)
        lam, v = self.top_eig(x, t)
        lam_x = np.asarray(self.k["quad_grad"](p, xj, jnp.asarray(v), *self.coeffs(t)))
        lam_t = float(self._quad_t(p, xj, jnp.asarray(v), tj))
        R = self.residual(x, t)[0]
        R_t = np.asarray(self._R_t(self.p, xj, tj))
        return R, H, R_t, lam, v, lam_x, lam_t

    # --- descent and posteriors -----------------------------------------------------------------
    def descend(self, X, t, max_iter=5000, tol=None, float32=False, attractors=None):
        """Carry each row of X towards its attractor by majorise-minimise steps; returns (X, step sizes).

        L = 1/(theta^2 lam_min + sigma^2) + c bounds the top eigenvalue of -H (Cov[y|x] >= 0); for a
        finite data set the step is then the fixed-point map x <- kappa E[y | x], fast at high noise.
        ``attractors`` (k, d): stable fixed points at t; a row that enters the certified ball of one
        (``contraction_radius``) is set to it and stops there (the steps converge slowly near an attractor that
        is about to lose stability). Not above ``BALLS_MAX`` of them: the test costs k d a row and step.
        """
        th, s2, c = self.coeffs(t)
        L = 1.0 / (th**2 * self.lam_min + s2) + c
        if L <= 0.0:
            L = 1.0 / (th**2 * self.lam_min + s2) + max(c, 0.0)
        tol = 1e-9 * (1.0 + self.scale) if tol is None else tol
        r_max = 10.0 * (1.0 + self.scale) * max(1.0, abs(self.kappa(t)))
        p, dt = (self.params32(), jnp.float32) if float32 else (self.p, jnp.float64)
        if float32:  # float32 resolves |x| to ~1e-7 relative
            tol = max(tol, 1e-6 * (1.0 + self.scale))
        if attractors is not None and not 0 < len(attractors) <= BALLS_MAX:
            attractors = None
        C = np.zeros((1, self.d)) if attractors is None else np.atleast_2d(attractors)
        radii = np.zeros(1) if attractors is None else np.array([self.contraction_radius(a, t) for a in C])
        n_c = 1 << int(len(C) - 1).bit_length()  # padded with radius-0 copies of C[0]: few compiled shapes
        C = np.concatenate([C, np.repeat(C[:1], n_c - len(C), axis=0)])
        C, radii = jnp.asarray(C, dtype=dt), jnp.asarray(np.pad(radii, (0, n_c - len(radii))), dtype=dt)
        X, res = np.array(X, dtype=np.float64), np.full(len(X), np.inf)
        active, done, chunk = np.arange(len(X)), 0, DESCENT_CHUNK0
        while len(active) and done < max_iter:  # in chunks: the rows that have converged leave the batch
            k, chunk = min(chunk, max_iter - done), min(2 * chunk, DESCENT_CHUNK)
            Xb = jnp.asarray(_pad_batch(X[active]), dtype=dt)
            Xa, ra = self.k["descend"](p, Xb, th, s2, c, L, tol, k, r_max, C, radii)
            X[active] = np.asarray(Xa, dtype=np.float64)[: len(active)]
            res[active] = np.asarray(ra, dtype=np.float64)[: len(active)]
            active, done = active[res[active] > tol], done + k
        return X, res

    def params32(self):
        if self._p32 is None:
            self._p32 = tuple(a.astype(jnp.float32) if a.dtype == jnp.float64 else a for a in self.p)
        return self._p32

    def responsibilities(self, X, t):
        th, s2, _ = self.coeffs(t)
        X = np.atleast_2d(X)
        R = np.asarray(self.k["resp"](self.p, jnp.asarray(_pad_rows(X)), th, s2))
        return R[: len(X), : self.n_components]  # sharding pads the points with zero-weight rows

    def seeds(self, t, n_seeds, seed=0):
        """The centre kappa E[y] and the data attractors kappa y_j (a farthest-point subset if N > n_seeds):
        the farthest points keep the outlying data, whose attractors few diffused samples reach."""
        means = np.asarray(self.data.means)
        if (n_seeds, seed) not in self._seed_idx:  # the subset does not depend on t: N d n_seeds work, once
            far = len(means) > n_seeds
            self._seed_idx[n_seeds, seed] = farthest_points(means, n_seeds, seed) if far else np.arange(len(means))
        idx = self._seed_idx[n_seeds, seed]
        centre = np.asarray(self.data.mean())[None]
        return self.kappa(t) * np.concatenate([centre, means[idx]])

    def sample(self, t, n, seed):
        """n draws of x_t from p_t (float64), (n, d)."""
        return np.asarray(self.data.sample(jax.random.PRNGKey(seed), float(t), self.schedule, int(n)))
