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

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from empirical._util.checkpoints import load_checkpoint
from empirical._util.cli import command_line, is_real, print_config, refuse, typed_command
from empirical._util.files import check_output_file
from empirical._util.results import finite, update_json, upsert_row
from empirical.data.datasets import DATASETS
from empirical.measure.fixed_points import measure_critical_time
from empirical.measure.flow import FlowSearch
from empirical.models.denoiser import T_MIN
from empirical.pipelines.stages import cheap_predictions, device_name, read_prediction
from empirical.training.config import DataConfig, net_kwargs
from empirical.training.train import load_denoiser
from theory.checks import check_int, check_tolerance

__all__ = ["Config", "sweep", "main"]

SEARCHES = ("iterate", "flow")


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
            t_max=kw.get("t_max"), t_min=0.02 if kw.get("t_min") is None else kw["t_min"],
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
    """Replace (or add) the row of ``out`` with the same key, under the file's lock (sweeps may share one out)."""

    def key(r):  # rows written before the data selection was stored measured all images
        return (
            r["dataset"],
            r.get("classes") or [],
            r.get("n_train") or 0,
            json.dumps(r.get("net"), sort_keys=True),
            json.dumps(_training(r)),
            r["step"],
        )

    def merge(table):
        rows = sorted([r for r in table["rows"] if key(r) != key(row)] + [row], key=key)
        return {"command": row.get("command"), "rows": rows}  # the latest sweep's; every row keeps its own

    update_json(out, merge, {"rows": []})


@dataclass
class Config(DataConfig):
    """The options of ``python -m empirical steps-sweep``: the checkpoints, their training images (``DataConfig``),
    the measurement's options and the outputs; every field is checked on construction."""

    dataset: str = field(
        default="digits", metadata={"help": "the checkpoints' training images", "choices": DATASETS, "required": True}
    )
    checkpoints: tuple[str, ...] = field(
        default=(), metadata={"help": "checkpoint or exported weights files", "positional": 1}
    )
    n_starts: int = field(default=64, metadata={"help": "training images seeding the fixed-point search"})
    n_grid: int = field(default=16, metadata={"help": "log-SNR grid of the count before bisection"})
    tol_t: float = field(default=1e-3, metadata={"help": "bisection tolerance on t"})
    prediction: str | None = field(default=None, metadata={"help": "FILE:KEY of a benchmarks/critical_time.py file"})
    out: str | None = field(default=None, metadata={"help": "merge the rows into this JSON file"})
    search: str = field(default="iterate", metadata={"help": "how stable points are found", "choices": SEARCHES})
    t_max: float | None = field(default=None, metadata={"help": "largest t scanned (omit: T)"})
    t_min: float = field(default=0.02, metadata={"help": "smallest t scanned, in (0, t_max)"})
    device: str = field(default="cpu", metadata={"help": "torch device of the network (cuda: a GPU)"})
    table: str | None = field(
        default=None, metadata={"help": "write the last checkpoint's row into this breaking-time table (JSON list)"}
    )

    def __post_init__(self):
        self._check_data()
        self.checkpoints = tuple(self.checkpoints)
        if not self.checkpoints or not all(isinstance(c, str) and c for c in self.checkpoints):
            raise ValueError(f"checkpoints must be one or more files; got {list(self.checkpoints)}")
        check_int("n_starts", self.n_starts, 1)
        check_int("n_grid", self.n_grid, 2)
        check_tolerance("tol_t", self.tol_t)
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}; got {self.search!r}")
        t_max = 1.0 if self.t_max is None else self.t_max  # T of the VP schedule the checkpoints are trained on
        if not (is_real(t_max) and 0 < t_max <= 1.0):
            raise ValueError(f"t_max must be None or a number in (0, T=1]; got {self.t_max!r}")
        if not (is_real(self.t_min) and 0 < self.t_min < t_max):
            raise ValueError(f"t_min must be a number in (0, t_max={t_max}); got {self.t_min!r}")
        if self.prediction is not None and not (isinstance(self.prediction, str) and ":" in self.prediction):
            raise ValueError(f"prediction must be FILE:KEY (benchmarks/results.json:fashion); got {self.prediction!r}")

    def data_config(self) -> DataConfig:
        return DataConfig.of(dataclasses.asdict(self))


def _device(name: str) -> torch.device:
    """The torch device of ``--device``, checked against this machine; ValueError naming it."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r}: {err}") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: cpu or cuda[:index]")
    if device.type == "cuda" and not (device.index or 0) < torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) (use cpu)")
    return device


def _checked(cfg: Config):
    """(training images, prediction) of a sweep, after every check that needs no measurement: the device, the
    checkpoints' files and training images, the prediction against the images, and both outputs."""
    _device(cfg.device)
    if missing := [c for c in cfg.checkpoints if not Path(c).is_file()]:
        raise ValueError(f"checkpoints: {', '.join(missing)} is not a file")
    data = cfg.data_config()
    for path in cfg.checkpoints:
        _step(Path(path), data)  # trained on these images (a digest-checked read of each file)
    x = data.load().x
    prediction = None if cfg.prediction is None else read_prediction(cfg.prediction, x, cfg.dataset)
    if cfg.out is not None:
        check_output_file(cfg.out, "out", holds="rows")
    if cfg.table is not None:
        check_output_file(cfg.table, "table", holds="list")
    return x, prediction


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = typed_command(Config, "python -m empirical steps-sweep", __doc__, argv)
        if args.dry_run:
            _device(cfg.device)
            return print_config("steps_sweep", cfg)
        x, prediction = _checked(cfg)
    except ValueError as err:
        return refuse(err)
    command = command_line("steps-sweep", argv)
    rows = sweep(
        cfg.data_config(), cfg.checkpoints, n_starts=cfg.n_starts, n_grid=cfg.n_grid, tol_t=cfg.tol_t,
        prediction=prediction, out=cfg.out, command=command, device=cfg.device, search=cfg.search,
        t_max=cfg.t_max, t_min=cfg.t_min,
    )  # fmt: skip
    if cfg.table is not None:
        upsert_row(cfg.table, table_row(rows[-1], x, prediction, command), ("dataset", "device"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
