r"""The whole bifurcation tree of the frozen-time dynamics, from the one attractor at T down to t_min.

Every attractor (stable fixed point of the reduced field R = grad log p_t - c x, ``theory._field``) met on
the way down is a node. A node is born at a bifurcation and lives until it ceases to be an attractor:

* a **saddle-node** (fold): a new attractor appears away from the others; its birth is the fold of its
  branch, located by Newton on the extended system R = 0, lambda_max(H) = 0 (``theory._continuation``);
* a **pitchfork**: an attractor loses stability continuously (Brent's method on the top eigenvalue of H
  along its branch) and the attractors whose branches, traced up, end at the same place and time (to
  10 ``tol_t``) are its children, born at that time;
* a **root**: an attractor already present at the grid's first time (one, for every finite data set on
  a VP schedule with eta > 0).

The parent of a saddle-node child is the attractor whose basin held the birth point just before the
birth: the frozen-time flow is run from the birth point at a slightly larger t (1% of a grid cell above,
or less where the parent was born closer) and the attractor it reaches is the parent.

How the scan runs, and what it guarantees (the same seeding as ``theory.critical_time``):
1. A grid uniform in log-SNR from T down to t_min. Every live node is continued from one grid time to the
   next (adaptive steps, Newton; a loss of stability or a fold ends it, located to ``tol_t``).
2. At each grid time the attractors reached from the seeds (the centre, the data attractors kappa y_j of a
   farthest-point subset of ``n_seeds`` points, the live nodes) that match no live node are new; each is
   continued back up (t increasing) to where it ceases to exist, its birth.
3. Exact for small sets: with ``n_seeds`` >= N every data attractor is a seed at every grid time, and every
   attractor reachable from a seed at a grid time, and every attractor continuously connected to one, is a
   node. An attractor born and dead between two grid times with no seed in its basin can be missed.

Truncation for large sets (``max_nodes``, default 128, and ``min_mass``): where the attractors found at a grid
time would make more than ``max_nodes`` nodes, none of them is traced and the scan ends at the grid time above
(``truncated`` says where): the tree is then exact down to that time. A new attractor holding less than
``min_mass`` of the data (below) is not made a node. The composition of a node's basin is that of the data points whose
diffused mean theta(t) y_j the frozen-time flow carries to it, at the first grid time after its birth: the
share of p_t's components that the basin holds at their centres (``members``, ``share``, ``composition``).
"""

from __future__ import annotations

import math

import numpy as np

from theory._checks import check_in_range, check_int
from theory._continuation import BranchEnd, continue_branch, locate_fold, log_snr_grid
from theory._engine import grid_search_setup, one_blas_thread, progress_bar
from theory._results import BifurcationTree, TreeNode
from theory._search import polish, stable_points
from theory.schedules import Schedule

__all__ = ["TreeNode", "BifurcationTree", "bifurcation_tree"]


def locate_end(field, end, t_far, tol_t):
    """A branch end the steps left unverified (``halved``), located as ``critical_time`` locates births: by the
    extended system R = 0, lam = 0 from the last good point, over the rest of the cell up to ``t_far``; returns
    the located end ("fold") or ``end`` unchanged.

    Near its end a branch moves as x_b + C sqrt|t_b - t|, faster than any Lipschitz bound L on the steps (which
    keeps Newton off nearby attractors): they stop about (C / 2L)^2 short, 1e-6 for the paper's pair of points,
    beyond the 1e-6 T the continuation's own polish looks ahead. At a pitchfork the extended system converges to
    the parent's crossing, where R = 0 and lam = 0 too."""
    if end.reached or end.how != "halved" or not hasattr(field, "fold_system"):
        return end
    fold = locate_fold(field, end.x, end.t, t_far, tol_t)
    return end if fold is None else BranchEnd(fold[0], fold[1], False, "fold")


class _Node:
    """A node while the scan runs: its path [(t, x)] with t decreasing."""

    def __init__(self, parent, kind, t, x, how):
        self.parent, self.kind, self.t_birth, self.x_birth, self.birth_how = parent, kind, float(t), x, how
        self.path = [(float(t), np.asarray(x))]
        self.t_end, self.end = math.nan, ""
        self.members = None

    def alive_at(self, t):
        return self.t_birth >= t and not (self.t_end >= t)


