r"""Where the frozen drift's fixed points lie against the noisy images a network is trained on, at time t.

    python -m empirical shell --dataset fashion-mnist --classes 1 8 --t 0.6659 --out docs/results/shell.json

A fixed point of the drift Phi(x) = kappa x0_hat(x) (``empirical.measure.fixed_points``) is kappa times a posterior
mean; for the exact denoiser of the training images that mean is a convex combination of them, so every exact fixed
point has norm at most ``fixed_point_bound`` = kappa max_i |x_i|. A network, at time t, is trained only on the noisy
images x = theta x0 + sigma eps, whose norm concentrates near sqrt(theta^2 E|x0|^2 + sigma^2 d) (``radius_closed_form``)
with a spread of about sigma / sqrt(2) in high d. ``z`` = (mean radius - fixed_point_bound) / std of the radius
says how many standard deviations inside that shell the fixed points lie: a network's fixed points there are
its extrapolation, not what denoising score matching fitted (the radii are those of ``n`` seeded noisy images).
Rows are merged by (dataset, classes, t, n, seed) into ``--out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from empirical._util.cli import command_line, is_real, print_config, refuse, typed_command
from empirical.data.datasets import DATASETS
from empirical.models.denoiser import schedule_coeffs
from theory import EtaFamily, VPLinear
from theory.checks import check_in_range, check_int

__all__ = ["shell_distance", "Config", "main"]

KEYS = ("dataset", "classes", "t", "n", "seed")


def shell_distance(x_train, t: float, *, schedule=None, n: int = 2000, seed: int = 0) -> dict:
    """The exact fixed points' norm bound against the radii of ``n`` noisy images at t (module docstring);
    ``x_train`` (N, d), the VP-linear schedule and eta = 1 (the drift of ``empirical.measure.fixed_points``) by
    default."""
    t = float(check_in_range("t", t, 0.0, 1.0, open_lo=True, open_hi=True))
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x_train must be a non-empty (N, d) array; got shape {x.shape}")
    schedule = VPLinear() if schedule is None else schedule
    theta, sigma = (float(c) for c in schedule_coeffs(schedule, t, "theta", "sigma"))
    kappa = float(schedule_coeffs(EtaFamily(schedule, 1.0), t, "kappa")[0])
    rng = np.random.default_rng(check_int("seed", seed, lo=0))
    idx = rng.integers(0, len(x), check_int("n", n, lo=2))
    radius = np.linalg.norm(theta * x[idx] + sigma * rng.standard_normal((len(idx), x.shape[1])), axis=1)
    norms = np.linalg.norm(x, axis=1)
    bound = kappa * float(norms.max())
    return {
        "t": t, "theta": theta, "sigma": sigma, "kappa": kappa, "N": len(x), "d": x.shape[1], "n": len(idx),
        "seed": seed, "fixed_point_bound": bound,
        "radius_closed_form": float(np.sqrt(theta**2 * np.mean(norms**2) + sigma**2 * x.shape[1])),
        "radius_mean": float(radius.mean()), "radius_std": float(radius.std()), "radius_min": float(radius.min()),
        "z": float((radius.mean() - bound) / radius.std()),
    }  # fmt: skip


@dataclass
class Config:
    """The options of ``python -m empirical shell``; every field is checked on construction."""

    dataset: str | None = field(
        default=None, metadata={"help": "the training images", "choices": DATASETS, "required": True}
    )
    classes: tuple[int, ...] | None = field(default=None, metadata={"help": "keep only these labels (omit for all)"})
    t: tuple[float, ...] = field(default=(), metadata={"help": "forward times in (0, 1)", "required": True})
    n: int = field(default=2000, metadata={"help": "noisy images drawn per time (>= 2)"})
    seed: int = field(default=0, metadata={"help": "seed of the images and their noise (>= 0)"})
    out: str | None = field(
        default=None, metadata={"help": "merge the rows (keyed by dataset, classes, t, n, seed) into this JSON file"}
    )

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        self.t = tuple(self.t)
        if not self.t or not all(is_real(t) and 0.0 < t < 1.0 for t in self.t):
            raise ValueError(f"t must be one or more times in (0, 1); got {list(self.t)}")
        if self.classes is not None:
            self.classes = tuple(self.classes)
        check_int("n", self.n, lo=2)
        check_int("seed", self.seed, lo=0)


def main(argv: list[str] | None = None) -> int:
    from empirical._util.files import check_output_file
    from empirical._util.results import upsert_row
    from empirical.data.datasets import load_dataset

    try:
        cfg, args = typed_command(Config, "python -m empirical shell", __doc__, argv)
        if cfg.out is not None:
            check_output_file(cfg.out, "out", holds="list")
    except ValueError as err:
        return refuse(err)
    if args.dry_run:
        return print_config("shell", cfg)
    classes = None if cfg.classes is None else list(cfg.classes)
    x = load_dataset(cfg.dataset, classes=classes).x
    command = command_line("shell", argv)
    for t in cfg.t:
        row = {"dataset": cfg.dataset, "classes": classes, **shell_distance(x, t, n=cfg.n, seed=cfg.seed)}
        print(json.dumps({k: row[k] for k in ("dataset", "t", "fixed_point_bound", "radius_mean", "radius_std", "z")}))
        if cfg.out is not None:
            upsert_row(cfg.out, {**row, "command": command}, KEYS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
