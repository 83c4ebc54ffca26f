"""The commands of ``python -m empirical``: each pipeline as a list of stages, its figures and its tables."""
