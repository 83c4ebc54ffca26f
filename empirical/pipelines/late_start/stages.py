r"""The stages of ``empirical.pipelines.late_start.pipeline`` after the shared ones (``empirical.pipelines.stages``):
the scorer and its floor, the sweep of FID against t_start, the table of starts, the converged sampler, Inception FID,
the summary and the files.

The table's cells are listed once, in ``table_cells`` (init, t_start rule, t_start); a row's columns are built
once, in ``table_row``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from empirical._util.results import finite, update_json, write_json_atomic
from empirical.metrics.scores import class_composition, class_entropy_bits, fid, inception_features, kid
from empirical.sampling.samplers import AUTHOR_GRIDS, GRIDS, generate, nfe

__all__ = [
    "TABLE_SAMPLERS", "ALL_TABLE_SAMPLERS", "Scorer", "best_and_knee", "hex_images", "floor", "Drawer", "sweep",
    "converged_sweep", "grids_of", "table_cells", "table", "converged", "inception", "inception_split_reference",
    "summary", "write",
]  # fmt: skip

# Table names of the samplers -> empirical.sampling.samplers' names: the default table's four, and all that may be asked
# for.
TABLE_SAMPLERS = {"ddpm": "ddpm", "ddim": "ddim", "pndm": "pndm", "dpm-solver++": "dpm++2m"}
ALL_TABLE_SAMPLERS = TABLE_SAMPLERS | {"ipndm": "ipndm", "dpm-solver++(3m)": "dpm++3m", "unipc": "unipc"}
ROW_KEYS = ("dataset", "sampler", "grid", "n_steps", "init", "t_start_rule", "device")
GRID_CHOICES = (*GRIDS, "authors")  # "authors": each sampler on its authors' grids (samplers.AUTHOR_GRIDS)


def grids_of(cfg, sampler: str) -> tuple[str, ...]:
    """The grids one sampler runs on: cfg.grids, with "authors" expanded to the sampler's own grids."""
    out = []
    for g in cfg.grids:
        for name in AUTHOR_GRIDS[ALL_TABLE_SAMPLERS[sampler]] if g == "authors" else (g,):
            if name not in out:
                out.append(name)
    return tuple(out)


def best_and_knee(t, fid_values) -> dict:
    r"""The best start time (smallest FID) and the knee of a curve FID(t_start), t (m,) increasing, m >= 3.

    The knee is the interior grid point where the discrete second derivative (three-point formula,
    exact for parabolas on any grid)

        f''_i = 2 [ (f_{i+1} - f_i) / (t_{i+1} - t_i) - (f_i - f_{i-1}) / (t_i - t_{i-1}) ] / (t_{i+1} - t_{i-1})

    is largest. Returns {best_t, best_fid, knee_t, knee_fid, second_derivative (m - 2,)}; None entries of
    fid_values (a failed cell) are skipped.

    >>> r = best_and_knee([0.1, 0.2, 0.3, 0.4, 0.5], [9.0, 4.0, 1.0, 0.5, 0.6])
    >>> r["best_t"], r["knee_t"]
    (0.4, 0.3)
    """
    t, f = np.asarray(t, dtype=float), np.asarray([np.nan if v is None else v for v in fid_values], dtype=float)
    keep = np.isfinite(f)
    t, f = t[keep], f[keep]
    if t.ndim != 1 or t.size < 3 or np.any(np.diff(t) <= 0):
        raise ValueError(f"need >= 3 finite points on an increasing grid; got t={t.tolist()}")
    slope = np.diff(f) / np.diff(t)
    d2 = 2.0 * np.diff(slope) / (t[2:] - t[:-2])
    i_best, i_knee = int(np.argmin(f)), int(np.argmax(d2)) + 1
    return {
        "best_t": float(t[i_best]),
        "best_fid": float(f[i_best]),
        "knee_t": float(t[i_knee]),
        "knee_fid": float(f[i_knee]),
        "second_derivative": d2.tolist(),
    }


def hex_images(x: np.ndarray) -> list[str]:
    """Images (n, d) in [-1, 1] as 8-bit levels, one hex string (2 d characters) per image: small JSON for the
    sample grids (``bytes.fromhex`` reads them back)."""
    return [bytes(row).hex() for row in np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)]


