r"""Many stable branches of a finite data set carried up in time together: one pass over the data serves them all.

On a data set of N points in d dimensions a product H v costs two passes over the N x d points; for k branches
at one time the k products are two matrix products (GEMMs), which cost a small multiple of one product, not k of
them (at N = 10,000, d = 784: 0.6 ms a branch against 8.6 ms alone). So the search's births (``theory._critical``)
carry every branch of a cell on the same substeps:

* Newton on R = 0 for every branch at once, each solve by conjugate gradients on -H (positive definite near a
  stable point), to the relative residual the next Newton residual needs (inexact Newton), on float32 products
  where that residual is 1e-4 or more (their error is ~1e-6; the residual R itself is always float64);
* stability from a certificate where it holds, else Lanczos in lock-step. With rho = max_j r'_j / r_j for the
  posteriors r at the last point and r' at the next, lam_max(Cov_r') <= rho lam_max(Cov_r) (``theory._certify``),
  and H = -(1/sigma^2 + c) I + theta^2 / sigma^4 Cov: a bound on the top eigenvalue of H at the next point costs
  one posterior pass, and no Lanczos where it is negative; nor where lam_max(Cov) <= tr Cov decides it.

Each branch steps as ``theory._continuation.continue_branch`` does (the whole way or a given step first, doubled
after a success, halved after a failure: Newton diverges or its residual grows, the limit jumps, lands on ``reject``
or is not stable), on a dyadic grid of the interval, so that the branches trying the same step share a pass over the
data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from theory import _certify
from theory._krylov import _cg_many, _posteriors, _products, top_eigpairs_many
from theory._placement import _pad_rows

F32_RTOL = 1e-4  # Newton solves to a relative residual of at least this run on float32 products


def supported(field) -> bool:
    """A finite data set in many dimensions (``matrix_free``: products instead of Hessians), where a product is a
    pass over the data and batching pays; in few dimensions the dense Hessians of the branches are cheap."""
    return getattr(field, "k_post", None) is not None and getattr(field, "finite", False) and field.matrix_free


@jax.jit
def _max_log_ratio(Y, logw, ysq, X0, th0, s20, X1, th1, s21):
    """max_j log(r1_j / r0_j) for the posteriors at the rows of X0 (time th0, s20) and of X1 (th1, s21)."""

    def log_post(X, th, s2):
        return jax.nn.log_softmax(logw[None, :] + (th * (X @ Y.T) - 0.5 * th**2 * ysq[None, :]) / s2, axis=1)

    return jnp.max(log_post(X1, th1, s21) - log_post(X0, th0, s20), axis=1)


@jax.jit
def _split_bound(Y, logw, ysq, X0, th0, s20, X1, th1, s21, cov0):
    """Upper bounds of lam_max(Cov_r1) at the rows of X1 from bounds cov0 of lam_max(Cov_r0) at the rows of X0.

    For any split of the points into S and its complement, with m = E_r0[y],
    Cov_r1 <= sum_j r1_j (y_j - m)(y_j - m)^T
           <= max_{j in S}(r1_j / r0_j) Cov_r0 + sum_{j not in S} r1_j (y_j - m)(y_j - m)^T,
    and the last term's top eigenvalue is at most its trace. S = the points of the smallest ratios, for each cut in
    their order: a few points whose weight grows a lot, but stays small, no longer spoil the bound."""

    def log_post(X, th, s2):
        return jax.nn.log_softmax(logw[None, :] + (th * (X @ Y.T) - 0.5 * th**2 * ysq[None, :]) / s2, axis=1)

    lp0, lp1 = log_post(X0, th0, s20), log_post(X1, th1, s21)
    m = jnp.exp(lp0) @ Y
    d2 = jnp.maximum(ysq[None, :] - 2.0 * (m @ Y.T) + jnp.sum(m * m, axis=1, keepdims=True), 0.0)
    lr = lp1 - lp0
    order = jnp.argsort(-lr, axis=1)  # largest ratio first: cut i leaves points 0..i-1 out of S
    lr_s = jnp.take_along_axis(lr, order, axis=1)
    out = jnp.take_along_axis(jnp.exp(lp1) * d2, order, axis=1)
    tail = jnp.cumsum(out, axis=1) - out  # trace of the points before the cut
    cuts = jnp.exp(jnp.minimum(lr_s, 700.0)) * cov0[:, None] + tail
    return jnp.minimum(jnp.min(cuts, axis=1), jnp.sum(out, axis=1)) * (1.0 + 1e-12)


def newton_many(field, X, t, n_iter=8, loose=False):
    """Newton on R = 0 at t from every row of X (k, d); returns (X, converged mask).

    A row fails where its residual grows (no fixed point near its guess: the step went past a fold), is not
    finite, or where -H is not positive definite on the way (no stable point near). It converges at |R| <= 1e-3
    ``field.tol_res`` (a polish), or with ``loose`` at ``tol_res`` (a branch carried on: its end is polished)."""
    th, s2, c = field.coeffs(t)
    tol = (1.0 if loose else 1e-3) * field.tol_res(t)
    X = np.array(X, dtype=np.float64)
    ok, last, act = np.zeros(len(X), dtype=bool), np.full(len(X), np.inf), np.arange(len(X))
    for _ in range(n_iter):  # every pass over the data serves only the rows still iterating
        if not len(act):
            break
        R = np.asarray(field.k["R"](field.p, jnp.asarray(X[_pow2(act)]), th, s2, c))[: len(act)]
        norm = np.linalg.norm(R, axis=1)
        ok[act[norm <= tol]] = True
        keep = np.isfinite(norm) & (norm > tol) & (norm <= last[act])
        act, R, norm = act[keep], R[keep], norm[keep]
        if not len(act):
            break
        prev_norm, last[act] = last.copy(), norm
        # forcing (Eisenstat-Walker): 1e-2 first, then 0.9 (|R_k| / |R_k-1|)^2, never below what tol needs
        ew = np.where(np.isfinite(prev_norm[act]), 0.9 * (norm / prev_norm[act]) ** 2, 1e-2)
        rtol = np.clip(np.maximum(ew, 0.1 * tol / norm), 1e-12, 1e-2)
        # A solve to rtol >= 1e-4 needs no more than float32 products (errors ~1e-6): half the memory traffic
        p, dt = (field.params32(), jnp.float32) if rtol.min() >= F32_RTOL else (field.p, jnp.float64)
        P, M = _posteriors(*p, jnp.asarray(X[_pow2(act)], dtype=dt), th, s2)  # row i: the point act[i]

        def mv(V, rows, P=P, M=M, p=p, dt=dt):  # -H v for the rows (indices into act) still in CG: two GEMMs
            full = np.zeros((P.shape[0], V.shape[1]))
            full[rows] = V
            HV = _products(p[0], P, M, jnp.asarray(full, dtype=dt), th, s2, c)
            return -np.asarray(HV, dtype=np.float64)[rows]

        Z, bad = _cg_many(mv, R, rtol)
        good = np.ones(len(act), dtype=bool)
        good[bad] = False
        X[act[good]] += Z[good]
        act = act[good]
    return X, ok


def _pow2(idx):
    """idx padded to a power-of-two length with copies of its first entry: few compiled shapes."""
    m = 1 << max(0, int(len(idx) - 1).bit_length())
    return np.concatenate([idx, np.full(m - len(idx), idx[0])])


def cov_top(field, X, t):
    """lam_max(Cov[y | x]) at the rows of X (k, d) from the top eigenvalue of H (memoised, else Lanczos in
    lock-step), and the mask of the rows where H's top eigenvalue is negative (stable)."""
    th, s2, c = field.coeffs(t)
    lam = np.full(len(X), np.nan)
    for i, x in enumerate(X):
        hit = field._ecache.get(field._eig_key(x, t))
        lam[i] = np.nan if hit is None else hit[0]
    todo = np.nonzero(np.isnan(lam))[0]
    if len(todo) > 1:
        lams, _, ok = top_eigpairs_many(field, X[todo], t)
        lam[todo[ok]] = lams[ok]
    for i in np.nonzero(np.isnan(lam))[0]:  # Lanczos in lock-step did not converge (or one row): ARPACK
        lam[i] = field.top_eig(X[i], t)[0]
    return (lam + 1.0 / s2 + c) * s2**2 / th**2, lam * s2 < -1e-12


