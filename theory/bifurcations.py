r"""Fixed points of the generative drift, their stability, and the bifurcations met in generation.

At a frozen time t the fixed points of the eta family solve drift = 0. Dividing the drift by
k = (1 + eta^2)/2 g^2 > 0 changes neither the fixed points nor the signs of the Jacobian's
eigenvalues, so the engine works with the reduced field and its Jacobian (``theory.family``)

    R(x) = grad log p_t(x) - c x,     H(x) = Hess log p_t(x) - c I,     c = a / k,

the gradient and Hessian of -u_red, u_red = -log p_t + c |x|^2 / 2. For VP, c = -1/(1 + eta^2)
at every t; for VE, c = 0 (the fixed points are the modes of p_t). A fixed point is stable in
the generative direction iff every eigenvalue of H is negative.

The engine: ``theory._field`` (the exact field of a mixture: residuals, Hessians restricted to the
points that carry posterior weight, Newton, descent, the fold system; data sharded over jax devices),
``theory._search`` (attractors from seeds, basin masses), ``theory._continuation`` (branches in time,
crossings by Brent's method, folds by Newton on the extended system; shared with
``empirical.measure.fixed_points``) and ``theory._critical`` (the critical-time search, documented there). In 1D
every fixed point is found by bracketing the sign changes of R on a grid (``theory._roots1d``).
"""

from __future__ import annotations

import math

import numpy as np

from theory._checks import check_eta, check_finite_array, check_in_range, check_int, check_tolerance
from theory._continuation import continue_branch, log_snr_grid
from theory._critical import _Run, first_bifurcations
from theory._engine import exact_field, grid_search_setup, one_blas_thread, progress_bar
from theory._order import share_at
from theory._results import (
    Bifurcation,
    BifurcationDiagram,
    CriticalTime,
    FixedPoint,
    MacroscopicTime,
    OrderParameter,
    Seeding,
    SpeciationTime,
    critical_result,
    macroscopic_time,
)
from theory._roots1d import roots_1d
from theory._search import attractors_at, stable_points
from theory.schedules import Schedule

__all__ = [
    "FixedPoint",
    "Bifurcation",
    "CriticalTime",
    "MacroscopicTime",
    "OrderParameter",
    "Seeding",
    "SpeciationTime",
    "BifurcationDiagram",
    "fixed_points",
    "critical_time",
    "order_parameter",
    "speciation_time",
    "bifurcation_diagram",
    "descend",
    "attractor_labels",
    "attractor_posterior",
    "fixed_point_map",
]


def _scaled(field, t, w):
    """Eigenvalues of H -> eigenvalues of the drift Jacobian (k H)."""
    return np.asarray(w) * field.jacobian_scale(t)


@one_blas_thread
def fixed_points(data, schedule: Schedule, t: float, eta: float = 1.0, *, n_seeds: int = 256) -> list[FixedPoint]:
    """All fixed points of the eta-family drift at forward time t, with eigenvalues and stability.

    In 1D the set is exhaustive (sign changes of the drift on a fine grid, refined by bisection);
    in higher dimension it holds the attractors reached from the seeds and the unstable points
    found by Newton from the centre and from midpoints between attractors. Sorted by x[0].

    Examples:
        >>> import numpy as np
        >>> from theory import DeltaMixture, VPLinear, fixed_points
        >>> pts = fixed_points(DeltaMixture([[-1.0], [1.0]]), VPLinear(), 0.1)
        >>> [(round(float(p.x[0]), 4) + 0.0, p.stable) for p in pts]
        [(-0.9985, True), (0.0, False), (0.9985, True)]
    """
    f = exact_field(data, schedule, check_eta(eta), t)
    n_seeds = check_int("n_seeds", n_seeds, 1)
    t = float(t)
    stable = stable_points(f, t, n_seeds)
    if f.d == 1:
        X = roots_1d(f, t)[0][0][:, None]
    else:
        cand = [f.seeds(t, 1)[:1]]
        if len(stable) > 1:
            i, j = np.triu_indices(len(stable), 1)
            cand.append(0.5 * (stable[i] + stable[j])[:200])
        Xn, ok = f.newton(np.concatenate(cand), t, n_iter=30)
        X = np.concatenate([stable, Xn[ok]])
    from theory._continuation import dedup

    out = []
    for x in dedup(X, 1e-7 * (1.0 + f.scale)):
        w = f.eigenvalues(x, t)
        out.append(FixedPoint(x=x, eigenvalues=_scaled(f, t, w), stable=bool(w[-1] < -1e-12 / f.coeffs(t)[1])))
    return sorted(out, key=lambda p: float(p.x[0]))


