"""Benchmarks of the theory engine (timings as ratios against baselines measured in the same run).

    python benchmarks/critical_time.py [--repeats 5] [--n-big 60000] [--skip-big] [--out results.json]

1. critical_time for the paper's +-1 deltas: median of repeated runs (after one warm-up run that
   includes jit compilation).
2. The 1D bifurcation diagram on 1000 time points: ``bifurcation_diagram`` (vectorised) against
   the paper notebook's way, scipy.optimize.fsolve once per time point from fixed guesses
   (-1, 0, 1), with how often the baseline misses a fixed point.
3. critical_time for the Fashion-MNIST training images (N = 60,000, d = 784, scaled to [-1, 1]), or
   a random centred equal-norm set of that size when the data package is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
from scipy.optimize import fsolve

from theory import DeltaMixture, VPLinear, bifurcation_diagram, critical_time
from theory.reference import equal_norm_set


def bench_paper(repeats: int) -> dict:
    data, s = DeltaMixture([[-1.0], [1.0]]), VPLinear()
    t0 = time.perf_counter()
    ct = critical_time(data, s)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        critical_time(data, s)
        runs.append(time.perf_counter() - t0)
    return {
        "theta_c": ct.theta,
        "t_c": ct.t,
        "first_run_s": first,
        "median_s": statistics.median(runs),
        "repeats": repeats,
    }


def bench_diagram(n_times: int = 1000) -> dict:
    data, s = DeltaMixture([[-1.0], [1.0]]), VPLinear()
    ts = np.linspace(1e-3, 1.0, n_times)
    t0 = time.perf_counter()
    bifurcation_diagram(data, s, ts)
    t_first = time.perf_counter() - t0  # includes jit compilation
    t0 = time.perf_counter()
    ours = bifurcation_diagram(data, s, ts)
    t_ours = time.perf_counter() - t0

    beta = lambda t: 0.1 + 19.9 * t  # noqa: E731
    theta = lambda t: np.exp(-0.5 * (0.1 * t + 9.95 * t**2))  # noqa: E731

    def f(x, t):  # the reverse-SDE drift of +-1 deltas in numpy, as a notebook would write it
        th = theta(t)
        s2 = 1 - th**2
        return beta(t) / 2 * x + beta(t) * (-x / s2 + th / s2 * np.tanh(th * x / s2))

    t0 = time.perf_counter()
    base = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fsolve's "not making good progress"
        for t in ts:
            roots = {round(float(fsolve(f, [g], args=(t,))[0]), 6) for g in (-1.0, 0.0, 1.0)}
            base.append(sorted(roots))
    t_base = time.perf_counter() - t0
    ours_n = np.array([len(p) for p in ours.points])
    base_n = np.array([len(r) for r in base])
    return {
        "n_times": n_times,
        "ours_first_call_s": t_first,
        "ours_s": t_ours,
        "fsolve_s": t_base,
        "speedup": t_base / t_ours,
        "times_fsolve_missed_a_fixed_point": int(np.sum(base_n < ours_n)),
        "times_fsolve_found_extra": int(np.sum(base_n > ours_n)),
    }


def load_big(n: int):
    try:
        from empirical.datasets import load_dataset

        ds = load_dataset("fashion-mnist", n=n if n < 60000 else None)
        return "fashion-mnist", ds.x
    except FileNotFoundError:
        return "random equal-norm", equal_norm_set(784, n // 2, 10.0, seed=0)


def bench_big(n: int, n_seeds: int, n_grid: int) -> dict:
    name, X = load_big(n)
    t0 = time.perf_counter()
    ct = critical_time(DeltaMixture(X), VPLinear(), n_seeds=n_seeds, n_grid=n_grid)
    return {
        "data": name,
        "N": len(X),
        "d": X.shape[1],
        "n_seeds": n_seeds,
        "n_grid": n_grid,
        "seconds": time.perf_counter() - t0,
        "kind": ct.kind,
        "t_c": ct.t,
        "theta_c": ct.theta,
        "centre_t": ct.centre_t,
        "centre_theta": ct.centre_theta,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n-big", type=int, default=60000)
    p.add_argument("--n-seeds", type=int, default=16)
    p.add_argument("--n-grid", type=int, default=32)
    p.add_argument("--skip-big", action="store_true")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    res = {"paper_1d": bench_paper(args.repeats)}
    print("critical_time, +-1 deltas:", json.dumps(res["paper_1d"]), flush=True)
    res["diagram_1d"] = bench_diagram()
    print("bifurcation diagram, 1000 times:", json.dumps(res["diagram_1d"]), flush=True)
    if not args.skip_big:
        res["big"] = bench_big(args.n_big, args.n_seeds, args.n_grid)
        print("critical_time, large data set:", json.dumps(res["big"]), flush=True)
    if args.out:  # nan -> null: strict JSON
        clean = {
            k: {f: (None if isinstance(v, float) and v != v else v) for f, v in part.items()} for k, part in res.items()
        }
        with open(args.out, "w") as fh:
            json.dump(clean, fh, indent=1)


if __name__ == "__main__":
    main()
