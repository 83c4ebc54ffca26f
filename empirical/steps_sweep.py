r"""The breaking time measured in a denoiser at several training steps, against the exact prediction.

    python -m empirical.steps_sweep --dataset mnist runs/mnist-recipe/snapshots/step*.pt \
        --prediction benchmarks/results.json:mnist --out docs/results/breaking_vs_steps.json

Each checkpoint (a training checkpoint or exported weights) is loaded with its EMA weights and measured by
``empirical.measure.measure_critical_time`` on the data set's training images (the count of stable fixed
points of the learned drift, bisected in t); the row gives the bracket, the network evaluations and the
seconds of the measurement. ``--prediction FILE:KEY`` reads the exact ``theory.critical_time`` of the same
training images from a benchmark results file (``benchmarks/critical_time.py`` writes it, with its
options) so that the costly prediction runs once; each row gets the relative gap to it. Rows are merged by
(dataset, step) into ``--out``, written atomically after each checkpoint: a killed sweep keeps its rows.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from empirical.datasets import load_dataset
from empirical.measure import measure_critical_time
from empirical.results import write_json_atomic
from empirical.train import load_denoiser

__all__ = ["sweep", "main"]


def _prediction(spec: str | None) -> dict | None:
    if spec is None:
        return None
    path, _, key = spec.rpartition(":")
    if not path or not key:
        raise ValueError(f"--prediction must be FILE:KEY; got {spec!r}")
    row = json.loads(Path(path).read_text())[key]
    return {"t_c": row["t_c"], "kind": row["kind"], "macroscopic_t": row.get("macroscopic_t"), "source": spec}


def _step(path: Path) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return int(ckpt["step"]) if isinstance(ckpt, dict) and "step" in ckpt else -1


def sweep(dataset: str, checkpoints, *, n_starts: int, n_grid: int, tol_t: float, prediction=None, out=None):
    """One row per checkpoint (see the module docstring); returns the rows."""
    x = load_dataset(dataset).x
    rows = []
    for path in map(Path, checkpoints):
        den = load_denoiser(path).double().requires_grad_(False)  # measured in float64, as breaking_time
        t0 = time.perf_counter()
        m = measure_critical_time(den, x, n_starts=n_starts, n_grid=n_grid, tol_t=tol_t)
        row = {
            "dataset": dataset,
            "step": _step(path),
            "checkpoint": str(path),
            "t_c_measured": _finite(m.t),
            "t_lo": _finite(m.t_lo),
            "t_hi": _finite(m.t_hi),
            "n_attractors_at_t_lo": len(m.points),
            "count_evaluations": len(m.evaluations),
            "seconds": time.perf_counter() - t0,
            "options": {"n_starts": n_starts, "n_grid": n_grid, "tol_t": tol_t},
            "threads": torch.get_num_threads(),
        }
        if prediction is not None:
            row["t_c_predicted"] = prediction["t_c"]
            row["kind_predicted"] = prediction["kind"]
            row["prediction"] = prediction["source"]
            row["relative_gap"] = (m.t - prediction["t_c"]) / prediction["t_c"] if math.isfinite(m.t) else None
        print(json.dumps(row), flush=True)
        rows.append(row)
        if out is not None:
            _merge(Path(out), row)
    return rows


def _finite(v):
    return float(v) if math.isfinite(v) else None  # strict JSON: no NaN (no second attractor found)


def _merge(out: Path, row: dict) -> None:
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    keep = [r for r in old if (r["dataset"], r["step"]) != (row["dataset"], row["step"])]
    rows = sorted(keep + [row], key=lambda r: (r["dataset"], r["step"]))
    write_json_atomic(
        out,
        {"command": " ".join(map(shlex.quote, ["python", "-m", "empirical.steps_sweep", *sys.argv[1:]])), "rows": rows},
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint or exported weights files")
    p.add_argument("--dataset", required=True, help="the training images of the checkpoints")
    p.add_argument("--n-starts", type=int, default=64, help="training images seeding the fixed-point search")
    p.add_argument("--n-grid", type=int, default=16, help="log-SNR grid of the count before bisection")
    p.add_argument("--tol-t", type=float, default=1e-3, help="bisection tolerance on t")
    p.add_argument("--prediction", help="FILE:KEY of a benchmarks/critical_time.py results file")
    p.add_argument("--out", help="merge the rows into this JSON file")
    a = p.parse_args(argv)
    sweep(
        a.dataset,
        a.checkpoints,
        n_starts=a.n_starts,
        n_grid=a.n_grid,
        tol_t=a.tol_t,
        prediction=_prediction(a.prediction),
        out=a.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
