r"""The breaking time measured in a denoiser at several training steps, against the exact prediction.

    python -m empirical steps-sweep --dataset mnist runs/mnist-recipe/snapshots/step*.pt \
        --prediction benchmarks/results.json:mnist --out docs/results/breaking_vs_steps.json

``--search flow`` finds the stable points with ``empirical.measure.flow`` (the damped flow in float32, Newton and
ARPACK on Jacobian-vector products: minutes per checkpoint at d = 784 on one core, where the iterated map takes
hours and does not converge on a U-Net); ``--table FILE`` also writes the last checkpoint's row into a
breaking-time table (``docs/results/breaking_time_28.json`` for the 28x28 rows) with the cheap predictions
(equal-norm, Biroli) next to the exact one.

Each checkpoint (a training checkpoint or exported weights) is loaded with its EMA weights and measured by
``empirical.measure.fixed_points.measure_critical_time`` on the data set's training images (the count of stable fixed
points of the learned drift, bisected in t); the row gives the bracket, the network evaluations and the
seconds of the measurement. ``--prediction FILE:KEY`` reads the exact ``theory.critical_time`` of the same
training images from a benchmark results file (``benchmarks/critical_time.py`` writes it, with its options;
``empirical.pipelines.stages.read_prediction`` checks its N and d against the images) so that the costly prediction runs
once; each row gets the relative gap to it. ``--classes``, ``--n-train`` and ``--data-seed`` select the training
images as ``empirical.training.train`` did (a two-class subset); every checkpoint must have been trained on that
selection. Each row names its backbone (``net``: the checkpoint's ``build_net`` arguments; a capacity comparison keeps a
row per width) and its run (``t_train``, the window of training times, and ``seed``). Rows are merged by (dataset,
classes, n_train, net, t_train, seed, step) into ``--out``, written atomically after each checkpoint: a killed sweep
keeps its rows.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from empirical._util.checkpoints import load_checkpoint
from empirical._util.cli import command_line
from empirical._util.results import finite, upsert_row, write_json_atomic
from empirical.measure.fixed_points import measure_critical_time
from empirical.measure.flow import FlowSearch
from empirical.models.denoiser import T_MIN
from empirical.pipelines.stages import cheap_predictions, device_name, read_prediction
from empirical.training.config import DataConfig, net_kwargs
from empirical.training.train import load_denoiser

__all__ = ["sweep", "main"]


def _step(path: Path, data: DataConfig) -> tuple[int, dict, dict]:
    """The checkpoint's training step, backbone and training run (``t_train``, ``seed``); ValueError if it was
    trained on other images than ``data``."""
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    if DataConfig.of(config) != data:
        raise ValueError(f"checkpoint {path} was trained on {DataConfig.of(config)}; the sweep measures {data}")
    net = {"net": config["net"], **net_kwargs(config)}
    net |= {"mult": list(net["mult"])} if "mult" in net else {}  # as JSON has it
    return int(ckpt.get("step", -1)), net, _training(config)


def _training(config: dict) -> dict:
    """What else tells two runs of one backbone apart: the window of training times and the seed (the defaults of
    checkpoints and rows written before these were stored)."""
    return {"t_train": [float(v) for v in config.get("t_train", (T_MIN, 1.0))], "seed": int(config.get("seed", 0))}


def sweep(data: DataConfig | str, checkpoints, *, n_starts: int, n_grid: int, tol_t: float, prediction=None,
          out=None, command=None, device="cpu", **kw):  # fmt: skip
    """One row per checkpoint (see the module docstring); returns the rows. ``data``: the training images (a data
    set's name: all of them). ``command``: stored in each row (rows of several invocations share one ``out``).
    ``device``: where the network runs ("cuda" with a GPU). ``kw``: ``search`` ("iterate" or "flow"), ``t_max`` and
    ``t_min`` (the scanned range)."""
    data = DataConfig(dataset=data) if isinstance(data, str) else data
    x = data.load().x
    rows = []
    for path in map(Path, checkpoints):
        step, net, training = _step(path, data)
        den = load_denoiser(path, device=device).double().requires_grad_(False)  # measured in float64, as breaking_time
        flow = FlowSearch(den) if kw.get("search") == "flow" else None
        t0 = time.perf_counter()
        m = measure_critical_time(
            den, x, n_starts=n_starts, n_grid=n_grid, tol_t=tol_t, search=flow,
            t_max=kw.get("t_max"), t_min=kw.get("t_min") or 0.02,
        )  # fmt: skip
        row = {
            "dataset": data.dataset,
            "data": data.data,
            "classes": None if data.classes is None else list(data.classes),
            "n_train": data.n_train,
            "net": net,
            **training,
            "step": step,
            "checkpoint": str(path),
            "t_c_measured": finite(float(m.t)),
            "t_lo": finite(float(m.t_lo)),
            "t_hi": finite(float(m.t_hi)),
            "n_attractors_at_t_lo": len(m.points),
            "count_evaluations": len(m.evaluations),
            "seconds": time.perf_counter() - t0,
            "options": {"n_starts": n_starts, "n_grid": n_grid, "tol_t": tol_t, **kw},
            "threads": torch.get_num_threads(),
            "device": device_name(device),
            "command": command,
        }
        if flow is not None:
            row |= {"network_evaluations": flow.evaluations, "search_log": flow.log}
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


def table_row(row: dict, x, prediction: dict | None, command: str) -> dict:
    """The breaking-time table's row (``docs/results/breaking_time.json``'s fields) of one measured checkpoint."""
    pred = prediction or {"t_c": None, "kind": None, "macroscopic_t": None, "source": None}
    cheap = cheap_predictions(x)
    t = row["t_c_measured"]

    def rel(p):
        return None if t is None or p is None or not math.isfinite(p) else abs(t - p) / p

    return {
        "dataset": row["dataset"], "n_train": int(len(x)), "dim": int(x.shape[1]), "classes": row.get("classes"),
        "eta": 1.0,
        "t_c_predicted": pred["t_c"], "kind_predicted": pred["kind"], "macroscopic_t_predicted": pred["macroscopic_t"],
        "prediction": pred["source"], **cheap,
        "t_c_measured": t, "t_c_measured_bracket": [row["t_lo"], row["t_hi"]],
        "n_stable_below": row["n_attractors_at_t_lo"], "relative_error": rel(pred["t_c"]),
        "relative_error_equal_norm": rel(cheap["t_c_equal_norm"]), "relative_error_biroli": rel(cheap["t_c_biroli"]),
        "cloning_midpoint": None, "train_steps": row["step"], "model": row["checkpoint"],
        "search": row["options"].get("search", "iterate"), "network_evaluations": row.get("network_evaluations"),
        "seconds": {"measure_s": round(row["seconds"], 1)}, "threads": row["threads"],
        "device": row.get("device", device_name("cpu")), "command": command,
    }  # fmt: skip


def _merge(out: Path, row: dict) -> None:
    def key(r):  # rows written before the data selection was stored measured all images
        return (
            r["dataset"],
            r.get("classes") or [],
            r.get("n_train") or 0,
            json.dumps(r.get("net"), sort_keys=True),
            json.dumps(_training(r)),
            r["step"],
        )

    old = json.loads(out.read_text())["rows"] if out.exists() else []
    rows = sorted([r for r in old if key(r) != key(row)] + [row], key=key)
    write_json_atomic(
        out,
        {
            "command": command_line("steps-sweep", None),
            "rows": rows,
        },
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint or exported weights files")
    p.add_argument("--dataset", required=True, help="the training images of the checkpoints")
    p.add_argument(
        "--classes",
        type=int,
        nargs="+",
        help="keep only these labels (as the checkpoints' training); put it after the checkpoints (it takes any ints)",
    )
    p.add_argument("--n-train", type=int, help="number of training images (as the checkpoints' training)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the n_train subset")
    p.add_argument("--data", help="the checkpoints' .npy/.npz file of training images, if not a built-in data set")
    p.add_argument("--n-starts", type=int, default=64, help="training images seeding the fixed-point search")
    p.add_argument("--n-grid", type=int, default=16, help="log-SNR grid of the count before bisection")
    p.add_argument("--tol-t", type=float, default=1e-3, help="bisection tolerance on t")
    p.add_argument("--prediction", help="FILE:KEY of a benchmarks/critical_time.py results file")
    p.add_argument("--out", help="merge the rows into this JSON file")
    p.add_argument("--search", choices=("iterate", "flow"), default="iterate", help="how stable points are found")
    p.add_argument("--t-max", type=float, help="largest t scanned (omit: T)")
    p.add_argument("--t-min", type=float, default=0.02, help="smallest t scanned")
    p.add_argument("--device", default="cpu", help="torch device of the network (cuda: a GPU)")
    p.add_argument("--table", help="write the last checkpoint's row into this breaking-time table (JSON list)")
    a = p.parse_args(argv)
    try:
        device = torch.device(a.device)
    except RuntimeError as err:
        p.error(f"--device {a.device!r}: {err}")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device {a.device}: cpu or cuda[:index]")
    if device.type == "cuda" and not (device.index or 0) < torch.cuda.device_count():
        p.error(f"--device {a.device}: this machine has {torch.cuda.device_count()} CUDA device(s) (use cpu)")
    try:
        data = DataConfig(a.dataset, a.n_train, None if a.classes is None else tuple(a.classes), a.data_seed, a.data)
    except ValueError as err:
        p.error(str(err))
    x = data.load().x
    prediction = None if a.prediction is None else read_prediction(a.prediction, x, a.dataset)  # checked: same N, d
    command = command_line("steps-sweep", argv)
    rows = sweep(
        data, a.checkpoints, n_starts=a.n_starts, n_grid=a.n_grid, tol_t=a.tol_t, prediction=prediction,
        out=a.out, command=command, device=a.device, search=a.search, t_max=a.t_max, t_min=a.t_min,
    )  # fmt: skip
    if a.table is not None:
        upsert_row(a.table, table_row(rows[-1], x, prediction, command), ("dataset", "device"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
