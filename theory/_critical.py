r"""The first bifurcation met in generation, the basin mass of its new attractor, and the macroscopic breaking time.

How the search is seeded, and what it guarantees:
1. The centre branch: the unique attractor at T, continued down a log-SNR grid until it loses
   stability (Brent's method on its top eigenvalue: ``centre_t``) or folds (the extended system).
2. The scan: at each grid time, from T down, the attractors reached from the seeds of
   ``theory._search`` (the centre, the farthest-point data attractors, the previous attractors); where the
   fixed-point map contracts all of R^d (``one_attractor``) the centre alone, with no descent. At
   the first grid time t_i with two or more, a branch born near t_c has a small basin, so the search
   goes ``extra_cells`` further down, where basins are larger, and collects the attractors there too.
3. Each attractor found is continued back up (t increasing) until it ceases to exist; its fold,
   located by Newton on the extended system, is its birth. The largest birth time is the first
   saddle-node; a birth on the centre where the centre lost stability is the pitchfork itself. A branch
   whose fold bound (the linear extrapolation of its top eigenvalue to 0: an upper bound of its birth under
   the square-root law) lies below t_i, where a new attractor already exists, cannot be born first and is
   not carried further: most attractors found below t_i were born there.
Guarantee (``theory._results.Seeding``): the first bifurcation among the attractors reachable from those
seeds at the scanned times, and the branches continuously connected to them. Missed can be: the attractor
of a data point outside the farthest-point subset whose basin holds no seed (``n_seeds`` < N), and an
attractor born and dead between two grid times with no seed in its basin (refine ``n_grid``).

The basin mass of the first new attractor is the share of p_t that flows to it one grid cell (in log-SNR)
below its birth, sampled (``n_mass`` draws; standard error sqrt(p (1 - p) / n)). The macroscopic breaking
time, from the order parameter m(t) below the first bifurcation, is ``theory._order``'s.
"""

from __future__ import annotations

import math

import numpy as np

from theory import _lockstep
from theory._continuation import (
    continue_branch,
    first_of_groups,
    fold_extrapolation,
    locate_fold,
    log_snr_grid,
    log_snr_shift,
)
from theory._engine import progress_bar
from theory._krylov import fold_bounds_many
from theory._order import macroscopic_search
from theory._search import attractors_at, basin_masses, descend_samples, polish

# A new branch's first step up a cell, as a fraction of the cell (later ones: the last that succeeded). The whole cell
# failed for 250 of 256 new branches of MNIST and 51 of 57 of Fashion-MNIST, half of it for 9 and 21.
FIRST_STEP = 0.5