def cov_bound(field, X, t):
    """Upper bounds of lam_max(Cov[y | x]) at the rows of X (k, d) and the stable mask: the trace of the covariance
    where it shows H's top eigenvalue negative (near data points, where the posterior holds a few of them), else
    ``cov_top``."""
    th, s2, c = field.coeffs(t)
    cov = _certify.posterior_moments(field, X, t)[2]
    stable = (-(1.0 / s2 + c) + th**2 / s2**2 * cov) * s2 < -1e-12
    rest = np.nonzero(~stable)[0]
    if len(rest):
        cov[rest], stable[rest] = cov_top(field, X[rest], t)
    return cov, stable


def _stable(field, X0, t0, cov0, X1, t1):
    """Stability of the rows of X1 at t1 (each near the row of X0 at t0, where lam_max(Cov) <= cov0): the
    certificate rho cov0 where it decides, ``cov_bound`` for the rest. Returns (stable mask, lam_max(Cov) bounds)."""
    Y, logw, ysq = field.p
    th0, s20, _ = field.coeffs(t0)
    th1, s21, c1 = field.coeffs(t1)
    log_rho = np.asarray(
        _max_log_ratio(Y, logw, ysq, jnp.asarray(_pad_rows(X0)), th0, s20, jnp.asarray(_pad_rows(X1)), th1, s21)
    )
    cov = np.exp(np.minimum(log_rho[: len(X1)], 700.0)) * cov0  # far apart: no certificate (inf), Lanczos

    def stable_by(cov):
        return (-(1.0 / s21 + c1) + th1**2 / s21**2 * cov) * s21 < -1e-12

    stable = stable_by(cov)
    rest = np.nonzero(~stable)[0]
    if len(rest):  # the split bound: two more passes over the data for these rows
        args = (_pad_rows(X0[rest]), th0, s20, _pad_rows(X1[rest]), th1, s21, _pad_rows(cov0[rest, None])[:, 0])
        split = np.asarray(_split_bound(Y, logw, ysq, *(jnp.asarray(a) for a in args)))[: len(rest)]
        cov[rest] = np.minimum(cov[rest], split)
        stable[rest] = stable_by(cov[rest])
        rest = rest[~stable[rest]]
    if len(rest):
        cov[rest], stable[rest] = cov_bound(field, X1[rest], t1)
    return stable, cov


