"""The public result records of the fixed-point engine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from theory.schedules import DDPM


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point x (d,) of the drift at time t, its drift-Jacobian eigenvalues, and stability.

    ``eigenvalues`` are all d eigenvalues (ascending).
    """

    x: np.ndarray
    eigenvalues: np.ndarray
    stable: bool


@dataclass(frozen=True)
class Bifurcation:
    """A bifurcation met in generation: forward time ``t``, ``theta``, ``snr``, ``kind`` ("pitchfork" or
    "saddle-node"), the point ``x`` (d,), and the basin mass of its new attractor: the share of p_t that
    flows to it one grid cell (in log-SNR) below ``t``, ``basin_mass`` +- ``basin_mass_se`` (nan if not
    sampled)."""

    t: float
    theta: float
    snr: float
    kind: str
    x: np.ndarray
    basin_mass: float
    basin_mass_se: float

    def __repr__(self):
        return (
            f"Bifurcation(kind={self.kind!r}, t={self.t:.10g}, theta={self.theta:.10g}, snr={self.snr:.6g}, "
            f"basin_mass={self.basin_mass:.4g} +- {self.basin_mass_se:.2g})"
        )


@dataclass(frozen=True)
class Seeding:
    """How ``critical_time`` searched, and what that guarantees (``guarantee``).

    Attributes:
        n_data: the number of data points (mixture components) N.
        n_data_seeds: the farthest-point data attractors kappa y_j seeded at each scanned time (all N when
            N <= ``n_seeds``).
        n_grid: grid times, uniform in log-SNR, from T down to ``t_min``.
        t_min: the grid's lowest time.
        scanned: the grid times at which attractors were collected (the first with two, and the cells below).
        centre: the ``centre`` option ("full": the centre branch down to t_min; "search": down to the scan).
        n_mass: draws of p_t for the basin mass and the order parameter (no draw seeds the scan).
    """

    n_data: int
    n_data_seeds: int
    n_grid: int
    t_min: float
    scanned: tuple = ()
    centre: str = "full"
    n_mass: int = 0

    @property
    def every_point_seeded(self) -> bool:
        return self.n_data_seeds >= self.n_data

    @property
    def guarantee(self) -> str:
        if self.every_point_seeded:
            seeds = f"all {self.n_data} data attractors kappa y_j"
            miss = "an attractor born and gone between two grid times"
        else:
            seeds = f"{self.n_data_seeds} farthest-point data attractors kappa y_j of {self.n_data}"
            miss = (
                "the attractor of a data point outside the seeds whose basin holds no seed (raise n_seeds), "
                "or one born and gone between two grid times"
            )
        times = ", ".join(f"{t:.6g}" for t in self.scanned) or "none"
        return (
            f"the first bifurcation among the attractors reached by descent from the centre and {seeds} at "
            f"t = {times}, and the branches continued from them (one whose extrapolated fold, an upper bound of its "
            f"birth under the square-root law, lies below the first of these times is not continued); {miss} can be "
            "missed"
        )


@dataclass(frozen=True)
class OrderParameter:
    """The order parameter m(t): the share of p_t that flows under the frozen drift to the central attractor.

    The central attractor is the branch continued from the unique attractor at T; below ``centre_t``, where
    it has lost stability or ceased to exist, m = 0. Each m is the share of ``n_samples`` seeded draws of p_t
    whose descent ends there, with the binomial standard error sqrt(m (1 - m) / n).

    Attributes:
        t: (M,) forward times, decreasing.
        m: (M,) the share at each time.
        stderr: (M,) its standard error (0 where m is exact: below ``centre_t``).
        n_samples: draws per time.
        centre_t: where the central attractor ends (nan if it does not above the lowest time).
    """

    t: np.ndarray
    m: np.ndarray
    stderr: np.ndarray
    n_samples: int
    centre_t: float = math.nan

    def macroscopic_time(self, threshold: float = 0.01) -> float:
        """The largest of the times ``t`` at which 1 - m exceeds ``threshold`` (nan if none): the macroscopic
        breaking time at the resolution of these times (``critical_time`` refines it by bisection)."""
        from theory._checks import check_in_range

        check_in_range("threshold", threshold, 0.0, 1.0, open_hi=True)
        above = np.nonzero(1.0 - self.m > threshold)[0]
        return float(np.max(self.t[above])) if len(above) else math.nan

    def __repr__(self):
        return f"OrderParameter(n_times={len(self.t)}, n_samples={self.n_samples}, centre_t={self.centre_t:.6g})"