class _Scan:
    """The scan of ``scan_tree``: live nodes continued down the grid, new attractors traced to their births."""

    def __init__(self, field, schedule, ts, tol_t, n_seeds, min_mass, max_nodes):
        self.f, self.s, self.ts = field, schedule, ts
        self.tol_t, self.n_seeds, self.min_mass, self.max_nodes = tol_t, n_seeds, min_mass, max_nodes
        self.nodes: list[_Node] = []
        self.live: list[int] = []
        self.sep = 1e-6 * (1.0 + field.scale)
        self.near = 1e-3 * (1.0 + field.scale)
        self.lipschitz = 1e3 * (1.0 + field.scale) / field.T
        self.Y = np.asarray(field.data.means)
        self.truncated = ""

    # --- positions ------------------------------------------------------------------------------------
    def at(self, k, t):
        """Node k at time t (Newton from its recorded point nearest in t), or None."""
        p = min(self.nodes[k].path, key=lambda q: abs(q[0] - t))
        if p[0] == t:
            return p[1]
        x, ok = self.f.newton(p[1][None], t, n_iter=30)
        return x[0] if ok[0] else None

    def on_other(self, skip):
        """reject(x, t): x is a node other than ``skip`` alive at t (Newton only for nodes recorded nearby)."""

        def reject(x, t):
            for k, n in enumerate(self.nodes):
                if k == skip or not n.alive_at(t):
                    continue
                p = min(n.path, key=lambda q: abs(q[0] - t))
                if np.linalg.norm(p[1] - x) > 0.1 * (1.0 + self.f.scale):  # farther than a Newton jump (0.05)
                    continue
                y = self.at(k, t)
                if y is not None and np.linalg.norm(y - x) <= self.sep:
                    return True
            return False

        return reject

    # --- the scan ------------------------------------------------------------------------------------------
    def run(self, progress=None):
        for x in stable_points(self.f, self.ts[0], self.n_seeds):
            self.nodes.append(_Node(None, "root", self.ts[0], x, "root"))
        self.live = list(range(len(self.nodes)))
        self.assign(0, self.live)
        bar = progress_bar(len(self.ts) - 1, "bifurcation tree", progress)
        for i in range(1, len(self.ts)):
            self.advance(i)
            new = self.discover(i)
            if new is None:  # more than max_nodes: the tree is the exact one down to the time above
                self.stop_above(i)
                break
            self.assign(i, new)
            bar.set_postfix_str(f"t={self.ts[i]:.4g} nodes={len(self.nodes)} live={len(self.live)}", refresh=False)
            bar.update()
        bar.close()
        t_last = float(self.ts[-1])
        for k in self.live:
            self.nodes[k].t_end, self.nodes[k].end = t_last, "t_min"
        return self

    def advance(self, i):
        """Carry every live node from ts[i-1] to ts[i]; a node that cannot be carried ends where it stops."""
        t0, t1 = self.ts[i - 1], self.ts[i]
        still = []
        for k in self.live:
            n = self.nodes[k]
            path = []
            end = continue_branch(
                self.f, n.path[-1][1], t0, t1, self.tol_t, lipschitz=self.lipschitz, path=path, reject=self.on_other(k)
            )
            n.path += path
            end = locate_end(self.f, end, t1, self.tol_t)
            if end.reached:
                still.append(k)
            else:
                n.t_end, n.end = float(end.t), end.how
                if not path or path[-1][0] != end.t:
                    n.path.append((float(end.t), end.x))
        self.live = still

    def stop_above(self, i):
        """End the scan at ts[i - 1]: the nodes alive there live to the end; what they did below is dropped."""
        self.truncated = (
            f"more than max_nodes={self.max_nodes} nodes by t={self.ts[i]:.6g}: the scan stopped at the grid time "
            f"above, t={self.ts[i - 1]:.6g}"
        )
        self.ts = self.ts[:i]
        t_last = float(self.ts[-1])
        for n in self.nodes:
            n.path = [p for p in n.path if p[0] >= t_last]
            if n.t_end < t_last:
                n.t_end, n.end = math.nan, ""
        self.live = [k for k, n in enumerate(self.nodes) if n.alive_at(t_last)]

    def discover(self, i):
        """New attractors at ts[i]: each traced up to its birth, then made a node with its parent (None: they
        would make more than max_nodes nodes; none is traced)."""
        t = self.ts[i]
        live_x = np.array([self.nodes[k].path[-1][1] for k in self.live]).reshape(-1, self.f.d)
        if len(live_x) == 1 and self.f.one_attractor(t):  # F contracts R^d: the live node is the only attractor
            return []
        known = live_x if len(live_x) else None
        cur = stable_points(self.f, t, self.n_seeds, extra=known, known=known)
        new = [x for x in cur if not len(live_x) or np.min(np.linalg.norm(live_x - x, axis=1)) > self.near]
        if not new:
            return []
        if self.max_nodes is not None and len(self.nodes) + len(new) > self.max_nodes:
            return None
        if self.min_mass > 0:
            owner = self.flow_means(t, np.concatenate([live_x, np.array(new)]))
            share = np.bincount(owner[owner >= 0], minlength=len(live_x) + len(new))[len(live_x) :] / len(self.Y)
            dropped = int(np.sum(share < self.min_mass))
            if dropped:
                self.truncated = self.truncated or f"attractors holding < min_mass={self.min_mass} of the data left out"
            new = [x for x, m in zip(new, share, strict=True) if m >= self.min_mass]
        births = sorted((self.trace_birth(x, i) for x in new), key=lambda b: -b[0])
        made = [self.make_node(tb, xb, how, path, j) for tb, xb, how, path, j in births]
        return [k for k in made if self.nodes[k].members is None]

    def trace_birth(self, x, i):
        """(t, x, how, path up, cell j) of the birth of the branch through the attractor x at ts[i]."""
        path, j, xj = [(float(self.ts[i]), x)], i, x
        while j > 0:
            up = []
            end = continue_branch(
                self.f, xj, self.ts[j], self.ts[j - 1], self.tol_t, track_crossing=False,
                lipschitz=self.lipschitz, path=up, reject=self.on_other(None),
            )  # fmt: skip
            path += up
            end = locate_end(self.f, end, self.ts[j - 1], self.tol_t)
            if not end.reached:
                return float(end.t), end.x, end.how, path, j
            j, xj = j - 1, end.x
        return float(self.ts[0]), xj, "root", path, 0

    def make_node(self, tb, xb, how, path, j):
        """A node born at (tb, xb) in cell (ts[j], ts[j-1]): its kind and parent, then live."""
        for k, n in enumerate(self.nodes):  # where a node's continuation failed: the same attractor, not a new one
            if (
                n.end == "halved"
                and abs(n.t_end - tb) <= 1e-6 * self.f.T
                and np.linalg.norm(n.path[-1][1] - xb) <= self.near
            ):
                n.path += [p for p in reversed(path) if p[0] < n.t_end]
                n.t_end, n.end = math.nan, ""
                self.live.append(k)
                return k
        kind, parent = ("root", None) if how == "root" else ("saddle-node", None)
        if how != "root":
            lo, hi = self.ts[j] - self.tol_t, self.ts[j - 1] + self.tol_t
            for k, n in enumerate(self.nodes):  # a child of a loss of stability at the same place: a pitchfork
                if n.end != "crossing" or not lo <= n.t_end <= hi:
                    continue
                # Both ends are located to tol_t: the same time to 10 tol_t and the same place is the same event.
                # An unverified birth ("halved") is matched by place only, as Newton can stop short of the point.
                same_t = abs(n.t_end - tb) <= 10 * self.tol_t or how == "halved"
                if same_t and np.linalg.norm(n.path[-1][1] - xb) <= self.near:
                    kind, parent, tb, xb, how = "pitchfork", k, n.t_end, n.path[-1][1], "crossing"
                    break
            if parent is None:
                parent = self.parent_of(tb, xb, j)
        node = _Node(parent, kind, tb, xb, how)
        node.path += [p for p in reversed(path) if p[0] < tb]
        self.nodes.append(node)
        self.live.append(len(self.nodes) - 1)
        return len(self.nodes) - 1

    def parent_of(self, tb, xb, j):
        """The node whose basin holds xb just above tb (the frozen-time flow from xb at tb + 1% of a cell)."""
        t_up = min(tb + 0.01 * (self.ts[j - 1] - self.ts[j]), float(self.ts[j - 1]))
        cand = [k for k, n in enumerate(self.nodes) if n.alive_at(t_up) and n.t_birth > t_up]
        pos = [(k, self.at(k, t_up)) for k in cand]
        pos = [(k, y) for k, y in pos if y is not None]
        if not pos:
            return None
        a, _ = self.f.descend(np.asarray(xb)[None], t_up, max_iter=20000, attractors=np.array([y for _, y in pos]))
        a, ok = polish(self.f, a, t_up)
        return min(pos, key=lambda q: np.linalg.norm(q[1] - a[0]))[0]

    def flow_means(self, t, A):
        """For each data point, the index of the attractor in A (n, d) its diffused mean theta(t) y_j flows to
        at t (-1: none within 1e-3 (1 + scale))."""
        th = self.f.coeffs(t)[0]
        X, _ = self.f.descend(th * self.Y, t, max_iter=20000, attractors=A)
        D = np.linalg.norm(X[:, None, :] - A[None, :, :], axis=2)
        return np.where(D.min(axis=1) <= self.near, D.argmin(axis=1), -1)

    def assign(self, i, new):
        """Members of the nodes made at ts[i]."""
        if not new:
            return
        A = np.array([self.nodes[k].path[-1][1] for k in self.live])
        owner = self.flow_means(self.ts[i], A)
        for k in new:
            self.nodes[k].members = np.nonzero(owner == self.live.index(k))[0]


