"""Figures of the empirical results, drawn from the JSON the pipelines write (so the notebooks and the
pipelines draw the same figures from the same numbers)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["breaking_figures", "plot_breaking", "save_figures"]

_PRED = (
    ("t_c_predicted", "exact (empirical data)", "C3"),
    ("t_c_equal_norm", "equal-norm", "C2"),
    ("t_c_biroli", "Biroli", "C4"),
)


def _mark(ax, row):
    for key, label, colour in _PRED:
        if row.get(key) is not None:
            ax.axvline(row[key], color=colour, ls="--", lw=1, label=f"predicted, {label}")
    if row.get("t_c_measured") is not None:
        ax.axvline(row["t_c_measured"], color="k", lw=1.5, label="measured")


def breaking_figures(curves: dict) -> dict:
    """{name: matplotlib Figure} for the curves of one data set (``breaking_<dataset>.json``)."""
    row, figs = curves["row"], {}

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ev = np.array(curves["scan"]["evaluations"], dtype=float)
    order = np.argsort(ev[:, 0])
    a1.step(ev[order, 0], ev[order, 1], where="post", color="k", marker=".")
    a1.set(xlabel="forward time t", ylabel="stable fixed points", title=f"{row['dataset']}: learned drift")
    _mark(a1, row)
    a1.legend(fontsize=7)
    a2.plot(curves["centre"]["t"], curves["centre"]["lam"], label="learned")
    a2.plot(curves["centre_exact"]["t"], curves["centre_exact"]["lam"], "--", label="exact (empirical data)")
    a2.axhline(0, color="grey", lw=0.8)
    a2.set_ylim(-1.0, 0.25)  # the interesting range: the softening near t_c (both go far below at small t)
    _mark(a2, row)
    a2.set(xlabel="forward time t", ylabel="top eigenvalue of grad R", title="branch from the data mean")
    a2.legend(fontsize=7)
    fig.tight_layout()
    figs["fixed_points"] = fig

    fig, ax = plt.subplots(figsize=(5, 3.6))
    cl = curves["cloning"]
    ax.plot(cl["t"], cl["p_agree"], "o-", color="k", label="P(two clones agree)")
    ax.axhline(cl["chance"], color="grey", lw=0.8, label="chance")
    _mark(ax, row)
    ax.set(xlabel="branching time t", ylabel="probability", title=f"{row['dataset']}: cloning")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["cloning"] = fig

    arcs = curves["arcs"]
    fig, axes = plt.subplots(1, len(arcs), figsize=(3 * len(arcs), 3), sharey=False)
    for ax, arc in zip(np.atleast_1d(axes), arcs, strict=True):
        ax.plot(arc["s"], arc["u_learned"], label="learned")
        ax.plot(arc["s"], arc["u_exact"], "--", label="exact")
        ax.set(title=f"t = {arc['t']:.3f}", xlabel="s (line through two samples)")
    np.atleast_1d(axes)[0].set_ylabel("u / k")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    figs["potential"] = fig
    return figs


def save_figures(figs: dict, folder, prefix: str, dpi: int = 110) -> list[Path]:
    """Write each figure of ``figs`` ({name: Figure}) as ``folder/<prefix>_<name>.png`` and close it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        paths.append(folder / f"{prefix}_{name}.png")
        fig.savefig(paths[-1], dpi=dpi)
        plt.close(fig)
    return paths


def plot_breaking(curves: dict, folder: Path, dataset: str) -> list[Path]:
    """Write the figures of ``breaking_figures`` as ``folder/breaking_<dataset>_<name>.png``."""
    return save_figures(breaking_figures(curves), folder, f"breaking_{dataset}")
