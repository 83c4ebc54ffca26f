"""Symmetry breaking in generative diffusion models: the theory (jax, float64; sympy)."""

import jax

jax.config.update("jax_enable_x64", True)

from theory.data import DeltaMixture, GaussianMixture  # noqa: E402
from theory.schedules import DDPM, VE, Schedule, VPCosine, VPLinear  # noqa: E402

__all__ = ["Schedule", "VPLinear", "VPCosine", "VE", "DDPM", "DeltaMixture", "GaussianMixture"]
