r"""The stages of ``empirical.pipelines.breaking_time.pipeline`` after the shared ones (``empirical.pipelines.stages``):
the model file of the row, the measurement in the network (fixed points by bisection on t, the centre branch, learned
and exact, optional), cloning, the potential along arcs, and the table row, curves and figures.

Their cost at d = 784 (a ch = 16 U-Net on one CPU thread, about 2.6 ms per image row in float32, 15 ms in
float64): the flow search of ``measure`` 43,000 to 108,000 rows (2 to 18 minutes in the committed 28x28 rows);
``clone`` the rows of ``clone_rows`` in float32 (n_parents = 16, n_clones = 4: 113,808 rows, about 5 minutes);
``arcs`` 3,200 rows in float64 (under a minute); each step of a centre branch a dense 784 x 784 Jacobian (about
14 s in float64), which is why ``centre`` can be switched off there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import theory
from empirical._util.results import finite, upsert_row, write_json_atomic
from empirical.measure.cloning import cloning, euler_maruyama, potential_along_path
from empirical.measure.fixed_points import centre_branch, map_coeffs, measure_critical_time
from empirical.measure.flow import FlowSearch
from empirical.models.denoiser import T_MIN, ExactDenoiser
from empirical.training.train import export_weights

__all__ = ["model_file", "measure", "centre_branches", "clone", "clone_rows", "arcs", "table_row", "curves", "write"]

T_BRANCH = np.linspace(0.9, 0.05, 18)  # cloning's branch times
CLONE_STEPS = 200  # Euler-Maruyama steps of cloning, T to T_MIN


def model_file(model, results: Path, dataset: str) -> str:
    """The row's model: a model trained here is exported (its EMA weights, float32, to reload on a CPU) as
    ``<results>/<dataset>_denoiser.pt``; a ``--model`` file or a diffusers folder is named as it is."""
    if not model.trained:
        return model.source
    return str(export_weights(model.checkpoint, results / f"{dataset}_denoiser.pt"))


def measure(den, x_train: np.ndarray, cfg):
    """``measure_critical_time``: the largest t with two or more stable fixed points of the learned drift (found by
    the iterated map, or with ``cfg.search == "flow"`` by ``empirical.measure.flow``'s damped flow), on ``cfg.n_grid``
    times from ``cfg.t_max`` (None: T) to ``cfg.t_min``, then bisection to ``cfg.tol_t``."""
    search = FlowSearch(den) if cfg.search == "flow" else None
    return measure_critical_time(
        den, x_train, eta=cfg.eta, n_starts=cfg.n_starts, n_grid=cfg.n_grid, tol_t=cfg.tol_t, t_min=cfg.t_min,
        t_max=cfg.t_max, search=search,
    )  # fmt: skip


def centre_branches(den, x_train: np.ndarray, cfg):
    """The centre branch of the learned drift, and the same code on the exact score of the training images;
    (None, None) with ``cfg.centre`` off."""
    if not cfg.centre:
        return None, None
    cb = centre_branch(den, x_train, eta=cfg.eta, t_min=cfg.t_min)
    cb_exact = centre_branch(ExactDenoiser(theory.DeltaMixture(x_train), den.schedule), x_train, eta=cfg.eta)
    return cb, cb_exact


def clone(den, clf, cfg):
    """Cloning (``empirical.measure.cloning``) on t = 0.9 .. 0.05 (``T_BRANCH``), the classes from the classifier; run
    in float32. Its cost is ``clone_rows(n_parents, n_clones, den.schedule.T)`` network rows."""
    try:
        return cloning(
            den.float(), lambda x: clf.predict(x.float()), T_BRANCH, n_parents=cfg.n_parents, n_clones=cfg.n_clones,
            n_steps=CLONE_STEPS, eta=cfg.eta, seed=cfg.seed,
        )  # fmt: skip
    finally:
        den.double()


def clone_rows(n_parents: int, n_clones: int, T: float = 1.0) -> int:
    """The rows through the network of ``clone``: the parents' CLONE_STEPS steps and their denoised ends, then at
    each branch time the n_parents n_clones clones' remaining steps and their ends,

        n_parents (CLONE_STEPS + 1 + n_clones sum_b (CLONE_STEPS - i_b + 1)),   i_b the grid index of T_BRANCH[b],

    about 1,730 n_parents n_clones: linear in both (n_parents = 16, n_clones = 4 gives 113,808).

    >>> clone_rows(16, 4)
    113808
    """
    ts = np.linspace(T, T_MIN, CLONE_STEPS + 1)
    remaining = sum(CLONE_STEPS - int(np.argmin(np.abs(ts - tb))) + 1 for tb in T_BRANCH)
    return n_parents * (CLONE_STEPS + 1 + n_clones * remaining)


def arcs(den, clf, x_train: np.ndarray, t_c: float, cfg) -> list[dict]:
    """The potential along the line through two generated samples of different classes, scaled to time t
    (kappa(t) x0, where their attractors sit once they exist), learned and exact, at t = 0.8 and around t_c."""
    ts = np.linspace(den.schedule.T, T_MIN, 201)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = torch.randn(16, x_train.shape[1], generator=gen, dtype=torch.float64).to(next(den.parameters()).device)
    ends = den.x0(euler_maruyama(den, start, ts, eta=cfg.eta, generator=gen)[-1], ts[-1])
    labels = clf.predict(ends.float())
    a, b = 0, int(np.flatnonzero(labels != labels[0])[0]) if np.any(labels != labels[0]) else 1
    exact = ExactDenoiser(theory.DeltaMixture(x_train), den.schedule)
    out = []
    for t in [0.8] + [f * t_c for f in (1.25, 1.0, 0.8, 0.6)]:
        kappa, _ = map_coeffs(den, t, cfg.eta)
        s, u = potential_along_path(den, kappa * ends[a], kappa * ends[b], t, eta=cfg.eta)
        _, u_exact = potential_along_path(exact, kappa * ends[a], kappa * ends[b], t, eta=cfg.eta)
        out.append(
            {"t": float(t), "s": s, "u_learned": u, "u_exact": u_exact, "classes": [int(labels[a]), int(labels[b])]}
        )
    return out


def _softest(prefix, cb, cb_exact, t_c) -> dict:
    """Where each centre branch is softest (its top eigenvalue of grad R largest) within 0.75 t_c .. 1.25 t_c
    (None without the branches)."""
    out = {}
    for name, b in (("measured", cb), ("exact", cb_exact)):
        if b is None:
            out[f"{prefix}_t_{name}"] = out[f"{prefix}_lam_{name}"] = None
            continue
        window = (b.t > 0.75 * t_c) & (b.t < 1.25 * t_c)
        i = int(np.argmax(np.where(window, b.lam, -np.inf)))
        out[f"{prefix}_t_{name}"], out[f"{prefix}_lam_{name}"] = float(b.t[i]), float(b.lam[i])
    return out


def _centre_fields(cb, cb_exact, t_c) -> dict:
    """The row's centre-branch columns (None where a branch was not computed)."""

    def get(b, name):
        return None if b is None else finite(getattr(b, name))

    return {
        "centre_t_measured": get(cb, "crossing_t"),  # a continuous loss of stability of the learned branch
        "centre_t_exact_branch": get(cb_exact, "crossing_t"),  # the same code on the exact score
        "centre_fold_t_measured": get(cb, "fold_t"),  # where the stable branch ends (a fold), if it does
        "centre_fold_t_exact": get(cb_exact, "fold_t"),
        **_softest("centre_softest", cb, cb_exact, t_c),
        "centre_asymmetry_median": None if cb is None else float(np.median(cb.asymmetry)),
    }


def table_row(cfg, x_train, pred: dict, m, cb, cb_exact, cloned, accuracy: float, model, model_file) -> dict:
    """The row of breaking_time.json: predictions (and where the exact one comes from), the measurement and its
    errors against each prediction, the centre branches, cloning, and the model (training steps, and the final
    loss when known; None for a diffusers model)."""
    measured = float(m.t)
    return {
        "dataset": cfg.dataset,
        "n_train": int(len(x_train)),
        "dim": int(x_train.shape[1]),
        "classes": list(cfg.classes) if cfg.classes else None,
        "eta": cfg.eta,
        **{k: finite(v) for k, v in pred.items()},
        "t_c_measured": finite(measured),
        "t_c_measured_bracket": [finite(m.t_lo), finite(m.t_hi)],
        "n_stable_below": len(m.points),
        "relative_error": finite(abs(measured - pred["t_c_predicted"]) / pred["t_c_predicted"]),
        "relative_error_equal_norm": finite(abs(measured - pred["t_c_equal_norm"]) / pred["t_c_equal_norm"]),
        "relative_error_biroli": finite(abs(measured - pred["t_c_biroli"]) / pred["t_c_biroli"]),
        **_centre_fields(cb, cb_exact, pred["t_c_predicted"]),
        "cloning_midpoint": finite(cloned.midpoint),
        "cloning_chance": cloned.chance,
        "classifier_accuracy": accuracy,
        "search": cfg.search,
        "train_steps": model.train_steps,
        "model": str(model_file),
        "final_loss": model.final_loss,
    }


def curves(row: dict, m, cb, cb_exact, cloned, arc_list: list[dict]) -> dict:
    """The curves file's content: the row, the fixed-point scan, both centre branches (empty lists when not
    computed), cloning and the arcs."""
    return {
        "row": row,
        "scan": {"t": m.grid_t, "count": m.grid_count, "evaluations": m.evaluations},
        "centre": {"t": [], "lam": [], "mu_imag": [], "asymmetry": []}
        if cb is None
        else {"t": cb.t, "lam": cb.lam, "mu_imag": np.imag(cb.mu), "asymmetry": cb.asymmetry},
        "centre_exact": {"t": [], "lam": []} if cb_exact is None else {"t": cb_exact.t, "lam": cb_exact.lam},
        "cloning": {
            "t": cloned.t,
            "p_agree": cloned.p_agree,
            "chance": cloned.chance,
            "midpoint": finite(cloned.midpoint),
        },
        "arcs": arc_list,
    }


def write(results: Path, dataset: str, content: dict) -> None:
    """breaking_<dataset>.json, the row in breaking_time.json (one per dataset and device), and the figures."""
    from empirical.pipelines.plots import plot_breaking

    write_json_atomic(results / f"breaking_{dataset}.json", content)
    upsert_row(results / "breaking_time.json", content["row"], ("dataset", "device"))
    plot_breaking(content, results / "figures", dataset)
