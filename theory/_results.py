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
        macroscopic: the first bifurcation whose new attractor holds at least ``min_mass`` of p_t (this
            one, a later one, or None if none was found down to t_min or masses were not sampled).
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
    macroscopic: Bifurcation | None = None

    def __repr__(self):
        if self.kind == "none":
            msg = self.message if len(self.message) <= 160 else self.message[:157] + "..."
            return f"CriticalTime(kind='none', centre_t={self.centre_t:.10g}, message={msg!r})"
        macro = "None" if self.macroscopic is None else f"t={self.macroscopic.t:.10g}"
        return (
            f"CriticalTime(kind={self.kind!r}, t={self.t:.10g}, theta={self.theta:.10g}, snr={self.snr:.6g}, "
            f"centre_t={self.centre_t:.10g}, eta={self.eta:g}, basin_mass={self.basin_mass:.4g}, "
            f"macroscopic({macro}), d={len(self.x)})"
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


def bifurcation(schedule, kind, t, x, mass) -> Bifurcation:
    return Bifurcation(float(t), _at(schedule, t, "theta"), _at(schedule, t, "snr"), kind, x, *mass)


def critical_result(schedule, eta, kind, t, x, direction, centre_t, message="", mass=(math.nan, math.nan), macro=None):
    """A CriticalTime with every derived number (theta, sigma, snr, OU time, DDPM steps) from the schedule."""
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
        macroscopic=macro,
    )
