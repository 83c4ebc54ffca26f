"""The empirical side of the project: torch code (denoisers, training, samplers, measurements on trained
models) and the image data loaders it trains on.

The data loaders (``empirical.datasets``) need only numpy, so ``import empirical`` imports neither torch
nor scikit-learn; the torch modules are imported by name (``empirical.train``, ``empirical.samplers``, ...).

import empirical sets JAX_PLATFORMS=cpu unless already set (it acts only if jax is not yet imported; child
processes inherit it); see docs/checks.md.
"""

import os

# The theory side (jax) is small float64 work: keep it on the CPU so that it never claims GPU memory
# that torch needs (has effect only when jax is not imported yet).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from empirical.datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