class _Run:
    """One critical-time search: the field, its grid, the centre branch and the births found."""

    def __init__(self, field, schedule, t_min, n_grid, n_seeds, tol_t, n_mass, seed):
        self.f, self.s = field, schedule
        self.T = float(schedule.T)
        self.ts = log_snr_grid(schedule, t_min, self.T, n_grid)
        self.dlog = float(schedule.log_snr(self.ts[2]) - schedule.log_snr(self.ts[1])) if n_grid > 2 else 1.0
        self.n_seeds, self.tol_t, self.n_mass, self.seed = n_seeds, tol_t, n_mass, seed
        self.path = []  # (t, x) of the centre branch, t decreasing
        self.centre_t, self.centre_how = math.nan, ""
        self.centre_to = 0  # the grid index the centre branch has reached
        self.scanned = ()  # the grid times at which the attractors were collected
        self._centre = {}  # t -> the centre branch at t (centre_at)
        self._centre_cov = None  # a bound on lam_max(Cov[y | x]) at the centre's last point (carry_centre)
        # where continue_branch carries the centre: the same chained bound, Lanczos only where it cannot decide
        self._centre_margin = _lockstep.ChainedMargin(field) if _lockstep.supported(field) else None
        self.sep = 1e-6 * (1.0 + field.scale)
        self.bar = progress_bar(0, "", False)  # where the search shows its progress

    # --- the centre branch ------------------------------------------------------------------------
    def centre_branch(self, x_start, last=None):
        """The centre from ts[0] down to ts[last] (default: the grid's end) while it stays stable."""
        self.path.append((self.ts[0], x_start))
        self.extend_centre(len(self.ts) - 1 if last is None else last)

    def extend_centre(self, last):
        """Carry the centre on from the grid index it has reached down to ts[last], unless it has ended."""
        lipschitz = 1e3 * (1.0 + self.f.scale) / self.T
        while not self.centre_how and self.centre_to < last:
            i = self.centre_to + 1
            if self.carry_centre(i):
                continue
            end = continue_branch(
                self.f,
                self.path[-1][1],
                self.path[-1][0],
                self.ts[i],
                self.tol_t,
                lipschitz=lipschitz,
                path=self.path,
                margin=self._centre_margin,
            )
            if not end.reached:
                self.centre_t, self.centre_how = end.t, end.how
                if end.how in ("crossing", "fold"):
                    self.path.append((end.t, end.x))
                return
            self.centre_to = i

    def carry_centre(self, i):
        """The centre carried across the cell (ts[i-1], ts[i]) as the births' branches are (``theory._lockstep``):
        Newton on float32 products where that suffices, stability from a bound on lam_max(Cov[y | x]) chained from
        step to step (Lanczos only where it cannot decide), steps down to 1/64 of the cell. Past a fold of the centre
        that Newton can land on another attractor nearby, so Newton from the point reached at t0 must come back to where
        the centre started. True where the centre got through; otherwise the cell is left
        to ``continue_branch``, which locates where it ends (a crossing or a fold)."""
        if not _lockstep.supported(self.f):
            return False
        x, t0, t1 = self.path[-1][1], self.ts[i - 1], self.ts[i]
        reached, xe, _, cov, _ = _lockstep.carry_many(self.f, x[None], t0, t1, 64, cov=self._centre_cov)
        if reached[0]:  # the way back needs no stability test: x is stable at t0
            xb, back = _lockstep.newton_many(self.f, xe, t0, loose=True)
            reached = back & _close(xb[0], x, 1e-4)
        self._centre_cov = cov if reached[0] else None
        if not reached[0]:
            return False
        self.path.append((t1, xe[0]))
        self.centre_to = i
        return True

    def centre_guess(self, t):
        """(g, e): the centre branch at t interpolated linearly between its recorded points on either side of t, and
        the distance between them (inf, with the nearest recorded point as g, where t is not between two)."""
        t = float(t)
        above = [p for p in self.path if p[0] >= t]
        below = [p for p in self.path if p[0] <= t]
        if not above or not below:
            return min(self.path, key=lambda p: abs(p[0] - t))[1], math.inf
        (ta, xa), (tb, xb) = min(above, key=lambda p: p[0]), max(below, key=lambda p: p[0])
        w = (t - tb) / (ta - tb) if ta > tb else 0.0
        return xb + w * (xa - xb), float(np.linalg.norm(xa - xb))

    def centre_at(self, t):
        """The centre branch at t (stable or not): Newton from its interpolation between recorded points."""
        if not self.path:
            return None
        t = float(t)
        if t not in self._centre:  # memoised: the branches carried in lock-step ask at the same times
            x, ok = self.f.newton(self.centre_guess(t)[0][None], t, n_iter=30)
            self._centre[t] = x[0] if ok[0] else None
        return self._centre[t]

    def on_centre(self, x, t):
        """Is x the centre branch at t? (Newton from its interpolation between recorded points; where Newton is
        slow, as at a pitchfork, within 1e-3 of the data's scale of the nearest recorded point.)"""
        near = [p for p in self.path if np.linalg.norm(x - p[1]) <= 0.25 * (1.0 + self.f.scale)]
        if not near:  # far from every recorded point of the centre branch: no Newton needed
            return False
        g, e = self.centre_guess(t)
        if np.linalg.norm(x - g) > 2.0 * e + 1e-3 * (1.0 + self.f.scale):
            # an arc of the centre between two recorded points e apart, if no longer than 2e, stays within 2e of g
            return False
        c = self.centre_at(t)
        if c is None:
            p = min(self.path, key=lambda p: abs(p[0] - t))[1]
            return np.linalg.norm(x - p) <= 1e-3 * (1.0 + self.f.scale)
        return np.linalg.norm(x - c) <= self.sep

    # --- births -------------------------------------------------------------------------------------
    def births_from(self, found, coarse_cells=8):
        """Births of the attractors ``found`` [(grid index, x)], the centre branch excluded, earliest first.

        Every branch is carried up cell by cell in lock-step (to 1/``coarse_cells`` of a cell, no fold
        location): a branch that ends in cell (ts[j], ts[j-1]) was born there. Only the branches of the
        highest such cell can hold the first birth; their folds are located exactly (``exact``). The others
        are returned with the cell's top as an upper bound of their birth time and ``how`` = "cell".
        """
        by_cell = {}
        for j, x in found:
            by_cell.setdefault(j, []).append(x)
        floor = float(self.ts[min(by_cell)])  # a new attractor exists there: the first birth lies above it
        alive, steps, dead = [], [], []  # alive: points at the current grid time, steps: their last successful steps
        for j in range(max(by_cell), 0, -1):
            for x in by_cell.get(j, []):
                if not any(_close(x, y, 1e-6) for y in alive) and not self.on_centre(x, self.ts[j]):
                    alive.append(x)
                    steps.append(FIRST_STEP)
            if self.ts[j - 1] <= floor and alive:  # a branch whose fold bound lies below the floor cannot be first
                keep = np.nonzero(np.array(self.fold_bounds(alive, self.ts[j])) >= floor)[0]
                alive, steps = [alive[k] for k in keep], [steps[k] for k in keep]
            nxt, steps, ended = self.carry_cell(alive, steps, j, coarse_cells)
            dead += ended
            kept = first_of_groups(np.array(nxt), 1e-6 * (1.0 + self.f.scale))[0] if nxt else []
            alive, steps = [nxt[k] for k in kept], [steps[k] for k in kept]
            if not len(alive) and j <= min(by_cell):
                break
        if not dead:
            return []
        top = min(d[0] for d in dead)
        out = self.exact_births(top, [(x, t) for j, x, t in dead if j == top])
        out += [(float(self.ts[j - 1]), x, "cell") for j, x, _ in dead if j != top]
        return sorted(out, key=lambda b: (b[2] in ("cell", "bound"), -b[0]))  # located births first

    def carry_cell(self, alive, steps, j, coarse_cells):
        """The branches through the points ``alive`` at ts[j] carried up to ts[j - 1] (to 1/``coarse_cells`` of the
        cell, each first trying the step, a fraction of the cell, that last succeeded: ``steps``). Returns (the points
        reached, their last successful steps, the ended branches [(j, last point, its t)])."""
        if alive and _lockstep.supported(self.f):  # every branch on the same substeps: one data pass for all
            reached, xe, te, _, last = _lockstep.carry_many(
                self.f, np.array(alive), self.ts[j], self.ts[j - 1], coarse_cells, reject=self.on_centre, step=steps
            )
            ended = [(j, xe[i], float(te[i])) for i in np.nonzero(~reached)[0]]
            return list(xe[reached]), list(last[reached]), ended
        nxt, ended = [], []
        for x in alive:
            tol = (self.ts[j - 1] - self.ts[j]) / coarse_cells
            end = continue_branch(
                self.f, x, self.ts[j], self.ts[j - 1], tol, track_crossing=False, reject=self.on_centre, fold_tries=0
            )
            (nxt if end.reached else ended).append(end.x if end.reached else (j, end.x, end.t))
        return nxt, [FIRST_STEP] * len(nxt), ended

    def exact_births(self, j, pts):
        """Folds of the branches through the points pts [(x, t)] (their last points carried up from ts[j]),
        all of which end in the cell above ts[j].

        Candidates are ranked by an upper bound of their end, the linear extrapolation of the top
        eigenvalue to 0 along the branch, t_u = t - lam / (d lam/dt): at a fold lam ~ -sqrt(t_f - t) and
        t_u - t = 2 (t_f - t); where lam is linear (a pitchfork) t_u = t_f. They are located exactly in
        that order; one whose bound lies below the best fold found cannot be first and is kept with its
        bound (``how`` = "bound")."""
        t0 = float(self.ts[j])
        bounds = [self.fold_bound(x, t) for x, t in pts]
        out, best = [], -math.inf
        if self.centre_how == "crossing" and t0 < self.centre_t <= self.ts[j - 1]:
            best = self.centre_t  # the centre's loss in this cell: children of the pitchfork are born there
        for k in np.argsort(bounds)[::-1]:
            if bounds[k] < best:
                out.append((bounds[k], pts[k][0], "bound"))
                continue
            b = self.exact_birth(j, *pts[k])
            if b is not None:  # None: the branch goes on after all (a coarse step had failed)
                out.append(b)
                best = max(best, b[0])
        return out

    def fold_bound(self, x, t):
        if not hasattr(self.f, "fold_system"):
            return math.inf
        t_u = fold_extrapolation(self.f, x, t)  # the branches here are carried up: a bound only above t
        return t_u if t_u > t else math.inf

    def fold_bounds(self, xs, t):
        """``fold_bound`` of the stable points xs at one time t: all at once on a finite data set in many dimensions
        (``theory._krylov.fold_bounds_many``: one pass over the data serves every point)."""
        if len(xs) < 2 or not getattr(self.f, "matrix_free", False) or getattr(self.f, "k_post", None) is None:
            return [self.fold_bound(x, t) for x in xs]
        t_u = fold_bounds_many(self.f, np.array(xs), t)
        return [b if b > t else math.inf for b in t_u]  # nan (no convergence) and bounds below t: kept

    def exact_birth(self, j, x, t):
        """(t, x, how) of the fold of the branch through x at t (carried up from ts[j]), below ts[j - 1]."""
        fold = None
        if hasattr(self.f, "fold_system"):
            fold = locate_fold(self.f, x, t, self.ts[j - 1], self.tol_t)
        if fold is not None:
            return fold[1], fold[0], "fold"
        end = continue_branch(self.f, x, t, self.ts[j - 1], self.tol_t, track_crossing=False, reject=self.on_centre)
        return None if end.reached else (end.t, end.x, end.how)

    def classify(self, births, t_lo):
        """(kind, t, x) of the first bifurcation from the births and the centre's end."""
        pf = np.isfinite(self.centre_t) and self.centre_t >= t_lo  # the centre has lost stability by t_lo
        births = [b for b in births if b[2] not in ("cell", "bound")]  # located births only
        if births:
            tb, xb, _ = births[0]
            c = self.centre_at(tb)
            near_centre = c is not None and np.linalg.norm(xb - c) < 1e-3 * (1.0 + self.f.scale)
            # A birth next to the centre where it lost stability is the pitchfork itself, seen through
            # Newton's limited accuracy where the potential is flat.
            if not (pf and (tb <= self.centre_t + 1e-6 * self.T or near_centre)):
                return "saddle-node", tb, xb
        if pf:
            return "pitchfork", self.centre_t, self.path[-1][1]
        raise RuntimeError(  # pragma: no cover  (a new attractor whose birth continuation failed)
            f"a second attractor exists at t={t_lo}, but neither its birth nor a loss of stability of the "
            f"centre could be located above it; try a finer grid (n_grid) or more seeds (n_seeds)"
        )

    # --- basin masses ---------------------------------------------------------------------------------
    def mass_below(self, kind, t, x):
        """(share, standard error) of p_t flowing to the new attractor one grid cell below its birth."""
        if not self.n_mass:
            return math.nan, math.nan
        tb = log_snr_shift(self.s, t, self.dlog)
        if kind == "pitchfork":  # the children: Newton from the centre pushed along its soft direction
            v = self.f.top_eig(x, t)[1] * 0.1 * (1.0 + self.f.scale) * math.sqrt(self.dlog)
            new, ok = polish(self.f, np.stack([x + v, x - v]), tb)
        else:
            new, ok = polish(self.f, x[None], tb)
        # Only the draws that end at the new attractor count: the others' attractors need no polish. A draw that
        # enters the certified ball of a new attractor ends there.
        limits = descend_samples(self.f, tb, self.n_mass, self.seed, attractors=new[ok] if ok.any() else None)
        m = basin_masses(self.f, tb, new, limits=limits)
        i = int(np.argmax(m.mass))
        return float(m.mass[i]), float(m.se[i])