class ChainedMargin:
    """``field.margin`` along one branch (its sign, and its value where stability is not certified), with the
    certificate of ``_stable``: from a bound cov0 on lam_max(Cov[y | x0]) at the last point x0 evaluated, the next
    point's lam_max(Cov) <= rho cov0 (one posterior pass); where that does not show H's top eigenvalue negative,
    ``cov_bound`` (the trace, else Lanczos) restarts the chain. The value where certified is a lower bound of the
    margin, so a crossing of zero lies where ``field.margin`` crosses it."""

    def __init__(self, field):
        self.f, self.last = field, None  # (x, t, a bound on lam_max(Cov[y | x])) where the chain stands

    def __call__(self, x, t):
        x, t = np.asarray(x, dtype=np.float64), float(t)
        th, s2, c = self.f.coeffs(t)
        if self.last is not None:
            stable, cov = _stable(self.f, self.last[0][None], self.last[1], np.array([self.last[2]]), x[None], t)
        else:
            cov, stable = cov_bound(self.f, x[None], t)
        self.last = (x, t, float(cov[0]))
        return (1.0 / s2 + c - th**2 / s2**2 * float(cov[0])) * s2


def _step(field, X, Xp, tp, t, s, cov, reject):
    """One substep of the rows of X at t (previous points Xp at tp, or tp nan) to s; returns (ok, X at s, cov)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        guess = np.where(np.isnan(tp)[:, None], X, X + (X - Xp) * ((s - t) / (t - tp))[:, None])
    Xn, ok = newton_many(field, guess, s, loose=True)
    ok &= np.linalg.norm(Xn - X, axis=1) <= 0.05 * (1.0 + field.scale)  # farther: another branch
    if reject is not None:
        ok &= np.array([not (o and reject(x, s)) for o, x in zip(ok, Xn, strict=True)])
    cov_n = np.full(len(X), np.nan)
    if ok.any():
        stable, cov_n[ok] = _stable(field, X[ok], t, cov[ok], Xn[ok], s)
        ok[np.nonzero(ok)[0][~stable]] = False
    return ok, Xn, cov_n


def carry_many(field, X, t0, t1, n_sub=8, reject=None, cov=None, step=None):
    """Carry the stable points X (k, d) at t0 towards t1, every branch with its own adaptive step, in lock-step.

    The steps of ``theory._continuation.continue_branch``: the whole way first (or ``step``, (k,), fractions of the
    way: the steps that last succeeded, for a branch carried on from an earlier call), a step doubled after a success
    and halved after a failure, down to 1/``n_sub`` of the way. Times are kept on a dyadic grid of the interval, so
    the branches that try the same step at a round share one pass over the data. Returns (reached mask (k,), last good
    points (k, d), their times (k,), upper bounds of lam_max(Cov[y | x]) there (k,), each branch's last successful
    step as a fraction of the way (k,), nan where none succeeded): a branch that did not reach t1 ended less than
    1/``n_sub`` of the way above its last time. ``cov``: such bounds at X and t0, where known (a branch carried on
    from an earlier call); else they are computed."""
    X = np.array(np.atleast_2d(X), dtype=np.float64)
    k, full = len(X), 8 * n_sub  # positions on the grid of 1/full of the way: t = t0 + pos / full (t1 - t0)
    pos, h = np.zeros(k, dtype=int), np.full(k, full)
    if step is not None:  # the nearest power of two of 1/full, between 1/n_sub of the way and the whole way
        halvings = np.round(-np.log2(np.clip(np.nan_to_num(np.asarray(step, dtype=float), nan=1.0), 1e-12, 1.0)))
        h = full >> np.clip(halvings, 0, np.log2(n_sub)).astype(int)
    last = np.full(k, np.nan)
    Xp, tp = X.copy(), np.full(k, np.nan)
    if cov is None:
        cov, active = cov_bound(field, X, float(t0))  # a row that is not stable at t0 ends there
    else:
        cov, active = np.array(cov, dtype=np.float64), np.ones(k, dtype=bool)
    reached = np.zeros(k, dtype=bool)

    def time(p):
        return float(t1) if p == full else float(t0) + (float(t1) - float(t0)) * p / full

    while active.any():
        idx = np.nonzero(active)[0]
        target = np.minimum(pos[idx] + h[idx], full)
        for a, b in sorted({(int(pos[i]), int(tg)) for i, tg in zip(idx, target, strict=True)}):
            g = idx[(pos[idx] == a) & (target == b)]  # the rows that try the same step: one batch
            ok, Xn, cn = _step(field, X[g], Xp[g], tp[g], time(a), time(b), cov[g], reject)
            good, bad = g[ok], g[~ok]
            Xp[good], tp[good] = X[good], time(a)
            X[good], cov[good], pos[good], h[good], last[good] = Xn[ok], cn[ok], b, 2 * h[good], (b - a) / full
            reached[good[pos[good] == full]] = True
            h[bad] = (b - a) // 2  # half the step tried (the end of the way may have cut it short), as continue_branch
        active &= ~reached & (h >= full // n_sub)
    return reached, X, np.array([time(p) for p in pos]), cov, last
