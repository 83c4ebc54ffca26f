r"""Memorisation to generalisation: networks of the CPU recipe trained on nested subsets of N images.

``subsets`` writes the nested training sets (one seeded permutation of the data set; the subset of N is its
first N images, in file order, so every smaller set lies inside every larger one) as ``.npz`` files that
``python -m empirical train --data`` reads. ``train`` trains one network per N with the recipe
(``empirical.pipelines.recipe.RECIPE``) on them, one after the other; a killed run resumes where it stopped.

    OMP_NUM_THREADS=1 python -m empirical n-sweep train --out runs/n-sweep --sizes 64 256 1024 4096
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from empirical._util.checkpoints import atomic_write
from empirical._util.cli import is_int, is_real
from empirical.data.datasets import load_dataset
from empirical.training.config import DataConfig
from theory.checks import check_int

__all__ = [
    "nested_indices",
    "write_subsets",
    "network_row",
    "loss_windows",
    "exact_row",
    "copies",
    "merge_row",
    "full_row",
    "plot_sweep",
    "main",
]


def nested_indices(n_total: int, sizes, seed: int = 0) -> dict[int, np.ndarray]:
    """Rows of each subset: the first N of one seeded permutation of ``range(n_total)``, sorted (file order).

    >>> ix = nested_indices(10, (2, 5), seed=0)
    >>> set(ix[2]) <= set(ix[5]), len(ix[5])
    (True, 5)
    """
    sizes = [int(n) for n in sizes]
    if not sizes or any(not 1 <= n <= n_total for n in sizes):
        raise ValueError(f"sizes must be ints in [1, {n_total}] (the images available); got {sizes}")
    order = np.random.default_rng(seed).permutation(n_total)
    return {n: np.sort(order[:n]) for n in sizes}


def write_subsets(dataset: str, sizes, out: str | Path, seed: int = 0) -> dict[int, Path]:
    """Write ``out/<dataset>-N<n>.npz`` (``x``: uint8 images (n, H, W), ``labels``, ``rows``: their rows in the
    data set) for every size; returns the paths. Files are written atomically."""
    ds = load_dataset(dataset)
    levels = np.rint((ds.x + 1) / 2 * 255).astype(np.uint8).reshape(-1, *ds.image_shape)
    paths = {}
    for n, rows in nested_indices(len(ds.x), sizes, seed).items():
        path = Path(out) / f"{dataset}-N{n}.npz"
        buf = io.BytesIO()
        np.savez(buf, x=levels[rows], labels=ds.labels[rows], rows=rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f, b=buf: f.write(b.getvalue()))
        paths[n] = path
    return paths


def recipe_for(data_file: Path, out: Path, steps: int, dataset: str):
    """The recipe's ``TrainConfig`` on one subset file."""
    from empirical.pipelines.recipe import recipe_config

    return recipe_config(dataset=dataset, data=str(data_file), out=str(out), steps=steps)


def network_row(dataset: str, data_file: Path, run: Path, *, n_starts: int, n_grid: int, t_max: float,
                t_min: float) -> dict:  # fmt: skip
    """The network's breaking time (flow search of ``run``'s checkpoint) with the search's scan (per time: starts,
    escaped, stable points and their basins)."""
    from empirical.pipelines.steps_sweep import sweep

    data = DataConfig(dataset=dataset, data=str(data_file))
    (row,) = sweep(data, [run / "checkpoint.pt"], n_starts=n_starts, n_grid=n_grid, tol_t=1e-3, search="flow",
                   t_max=t_max, t_min=t_min)  # fmt: skip
    scan = [{k: e[k] for k in ("t", "starts", "escaped", "stable", "basin")} for e in row.get("search_log", [])]
    return {
        "n_train": len(data.load().x), "data": str(data_file), "model": str(run / "checkpoint.pt"),
        "step": row["step"], "t_measured": row["t_c_measured"], "t_lo": row["t_lo"], "t_hi": row["t_hi"],
        "search": row["options"], "network_evaluations": row.get("network_evaluations"), "measure_s": row["seconds"],
        "scan": scan, "loss": loss_windows(run / "checkpoint.pt"),
    }  # fmt: skip