def _why_none_at_start(field, t, n):
    """Why the dynamics is multistable already at the grid's start, in terms of the centre's stability."""
    th, s2, c = field.coeffs(t)
    bound = s2 * (1.0 + c * s2) / th**2 if th > 0 else math.inf
    lam = float(np.linalg.eigvalsh(np.asarray(field.data.covariance()))[-1])
    return (
        f"already {n} stable fixed points at t = {t:.6g} (T = {field.T}): no bifurcation in (t_min, T]. The centre "
        f"is stable only while the top eigenvalue of Cov[y | x] stays below sigma^2 (1 + c sigma^2) / theta^2 "
        f"= {bound:.4g} at t = {t:.6g} (c = {c:.4g}); the data covariance's top eigenvalue is {lam:.4g}"
        + (
            " (the probability-flow ODE on data with covariance eigenvalue >= 1 is never stable at the centre)"
            if field.eta == 0.0 and lam >= 1.0 and field.schedule.variance_preserving
            else ""
        )
    )


def _close(a, b, rel):
    return np.linalg.norm(a - b) <= rel * (1.0 + np.linalg.norm(b))


def first_bifurcations(
    field, schedule, *, t_min, n_grid, n_seeds, tol_t, threshold, n_mass, extra_cells=2, seed=0, centre="full",
    progress=None,
):  # fmt: skip
    """The search of ``theory.critical_time``; returns a dict of what it found (see that function).

    ``centre="search"`` carries the centre branch only down to the lowest grid time the search visits (its
    loss of stability below that cannot be the first bifurcation); ``"full"``: down to t_min. The macroscopic
    search carries it further where it needs the centre. ``progress``: a bar over the scanned grid times, its
    postfix the phase after them (``theory._engine.progress_bar``)."""
    run = _Run(field, schedule, t_min, n_grid, n_seeds, tol_t, n_mass, seed)
    run.bar = bar = progress_bar(len(run.ts), "critical time", progress)
    try:
        return _search(run, threshold, extra_cells, centre)
    finally:
        bar.close()


