"""Symmetry breaking in generative diffusion models: the theory (jax, float64; sympy).

Importing theory sets jax_enable_x64 for the whole process (jax has no per-module switch); see docs/checks.md.
"""

import jax

jax.config.update("jax_enable_x64", True)

from theory.bifurcations import (  # noqa: E402
    Bifurcation,
    BifurcationDiagram,
    CriticalTime,
    FixedPoint,
    MacroscopicTime,
    OrderParameter,
    Seeding,
    SpeciationTime,
    attractor_labels,
    attractor_posterior,
    bifurcation_diagram,
    critical_time,
    descend,
    fixed_point_map,
    fixed_points,
    order_parameter,
    speciation_time,
)
from theory.collapse import BiroliTimes, CollapseTime, biroli_times, collapse_time  # noqa: E402
from theory.data import DeltaMixture, GaussianMixture  # noqa: E402
from theory.dynamics import (  # noqa: E402
    Trajectories,
    commitment,
    data_potential,
    drift,
    drift_jacobian,
    potential,
    simulate,
    simulate_forward,
)
from theory.family import EtaFamily  # noqa: E402
from theory.schedules import DDPM, VE, Schedule, VPCosine, VPLinear  # noqa: E402
from theory.tree import BifurcationTree, TreeNode, bifurcation_tree  # noqa: E402

__all__ = [
    "Schedule",
    "VPLinear",
    "VPCosine",
    "VE",
    "DDPM",
    "DeltaMixture",
    "GaussianMixture",
    "drift",
    "potential",
    "data_potential",
    "drift_jacobian",
    "simulate",
    "simulate_forward",
    "Trajectories",
    "commitment",
    "fixed_points",
    "bifurcation_diagram",
    "critical_time",
    "order_parameter",
    "speciation_time",
    "descend",
    "attractor_labels",
    "attractor_posterior",
    "fixed_point_map",
    "FixedPoint",
    "CriticalTime",
    "MacroscopicTime",
    "OrderParameter",
    "Seeding",
    "SpeciationTime",
    "BifurcationDiagram",
    "Bifurcation",
    "EtaFamily",
    "bifurcation_tree",
    "BifurcationTree",
    "TreeNode",
    "collapse_time",
    "CollapseTime",
    "biroli_times",
    "BiroliTimes",
]
