r"""Which fixed points a trained denoiser gets wrong: its stable points at one time t against the exact drift's.

At a frozen t the learned drift's fixed points solve x = Phi(x) = kappa x0_hat(x) (``empirical.measure.fixed_points``).
With the exact posterior mean of the training images, x0_exact(x) = sum_j w_j(x) y_j, the same map is the mean-shift
iteration x <- kappa x0_exact(x), whose limits are the exact attractors. ``compare_with_exact`` finds the network's
stable points from the starts ``measure_critical_time`` counts at t (the same seeded images and noise; the
measurement's bisection adds the previous time's points as warm starts, a single t has none) and for each gives
its basin, eigenvalue mu and norm; where the exact mean shift started on it ends (a stable exact attractor, or
not); the exact relative residual |kappa x0_exact(x) - x| / |x| there; the posterior's entropy and top weights
(how many training images the point sits on); its distance to the exact centre (the mean shift's limit from
kappa E[y]). The exact attractors reached from the same starts, with their basins, give the other side.
The exact side is the theory's field (``theory.fields.MixtureField``): descent in float64 (float32 on large
sets, as ``theory.critical_time``), then Newton in float64.

    python -m empirical attractors --dataset mnist docs/results/mnist/mnist_denoiser.pt --t 0.655 0.62 \
        --search flow --out docs/results/attractors.json
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from empirical._util.cli import command_line, is_real, print_config, refuse, typed_command
from empirical._util.results import finite
from empirical.data.datasets import DATASETS
from empirical.measure.fixed_points import _starts, draw_starts, map_coeffs, stable_fixed_points
from theory.checks import check_eta, check_in_range, check_int
from theory.data import DeltaMixture
from theory.fields import exact_field, group, use_float32

SEARCHES = ("flow", "iterate")

__all__ = ["compare_with_exact", "start_points", "Config", "main"]

MERGE_TOL = 1e-4  # limits closer than this times (1 + scale) are one point (as theory's own search)
SAME_TOL = 1e-6  # a polished limit within this times (1 + scale) of an exact attractor is that attractor
N_TOP = 5  # training images listed per point, by posterior weight


def start_points(den, x_train, t, *, n_starts=32, seed=0, eta=1.0):
    """(starts (2 n + 1, d) float64, indices of the n training images) at t: the draw of
    ``measure_critical_time`` (its seeded permutation, then its noise) passed to
    ``empirical.measure.fixed_points._starts``."""
    x0, eps, pick = draw_starts(x_train, n_starts, seed)
    return _starts(den, x0, t, eps, eta), pick.numpy()


def compare_with_exact(den, x_train, t, *, n_starts=32, seed=0, eta=1.0, search=None, max_iter=5000, points=False):
    """The network's stable points at t against the exact drift of ``x_train`` (N, d); a JSON-able dict.

    ``search(t, starts, eta)`` finds the network's stable points (``empirical.measure.flow.FlowSearch`` at d = 784);
    None: ``empirical.measure.fixed_points.stable_fixed_points``. ``max_iter``: mean-shift steps before Newton.
    ``points``: also give each point's coordinates ("x"). Keys: ``network`` (per stable point: basin, mu, norm, the
    ``exact`` mean-shift limit from it, the exact residual and posterior there), ``exact_attractors`` (from the same
    starts), ``centre`` (the exact centre) and counts.

    >>> from theory import DeltaMixture
    >>> from empirical.models.denoiser import ExactDenoiser
    >>> x = np.array([[-1.0], [1.0]])  # the paper's two deltas, t_c = 0.2926: one attractor above it
    >>> r = compare_with_exact(ExactDenoiser(DeltaMixture(x)), x, 0.5, n_starts=2)
    >>> r["n_network_stable"], r["n_exact_stable"], r["network"][0]["basin"], r["centre"]["stable"]
    (1, 1, 5, True)
    >>> bool(r["network"][0]["to_exact_centre"] < 1e-12 and r["network"][0]["exact_residual"] < 1e-8)
    True
    """
    t, eta = float(t), check_eta(eta)
    check_in_range("t", t, 0.0, float(den.schedule.T), open_lo=True, open_hi=True)
    n_starts, max_iter = check_int("n_starts", n_starts, 1), check_int("max_iter", max_iter, 1)
    X = np.asarray(x_train, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != den.dim:
        raise ValueError(f"x_train must have shape (N, {den.dim}); got {X.shape}")
    f = exact_field(DeltaMixture(X), den.schedule, eta, t)
    kappa, rho = map_coeffs(den, t, eta)
    starts, pick = start_points(den, X, t, n_starts=n_starts, seed=seed, eta=eta)
    net = search(t, starts, eta) if search is not None else stable_fixed_points(den, t, starts, eta=eta)
    ex = _Exact(f, t, rho, max_iter)
    centre = ex.limits(kappa * X.mean(0)[None])[0]
    attractors = ex.attractors(starts.numpy())
    A = np.array([a["x"] for a in attractors]).reshape(-1, X.shape[1])
    rows = [_network_row(ex, p, centre, A) for p in net]
    P = np.array([p.x for p in net]).reshape(-1, X.shape[1])
    for a in attractors:
        a["to_nearest_network_point"] = float(np.min(np.linalg.norm(P - a["x"], axis=1))) if len(P) else None

    def keep(r):  # the coordinates as a list, or left out
        return {k: (np.asarray(v).tolist() if k == "x" else v) for k, v in r.items() if points or k != "x"}

    return _strict({
        "t": t, "eta": eta, "theta": f.coeffs(t)[0], "kappa": kappa, "n_train": len(X), "dim": X.shape[1],
        "n_starts": n_starts, "n_start_points": len(starts), "start_images": pick.tolist(), "seed": seed,
        "n_network_stable": len(net), "n_exact_stable": len(attractors),
        "network_unassigned": len(starts) - sum(p.basin for p in net),  # starts that ended at no stable point
        "exact_unassigned": len(starts) - sum(a["basin"] for a in attractors),
        "centre": keep({"x": centre["x"], "norm": centre["norm"], "stable": centre["stable"], "mu": centre["mu"],
                        "network_nearest": min((r["to_exact_centre"] for r in rows), default=None)}),
        "network": [keep(r) for r in rows], "exact_attractors": [keep(a) for a in attractors],
    })  # fmt: skip


def _strict(v):
    """nan -> None everywhere (strict JSON: ``null`` is "not defined"), numpy scalars -> Python numbers."""
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    return finite(v.item() if isinstance(v, np.generic) else v)


def _network_row(ex, p, centre, A) -> dict:
    """One network stable point: its own numbers, the exact limit from it and the exact posterior at it."""
    x = np.asarray(p.x, dtype=np.float64)
    lim = ex.limits(x[None])[0]
    to_attr = np.linalg.norm(A - lim["x"], axis=1) if len(A) else np.array([])
    match = np.nonzero(to_attr <= SAME_TOL * (1.0 + ex.f.scale))[0]
    return {
        "x": x, "basin": int(p.basin), "mu": float(p.mu.real), "mu_imag": float(p.mu.imag),
        "norm": float(np.linalg.norm(x)), "network_residual": float(p.residual),
        "to_exact_centre": float(np.linalg.norm(x - centre["x"])),
        "to_nearest_exact_attractor": float(np.min(np.linalg.norm(A - x, axis=1))) if len(A) else None,
        **ex.posterior(x),
        "exact": {"to_start": float(np.linalg.norm(lim["x"] - x)),
                  "to_centre": float(np.linalg.norm(lim["x"] - centre["x"])), "norm": lim["norm"],
                  "stable": lim["stable"], "mu": lim["mu"], "converged": lim["converged"],
                  "attractor": int(match[0]) if len(match) else None},
    }  # fmt: skip


class _Exact:
    """The exact mean shift of the training images at t (``f``: their ``MixtureField``)."""

    def __init__(self, f, t, rho, max_iter):
        self.f, self.t, self.rho, self.max_iter = f, t, rho, max_iter
        self.Y = np.asarray(f.data.points)

    def limits(self, X) -> list[dict]:
        """Where x <- kappa x0_exact(x) takes each row of X (descent, then Newton), with the top eigenvalue mu of
        the map's Jacobian there (mu = 1 + lam / rho, lam the top eigenvalue of the theory's H)."""
        f, t = self.f, self.t
        D, _ = f.descend(np.atleast_2d(X), t, max_iter=self.max_iter, float32=use_float32(f))
        L, ok = f.newton(D, t, n_iter=30)
        out = []
        for x, good in zip(L, ok, strict=True):
            lam = f.top_eig(x, t)[0] if good else math.nan
            mu = 1.0 + lam / self.rho
            out.append({"x": x, "norm": float(np.linalg.norm(x)), "converged": bool(good), "mu": mu, "stable": mu < 1})
        return out

    def attractors(self, starts) -> list[dict]:
        """The stable limits of the starts, merged, with their basins (starts ending there), largest first."""
        f = self.f
        D, _ = f.descend(starts, self.t, max_iter=self.max_iter, float32=use_float32(f))
        reps, counts = group(D, MERGE_TOL * (1.0 + f.scale))
        found = [(lim, n) for lim, n in zip(self.limits(reps), counts, strict=True) if lim["stable"]]
        out = []  # two groups can polish onto one point
        for lim, n in found:
            same = [a for a in out if np.linalg.norm(a["x"] - lim["x"]) <= SAME_TOL * (1.0 + f.scale)]
            if same:
                same[0]["basin"] += int(n)
            else:
                out.append({"x": lim["x"], "basin": int(n), "norm": lim["norm"], "mu": lim["mu"]})
        for a in out:
            a |= self.posterior(a["x"])
        return sorted(out, key=lambda a: -a["basin"])

    def posterior(self, x) -> dict:
        """The exact posterior over the training images at x: entropy (nats), effective count e^H, top weights,
        and the exact relative residual |kappa x0_exact(x) - x| / |x| (|x| at least 1e-8 (1 + scale))."""
        w = self.f.responsibilities(np.asarray(x)[None], self.t)[0]
        nz = w[w > 0]
        H = float(-(nz * np.log(nz)).sum())
        top = np.argsort(w)[::-1][:N_TOP]
        floor = 1e-8 * (1.0 + self.f.scale)  # the centre of symmetric data sits at 0: no relative size there
        res = np.linalg.norm(self.f.kappa(self.t) * (w @ self.Y) - x) / max(float(np.linalg.norm(x)), floor)
        return {
            "exact_residual": float(res), "posterior_entropy": H, "posterior_effective_images": math.exp(H),
            "posterior_top_weight": float(w[top[0]]), "posterior_top_images": top.tolist(),
            "posterior_top_weights": [float(w[j]) for j in top],
        }  # fmt: skip


@dataclass
class Config:
    """The options of ``python -m empirical attractors``; every field is checked on construction."""

    model: str | None = field(
        default=None, metadata={"help": "a checkpoint or exported weights (empirical.training.train)", "positional": 1}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "the model's training images", "choices": DATASETS, "required": True}
    )
    t: tuple[float, ...] = field(default=(), metadata={"help": "forward times in (0, 1)", "required": True})
    search: str = field(default="flow", metadata={"help": "how the network's points are found", "choices": SEARCHES})
    n_starts: int = field(default=32, metadata={"help": "training images seeding the starts (as the measurement)"})
    seed: int = field(default=0, metadata={"help": "seed of the starts (as the measurement)"})
    eta: float = field(default=1.0, metadata={"help": "the eta family of the drift"})
    max_iter: int = field(default=5000, metadata={"help": "exact mean-shift steps before Newton"})
    out: str | None = field(
        default=None,
        metadata={"help": "merge the rows (keyed by model, t, search, starts, seed, eta) into this JSON file"},
    )

    def __post_init__(self):
        if not (isinstance(self.model, str) and self.model):
            raise ValueError(f"model must be the path of a checkpoint or exported weights; got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        self.t = tuple(self.t)
        if not self.t or not all(is_real(t) and 0.0 < t < 1.0 for t in self.t):
            raise ValueError(f"t must be one or more times in (0, 1); got {list(self.t)}")
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}; got {self.search!r}")
        check_int("n_starts", self.n_starts, 1)
        check_int("max_iter", self.max_iter, 1)
        check_int("seed", self.seed, 0)
        check_eta(self.eta)


def main(argv: list[str] | None = None) -> int:
    from empirical._util.files import check_output_file
    from empirical._util.results import upsert_row
    from empirical.measure.flow import FlowSearch
    from empirical.training.train import load_denoiser, training_images

    try:
        cfg, args = typed_command(Config, "python -m empirical attractors", __doc__, argv)
        if not Path(cfg.model).is_file():
            raise ValueError(f"model: {cfg.model} is not a file (a checkpoint or exported weights)")
        if cfg.out is not None:
            check_output_file(cfg.out, "out", holds="list")
        if args.dry_run:
            return print_config("attractors", cfg)
        x = training_images(cfg.model, cfg.dataset)
        den = load_denoiser(cfg.model).double().requires_grad_(False)  # measured in float64, as breaking_time
    except ValueError as err:  # a bad option, a mismatched data set, a corrupt checkpoint (CheckpointError)
        return refuse(err)
    command = command_line("attractors", argv)
    rows = []
    for t in cfg.t:
        t0 = time.perf_counter()
        search = FlowSearch(den) if cfg.search == "flow" else None
        res = compare_with_exact(den, x, t, n_starts=cfg.n_starts, seed=cfg.seed, eta=cfg.eta, search=search,
                                 max_iter=cfg.max_iter)  # fmt: skip
        row = {"dataset": cfg.dataset, "model": cfg.model, "search": cfg.search, **res,
               "seconds": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
               "command": command}  # fmt: skip
        print(_summary(row), flush=True)
        rows.append(row)
        if cfg.out is not None:
            upsert_row(cfg.out, row, ("dataset", "model", "t", "search", "n_starts", "seed", "eta"))
    if cfg.out is None:
        print(json.dumps(rows, indent=1))
    return 0


def _summary(row) -> str:
    """One line per time: the counts, then per network point its basin, mu, norm, distance to the exact centre,
    where the exact mean shift from it ends, the exact residual and the images it sits on."""
    pts = "; ".join(
        f"basin {r['basin']} mu {r['mu']:.3f} |x| {r['norm']:.2f} to centre {r['to_exact_centre']:.2f} "
        f"exact limit: moved {r['exact']['to_start']:.2f}, to centre {r['exact']['to_centre']:.2g}, "
        f"residual {r['exact_residual']:.2g}, images {r['posterior_effective_images']:.1f}"
        for r in row["network"]
    )
    return (
        f"t={row['t']:.4f}: network {row['n_network_stable']} stable, exact {row['n_exact_stable']} "
        f"(basins {[a['basin'] for a in row['exact_attractors']]}), exact centre |x| {row['centre']['norm']:.2f}: {pts}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