def _search(run, threshold, extra_cells, centre):
    field, ts, n_seeds, bar = run.f, run.ts, run.n_seeds, run.bar
    start = attractors_at(field, ts[0], n_seeds)
    bar.update()
    if len(start) >= 2:
        return {"none": _why_none_at_start(field, ts[0], len(start)), "run": run}
    prev = start
    for i in range(1, len(ts)):
        cur = attractors_at(field, ts[i], n_seeds, extra=prev)
        bar.set_postfix_str(f"scan t={ts[i]:.4g} attractors={len(cur)}", refresh=False)
        bar.update()
        if len(cur) >= 2:
            break
        prev = cur
    else:
        if len(start) == 1:
            run.centre_branch(start[0])
        return {"none": f"at most one stable fixed point on the whole grid down to t_min = {ts[-1]}", "run": run}
    if len(start) == 1:
        bar.set_postfix_str("centre branch")
        run.centre_branch(start[0], None if centre == "full" else min(i + extra_cells, len(ts) - 1))
    found = [(i, x) for x in cur]
    for j in range(i + 1, min(i + 1 + extra_cells, len(ts))):
        cur = attractors_at(field, ts[j], n_seeds, extra=cur)
        found += [(j, x) for x in cur]
        bar.set_postfix_str(f"scan t={ts[j]:.4g} attractors={len(cur)}", refresh=False)
        bar.update()
    run.scanned = tuple(float(v) for v in ts[i : i + 1 + extra_cells])
    bar.set_postfix_str(f"births of {len(found)} attractors")
    births = run.births_from(found)
    kind, t, x = run.classify(births, ts[i])
    bar.set_postfix_str(f"basin mass ({kind} at t={t:.6g})")
    first = {"kind": kind, "t": t, "x": x, "mass": run.mass_below(kind, t, x)}
    out = {"first": first, "run": run, "births": births}
    if run.n_mass and len(start) == 1:
        probe = kind == "saddle-node" and first["mass"][0] > threshold  # m may jump at t_c
        out["macroscopic"], out["order"] = macroscopic_search(run, t, threshold, run.n_mass, run.seed, probe)
    return out
