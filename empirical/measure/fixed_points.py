r"""The breaking time measured inside a denoiser, mirroring the theory's definition of the critical time.

At a frozen forward time t the generative drift of the eta family with the learned score is

    b(x) = -a x + k (theta x0_hat(x) - x) / sigma^2 = gamma (Phi(x) - x),     k = (1 + eta^2)/2 g^2,
    Phi(x) = kappa x0_hat(x),   kappa = k theta / (a sigma^2 + k),   gamma = (a sigma^2 + k) / sigma^2 > 0,

so the fixed points of b are those of the map Phi, and the flow dx/dtau = b converges to the same
attractors as the iteration x <- Phi(x) (for a finite data set this is the mean-shift / MM iteration,
which decreases the potential). A fixed point is stable iff every eigenvalue mu of J = dPhi/dx has
Re mu < 1. The learned J is not symmetric (a network's eps is not exactly a gradient), so we use the
eigenvalue of largest real part of the full, non-symmetric J (LAPACK for d <= DENSE_MAX, Arnoldi
with Jacobian-vector products above) and report the asymmetry |J - J^T|_F / |J|_F. The eigenvalues
of the theory's grad R = (drift Jacobian) / k are rho (mu - 1), rho = gamma / k.

The measured critical time is the largest t at which a second stable fixed point exists: stable
points are counted on a grid in t (from many starts: diffused training images and scaled images),
and the first change in the generative direction is located by bisection on t.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import jax
import numpy as np
import scipy.sparse.linalg as sla
import torch

from empirical.models.denoiser import Denoiser, schedule_coeffs
from theory.checks import check_eta, check_finite_array, check_int, check_tolerance
from theory.family import EtaFamily
from theory.fields import continue_branch, log_snr_grid, log_snr_mid

__all__ = [
    "DENSE_MAX",
    "LearnedField",
    "MeasuredFixedPoint",
    "draw_starts",
    "MeasuredCriticalTime",
    "CentreBranch",
    "map_coeffs",
    "stable_fixed_points",
    "measure_critical_time",
    "centre_branch",
]

DENSE_MAX = 1024  # above this dimension: Newton-Krylov and Arnoldi on Jacobian-vector products


@dataclass(frozen=True)
class MeasuredFixedPoint:
    """A fixed point x (d,) of the learned drift at time t; ``mu`` the eigenvalue of dPhi/dx with the
    largest real part (stable iff Re mu < 1); ``residual`` |Phi(x) - x|; ``basin`` how many starts
    flowed to it."""

    x: np.ndarray
    mu: complex
    residual: float
    basin: int
    asymmetry: float

    @property
    def stable(self) -> bool:
        return self.mu.real < 1.0


@dataclass(frozen=True)
class CentreBranch:
    """The fixed point continued from the data mean at t = T down to t_min, at every accepted step
    ``t`` (decreasing): the branch ``x`` (M, d), the top eigenvalue ``mu`` of dPhi/dx, ``lam`` =
    rho (Re mu - 1), the top eigenvalue of the theory's grad R (negative while stable),
    ``asymmetry``, ``crossing_t``, where Re mu crosses 1 continuously (interpolated between steps;
    nan if it never does), and ``fold_t``, where the stable branch ends without a continuous
    crossing (nan if it does not)."""

    t: np.ndarray
    x: np.ndarray
    mu: np.ndarray
    lam: np.ndarray
    asymmetry: np.ndarray
    crossing_t: float
    fold_t: float


@dataclass(frozen=True)
class MeasuredCriticalTime:
    """Result of ``measure_critical_time``: ``t`` (nan if no second attractor was found down to the
    grid's end), its bracket ``[t_lo, t_hi]`` (2 or more stable points at t_lo, one at t_hi), the
    stable points found at t_lo, and the scan (grid times and stable-point counts)."""

    t: float
    t_lo: float
    t_hi: float
    points: list[MeasuredFixedPoint]
    grid_t: np.ndarray
    grid_count: np.ndarray
    evaluations: list[tuple[float, int]] = field(default_factory=list)


def map_coeffs(denoiser: Denoiser, t: float, eta: float = 1.0) -> tuple[float, float]:
    """(kappa, rho) of Phi(x) = kappa x0_hat(x) at time t; rho converts mu - 1 to eigenvalues of grad R.

    >>> from theory import VPLinear
    >>> from empirical.models.denoiser import ExactDenoiser
    >>> from theory import DeltaMixture
    >>> kappa, rho = map_coeffs(ExactDenoiser(DeltaMixture([[1.0]])), 0.3)  # VP, eta = 1: 2 theta / (1 + theta^2)
    >>> th = float(VPLinear().theta(0.3)); round(kappa - 2 * th / (1 + th**2), 14)
    0.0
    """
    kappa, c, s2 = _family_coeffs(denoiser.schedule, check_eta(eta))(float(t))
    if not 1.0 + c * s2 > 0:
        raise ValueError(f"the drift has no attracting form at t={t} (1 + c sigma^2 = {1.0 + c * s2} <= 0)")
    return kappa, (1.0 + c * s2) / s2


@functools.lru_cache(maxsize=32)
def _family_coeffs(schedule, eta: float):
    """t -> (kappa, c, sigma^2) of the eta family (``theory.family``), one jitted call."""
    fam = EtaFamily(schedule, eta)
    f = jax.jit(lambda t: (fam.kappa(t), fam.c(t), schedule.sigma2(t)))
    return lambda t: tuple(float(v) for v in f(t))


def _phi(denoiser: Denoiser, x: torch.Tensor, t: float, kappa: float, batch: int = 4096) -> torch.Tensor:
    return torch.cat([kappa * denoiser.x0(xb, t) for xb in x.split(batch)])


def _top_eig(denoiser: Denoiser, x: torch.Tensor, t: float, kappa: float) -> tuple[complex, float]:
    """(eigenvalue of dPhi/dx of largest real part, |J - J^T|_F / |J|_F) at x (d,)."""
    d = x.shape[0]
    if d <= DENSE_MAX:
        J = (kappa * denoiser.x0_jacobian(x, t)).detach().cpu().numpy()
        ev = np.linalg.eigvals(J)
        return complex(ev[np.argmax(ev.real)]), float(np.linalg.norm(J - J.T) / max(np.linalg.norm(J), 1e-300))
    op = _jvp_operator(denoiser, x, t, kappa, shift=0.0)
    ev = sla.eigs(op, k=1, which="LR", tol=1e-8, return_eigenvectors=False)
    return complex(ev[0]), float("nan")  # the asymmetry needs the full J; not formed above DENSE_MAX


def _jvp_operator(denoiser, x, t, kappa, shift):
    """LinearOperator v -> (dPhi/dx - shift I) v through Jacobian-vector products."""

    def mv(v):
        vt = torch.as_tensor(np.real(v).ravel(), dtype=x.dtype, device=x.device)
        return (kappa * denoiser.x0_jvp(x, t, vt) - shift * vt).detach().cpu().double().numpy()  # float32 x too

    d = x.shape[0]
    return sla.LinearOperator((d, d), matvec=mv, dtype=np.float64)


def _newton(denoiser: Denoiser, x: torch.Tensor, t: float, kappa: float, n_iter: int = 20, tol: float = 1e-10):
    """Newton on F(x) = Phi(x) - x = 0 from x (d,): exact Jacobian (d <= DENSE_MAX) or GMRES on jvps.

    Returns (x, |F(x)|); stops when |F| < tol (1 + |x|) or after n_iter steps.
    """
    d = x.shape[0]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    for _ in range(n_iter):
        F = _phi(denoiser, x[None], t, kappa)[0] - x
        res = float(F.norm())
        if not math.isfinite(res) or res < tol * (1.0 + float(x.norm())):
            return x, res
        if d <= DENSE_MAX:
            step = torch.linalg.solve(kappa * denoiser.x0_jacobian(x, t) - eye, -F)
        else:
            op = _jvp_operator(denoiser, x, t, kappa, shift=1.0)
            s, _ = sla.gmres(op, -F.detach().cpu().numpy(), rtol=1e-10, maxiter=200)
            step = torch.as_tensor(s, dtype=x.dtype, device=x.device)
        x = (x + step).detach()
    F = _phi(denoiser, x[None], t, kappa)[0] - x
    return x, float(F.norm())


def stable_fixed_points(
    denoiser: Denoiser,
    t: float,
    starts: torch.Tensor,
    *,
    eta: float = 1.0,
    max_iter: int = 2000,
    tol: float = 1e-6,
    merge_tol: float = 1e-4,
) -> list[MeasuredFixedPoint]:
    """The stable fixed points of the learned drift at time t reached from ``starts`` (n, d).

    Each start is iterated x <- Phi(x) until |Phi(x) - x| < tol (1 + |x|) or for ``max_iter`` steps
    (slow near a fold or a pitchfork); the end points are merged when closer than ``merge_tol``
    (1 + |x|), polished by Newton, and kept when Re mu < 1 (an end point stuck near a saddle polishes
    onto the saddle and is rejected there).
    Returns the points sorted by basin size (largest first).
    """
    if not 0 < t <= denoiser.schedule.T:
        raise ValueError(f"t must lie in (0, T={denoiser.schedule.T}]; got {t}")
    kappa, _ = map_coeffs(denoiser, t, eta)
    with torch.no_grad():
        x = starts.detach().to(_device(denoiser), torch.float64).clone()
        active = torch.ones(len(x), dtype=torch.bool)
        res = torch.full((len(x),), math.inf, dtype=torch.float64)
        for _ in range(max_iter):
            idx = active.nonzero().ravel()
            if len(idx) == 0:
                break
            new = _phi(denoiser, x[idx], t, kappa)
            res[idx] = (new - x[idx]).norm(dim=1).cpu()
            x[idx] = new
            active[idx] = res[idx] >= tol * (1.0 + x[idx].norm(dim=1).cpu())
    limits, counts = [], []
    for xi in x:  # greedy merge of the end points
        for j, y in enumerate(limits):
            if float((xi - y).norm()) < merge_tol * (1.0 + float(y.norm())):
                counts[j] += 1
                break
        else:
            limits.append(xi)
            counts.append(1)
    points = []
    for y, n in zip(limits, counts, strict=True):
        y, r = _newton(denoiser, y, t, kappa)
        if not r < 1e-6 * (1.0 + float(y.norm())):
            continue
        k = _near(y.cpu().numpy(), [p.x for p in points], merge_tol)
        if k is not None:  # two limits polished onto the same point
            points[k] = replace(points[k], basin=points[k].basin + n)
            continue
        mu, asym = _top_eig(denoiser, y, t, kappa)
        if mu.real < 1.0:
            points.append(MeasuredFixedPoint(y.cpu().numpy(), mu, r, n, asym))
    return sorted(points, key=lambda p: -p.basin)


def _near(y: np.ndarray, xs, merge_tol: float) -> int | None:
    """The index of the first of ``xs`` within ``merge_tol`` (1 + its norm) of y, or None (one point reached twice)."""
    for k, x in enumerate(xs):
        if np.linalg.norm(x - y) < merge_tol * (1.0 + np.linalg.norm(x)):
            return k
    return None


def _starts(denoiser, x_train, t, eps, eta):
    """Starts at time t: the diffused images theta x0 + sigma eps and the scaled images kappa x0 (the
    theory's seeds: where a data point's own attractor sits once it exists), plus kappa times the mean."""
    theta, sigma = (float(c) for c in schedule_coeffs(denoiser.schedule, float(t), "theta", "sigma"))
    kappa, _ = map_coeffs(denoiser, t, eta)
    return torch.cat([theta * x_train + sigma * eps, kappa * x_train, kappa * x_train.mean(0, keepdim=True)])


def draw_starts(x_train, n_starts: int, seed: int):
    """(images, noise, indices): the seeded choice of ``n_starts`` training images and their noise, from which
    ``_starts`` builds the starts at each t (one draw for all times, so the counts at different t compare)."""
    x_train = torch.as_tensor(np.asarray(x_train), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x_train), generator=gen)[: min(n_starts, len(x_train))]
    return x_train[pick], torch.randn(len(pick), x_train.shape[1], generator=gen, dtype=torch.float64), pick


def measure_critical_time(
    denoiser: Denoiser,
    x_train,
    *,
    eta: float = 1.0,
    t_max: float | None = None,
    t_min: float = 0.02,
    n_grid: int = 16,
    n_starts: int = 128,
    tol_t: float = 1e-3,
    seed: int = 0,
    max_iter: int = 2000,
    search=None,
) -> MeasuredCriticalTime:
    """The largest t at which the learned drift has two or more stable fixed points.

    ``x_train`` (N, d): the training images; ``n_starts`` of them (seeded choice) give the starts at
    every t (the same images and the same noise at every t, so the count is a deterministic function
    of t). The grid runs from t_max (default T) down to t_min, uniform in log-SNR; the first grid time
    with two or more stable points and the one before it bracket the critical time, which bisection
    narrows to ``tol_t``. ``search(t, starts, eta)`` replaces ``stable_fixed_points`` (``empirical.measure.flow``
    for 28x28 networks); it also gets the previous time's stable points, scaled by the ratio of kappa, as starts.
    """
    T = denoiser.schedule.T
    t_max = T if t_max is None else float(t_max)
    if not 0 < t_min < t_max <= T:
        raise ValueError(f"need 0 < t_min < t_max <= T={T}; got t_min={t_min}, t_max={t_max}")
    n_grid, n_starts = check_int("n_grid", n_grid, 2), check_int("n_starts", n_starts, 1)
    tol_t, max_iter = check_tolerance("tol_t", tol_t), check_int("max_iter", max_iter, 1)
    x_train = check_finite_array("x_train", x_train)  # a NaN image would make every count, and t, NaN
    if x_train.ndim != 2 or len(x_train) == 0:
        raise ValueError(f"x_train must have shape (N, d) with N >= 1; got {x_train.shape}")
    x0, eps, _ = draw_starts(x_train, n_starts, seed)
    evaluations, last = [], []

    def count(t):
        starts = _starts(denoiser, x0, t, eps, eta)
        if search is None:
            pts = stable_fixed_points(denoiser, t, starts, eta=eta, max_iter=max_iter)
        else:
            warm = [map_coeffs(denoiser, t, eta)[0] / map_coeffs(denoiser, s, eta)[0] * p.x for s, p in last]
            pts = search(t, torch.cat([starts, torch.as_tensor(np.array(warm)).reshape(-1, starts.shape[1])]), eta)
            last[:] = [(t, p) for p in pts]
        evaluations.append((float(t), len(pts)))
        return pts

    grid = log_snr_grid(denoiser.schedule, t_min, t_max, n_grid)
    counts, t_hi = [], None
    for t in grid:
        pts = count(t)
        counts.append(len(pts))
        if len(pts) > 1:
            if t_hi is None:  # two attractors already at t_max: nothing to bracket
                return MeasuredCriticalTime(
                    float(t), float(t), float("nan"), pts, grid[: len(counts)], np.array(counts)
                )
            t_lo, lo_pts = float(t), pts
            while t_hi - t_lo > tol_t:  # bisection in log-SNR keeps both ends inside the grid's metric
                mid = log_snr_mid(denoiser.schedule, t_lo, t_hi)
                mid_pts = count(mid)
                if len(mid_pts) > 1:
                    t_lo, lo_pts = mid, mid_pts
                else:
                    t_hi = mid
            return MeasuredCriticalTime(
                0.5 * (t_lo + t_hi), t_lo, t_hi, lo_pts, grid[: len(counts)], np.array(counts), evaluations
            )
        t_hi = float(t)
    return MeasuredCriticalTime(float("nan"), float("nan"), float(t_min), [], grid, np.array(counts), evaluations)


class LearnedField:
    """A denoiser at frozen times as a field of ``theory.fields``' protocol, so the theory's
    continuation, crossing location and halving run on it unchanged.

    The residual is F(x) = Phi(x) - x (Newton: exact Jacobian or GMRES on jvps); the stability
    eigenvalue is rho (Re mu - 1), mu the eigenvalue of dPhi/dx of largest real part; ``scale`` is the
    data's scale (for the jump guard: a Newton limit further than 5% of it is another branch).
    """

    def __init__(self, denoiser: Denoiser, eta: float, scale: float):
        self.den, self.eta, self.scale = denoiser, eta, float(scale)
        self.T, self.d = float(denoiser.schedule.T), denoiser.dim
        self._eig = {}

    def newton(self, X, t, n_iter=20, prev=None):
        kappa, _ = map_coeffs(self.den, t, self.eta)
        out, ok = [], []
        for x in np.atleast_2d(X):
            y, r = _newton(self.den, torch.as_tensor(x, dtype=torch.float64, device=_device(self.den)), t, kappa)
            out.append(y.detach().cpu().numpy())
            ok.append(r < 1e-6 * (1.0 + float(y.norm())))
        return np.array(out), np.array(ok)

    def mu(self, x, t):
        """(mu, asymmetry) at x, memoised (the margin and the record ask at the same point)."""
        key = (float(t), np.asarray(x).tobytes())
        if key not in self._eig:
            kappa, _ = map_coeffs(self.den, t, self.eta)
            self._eig = {key: _top_eig(self.den, torch.as_tensor(x, device=_device(self.den)), t, kappa)}
        return self._eig[key]

    def top_eig(self, x, t):
        return map_coeffs(self.den, t, self.eta)[1] * (self.mu(x, t)[0].real - 1.0), None

    def margin(self, x, t):
        return 1.0 - self.mu(x, t)[0].real


def centre_branch(
    denoiser: Denoiser,
    x_train,
    *,
    eta: float = 1.0,
    t_max: float | None = None,
    t_min: float = 0.02,
    n_grid: int = 48,
    h_min: float = 1e-4,
) -> CentreBranch:
    """Continue the fixed point from kappa(t_max) times the data mean down a log-SNR grid and track its top
    eigenvalue.

    The branch is carried by ``theory.fields.continue_branch`` on the ``LearnedField`` (adaptive
    steps down to ``h_min``; a Newton limit more than 5% of the data's scale away is another branch). It
    goes on through a loss of stability (``crossing_t``, located by Brent's method on 1 - Re mu) and ends
    where it ceases to exist (``fold_t``, to ``h_min``) or at t_min.
    """
    T = denoiser.schedule.T
    t_max = T if t_max is None else float(t_max)
    X = np.asarray(x_train, dtype=np.float64)
    field = LearnedField(denoiser, eta, float(np.max(np.linalg.norm(X, axis=1))))
    grid = log_snr_grid(denoiser.schedule, t_min, t_max, n_grid)
    kappa, _ = map_coeffs(denoiser, grid[0], eta)
    x0, _ = field.newton(kappa * X.mean(0)[None], float(grid[0]))
    path, crossings, fold = [(float(grid[0]), x0[0])], [], float("nan")
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        end = continue_branch(field, path[-1][1], a, b, h_min, path=path, crossings=crossings)
        if not end.reached:
            fold = end.t
            break
    ts = np.array([p[0] for p in path])
    mus = np.array([field.mu(x, t)[0] for t, x in path])
    rhos = np.array([map_coeffs(denoiser, t, eta)[1] for t in ts])
    asym = np.array([field.mu(x, t)[1] for t, x in path])
    crossing = crossings[0][0] if crossings else float("nan")
    return CentreBranch(ts, np.array([p[1] for p in path]), mus, rhos * (mus.real - 1.0), asym, crossing, fold)


def _device(denoiser) -> torch.device:
    """Where the network lives (the CPU for ExactDenoiser): the measurements run there, in float64."""
    return next(denoiser.parameters(), torch.zeros(())).device
