"""Shared test setup: float64 everywhere, and the reference schedules and data sets.

Strict numerics (diffrax's conftest also sets ``jax_numpy_rank_promotion = "raise"``): that option
is left OFF on purpose, because the package's own code relies on implicit rank promotion:
``Schedule.f`` (theory/schedules.py) and ``drift`` / ``drift_jacobian`` (theory/dynamics.py) multiply
``a(t)[..., None]`` of shape (1,) by a batched x of shape (..., d); ``DeltaMixture.covariance`` and
``GaussianMixture.covariance`` (theory/data.py) subtract a (d,) mean from a (K, d) array. Under
"raise" these fail, and ``drift`` raises the broadcasting error before its t check.
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from theory import DDPM, VE, DeltaMixture, VPCosine, VPLinear  # noqa: E402


@pytest.fixture
def schedules():
    return [VPLinear(), VPCosine(), VE(), DDPM()]


@pytest.fixture
def two_deltas():
    return DeltaMixture(np.array([[-1.0], [1.0]]))