@dataclass(frozen=True)
class MacroscopicTime:
    """The macroscopic breaking time ``t``: the largest t at which 1 - m(t) exceeds ``threshold`` (m: the order
    parameter), located by bisection in log-SNR on the same seeded draws at every time; ``m`` +- ``stderr``: the
    order parameter at the bracket's lower end, where 1 - m > threshold."""

    t: float
    theta: float
    snr: float
    threshold: float
    m: float
    stderr: float

    def __repr__(self):
        return f"MacroscopicTime(t={self.t:.10g}, threshold={self.threshold:g}, m={self.m:.4g} +- {self.stderr:.2g})"


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
        centre_t: where the branch continued from the centre at T loses stability or ends (nan if it
            never does above t_min).
        centre_theta: theta(centre_t).
        eta: the member of the eta family.
        step: for a DDPM schedule, the last forward step past the bifurcation, max{k : theta_k > theta_c}.
        generative_step: N - step.
        message: why kind is "none".
        basin_mass, basin_mass_se: the share of p_t that flows to the new attractor one grid cell (in
            log-SNR) below t, and its standard error (nan when not sampled).
        macroscopic: the macroscopic breaking time (a ``MacroscopicTime``): the largest t at which the share
            of p_t that leaves the central attractor exceeds the threshold; None where not sampled or not
            reached above t_min.
        order: the order parameter m(t) at the grid times sampled for ``macroscopic`` (an ``OrderParameter``).
        seeding: how the search was seeded (a ``Seeding``); ``guarantee`` says what that guarantees.
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
    basin_mass: float = math.nan
    basin_mass_se: float = math.nan
    macroscopic: MacroscopicTime | None = None
    order: OrderParameter | None = None
    seeding: Seeding | None = None

    @property
    def guarantee(self) -> str:
        """What the search guarantees about ``t``, from how it was seeded (``Seeding.guarantee``)."""
        return "" if self.seeding is None else self.seeding.guarantee

    def __repr__(self):
        if self.kind == "none":
            msg = self.message if len(self.message) <= 160 else self.message[:157] + "..."
            return f"CriticalTime(kind='none', centre_t={self.centre_t:.10g}, message={msg!r})"
        macro = "None" if self.macroscopic is None else f"t={self.macroscopic.t:.10g}"
        sd = self.seeding
        seeds = "" if sd is None else f", seeds={sd.n_data_seeds} of {sd.n_data}, n_grid={sd.n_grid}"
        return (
            f"CriticalTime(kind={self.kind!r}, t={self.t:.10g}, theta={self.theta:.10g}, snr={self.snr:.6g}, "
            f"centre_t={self.centre_t:.10g}, eta={self.eta:g}, basin_mass={self.basin_mass:.4g}, "
            f"macroscopic({macro}), d={len(self.x)}{seeds})"
        )


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


def _at(schedule, t, fn):
    return float(getattr(schedule, fn)(t)) if np.isfinite(t) else math.nan


def macroscopic_time(schedule, t, threshold, m, se) -> MacroscopicTime:
    return MacroscopicTime(float(t), _at(schedule, t, "theta"), _at(schedule, t, "snr"), float(threshold), m, se)


def critical_result(schedule, eta, kind, t, x, direction, centre_t, message="", mass=(math.nan, math.nan), **found):
    """A CriticalTime with every derived number (theta, sigma, snr, OU time, DDPM steps) from the schedule;
    ``found``: macroscopic, order, seeding."""
    th = _at(schedule, t, "theta")
    step = gen = None
    if isinstance(schedule, DDPM) and np.isfinite(th):
        step = schedule.forward_step(th)
        gen = schedule.n_steps - step
    return CriticalTime(
        t=float(t),
        theta=th,
        sigma=_at(schedule, t, "sigma"),
        snr=_at(schedule, t, "snr"),
        ou_time=_at(schedule, t, "ou_time"),
        kind=kind,
        x=x,
        direction=direction,
        centre_t=float(centre_t),
        centre_theta=_at(schedule, centre_t, "theta"),
        eta=eta,
        step=step,
        generative_step=gen,
        message=message,
        basin_mass=float(mass[0]),
        basin_mass_se=float(mass[1]),
        **found,
    )