def scan_tree(field, schedule, *, t_min, n_grid, n_seeds, tol_t, min_mass, max_nodes, labels, progress=None):
    """The scan of ``theory.bifurcation_tree`` on a field; returns the BifurcationTree."""
    ts = log_snr_grid(schedule, t_min, field.T, n_grid)
    scan = _Scan(field, schedule, ts, tol_t, n_seeds, min_mass, max_nodes).run(progress)
    N = len(scan.Y)
    out = []
    for idx, n in enumerate(scan.nodes):
        members = n.members if n.members is not None else np.array([], dtype=int)
        comp = None
        if labels is not None:
            vals, counts = np.unique(labels[members], return_counts=True)
            comp = {v.item(): int(c) for v, c in zip(vals, counts, strict=True)}
        times = np.array([p[0] for p in n.path])
        out.append(TreeNode(
            index=idx, parent=n.parent, kind=n.kind, t_birth=n.t_birth, theta_birth=float(schedule.theta(n.t_birth)),
            x_birth=np.asarray(n.x_birth), birth_how=n.birth_how, t_end=float(n.t_end), end=n.end, times=times,
            points=np.array([p[1] for p in n.path]).reshape(len(times), -1), members=members,
            share=len(members) / N, composition=comp,
        ))  # fmt: skip
    eta = math.nan if field.eta is None else float(field.eta)
    return BifurcationTree(tuple(out), scan.ts, float(scan.ts[-1]), field.T, eta, scan.truncated)


