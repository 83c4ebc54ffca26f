"""The empirical side of the project: torch code (denoisers, training, samplers, measurements on trained
models) and the image data loaders it trains on.

The data loaders (``empirical.datasets``) need only numpy, so ``import empirical`` imports neither torch
nor scikit-learn.
"""

from empirical.datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