@dataclass(frozen=True)
class TreeNode:
    """One attractor of the tree.

    Attributes:
        index: its position in ``BifurcationTree.nodes`` (in order of discovery: grid cell by grid cell from T
            down, earliest birth first within a cell).
        parent: the index of its parent node (None for a root).
        kind: "root", "saddle-node" or "pitchfork".
        t_birth, theta_birth: forward time and theta of its birth; ``x_birth`` (d,) the birth point.
        birth_how: how the birth was located: "fold" (the extended system), "crossing" (the parent's loss of
            stability, Brent's method), "root", or "halved" (the steps stopped and the extended system found
            no fold next to them: not verified).
        t_end: where it ceases to be an attractor in generation (t_min if it lives to the end of the scan).
        end: "fold", "crossing" (it lost stability), "t_min", or "halved".
        times (k,), points (k, d): its position over its life, t decreasing from its birth.
        members: indices of the data points whose diffused mean theta(t) y_j flows to it at the first grid
            time after its birth; ``share`` = len(members) / N.
        composition: {label: count} over ``members`` when labels were given, else None.
    """

    index: int
    parent: int | None
    kind: str
    t_birth: float
    theta_birth: float
    x_birth: np.ndarray
    birth_how: str
    t_end: float
    end: str
    times: np.ndarray
    points: np.ndarray
    members: np.ndarray
    share: float
    composition: dict | None = None

    def __repr__(self):
        return (
            f"TreeNode({self.index}, parent={self.parent}, kind={self.kind!r}, t_birth={self.t_birth:.10g}, "
            f"t_end={self.t_end:.6g} ({self.end}), share={self.share:.4g})"
        )


@dataclass(frozen=True)
class BifurcationTree:
    """Every attractor from T down to ``t_min`` (``nodes``, a tuple of TreeNode), with the scan's grid ``ts``.

    ``truncated`` is "" for the exact tree, else why and where the scan stopped or what it left out.
    """

    nodes: tuple
    ts: np.ndarray
    t_min: float
    T: float
    eta: float
    truncated: str = ""

    def __repr__(self):
        kinds = {k: sum(n.kind == k for n in self.nodes) for k in ("root", "pitchfork", "saddle-node")}
        first = self.first_bifurcation()
        tf = "none" if first is None else f"{first.t_birth:.10g} ({first.kind})"
        return (
            f"BifurcationTree(n_nodes={len(self.nodes)}, roots={kinds['root']}, pitchfork={kinds['pitchfork']}, "
            f"saddle-node={kinds['saddle-node']}, first={tf}, attractors at t_min={self.n_attractors(self.t_min)}"
            + (f", truncated={self.truncated[:60]!r}" if self.truncated else "")
            + ")"
        )

    def children(self, i: int) -> list[int]:
        return [n.index for n in self.nodes if n.parent == i]

    def alive(self, t: float) -> list[int]:
        """Indices of the nodes that are attractors at forward time t (t_end < t <= t_birth, or alive at t_min)."""
        return [n.index for n in self.nodes if n.t_birth >= t and (n.t_end < t or (n.end == "t_min" and t >= n.t_end))]

    def n_attractors(self, t: float) -> int:
        return len(self.alive(t))

    def first_bifurcation(self) -> TreeNode | None:
        """The node born first in generation (largest t_birth) that is not a root."""
        born = [n for n in self.nodes if n.kind != "root"]
        return max(born, key=lambda n: n.t_birth) if born else None

    def births(self) -> np.ndarray:
        """Birth times of the non-root nodes, decreasing."""
        return np.sort([n.t_birth for n in self.nodes if n.kind != "root"])[::-1]
