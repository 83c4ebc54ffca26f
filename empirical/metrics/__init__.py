"""Sample quality: FID and KID on any features (``fid``: the TF-FID Inception features, class composition and
entropy) and the project's classifier (``classifier``: fast domain features).

``from empirical.metrics import fid`` (the names of ``empirical.metrics.scores``) keeps working.
"""

import importlib


def __getattr__(name):
    module = importlib.import_module("empirical.metrics.scores")
    if name in module.__all__:
        return getattr(module, name)
    raise AttributeError(f"module 'empirical.metrics' has no attribute {name!r}")
