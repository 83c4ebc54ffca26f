"""The empirical side of the project (torch): your data, your model, your sampling loop against the theory.

The public names below are imported lazily: ``import empirical`` costs numpy only, and ``empirical.sample``
imports the samplers (and torch) on first use. The subpackages, by role, from the bottom up (each imports only
those before it): ``data``, ``models``, ``training``, ``sampling``, ``measure``, ``metrics``, ``interop``,
``pipelines`` (the commands of ``python -m empirical``); ``_util`` (private) serves them all.

``import empirical`` sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless already set, so that jax (the theory)
allocates GPU memory as it needs it instead of taking 75% of the device from torch; jax runs where
``JAX_PLATFORMS`` says (default: the GPU when there is one). See docs/checks.md.
"""

import importlib
import os

from empirical._util import legacy

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
legacy.install()

# public name -> module (under empirical.) that defines it
_PUBLIC = {
    # data: built-in sets and your own image files
    "DATASETS": "data.datasets",
    "Dataset": "data.datasets",
    "load_dataset": "data.datasets",
    "load_images": "data.datasets",
    # models: the denoiser wrappers and loaders (your checkpoint; a diffusers UNet2DModel folder)
    "Denoiser": "models.denoiser",
    "ExactDenoiser": "models.denoiser",
    "LocalScoreDenoiser": "models.local_score",
    "load_denoiser": "training.train",
    "load_diffusers": "interop.diffusers_unet",
    "TrainConfig": "training.config",
    # measure: the breaking time of a trained network
    "measure_critical_time": "measure.fixed_points",
    "MeasuredCriticalTime": "measure.fixed_points",
    "LearnedField": "measure.fixed_points",
    "FlowSearch": "measure.flow",
    # sampling: samplers, grids and inits (the Gaussian late start among them)
    "sample": "sampling.samplers",
    "generate": "sampling.samplers",
    "SAMPLERS": "sampling.samplers",
    "INITS": "sampling.samplers",
    "GRIDS": "sampling.grids",
    "time_grid": "sampling.grids",
    "t_of_timestep": "sampling.grids",
    "GaussianInit": "sampling.gaussian_init",
    # metrics
    "fid": "metrics.scores",
    "kid": "metrics.scores",
    "inception_features": "metrics.scores",
    # interop: the late start in a diffusers sampling loop
    "diffusers_late_start": "interop.late_start",
    "schedule_of": "interop.late_start",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"empirical.{_PUBLIC[name]}"), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'empirical' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
