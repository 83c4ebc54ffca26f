r"""Memorisation to generalisation: networks of the CPU recipe trained on nested subsets of N images.

``subsets`` writes the nested training sets (one seeded permutation of the data set; the subset of N is its
first N images, in file order, so every smaller set lies inside every larger one) as ``.npz`` files that
``python -m empirical train --data`` reads. ``train`` trains one network per N with the recipe
(``empirical.pipelines.recipe.RECIPE``) on them, one after the other; a killed run resumes where it stopped.

    OMP_NUM_THREADS=1 python -m empirical n-sweep train --out runs/n-sweep --sizes 64 256 1024 4096
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from empirical._util.checkpoints import atomic_write
from empirical.data.datasets import load_dataset

__all__ = ["nested_indices", "write_subsets", "measure", "main"]


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


def measure(
    dataset: str, data_file: Path, run: Path, *, n_starts: int, n_grid: int, t_max: float, t_min: float, n_copies: int
):
    """One row of the sweep (module docstring) for the network of ``run`` trained on ``data_file``."""
    import torch

    from empirical._util.results import finite
    from empirical.measure.memorisation import copy_fraction
    from empirical.pipelines.stages import cheap_predictions
    from empirical.pipelines.steps_sweep import sweep
    from empirical.sampling.samplers import generate
    from empirical.training.config import DataConfig
    from empirical.training.train import load_denoiser
    from theory import DeltaMixture, VPLinear, critical_time

    data = DataConfig(dataset=dataset, data=str(data_file))
    x = data.load().x
    t0 = time.perf_counter()
    exact = critical_time(DeltaMixture(x), VPLinear(), eta=1.0)
    exact_s = time.perf_counter() - t0
    (row,) = sweep(data, [run / "checkpoint.pt"], n_starts=n_starts, n_grid=n_grid, tol_t=1e-3, search="flow",
                   t_max=t_max, t_min=t_min)  # fmt: skip
    torch.manual_seed(0)
    samples = generate(load_denoiser(run / "checkpoint.pt"), "ddpm", 100, n_copies, seed=0).numpy()
    t = row["t_c_measured"]
    return {
        "n_train": len(x), "data": str(data_file), "step": row["step"],
        "t_measured": t, "t_lo": row["t_lo"], "t_hi": row["t_hi"], "search": row["options"],
        "network_evaluations": row.get("network_evaluations"), "measure_s": row["seconds"],
        "t_exact": finite(float(exact.t)), "kind_exact": exact.kind, "exact_s": exact_s, "exact": repr(exact),
        **cheap_predictions(x),
        "copy_share": copy_fraction(samples, x), "n_samples": n_copies, "sampler": "ddpm-100",
        "relative_gap": None if t is None or not math.isfinite(exact.t) else (t - exact.t) / exact.t,
    }  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m empirical n-sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("subsets", "train", "measure"), help="write the subsets; train; measure")
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"), help="28x28 data set")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096], help="the subset sizes N")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps of each network")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutation that nests the subsets")
    p.add_argument("--out", default="runs/n-sweep", help="folder of the subsets and of one run folder per N")
    p.add_argument("--rows", default="n_sweep.json", help="measure: the JSON list of rows (one per N, upserted)")
    p.add_argument("--n-starts", type=int, default=32, help="measure: training images seeding the flow search")
    p.add_argument("--n-grid", type=int, default=8, help="measure: times of the scan before bisection")
    p.add_argument("--t-max", type=float, default=0.9, help="measure: the scan's first time")
    p.add_argument("--t-min", type=float, default=0.3, help="measure: the scan's last time")
    p.add_argument("--n-copies", type=int, default=256, help="measure: generated samples tested for copies")
    a = p.parse_args(argv)
    if a.command == "measure":
        from empirical._util.cli import command_line
        from empirical._util.results import upsert_row

        for n in a.sizes:
            path, run = Path(a.out) / f"{a.dataset}-N{n}.npz", Path(a.out) / f"{a.dataset}-N{n}"
            row = measure(a.dataset, path, run, n_starts=a.n_starts, n_grid=a.n_grid, t_max=a.t_max, t_min=a.t_min,
                          n_copies=a.n_copies)  # fmt: skip
            upsert_row(a.rows, {**row, "command": command_line("n-sweep", argv)}, ("n_train",))
            print(json.dumps({k: row[k] for k in ("n_train", "t_measured", "t_exact", "copy_share")}), flush=True)
        return 0
    paths = write_subsets(a.dataset, a.sizes, a.out, a.seed)
    if a.command == "train":
        from empirical.pipelines.recipe import train_argv
        from empirical.training.train import train

        for n, path in paths.items():
            cfg = recipe_for(path, Path(a.out) / f"{a.dataset}-N{n}", a.steps, a.dataset)
            print("python -m empirical train " + " ".join(train_argv(cfg)), flush=True)
            train(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