@one_blas_thread
def bifurcation_tree(
    data,
    schedule: Schedule,
    eta: float = 1.0,
    *,
    t_min: float | None = None,
    n_grid: int = 64,
    labels=None,
    max_nodes: int | None = 128,
    min_mass: float = 0.0,
    n_seeds: int | None = None,
    tol_t: float = 1e-10,
    progress: bool | None = None,
) -> BifurcationTree:
    """Every attractor of the frozen-time dynamics from T down to ``t_min``, as a tree (see the module docstring).

    ``data``: a DeltaMixture or GaussianMixture; ``t_min`` (default 1e-3 T) in (0, T); ``n_grid`` >= 3 grid times
    uniform in log-SNR; ``labels`` (N,), one per data point, for the basin compositions; ``n_seeds`` data
    attractors seeded at each grid time (default: all N, the exact tree). ``max_nodes`` (default 128; None: no
    limit) stops the scan at the last grid time above the one where the tree would grow past it: a set of N points
    has about N attractors near t = 0, and each birth costs a continuation and a descent (the 1,797 digits'
    whole tree takes hours), while the first ~100 are the top of the tree. ``min_mass`` in [0, 1] leaves out the
    attractors holding less of the data. Both say what they did in ``truncated``. Births are located to ``tol_t``
    in t. ``progress``: a bar over the grid times (tqdm, if installed; None: when stderr is a terminal).

    Examples:
        >>> from theory import DeltaMixture, VPLinear, bifurcation_tree
        >>> tree = bifurcation_tree(DeltaMixture([[-1.0], [1.0]]), VPLinear(), n_grid=16)
        >>> [(n.kind, n.parent) for n in tree.nodes], round(tree.nodes[1].t_birth, 10)
        ([('root', None), ('pitchfork', 0), ('pitchfork', 0)], 0.2926416543)
    """
    f, eta, t_min, n_grid, tol_t = grid_search_setup(data, schedule, eta, t_min, 1e-3, n_grid, tol_t)
    N = f.n_components
    n_seeds = N if n_seeds is None else check_int("n_seeds", n_seeds, 1)
    if max_nodes is not None:
        max_nodes = check_int("max_nodes", max_nodes, 1)
    check_in_range("min_mass", min_mass, 0.0, 1.0)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (N,):
            raise ValueError(f"labels must have shape ({N},), one per data point or component; got {labels.shape}")
    return scan_tree(
        f, schedule, t_min=t_min, n_grid=n_grid, n_seeds=n_seeds, tol_t=tol_t, min_mass=float(min_mass),
        max_nodes=max_nodes, labels=labels, progress=progress,
    )  # fmt: skip
