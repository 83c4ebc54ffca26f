"""The module paths of the flat layout (``empirical.samplers``, ...) as aliases of their new homes, for one release.

``import empirical.samplers`` gives the very module ``empirical.sampling.samplers`` (the same objects) with a
``DeprecationWarning`` naming the new path; ``python -m empirical.breaking_time`` still runs the command.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module (under empirical.) -> new module (under empirical.)
MOVED = {
    "cli": "_util.cli",
    "results": "_util.results",
    "stopwatch": "_util.stopwatch",
    "checkpoints": "_util.checkpoints",
    "datasets": "data.datasets",
    "nets": "models.nets",
    "denoiser": "models.denoiser",
    "config": "training.config",
    "train": "training.train",
    "grids": "sampling.grids",
    "solvers": "sampling.solvers",
    "solvers_dpm": "sampling.solvers_dpm",
    "gaussian_init": "sampling.gaussian_init",
    "teleport": "sampling.teleport",
    "samplers": "sampling.samplers",
    "start_rule": "sampling.start_rule",
    "measure_flow": "measure.flow",
    "attractors": "measure.attractors",
    "cloning": "measure.cloning",
    "shell": "measure.shell",
    "denoising_gap": "measure.denoising_gap",
    "memorisation": "measure.memorisation",
    "classifier": "metrics.classifier",
    "diffusers_adapter": "interop.diffusers_unet",
    "diffusers_bridge": "interop.diffusers_schedulers",
    "stages": "pipelines.stages",
    "plots": "pipelines.plots",
    "breaking_time": "pipelines.breaking_time.pipeline",
    "stages_breaking": "pipelines.breaking_time.stages",
    "late_start": "pipelines.late_start.pipeline",
    "stages_late_start": "pipelines.late_start.stages",
    "plots_late_start": "pipelines.late_start.plots",
    "late_start_cells": "pipelines.late_start.cells",
    "diffusers_fid": "pipelines.late_start.diffusers_fid",
    "steps_sweep": "pipelines.steps_sweep",
    "recipe": "pipelines.recipe",
}
# empirical.measure and empirical.metrics were modules and are now packages that export the same names.


class _Alias(importlib.abc.Loader):
    """Loads an old path as the new module itself; ``get_code`` serves ``python -m`` (runpy)."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(f"{self.old} moved to {self.new}; the old path goes in the next release", DeprecationWarning, 2)
        return importlib.import_module(self.new)

    def exec_module(self, module):
        sys.modules[self.old] = module  # the import system set it already; keep it for clarity of intent

    def get_code(self, fullname):
        warnings.warn(f"{self.old} moved to {self.new}; the old path goes in the next release", DeprecationWarning, 2)
        return importlib.util.find_spec(self.new).loader.get_code(self.new)

    def is_package(self, fullname):
        return False


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix != "empirical" or name not in MOVED:
            return None
        new = f"empirical.{MOVED[name]}"
        return importlib.util.spec_from_loader(fullname, _Alias(fullname, new), origin=new)


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