@one_blas_thread
def bifurcation_diagram(
    data, schedule: Schedule, ts, eta: float = 1.0, *, n_seeds: int = 256, n_grid: int = 1001
) -> BifurcationDiagram:
    """``fixed_points`` at every time of ``ts`` (any order).

    In 1D the whole diagram is computed at once: R on a (time x ``n_grid``) grid, one vectorised
    bisection of every bracket, stability from the sign of dR/dx (two roots closer than the grid
    spacing, 2 kappa max|y| / n_grid, are missed: only just past a bifurcation). In higher
    dimension, one ``fixed_points`` call per time.
    """
    ts = check_finite_array("ts", ts)
    f = exact_field(data, schedule, check_eta(eta), ts, "ts")
    n_grid = check_int("n_grid", n_grid, 3)
    if f.d > 1:
        return BifurcationDiagram(t=ts, points=[fixed_points(data, schedule, t, eta, n_seeds=n_seeds) for t in ts])
    k = f.coeffs_array(ts)[3]
    points = [
        [
            FixedPoint(x=np.array([x]), eigenvalues=np.array([sl * ki]), stable=bool(sl < 0))
            for x, sl in zip(r, sls, strict=True)
        ]
        for (r, sls), ki in zip(roots_1d(f, ts, n_grid), k, strict=True)
    ]
    return BifurcationDiagram(t=ts, points=points)


@one_blas_thread
def critical_time(
    data,
    schedule: Schedule,
    eta: float = 1.0,
    *,
    t_min: float | None = None,
    n_grid: int = 64,
    n_seeds: int = 256,
    tol_t: float = 1e-13,
    threshold: float = 0.01,
    n_mass: int = 256,
    seed: int = 0,
    devices=None,
    centre: str = "full",
    progress: bool | None = None,
) -> CriticalTime:
    """The first bifurcation of the fixed-point set in the generative direction (DESIGN.md).

    Scans a grid uniform in log-SNR from T down to ``t_min`` for the first time with a second stable fixed
    point, collects the attractors a few cells further down, and carries each back up to its birth (a fold,
    located by Newton on the extended system to ``tol_t``; a branch whose extrapolated fold, an upper bound of its
    birth under the square-root law, lies below that first time is dropped); the centre branch's loss of
    stability is located by Brent's method. The earlier of the two is the critical time. The result's
    ``seeding`` says how the search was seeded and ``guarantee`` what that guarantees: the first bifurcation
    among the attractors reachable from those seeds (``theory._critical``). Where a cheaper option can miss a
    bifurcation:

    - ``n_seeds``: the data attractors kappa y_j seeded at each scanned time, a farthest-point subset when
      N > n_seeds. Fewer seeds can miss the attractor of a point outside the subset whose basin holds no
      seed: a heavy point inside the outliers' hull, born first with a basin that no sample of p_t reaches.
      With n_seeds >= N every data attractor is seeded.
    - ``n_grid``: grid times from T to ``t_min``. A coarser grid can miss an attractor born and gone between
      two grid times; the cells carried back up are wider (more branches, same answer otherwise).
    - ``t_min`` (default 1e-4 T): no bifurcation below it is looked for.
    - ``tol_t``: the accuracy of the located time; it does not change which bifurcation is found.
    - ``centre="search"``: the centre branch is continued only as far down as the search goes (its loss of
      stability below that cannot be the first bifurcation; ``centre_t`` is then nan and ``message`` says
      where it stopped). It misses no first bifurcation; on large data sets the centre below the first
      bifurcation is most of the cost. ``"full"`` (the default): down to ``t_min``.
    - ``n_mass``: draws of p_t (seeded by ``seed``) for the basin mass of the new attractor one grid cell
      below its birth (``basin_mass``) and for the order parameter m(t), the share of p_t that flows to the
      central attractor; ``macroscopic`` is the largest t at which 1 - m(t) exceeds ``threshold`` (located
      by bisection; ``order``: m at the grid times sampled). 0: neither. Fewer draws give coarser shares.
    - ``devices``: jax devices to shard the data over (default: all local devices).
    - ``progress``: a bar over the scanned grid times, then the phase of the search (tqdm, if installed; None:
      shown when stderr is a terminal).

    Examples:
        >>> import numpy as np
        >>> from theory import DeltaMixture, VPLinear, critical_time
        >>> ct = critical_time(DeltaMixture([[-1.0], [1.0]]), VPLinear())
        >>> ct.kind, round(ct.theta, 10), round(ct.t, 10), ct.macroscopic.t == ct.t
        ('pitchfork', 0.6435942529, 0.2926416543, True)
    """
    f, eta, t_min, n_grid, tol_t = grid_search_setup(data, schedule, eta, t_min, 1e-4, n_grid, tol_t, devices=devices)
    n_seeds, n_mass = check_int("n_seeds", n_seeds, 1), check_int("n_mass", n_mass, 0)
    check_in_range("threshold", threshold, 0.0, 1.0, open_hi=True)
    if centre not in ("full", "search"):
        raise ValueError(f"centre must be 'full' or 'search'; got {centre!r}")
    opts = {"t_min": t_min, "n_grid": n_grid, "n_seeds": n_seeds, "tol_t": tol_t, "n_mass": n_mass, "seed": seed}
    res = first_bifurcations(f, schedule, threshold=float(threshold), centre=centre, progress=progress, **opts)
    run, nan = res["run"], math.nan
    seeding = Seeding(f.n_components, min(n_seeds, f.n_components), n_grid, t_min, run.scanned, centre, n_mass)
    if "none" in res:
        empty = np.full(f.d, nan)
        return critical_result(schedule, eta, "none", nan, empty, empty, run.centre_t, res["none"], seeding=seeding)
    first, found = res["first"], {"seeding": seeding}
    if "order" in res:
        m, rows = res["macroscopic"], np.array(res["order"], dtype=np.float64).reshape(-1, 3)
        found["order"] = OrderParameter(rows[:, 0], rows[:, 1], rows[:, 2], n_mass, run.centre_t)
        found["macroscopic"] = None if m is None else macroscopic_time(schedule, m[0], threshold, m[1], m[2])
    direction = f.top_eig(first["x"], first["t"])[1]
    cut = centre == "search" and not run.centre_how and run.path
    note = f"centre branch not continued below t = {run.path[-1][0]:.6g} (centre='search')" if cut else ""
    return critical_result(
        schedule, eta, first["kind"], first["t"], first["x"], direction, run.centre_t, note, first["mass"], **found
    )