def loss_windows(checkpoint: Path, window: int = 1000) -> dict:
    """The training loss averaged over consecutive windows of ``window`` steps, with standard errors, and the
    relative change of the last window against the one before: has the loss stopped falling?"""
    import torch

    loss = torch.load(checkpoint, map_location="cpu", weights_only=False)["loss"].numpy()
    parts = [loss[i : i + window] for i in range(0, len(loss) - window + 1, window)]
    mean = [float(p.mean()) for p in parts]
    se = [float(p.std(ddof=1) / np.sqrt(len(p))) for p in parts]
    change = (mean[-1] - mean[-2]) / mean[-2] if len(mean) >= 2 else None
    return {"window": window, "mean": mean, "se": se, "last_change": change}


def copies(model: Path, x: np.ndarray, n: int) -> dict:
    """The share of ``n`` DDPM-100 samples of ``model`` that copy an image of ``x``."""
    from empirical.measure.memorisation import copy_fraction
    from empirical.sampling.samplers import generate
    from empirical.training.train import load_denoiser

    samples = generate(load_denoiser(model), "ddpm", 100, n, seed=0, dim=x.shape[1]).numpy()
    return {"copy_share": copy_fraction(samples, x), "n_samples": n, "sampler": "ddpm-100"}


def exact_row(x: np.ndarray) -> dict:
    """The predictions from the N images themselves: the exact first bifurcation and macroscopic breaking time
    (``theory.critical_time`` with its defaults, VP linear, eta = 1) and the Gaussian ones (equal-norm closed form,
    Biroli et al.'s 1/2 ln Lambda)."""
    from empirical._util.results import finite
    from empirical.pipelines.stages import cheap_predictions
    from theory import DeltaMixture, VPLinear, critical_time

    t0 = time.perf_counter()
    exact = critical_time(DeltaMixture(x), VPLinear(), eta=1.0)
    macro = exact.macroscopic
    return {
        "t_exact": finite(float(exact.t)), "kind_exact": exact.kind, "basin_mass": finite(exact.basin_mass),
        "t_macroscopic": None if macro is None else finite(float(macro.t)), "exact_s": time.perf_counter() - t0,
        "exact_guarantee": getattr(exact, "guarantee", None), **cheap_predictions(x),
    }  # fmt: skip


def full_row(dataset: str, model: Path, breaking: Path, prediction: str, n_copies: int) -> dict:
    """The row of the whole training set from committed results: the network's breaking time from the
    breaking-time table ``breaking`` (its row of ``dataset``), the exact prediction from a benchmark entry
    ``prediction`` (FILE:KEY, as the pipelines read it), the Gaussian predictions and the copy share computed here."""
    from empirical.pipelines.stages import cheap_predictions, read_prediction

    x = load_dataset(dataset).x
    (measured,) = [r for r in json.loads(Path(breaking).read_text()) if r["dataset"] == dataset]
    exact = read_prediction(prediction, x, dataset)
    entry = json.loads(Path(prediction.rpartition(":")[0]).read_text())[prediction.rpartition(":")[2]]
    return {
        "n_train": len(x), "data": dataset, "model": str(model), "t_measured": measured["t_c_measured"],
        "t_lo": measured.get("t_lo"), "t_hi": measured.get("t_hi"), "measured_in": str(breaking),
        "t_exact": exact["t_c"], "kind_exact": exact["kind"], "exact_from": prediction,
        "exact_options": entry.get("options"), **cheap_predictions(x),
        **copies(model, x, n_copies),
    }  # fmt: skip


