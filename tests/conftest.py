"""Shared test setup: float64 everywhere, and the reference schedules and data sets.

Strict numerics (diffrax's conftest also sets ``jax_numpy_rank_promotion = "raise"``): that option
is left OFF on purpose. The package's own code relies on implicit rank promotion when ``t`` is a
scalar and ``x`` is batched (``Schedule.f`` in theory/schedules.py, ``drift`` and
``drift_jacobian`` in theory/dynamics.py all multiply ``a(t)[..., None]`` of shape (1,) by an
``x`` of shape (..., d)), so "raise" breaks the package rather than the tests.
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