@one_blas_thread
def order_parameter(
    data,
    schedule: Schedule,
    times,
    eta: float = 1.0,
    *,
    n_samples: int = 256,
    seed: int = 0,
    devices=None,
    progress: bool | None = None,
) -> OrderParameter:
    """The order parameter m(t): the share of p_t that flows under the frozen drift to the central attractor.

    The central attractor is the unique attractor at T continued down in t (``centre_t``: where it loses
    stability or ceases to exist; m = 0 below). At each of ``times`` (M,), ``n_samples`` draws of p_t
    (seeded: the same data indices and noises at every time) descend the potential; m is the share that ends
    at the centre, with standard error sqrt(m (1 - m) / n). ``macroscopic_time(threshold)`` of the result is
    the largest of these times at which 1 - m exceeds the threshold (DESIGN.md: the macroscopic breaking
    time; ``critical_time`` locates it by bisection). ``progress``: a bar over the times (tqdm, if installed;
    None: shown when stderr is a terminal).

    Examples:
        >>> from theory import DeltaMixture, VPLinear, order_parameter
        >>> op = order_parameter(DeltaMixture([[-1.0], [1.0]]), VPLinear(), [0.5, 0.2], n_samples=64)
        >>> op.t.tolist(), op.m.tolist(), op.macroscopic_time()
        ([0.5, 0.2], [1.0, 0.0], 0.2)
    """
    ts = check_finite_array("times", times)
    if ts.ndim != 1 or not len(ts):
        raise ValueError(f"times must be a non-empty 1-D array of forward times; got shape {ts.shape}")
    f = exact_field(data, schedule, check_eta(eta), ts, "times", devices=devices)
    n, seed = check_int("n_samples", n_samples, 1), check_int("seed", seed, 0)
    ts = np.sort(ts)[::-1]
    run = _Run(f, schedule, min(float(ts[-1]), 0.5 * f.T), 64, 256, 1e-13, 0, seed)
    start = attractors_at(f, run.ts[0], 256)
    if len(start) != 1:
        raise ValueError(
            f"{len(start)} stable fixed points at t = {run.ts[0]:.6g}: no central attractor for m(t) "
            f"(eta = {eta}; see critical_time's message for this data set)"
        )
    run.centre_branch(start[0], int(np.searchsorted(-run.ts, -ts[-1])))
    bar, rows = progress_bar(len(ts), "order parameter", progress), []
    for t in ts:
        rows.append(share_at(run, float(t), n, seed))
        bar.set_postfix_str(f"t={t:.6g} m={rows[-1][0]:.4f}", refresh=False)
        bar.update()
    bar.close()
    rows = np.array(rows).reshape(-1, 2)
    return OrderParameter(ts, rows[:, 0], rows[:, 1], n, run.centre_t)