def plot_sweep(rows: list[dict], path: Path) -> None:
    """Breaking time against N: measured in the networks (with the bracket of the search) and predicted from the
    same N images (exact first bifurcation, exact macroscopic, equal-norm, Biroli); the copy share below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["n_train"])
    n = np.array([r["n_train"] for r in rows], float)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for key, label, style in (
        ("t_exact", "exact first bifurcation", "C3o-"),
        ("t_macroscopic", "exact macroscopic", "C1s--"),
        ("t_c_equal_norm", "equal-norm", "C2^:"),
        ("t_c_biroli", "Biroli", "C4v:"),
    ):
        y = np.array([np.nan if r.get(key) is None else r[key] for r in rows], float)
        ax.plot(n, y, style, label=label)
    t = np.array([np.nan if r.get("t_measured") is None else r["t_measured"] for r in rows], float)
    ax.plot(n, t, "ko-", lw=2, label="measured in the network")
    none = [(r["n_train"], r["search"]["t_min"]) for r in rows if r.get("t_measured") is None and r.get("search")]
    if none:  # a scan without a second stable point: the network breaks below its last time, if at all
        ax.plot(*zip(*none, strict=True), "kv", mfc="none", ms=9, label="no break above the scan's last time")
    ax.set(xscale="log", ylabel="breaking time t (VP linear)")
    ax.legend(fontsize=8)
    bx.plot(n, [r.get("copy_share", np.nan) for r in rows], "ko-")
    bx.set(xscale="log", xlabel="training images N", ylabel="copies", ylim=(-0.05, 1.05))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge_row(path: Path, n_train: int, fields: dict, command: str) -> dict:
    """Add ``fields`` to the row of ``n_train`` in the rows file (a new row if none), under the file's lock (several
    steps of the sweep may write at once); the gap to the exact prediction is recomputed when both times are there."""
    from empirical._util.results import update_json

    def merge(rows):
        row = next((r for r in rows if r["n_train"] == n_train), {"n_train": n_train}) | fields
        t, exact = row.get("t_measured"), row.get("t_exact")
        row["relative_gap"] = None if t is None or exact is None else (t - exact) / exact
        row["commands"] = sorted(set(row.get("commands", [])) | {command})
        return [r for r in rows if r["n_train"] != n_train] + [row]

    rows = update_json(path, merge, [])
    return next(r for r in rows if r["n_train"] == n_train)


DATASETS_28 = ("fashion-mnist", "mnist")
COMMANDS = ("subsets", "train", "measure", "copies", "exact", "full", "plot")


@dataclass
class Config:
    """The options of ``python -m empirical n-sweep``; every field is checked on construction."""

    command: str = field(default="", metadata={"help": "the step (module docstring)", "choices": COMMANDS,
                                               "positional": True})  # fmt: skip
    dataset: str = field(default="fashion-mnist", metadata={"help": "28x28 data set", "choices": DATASETS_28})
    sizes: tuple[int, ...] = field(default=(64, 256, 1024, 4096), metadata={"help": "the subset sizes N"})
    steps: int = field(default=3000, metadata={"help": "train: optimizer steps of each network"})
    seed: int = field(default=0, metadata={"help": "seed of the permutation that nests the subsets"})
    out: str = field(default="runs/n-sweep", metadata={"help": "folder of the subsets and of one run folder per N"})
    rows: str = field(default="n_sweep.json", metadata={"help": "the JSON list of rows (one per N, merged)"})
    n_starts: int = field(default=32, metadata={"help": "measure: training images seeding the flow search"})
    n_grid: int = field(default=8, metadata={"help": "measure: times of the scan before bisection"})
    t_max: float = field(default=0.9, metadata={"help": "measure: the scan's first time"})
    t_min: float = field(default=0.3, metadata={"help": "measure: the scan's last time"})
    n_copies: int = field(default=256, metadata={"help": "measure, copies, full: samples tested for copies"})
    figure: str = field(default="n_sweep.png", metadata={"help": "plot: the figure of the rows"})
    model: str | None = field(default=None, metadata={"help": "full: the network trained on the whole set"})
    breaking: str | None = field(default=None, metadata={"help": "full: the breaking-time table holding its row"})
    prediction: str | None = field(default=None, metadata={"help": "full: FILE:KEY of the exact prediction"})

    def __post_init__(self):
        self.sizes = tuple(self.sizes)
        if not self.sizes or not all(is_int(n) and n >= 1 for n in self.sizes):
            raise ValueError(f"sizes must be one or more ints >= 1; got {list(self.sizes)}")
        for name in ("steps", "n_starts", "n_copies"):
            check_int(name, getattr(self, name), lo=1)
        check_int("n_grid", self.n_grid, lo=2)
        check_int("seed", self.seed, lo=0)
        if not (is_real(self.t_min) and is_real(self.t_max) and 0 < self.t_min < self.t_max <= 1):
            raise ValueError(f"need 0 < t_min < t_max <= 1; got t_min={self.t_min}, t_max={self.t_max}")
        if self.command == "full" and None in (self.model, self.breaking, self.prediction):
            raise ValueError("full needs --model, --breaking and --prediction")


def main(argv: list[str] | None = None) -> int:
    from empirical._util.cli import command_line, print_config, refuse, typed_command
    from empirical._util.files import check_output_file

    try:
        cfg, args = typed_command(Config, "python -m empirical n-sweep", __doc__, argv)
        if cfg.command in ("measure", "copies", "exact", "full"):
            check_output_file(cfg.rows, "rows", holds="list")
    except ValueError as err:
        return refuse(err)
    if args.dry_run:
        return print_config("n-sweep", cfg)
    command = command_line("n-sweep", argv)
    if cfg.command == "plot":
        plot_sweep(json.loads(Path(cfg.rows).read_text()), Path(cfg.figure))
    elif cfg.command == "full":
        row = full_row(cfg.dataset, Path(cfg.model), Path(cfg.breaking), cfg.prediction, cfg.n_copies)
        merge_row(Path(cfg.rows), row["n_train"], row, command)
    elif cfg.command in ("measure", "copies", "exact"):
        for n in cfg.sizes:
            _measure_one(cfg, n, command)
    else:
        paths = write_subsets(cfg.dataset, cfg.sizes, cfg.out, cfg.seed)
        if cfg.command == "train":
            _train_all(cfg, paths)
    return 0


def _measure_one(cfg: Config, n: int, command: str) -> None:
    """One N's step: the exact predictions, the copies, or the network's breaking time and then its copies (each
    part written as soon as it is measured)."""
    path, run = Path(cfg.out) / f"{cfg.dataset}-N{n}.npz", Path(cfg.out) / f"{cfg.dataset}-N{n}"
    x = DataConfig(dataset=cfg.dataset, data=str(path)).load().x
    if cfg.command == "exact":
        row = merge_row(Path(cfg.rows), n, exact_row(x), command)
    else:
        if cfg.command == "measure":
            fields = network_row(cfg.dataset, path, run, n_starts=cfg.n_starts, n_grid=cfg.n_grid,
                                 t_max=cfg.t_max, t_min=cfg.t_min)  # fmt: skip
            merge_row(Path(cfg.rows), n, fields, command)
        row = merge_row(Path(cfg.rows), n, copies(run / "checkpoint.pt", x, cfg.n_copies), command)
    keys = ("n_train", "t_measured", "t_exact", "t_macroscopic", "copy_share")
    print(json.dumps({k: row.get(k) for k in keys}), flush=True)


def _train_all(cfg: Config, paths: dict) -> None:
    from empirical.pipelines.recipe import train_argv
    from empirical.training.train import train

    for n, path in paths.items():
        train_cfg = recipe_for(path, Path(cfg.out) / f"{cfg.dataset}-N{n}", cfg.steps, cfg.dataset)
        print("python -m empirical train " + " ".join(train_argv(train_cfg)), flush=True)
        train(train_cfg)


if __name__ == "__main__":
    raise SystemExit(main())