class Scorer:
    """Features, FID/KID against the training set, and class composition, for one classifier."""

    def __init__(self, clf, x_ref: np.ndarray, n_classes: int, kid_subsets: int, seed: int):
        self.clf, self.n_classes, self.kid_subsets, self.seed = clf, n_classes, kid_subsets, seed
        self.ref = clf.features(x_ref.astype(np.float32))

    def fid(self, x: np.ndarray) -> float:
        return fid(self.clf.features(np.clip(x, -1, 1).astype(np.float32)), self.ref)

    def full(self, x: np.ndarray) -> dict:
        x = np.clip(x, -1, 1).astype(np.float32)
        feats, labels = self.clf.features(x), self.clf.predict(x)
        k_mean, k_std = kid(feats, self.ref, self.kid_subsets, min(1000, len(feats), len(self.ref)), seed=self.seed)
        return {
            "fid": fid(feats, self.ref),
            "kid": k_mean,
            "kid_std": k_std,
            "entropy_bits": class_entropy_bits(labels, self.n_classes),
            "composition": np.round(class_composition(labels, self.n_classes), 4).tolist(),
        }


def floor(clf, x_train: np.ndarray, kid_subsets: int, seed: int) -> dict:
    """FID and KID between two random halves of the training set: the floor from finite samples."""
    rng = np.random.default_rng(seed)
    rng.permutation(len(x_train))  # the classifier's split drew first from this seed: the committed halves
    half = rng.permutation(len(x_train))
    a, b = x_train[half[: len(half) // 2]], x_train[half[len(half) // 2 :]]
    fa, fb = clf.features(a.astype(np.float32)), clf.features(b.astype(np.float32))
    return {
        "fid": fid(fa, fb),
        "kid": kid(fa, fb, kid_subsets, min(1000, len(fa), len(fb)), seed=seed)[0],
        "n": [len(a), len(b)],
    }


@dataclasses.dataclass
class Drawer:
    """Samples of one denoiser: ``draw(sampler, n_steps, init, t_start, n, seed)`` (numpy, (n, d)), and a progress
    bar over the sweep and the table."""

    den: torch.nn.Module
    x_train: np.ndarray
    bar: tqdm

    def __call__(self, sampler, n_steps, init, t_start, n, seed, grid: str = "uniform") -> np.ndarray:
        x = generate(
            self.den, ALL_TABLE_SAMPLERS[sampler], n_steps, n, init=init,
            t_start=None if init == "vanilla" else float(t_start), x_train=self.x_train, seed=seed, grid=grid,
        )  # fmt: skip
        return x.numpy()


def sweep(draw: Drawer, scorer: Scorer, cfg) -> list[dict]:
    """FID against t_start (seed cfg.seed) for every sampler and n, from N(0, I) ("late") and the fitted Gaussian
    ("gls"), with the best t_start and the knee of each curve."""
    out = []
    for sampler in cfg.samplers:
        for grid in grids_of(cfg, sampler):
            for n_steps in cfg.n_steps:
                for init in ("late", "gls"):
                    curve = []
                    for t in cfg.sweep_t:
                        curve.append(scorer.fid(draw(sampler, n_steps, init, t, cfg.sweep_samples, cfg.seed, grid)))
                        draw.bar.update(1)
                    out.append(
                        {"sampler": sampler, "grid": grid, "n_steps": n_steps, "init": init, "t": list(cfg.sweep_t),
                         "fid": curve, "n_samples": cfg.sweep_samples, **best_and_knee(cfg.sweep_t, curve)}
                    )  # fmt: skip
    return out


def converged_sweep(draw: Drawer, scorer: Scorer, cfg) -> dict | None:
    """The gls sweep with DDIM converged (``converged_steps``): the cost of the Gaussian start alone."""
    if not cfg.converged_steps:
        return None
    curve = []
    for t in cfg.sweep_t:
        curve.append(scorer.fid(draw("ddim", cfg.converged_steps, "gls", t, cfg.sweep_samples, cfg.seed)))
        draw.bar.update(1)
    return {"sampler": "ddim", "n_steps": cfg.converged_steps, "init": "gls", "t": list(cfg.sweep_t), "fid": curve,
            "n_samples": cfg.sweep_samples}  # fmt: skip


def table_cells(picks: dict, sampler: str, n_steps: int, t_theory: float, grid: str = "uniform", teleport=False):
    """(init, t_start rule, t_start) of each table row of one sampler, grid and n: the vanilla start, gls at the
    theory's t_start, gls at its sweep's best and knee, the late start at its sweep's best; with ``teleport``,
    the analytic teleportation of the vanilla noise to the theory's t_start (Wang & Vastola; same NFE as gls)."""
    g, late = picks[sampler, grid, n_steps, "gls"], picks[sampler, grid, n_steps, "late"]
    return [
        ("vanilla", "none", 1.0),
        ("gls", "theory", t_theory),
        ("gls", "sweep-best", g["best_t"]),
        ("gls", "sweep-knee", g["knee_t"]),
        ("late", "sweep-best", late["best_t"]),
    ] + ([("teleport", "theory", t_theory)] if teleport else [])


def table_row(cfg, sampler, n_steps, init, rule, t_start, scores: dict, context: dict, grid="uniform") -> dict:
    """One row of late_start.json; ``context`` holds the columns every row shares (n_ref, device, command...)."""
    return {
        "dataset": cfg.dataset,
        "sampler": sampler,
        "grid": grid,
        "n_steps": n_steps,
        "nfe": nfe(ALL_TABLE_SAMPLERS[sampler], n_steps),
        "init": init,
        "t_start": float(t_start),
        "t_start_rule": rule,
        **scores,
        "fid_inception": None,
        "n_samples": cfg.n_samples,
        "n_ref": context["n_ref"],
        "n_inception": None,
        "entropy_bits_train": context["entropy_bits_train"],
        "seed": cfg.seed + 1,
        "generate_s": context["generate_s"],
        "device": context["device"],
        "torch_threads": torch.get_num_threads(),
        "command": context["command"],
    }


def table(draw: Drawer, scorer: Scorer, sweep_curves: list[dict], t_theory: float, cfg, context: dict):
    """(rows, sample grids): every sampler and n, vanilla against the late starts, on fresh samples (seed
    cfg.seed + 1, so the sweep's choice is not scored on the samples that chose it). Rows that Inception scores
    later keep their samples in "_x"."""
    import time

    picks = {(c["sampler"], c["grid"], c["n_steps"], c["init"]): c for c in sweep_curves}
    rows, samples = [], []
    for sampler in cfg.samplers:
        for k, grid in enumerate(grids_of(cfg, sampler)):
            for n_steps in cfg.n_steps:
                for init, rule, t_start in table_cells(picks, sampler, n_steps, t_theory, grid, cfg.teleport):
                    c0 = time.perf_counter()
                    x = draw(sampler, n_steps, init, t_start, cfg.n_samples, cfg.seed + 1, grid)
                    gen_s = round(time.perf_counter() - c0, 3)
                    row = table_row(cfg, sampler, n_steps, init, rule, t_start, scorer.full(x),
                                    context | {"generate_s": gen_s}, grid)  # fmt: skip
                    rows.append(row)
                    if rule in ("none", "theory"):
                        samples.append({"sampler": sampler, "grid": grid, "n_steps": n_steps, "init": init,
                                        "t_start_rule": rule, "hex": hex_images(x[: cfg.n_grid])})  # fmt: skip
                    if k == 0 and (init == "gls" and rule in ("theory", "sweep-best") or init == "vanilla"):
                        row["_x"] = x  # kept for the Inception cells (first grid), dropped before writing
                    draw.bar.update(1)
    return rows, samples


def converged(draw: Drawer, scorer: Scorer, t_theory: float, cfg) -> dict | None:
    """DDIM converged (``converged_steps``) from each start at the same seed: the model's own quality, what is
    left when the step error is gone (how far a gain at few steps can go)."""
    if not cfg.converged_steps:
        return None
    out = {"sampler": "ddim", "n_steps": cfg.converged_steps, "n_samples": cfg.n_samples}
    for init, t_start in (("vanilla", 1.0), ("gls", t_theory), ("late", t_theory)):
        x = draw("ddim", cfg.converged_steps, init, t_start, cfg.n_samples, cfg.seed + 1)
        out[init] = {"t_start": float(t_start), **scorer.full(x)}
        draw.bar.update(1)
    return out


def inception(rows: list[dict], x_train: np.ndarray, image_shape, cfg) -> dict | None:
    """Inception FID (the TF-FID network) of the headline cells (DDIM at ``inception_steps``: vanilla, gls at the
    theory's t_start and at the sweep's best, the paper's choice), against a random subset of the training images;
    the floor is a disjoint subset's."""
    if not cfg.inception_n:
        return None
    cells = [r for r in rows if r["sampler"] == "ddim" and r["n_steps"] in cfg.inception_steps and "_x" in r]
    with tqdm(total=1 + len(cells), desc="inception features", dynamic_ncols=True) as ibar:
        ref, floor = inception_split_reference(x_train, image_shape, cfg.inception_n, cfg.seed)
        ibar.update(1)
        for r in cells:
            r["fid_inception"] = fid(inception_features(r["_x"][: floor["n"]], image_shape), ref)
            r["n_inception"] = floor["n"]
            ibar.update(1)
    return floor


def inception_split_reference(x_train: np.ndarray, image_shape, n: int, seed: int) -> tuple[np.ndarray, dict]:
    """The Inception features of n random training images (at most half of them; the subset drawn with seed + 2),
    and {n, n_ref, fid_floor}: the finite-N floor, the FID of a disjoint subset of the same size against them."""
    sub = np.random.default_rng(seed + 2).permutation(len(x_train))
    n_inc = min(n, len(x_train) // 2)
    ref = inception_features(x_train[sub[:n_inc]], image_shape)
    other = inception_features(x_train[sub[n_inc : 2 * n_inc]], image_shape)
    return ref, {"n": n_inc, "n_ref": n_inc, "fid_floor": fid(other, ref)}


def summary(ds, model, clf_stats: dict, pred: dict, parts: dict, cfg, context: dict) -> dict:
    """The curves file's summary: the data, the model, the classifier and its floor, the prediction, the
    converged and Inception results, timings and the command."""
    n_classes = int(ds.labels.max()) + 1
    return {
        "dataset": cfg.dataset,
        "n_train": len(ds.x),
        "dim": int(ds.x.shape[1]),
        "image_shape": list(ds.image_shape),
        "model": model.source,
        "train_steps": model.train_steps,
        "classifier_accuracy": clf_stats["accuracy"],
        "classifier_n_test": clf_stats["n_test"],
        "entropy_bits_train": class_entropy_bits(ds.labels, n_classes),
        "entropy_bits_train_predicted": class_entropy_bits(clf_stats["train_pred"], n_classes),
        "composition_train": np.round(class_composition(ds.labels, n_classes), 4).tolist(),
        "fid_floor": clf_stats["floor"],
        "inception": parts["inception"],
        "converged": parts["converged"],
        **{k: finite(v) for k, v in pred.items()},
        "t_start_theory": float(pred["t_c_predicted"]),
        "theory_rule": f"t_start = t_c_predicted (breaking_time.predict, eta = {cfg.eta:g})",
        "paper_ddim_ratios": context["paper_ddim_ratios"],
        "paper_entropy_bits": context["paper_entropy_bits"],
        "seconds": context["seconds"],
        "device": context["device"],
        "torch_threads": torch.get_num_threads(),
        "command": context["command"],
    }


def write(results: Path, run_dir: str, dataset: str, curves: dict) -> None:
    """The resolved config next to the model, the curves file, the rows of late_start.json (one per key), and
    the figures."""
    from empirical.pipelines.late_start.plots import plot_late_start

    write_json_atomic(
        Path(run_dir) / "late_start_config.json", {"late_start": curves["config"], "train": curves["train_config"]}
    )
    write_json_atomic(results / f"late_start_{dataset}.json", curves)
    table_path = results / "late_start.json"

    def merge(rows):  # rows from before the grid field all ran on the uniform grid; one read and write, locked
        rows = [r if "grid" in r else {**r, "grid": "uniform"} for r in rows]
        for row in curves["rows"]:
            rows = [r for r in rows if any(r.get(k) != row.get(k) for k in ROW_KEYS)] + [row]
        return rows

    update_json(table_path, merge, [])
    plot_late_start(curves, results / "figures", dataset)
