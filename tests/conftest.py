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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: the models are small, and two threads on a busy 2-core machine
    run several times slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def schedules():
    return [VPLinear(), VPCosine(), VE(), DDPM()]


@pytest.fixture
def two_deltas():
    return DeltaMixture(np.array([[-1.0], [1.0]]))
