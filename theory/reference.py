"""A catalogue of reference problems with, where one exists, the closed form of the centre's loss of stability.

Each problem wraps a ``theory.systems`` reference system (or bare data where no closed form exists, the
heavy-tailed four deltas), solved at one eta. The derivations are in docs/derivations.md; the closed forms come
from ``theory.symbolic`` through the systems. Each problem is small enough to solve in seconds;
``python -m theory`` prints the table on any schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory._checks import check_schedule
from theory.data import DeltaMixture
from theory.systems import EqualNormSet, ReferenceSystem, ThreeDeltas, TwoDeltas, TwoGaussians

__all__ = ["ReferenceProblem", "reference_problems", "equal_norm_set"]


@dataclass(frozen=True)
class ReferenceProblem:
    """A named data set, the eta it is solved at, and its reference system (None where no closed form exists).

    ``centre_theta_closed_form`` is the closed-form theta of the centre's loss of stability on a variance-
    preserving schedule (None where there is none); ``closed_centre(schedule)`` gives it on any schedule."""

    name: str
    data: object
    eta: float
    system: ReferenceSystem | None = None

    @property
    def centre_theta_closed_form(self) -> float | None:
        if self.system is None or (isinstance(self.system, TwoDeltas) and not self.system.symmetric):
            return None  # unequal weights: the centre is no fixed point
        return self.system.centre_theta_c(self.eta)

    def closed_centre(self, schedule) -> tuple[float | None, float | None]:
        """(theta, t) of the centre's loss in closed form on ``schedule``; theta is None on VE (theta = 1 there),
        both None where no closed form exists, t nan where the loss lies outside [0, T]."""
        check_schedule(schedule)
        theta = self.centre_theta_closed_form
        if theta is None:
            return None, None
        t = self.system.centre_t_c(schedule, self.eta)
        return (theta if schedule.variance_preserving else None), t


def equal_norm_set(d: int, n_dirs: int, radius: float, seed: int) -> np.ndarray:
    """A centred equal-norm finite set: ``n_dirs`` random unit vectors and their negatives, times ``radius``."""
    return EqualNormSet.random(d, n_dirs, radius, seed).points


def _problem(name: str, system: ReferenceSystem, eta: float) -> ReferenceProblem:
    return ReferenceProblem(name, system.data, eta, system)


def reference_problems() -> list[ReferenceProblem]:
    """The catalogue: symmetric (pitchfork), asymmetric and subcritical (saddle-node) problems."""
    heavy = DeltaMixture([[-1.0], [-0.2], [0.2], [1.0]], [0.05, 0.45, 0.45, 0.05])
    return [
        _problem("deltas +-1 (paper)", TwoDeltas(1.0), 1.0),
        _problem("deltas +-1, eta=0.5", TwoDeltas(1.0), 0.5),
        _problem("deltas +-0.7, ODE", TwoDeltas(0.7), 0.0),
        _problem("deltas +-2", TwoDeltas(2.0), 1.0),
        _problem("deltas +-1, weights .3/.7", TwoDeltas(1.0, [0.3, 0.7]), 1.0),
        _problem("2 Gaussians +-1, var 0.1", TwoGaussians(1.0, 0.1), 1.0),
        ReferenceProblem("4 deltas, heavy tails", heavy, 1.0, None),
        _problem("3 deltas at 120 deg (2D)", ThreeDeltas(1.0), 1.0),
        _problem("equal-norm, N=20, d=10", EqualNormSet.random(10, 10, 1.5, seed=0), 1.0),
    ]
