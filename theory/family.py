r"""The eta family of generative dynamics as one object that owns its coefficients.

With the forward drift f = a(t) x and diffusion g(t), member eta >= 0 of the family is (time reversed)

    dx = [ -a x + k score ] ds + eta g dW,      k(t) = (1 + eta^2)/2 g^2(t),

eta = 1 the reverse SDE, eta = 0 the probability-flow ODE. Dividing the drift by k > 0 changes neither
its fixed points nor the signs of its Jacobian's eigenvalues; the reduced field is

    R(x) = score(x) - c x,     c(t) = a / k,

and for a finite data set (score = (theta E[y|x] - x) / sigma^2) its fixed points solve
x = kappa E[y | x] with kappa = theta / (1 + c sigma^2). VP: c = -1/(1 + eta^2); VE: c = 0.

Examples:
    >>> from theory import EtaFamily, VPLinear
    >>> fam = EtaFamily(VPLinear(), eta=1.0)
    >>> float(fam.c(0.3))
    -0.5
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from theory._checks import check_eta
from theory.schedules import Schedule

__all__ = ["EtaFamily"]


@dataclass(frozen=True)
class EtaFamily:
    """Member ``eta`` of the generative family on ``schedule``: k, c, kappa and the drift's coefficients.

    Every method is jax (jit-able, vectorised over t).
    """

    schedule: Schedule
    eta: float = 1.0

    def __post_init__(self):
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must be a theory Schedule; got {type(self.schedule).__name__}")
        object.__setattr__(self, "eta", check_eta(self.eta))

    def a(self, t):
        """Forward drift coefficient: f(x, t) = a(t) x."""
        return self.schedule.a(t)

    def k(self, t):
        """(1 + eta^2)/2 g^2: the weight of the score in the drift."""
        return 0.5 * (1.0 + self.eta**2) * self.schedule.g2(t)

    def c(self, t):
        """a / k: the reduced field is R = score - c x (VP: -1/(1 + eta^2) at every t)."""
        return self.a(t) / self.k(t)

    def kappa(self, t):
        """theta / (1 + c sigma^2): fixed points of a finite data set solve x = kappa E[y | x]."""
        return self.schedule.theta(t) / (1.0 + self.c(t) * self.schedule.sigma2(t))

    def frozen(self, t):
        """(theta, sigma^2, c) at t: what a frozen-time field needs."""
        return self.schedule.theta(t), self.schedule.sigma2(t), self.c(t)

    def drift(self, x, score, t):
        """-a x + k score; x and score (..., d), t broadcastable to (...)."""
        return -jnp.asarray(self.a(t))[..., None] * x + jnp.asarray(self.k(t))[..., None] * score
