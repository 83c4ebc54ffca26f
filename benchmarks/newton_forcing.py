"""Newton-Krylov polish of the flow search with a fixed GMRES tolerance against Eisenstat and Walker's: the timing
behind docs/breaking_time.md ("The flow search").

From the end points of ``damped_flow`` at one time (the starts of ``measure_critical_time``: ``--n-starts``
training images diffused and scaled, and the scaled mean), each limit is polished twice by
``empirical.measure.flow.newton_krylov``: at ``rtol=1e-7`` (the search's tolerance before) and with ``rtol=None``
(Eisenstat-Walker, now). A row per limit: Jacobian-vector products, seconds, final residual, whether it reached
the search's tolerance (``converged``: else the search drops the limit), and the distance between the two ends;
the two runs of a limit alternate, so the machine's load falls on both alike.

    OMP_NUM_THREADS=1 python benchmarks/newton_forcing.py runs/fmnist-window/snapshots/step3000.pt \\
        --dataset fashion-mnist --t 0.9 --n-starts 2 --out benchmarks/newton_forcing.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from empirical._util.results import write_json_atomic
from empirical.data.datasets import load_dataset
from empirical.measure.fixed_points import _starts, draw_starts, map_coeffs
from empirical.measure.flow import FlowSearch, count_rows, damped_flow, newton_krylov
from empirical.training.train import load_denoiser

TOL = 1e-8  # FlowSearch's newton_tol: a limit whose residual stays above it is dropped


def run(checkpoint: str, dataset: str, t: float, n_starts: int, seed: int = 0) -> dict:
    den64 = load_denoiser(checkpoint).double().requires_grad_(False)
    den32 = FlowSearch(den64).den32
    x0, eps, _ = draw_starts(load_dataset(dataset).x, n_starts, seed)
    kappa, _ = map_coeffs(den64, t)
    x, _, status = damped_flow(den32, _starts(den64, x0, t, eps, 1.0).float(), t, kappa)
    jvps = count_rows(den32)  # the float32 copy runs only GMRES's jvps below (one row each)
    rows = []
    for i in [i for i in range(len(x)) if int(status[i]) in (-1, -3)]:
        row, roots = {"limit": i, "flow_status": int(status[i])}, []
        for name, rtol in (("fixed_1e-7", 1e-7), ("eisenstat_walker", None)):
            before, t0 = jvps[0], time.perf_counter()
            y, res = newton_krylov(den64, den32, x[i].double().numpy(), t, kappa, tol=TOL, rtol=rtol)
            row[name] = {"jvps": jvps[0] - before, "seconds": time.perf_counter() - t0, "residual": res,
                         "converged": res < TOL}  # fmt: skip
            roots.append(y)
        row["root_distance"] = float(np.linalg.norm(roots[0] - roots[1]))
        row["root_norm"] = float(np.linalg.norm(roots[1]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    total = [sum(r[k]["jvps"] for r in rows) for k in ("fixed_1e-7", "eisenstat_walker")]
    return {"checkpoint": checkpoint, "dataset": dataset, "t": t, "n_starts": n_starts, "tol": TOL, "rows": rows,
            "jvps_ratio": total[0] / max(total[1], 1), "threads": torch.get_num_threads()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--dataset", required=True)
    p.add_argument("--t", type=float, default=0.9, help="the time of the search")
    p.add_argument("--n-starts", type=int, default=2, help="training images seeding the starts (2 n + 1 starts)")
    p.add_argument("--out", help="write the result here (JSON)")
    a = p.parse_args(argv)
    if not 0 < a.t < 1:
        p.error(f"--t must be in (0, 1); got {a.t}")
    if a.n_starts < 1:
        p.error(f"--n-starts must be >= 1; got {a.n_starts}")
    result = run(a.checkpoint, a.dataset, a.t, a.n_starts)
    result["command"] = " ".join(["python benchmarks/newton_forcing.py", *(argv or sys.argv[1:])])
    print(f"jvps fixed / Eisenstat-Walker: {result['jvps_ratio']:.2f}")
    if a.out:
        write_json_atomic(a.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
