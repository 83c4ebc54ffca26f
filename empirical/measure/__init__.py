"""Measurements inside a trained denoiser: the fixed points of its drift and its breaking time
(``fixed_points``, ``flow``), its attractors against the exact ones, cloning, memorisation, the shell of noisy
images and the denoising gap.

``from empirical.measure import measure_critical_time`` (the names of ``fixed_points``) keeps working.
"""

import importlib


def __getattr__(name):
    module = importlib.import_module("empirical.measure.fixed_points")
    if name in module.__all__:
        return getattr(module, name)
    raise AttributeError(f"module 'empirical.measure' has no attribute {name!r}")