@one_blas_thread
def speciation_time(data, schedule: Schedule, *, t_min: float | None = None, tol_t: float = 1e-13) -> SpeciationTime:
    """Where -log p_t loses convexity at the centre, and the Biroli et al. estimate.

    The centre is the mode of p_t continued from t = T (for centred symmetric data, x = 0); its
    loss of convexity is where Hess log p_t first gets a zero eigenvalue there. For centred
    equal-norm data: theta^2 lambda_max = sigma^2. Biroli et al.: t_S = 1/2 ln Lambda in OU time.
    """
    f = exact_field(data, schedule, None)
    T = float(schedule.T)
    t_min = 1e-4 * T if t_min is None else float(t_min)
    check_in_range("t_min", t_min, 0.0, T, open_lo=True, open_hi=True)
    tol_t = check_tolerance("tol_t", tol_t)
    ts = log_snr_grid(schedule, t_min, T, 64)
    start = stable_points(f, ts[0], 64)
    t, nan = math.nan, math.nan
    if len(start) == 1:
        x, lipschitz = start[0], 1e3 * (1.0 + f.scale) / T
        for i in range(1, len(ts)):
            end = continue_branch(f, x, ts[i - 1], ts[i], tol_t, lipschitz=lipschitz)
            if not end.reached:
                t = end.t
                break
            x = end.x
    Lam = float(np.linalg.eigvalsh(np.asarray(data.covariance()))[-1])
    s_biroli = 0.5 * math.log(Lam) if Lam > 0 else nan
    biroli_t = schedule.t_from_ou_time(s_biroli)  # OU: theta = e^{-s}, sigma^2 = 1 - e^{-2s}
    biroli_t = biroli_t if biroli_t >= t_min else nan
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

    kappa = theta / (1 + c sigma^2) with c = a / k (VP: c = -1/(1 + eta^2)). For +-1 deltas this is
    the paper's kappa tanh(theta x / sigma^2). x (..., d) -> (..., d).
    """
    from theory.data import DeltaMixture

    if not isinstance(data, DeltaMixture):
        raise TypeError("fixed_point_map needs a DeltaMixture (x = kappa E[y|x] holds for finite data sets only)")
    f = exact_field(data, schedule, check_eta(eta), t)
    return f.kappa(float(t)) * data.responsibilities(x, t, schedule) @ data.points


@one_blas_thread
def descend(data, schedule: Schedule, X, t, eta: float = 1.0, max_iter: int = 20000):
    """Carry each row of X (n, d) to its attractor by the frozen-time gradient flow of u_eta at t."""
    f = exact_field(data, schedule, check_eta(eta), t)
    return f.descend(_rows("X", X, f.d), float(t), max_iter=check_int("max_iter", max_iter, 1))[0]


def _rows(name: str, X, d: int) -> np.ndarray:
    """X as (n, d) rows of real, finite numbers (one row may come as a vector)."""
    X = np.atleast_2d(check_finite_array(name, X))
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"{name} must have shape (n, d={d}); got {X.shape}")
    return X


@one_blas_thread
def attractor_posterior(data, schedule: Schedule, X, t, eta: float = 1.0):
    """Posterior weights over the points/components at the attractor each row of X flows to at t.

    The attractor is reached by the frozen-time gradient flow of u_eta (``descend``); returns (n, N).
    A shared attractor (the centre before the critical time) spreads its weight over the points.
    """
    f = exact_field(data, schedule, check_eta(eta), t)
    A, _ = f.descend(_rows("X", X, f.d), float(t))
    return f.responsibilities(A, float(t))


def attractor_labels(data, schedule: Schedule, X, t, eta: float = 1.0, labels=None):
    """Label of the attractor each row of X flows to at t: the point/component with the largest
    posterior weight there, mapped through ``labels`` (default: its index)."""
    j = np.argmax(attractor_posterior(data, schedule, X, t, eta), axis=1)
    return j if labels is None else np.asarray(labels)[j]
