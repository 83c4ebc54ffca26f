r"""The knee of FID against the start time of the late start from N(0, I), at 28x28: the paper's own observable.

Raya & Ambrogioni (2023) start the generative process late, at t_start, from N(0, I) (``init="late"``): the
quality barely changes while t_start is above the symmetry-breaking time and degrades sharply below it. This command
measures that knee with a sampler whose step error is small, so that what degrades is the start, not the steps:

    OMP_NUM_THREADS=1 python -m empirical fid-knee                      # both data sets, ~25 min of one core
    OMP_NUM_THREADS=1 python -m empirical fid-knee --datasets mnist --n-samples 100 --dry-run

Sampler: DDPM (ancestral, the reverse SDE's discretisation, eta = 1 like the predictions; ``--sampler ddim`` for the
ODE) on the uniform grid (one of its authors' grids) with one step length at every t_start: ``steps`` grid points on
the full range [T_MIN, 1], so a start at t_start runs round((steps - 1) (t_start - T_MIN) / (1 - T_MIN)) + 1 of
them. Every t_start draws its samples with the same seed (common random numbers: the same N(0, I) start vectors),
so the differences FID(t) - FID(1) are measured with less noise than FID itself.

FID: the late-start tables' (``empirical.pipelines.late_start``): the penultimate features of the project's
classifier (``stages.classifier``: trained on 80 % of the training images, same steps and seed), samples clipped to
[-1, 1], against the whole training set the network saw. Standard errors: a paired bootstrap over the generated
samples (the same resampled indices at every t_start, so replicate b is one coherent curve; the reference is fixed).

Knee, with a tolerance tol: the largest t* such that FID(t) > FID(1) + tol for every t < t* (scanned from the
smallest t_start up, linear interpolation between grid points; ``knee``). Tolerances: "<k>se", k standard errors of
the paired difference FID(t) - FID(1) at each t (a statistical criterion: the start is measurably worse), or
"<p>%", p percent of FID(1) (a criterion on the size of the loss). The knee's standard error is the spread of the
knees of the bootstrap curves, each held to the point curve's tolerance (a resampled set's FID carries an extra bias
from its repeated rows, which cancels in the paired difference but not in a tolerance taken from its own FID(1)).
It is reported in forward time t of VP linear (the networks' schedule) beside the predictions from the training
images: the exact first bifurcation and macroscopic breaking time (a benchmark entry of ``benchmarks/results.json``;
one computed with other options than ``critical_time``'s defaults is flagged by ``reduced_search``), the equal-norm
closed form and Biroli et al.'s 1/2 ln Lambda (``stages.cheap_predictions``).

Rows are written to ``out`` as each t_start finishes (atomically, under the file's lock); a rerun with the same
sampling options skips the finished t_start values (other options start the data set afresh). The figure
(``empirical.pipelines.fid_knee_figure``) is drawn from the file at the end.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from empirical._util.cli import is_int, is_real
from empirical._util.results import update_json
from empirical.metrics.bootstrap import Reference, bootstrap_fid, bootstrap_indices

__all__ = [
    "NETWORKS", "DEFAULT_T", "parse_tolerance", "knee", "knee_with_error", "steps_for", "predictions", "Config",
    "run", "summarise", "main",
]  # fmt: skip

# data set -> (network, benchmark entry of its training images' exact prediction)
NETWORKS = {
    "mnist": ("docs/results/mnist/mnist_denoiser.pt", "benchmarks/results.json:mnist"),
    "fashion-mnist": ("docs/results/fashion-mnist/fashion-mnist_denoiser.pt", "benchmarks/results.json:fashion"),
}
# 0.35..0.80 by 0.05, 0.025 between 0.5 and 0.75 (around the predictions, 0.55..0.71), then 0.9 and 1
DEFAULT_T = tuple(sorted({round(0.35 + 0.05 * k, 3) for k in range(10)} | {round(0.525 + 0.05 * k, 3) for k in range(5)}
                         | {0.9, 1.0}))  # fmt: skip
SAMPLERS = ("ddpm", "ddim")


# --- the knee ------------------------------------------------------------------------------------------------------
def parse_tolerance(spec: str) -> tuple[str, float]:
    """("se", k) for "<k>se" (k standard errors, k > 0), ("relative", p / 100) for "<p>%" (0 < p <= 1000).

    >>> parse_tolerance("3se"), parse_tolerance("50%")
    (('se', 3.0), ('relative', 0.5))
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(se|%)\s*", spec) if isinstance(spec, str) else None
    value = float(m.group(1)) if m else 0.0
    if m is None or value <= 0 or (m.group(2) == "%" and value > 1000):
        raise ValueError(f"tolerances must be '<k>se' (k > 0 standard errors) or '<p>%' (0 < p <= 1000 percent of "
                         f"FID at t_start = 1); got {spec!r}")  # fmt: skip
    return ("se", value) if m.group(2) == "se" else ("relative", value / 100.0)


def knee(t, excess) -> float | None:
    """The largest t* with excess > 0 on every t < t*: the first zero of the piecewise-linear excess met from the
    smallest t up. t (m,) increasing; excess (m,) = FID(t) - FID(1) - tol. None when the excess is not positive at
    the smallest t (the knee lies below the scan) or is positive everywhere (above it).

    >>> knee([0.2, 0.4, 0.6, 0.8], [3.0, 1.0, -1.0, 0.5])
    0.5
    """
    t, e = np.asarray(t, dtype=float), np.asarray(excess, dtype=float)
    if t.ndim != 1 or t.shape != e.shape or t.size < 2 or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(e)):
        raise ValueError(f"t must be >= 2 increasing times and excess finite of the same shape; got {t}, {e}")
    above = np.flatnonzero(e <= 0)
    if above.size == 0 or above[0] == 0:
        return None
    i = int(above[0])  # e[i - 1] > 0 >= e[i]
    return float(t[i - 1] + e[i - 1] / (e[i - 1] - e[i]) * (t[i] - t[i - 1]))


def knee_with_error(t, fid, boot, spec: str) -> dict:
    """The knee of one curve for one tolerance, and its bootstrap spread. t (m,) increasing with t[-1] = 1 (the full
    process); fid (m,); boot (n_boot, m): the paired bootstrap curves, each held to the tolerance of the point curve
    (k se of the paired difference, or p FID(1)). Returns {tolerance, kind, value, knee, se, lo, hi (16th and 84th
    percentiles of the bootstrap knees), n_boot_with_knee, n_boot, tol (m,)}."""
    t, fid, boot = np.asarray(t, float), np.asarray(fid, float), np.asarray(boot, float)
    if boot.ndim != 2 or boot.shape[1] != len(t) or len(fid) != len(t):
        raise ValueError(f"boot must be (n_boot, {len(t)}) and fid ({len(t)},); got {boot.shape}, {fid.shape}")
    kind, value = parse_tolerance(spec)
    diff_se = (boot - boot[:, -1:]).std(0, ddof=1)  # se of FID(t) - FID(1), paired
    tol = value * (diff_se if kind == "se" else fid[-1] * np.ones_like(t))  # fixed by the point curve
    point = knee(t, fid - fid[-1] - tol)
    knees = np.array([k for b in boot if (k := knee(t, b - b[-1] - tol)) is not None])
    return {
        "tolerance": spec, "kind": kind, "value": value, "knee": point,
        "se": float(knees.std(ddof=1)) if knees.size > 1 else None,
        "lo": float(np.percentile(knees, 16)) if knees.size else None,
        "hi": float(np.percentile(knees, 84)) if knees.size else None,
        "n_boot_with_knee": int(knees.size), "n_boot": len(boot), "tol": tol.tolist(),
    }  # fmt: skip


# --- sampling ----------------------------------------------------------------------------------------------------
def steps_for(t_start: float, steps: int, t_end: float, T: float = 1.0) -> int:
    """Grid points of a start at t_start with the step length of ``steps`` points on [t_end, T] (at least 2).

    >>> steps_for(1.0, 100, 0.0), steps_for(0.5, 101, 0.0)
    (100, 51)
    """
    return max(2, int(round((steps - 1) * (t_start - t_end) / (T - t_end))) + 1)


def _row(den, scorer, ref: Reference, idx, t_start: float, cfg) -> dict:
    """One t_start: n samples of the late start (seed cfg.seed), their FID against the reference and its paired
    bootstrap, with timings."""
    from empirical.models.denoiser import T_MIN
    from empirical.sampling.samplers import generate, nfe

    m = steps_for(t_start, cfg.steps, T_MIN, den.schedule.T)
    c0 = time.perf_counter()
    x = generate(den, cfg.sampler, m, cfg.n_samples, init="late", t_start=float(t_start), seed=cfg.seed,
                 dim=den.dim, batch_size=cfg.n_samples)  # fmt: skip
    c1 = time.perf_counter()
    feats = scorer(x.numpy())
    boot = bootstrap_fid(feats, ref, idx)
    return {
        "t_start": float(t_start), "theta": float(den.schedule.theta(t_start)), "n_steps": m,
        "nfe": nfe(cfg.sampler, m), "fid": ref.score(feats),
        "se": float(boot.std(ddof=1)), "boot": np.round(boot, 4).tolist(), "n_samples": cfg.n_samples,
        "seed": cfg.seed, "generate_s": round(c1 - c0, 2), "score_s": round(time.perf_counter() - c1, 2),
    }  # fmt: skip


# --- the stages of one data set ----------------------------------------------------------------------------------
def predictions(dataset: str, x: np.ndarray) -> dict:
    """The breaking times predicted from the training images x (VP linear, eta = 1): the exact first bifurcation and
    macroscopic breaking time of the benchmark entry (checked to be of these images; ``reduced_search``: its search
    options differ from ``theory.critical_time``'s defaults), the equal-norm and Biroli times computed here."""
    from empirical.pipelines.stages import cheap_predictions, read_prediction
    from theory import critical_time

    spec = NETWORKS[dataset][1]
    exact = read_prediction(spec, x, dataset)
    path, _, key = spec.rpartition(":")
    options = json.loads(Path(path).read_text())[key].get("options")
    defaults = {k: p.default for k, p in inspect.signature(critical_time).parameters.items()}
    reduced = None if options is None else any(options[k] != defaults.get(k) for k in options)
    return {
        "t_exact": exact["t_c"], "kind_exact": exact["kind"], "t_macroscopic": exact["macroscopic_t"],
        "centre_t": exact["centre_t"], "exact_from": spec, "exact_options": options, "reduced_search": reduced,
        **cheap_predictions(x),
    }  # fmt: skip


def _classifier(ds, dataset: str, cfg):
    """(classifier, held-out accuracy): the late-start tables' (``stages.classifier``), kept in run_dir for reruns."""
    from empirical.metrics.classifier import Classifier
    from empirical.pipelines.stages import classifier

    path = Path(cfg.run_dir) / f"{dataset}_classifier_steps{cfg.classifier_steps}_seed{cfg.classifier_seed}.pt"
    if path.is_file():
        clf = Classifier.load(path)
        n_test = len(ds.x) // 5  # stages.classifier's held-out split
        test = np.random.default_rng(cfg.classifier_seed).permutation(len(ds.x))[:n_test]
        return clf, float(np.mean(clf.predict(ds.x[test].astype(np.float32)) == ds.labels[test]))
    clf, accuracy, _ = classifier(ds, cfg.classifier_steps, cfg.classifier_seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    clf.save(path)
    return clf, accuracy


def _floor(scorer, ref: Reference, x: np.ndarray, idx: np.ndarray, seed: int) -> dict:
    """FID of n training images (drawn without replacement) against the reference, with its bootstrap se: what n
    perfect samples would score (slightly low: the images are part of the reference)."""
    rows = np.random.default_rng(seed).choice(len(x), idx.shape[1], replace=False)
    feats = scorer(x[rows])
    boot = bootstrap_fid(feats, ref, idx)
    return {"fid": ref.score(feats), "se": float(boot.std(ddof=1)), "n": int(idx.shape[1])}


def _spec(cfg, dataset: str) -> dict:
    """What a row's numbers depend on: a rerun with the same spec keeps the finished rows."""
    keys = ("sampler", "steps", "n_samples", "seed", "n_boot", "boot_seed", "classifier_steps", "classifier_seed")
    return {"model": NETWORKS[dataset][0], "grid": "uniform", "init": "late"} | {k: getattr(cfg, k) for k in keys}


def _start_entry(path: Path, dataset: str, header: dict) -> set[float]:
    """Write the data set's header; its rows survive when their spec is the header's, else they are dropped.
    Returns the finished t_start values."""

    def change(doc):
        old = doc.get("datasets", {}).get(dataset, {})
        rows = old.get("rows", []) if old.get("spec") == header["spec"] else []
        doc.setdefault("datasets", {})[dataset] = old | header | {"rows": rows}
        return doc

    doc = update_json(path, change, {})
    return {r["t_start"] for r in doc["datasets"][dataset]["rows"]}


def _put(path: Path, dataset: str, fields: dict | None = None, row: dict | None = None) -> dict:
    """Merge ``fields`` into the data set's entry and/or add ``row`` (replacing one of the same t_start)."""

    def change(doc):
        entry = doc["datasets"][dataset] | (fields or {})
        if row is not None:
            entry["rows"] = sorted([r for r in entry["rows"] if r["t_start"] != row["t_start"]] + [row],
                                   key=lambda r: r["t_start"])  # fmt: skip
        doc["datasets"][dataset] = entry
        return doc

    return update_json(path, change, {})["datasets"][dataset]


def run_dataset(cfg, dataset: str, command: str) -> dict:
    """Measure one data set's curve (skipping finished t_start values), then its knees; returns its entry."""
    from tqdm import tqdm

    from empirical._util.checkpoints import load_checkpoint
    from empirical._util.stopwatch import Stopwatch
    from empirical.training.config import DataConfig
    from empirical.training.train import load_denoiser
    from theory import VPLinear

    clock, model = Stopwatch(), NETWORKS[dataset][0]
    with clock("load"):
        den = load_denoiser(model)
        if den.schedule != VPLinear():
            raise ValueError(f"{model} runs on {den.schedule!r}; the predictions are on VPLinear()")
        ds = DataConfig.of(load_checkpoint(model)["config"]).load()
    with clock("predict"):
        pred = predictions(dataset, ds.x)
    with clock("classifier"):
        clf, accuracy = _classifier(ds, dataset, cfg)
        scorer = lambda x: clf.features(np.clip(x, -1.0, 1.0).astype(np.float32))  # noqa: E731
        ref = Reference.of(scorer(ds.x))
        idx = bootstrap_indices(cfg.n_samples, cfg.n_boot, cfg.boot_seed)
        floor = _floor(scorer, ref, ds.x, idx, cfg.seed)
    header = {"spec": _spec(cfg, dataset), "command": command, "n_train": len(ds.x), "predictions": pred,
              "classifier_accuracy": accuracy, "floor": floor}  # fmt: skip
    done = _start_entry(Path(cfg.out), dataset, header)
    todo = [t for t in cfg.t_start if float(t) not in done]
    for t in tqdm(todo, desc=f"fid-knee {dataset}", dynamic_ncols=True):
        with clock("rows"):
            _put(Path(cfg.out), dataset, row=_row(den, scorer, ref, idx, t, cfg))
    rows = _put(Path(cfg.out), dataset)["rows"]  # every row of this spec, this run's and earlier runs'
    knees = summarise(rows, cfg.tolerances, den.schedule)
    seconds = clock.seconds(digits=1) | {"rows_total_s": round(sum(r["generate_s"] + r["score_s"] for r in rows), 1)}
    return _put(Path(cfg.out), dataset, {"knees": knees, "seconds": seconds})


def summarise(rows: list[dict], tolerances, schedule) -> list[dict]:
    """The knee of the rows' curve for each tolerance (``knee_with_error``), with theta at the knee."""
    rows = sorted(rows, key=lambda r: r["t_start"])
    if len(rows) < 2 or rows[-1]["t_start"] != float(schedule.T):
        raise ValueError(f"need the row of t_start = T = {schedule.T} (the full process) and one more")
    t, fid, boot = ([r[k] for r in rows] for k in ("t_start", "fid", "boot"))
    out = []
    for spec in tolerances:
        k = knee_with_error(t, fid, np.array(boot).T, spec)
        out.append(k | {"theta": None if k["knee"] is None else float(schedule.theta(k["knee"]))})
    return out


# --- the command -------------------------------------------------------------------------------------------------
@dataclass
class Config:
    """The options of ``python -m empirical fid-knee``; every field is checked on construction."""

    datasets: tuple[str, ...] = field(default=tuple(NETWORKS), metadata={"help": "28x28 data sets (their networks: "
                                      "NETWORKS)", "choices": tuple(NETWORKS)})  # fmt: skip
    t_start: tuple[float, ...] = field(default=DEFAULT_T, metadata={"help": "start times, increasing, ending at 1"})
    sampler: str = field(default="ddpm", metadata={"help": "the sampler (uniform grid)", "choices": SAMPLERS})
    steps: int = field(default=100, metadata={"help": "grid points on the full range [T_MIN, 1]: the step length"})
    n_samples: int = field(default=300, metadata={"help": "samples per t_start"})
    seed: int = field(default=0, metadata={"help": "seed of the samples (the same at every t_start)"})
    n_boot: int = field(default=200, metadata={"help": "bootstrap replicates"})
    boot_seed: int = field(default=1, metadata={"help": "seed of the bootstrap's resampled indices"})
    tolerances: tuple[str, ...] = field(default=("3se", "50%"), metadata={"help": "knee tolerances: '<k>se', '<p>%%'"})
    classifier_steps: int = field(default=500, metadata={"help": "the FID classifier's steps (late-start tables: 500)"})
    classifier_seed: int = field(default=0, metadata={"help": "the FID classifier's seed"})
    out: str = field(default="results/fid_knee.json", metadata={"help": "the results file (rows merged as they come)"})
    figure: str = field(default="results/figures/fid_knee.png", metadata={"help": "the figure"})
    run_dir: str = field(default="runs/fid-knee", metadata={"help": "folder of the classifiers kept for reruns"})
    threads: int = field(default=1, metadata={"help": "torch threads (0: torch's default)"})
    knees_only: bool = field(default=False, metadata={"help": "recompute the knees and the figure from the rows in "
                             "out, without sampling", "flag": True})  # fmt: skip

    def __post_init__(self):
        from empirical.models.denoiser import T_MIN

        self.datasets, self.t_start, self.tolerances = tuple(self.datasets), tuple(self.t_start), tuple(self.tolerances)
        if not self.datasets or any(d not in NETWORKS for d in self.datasets):
            raise ValueError(f"datasets must be one or more of {tuple(NETWORKS)}; got {self.datasets!r}")
        t = np.array(self.t_start, dtype=float) if all(is_real(v) for v in self.t_start) else np.array([np.nan])
        if t.size < 3 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0) or t[0] <= T_MIN or t[-1] != 1.0:
            raise ValueError(f"t_start must be >= 3 increasing times in ({T_MIN}, 1] ending at 1 (the full process); "
                             f"got {self.t_start!r}")  # fmt: skip
        self.t_start = tuple(float(v) for v in t)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {self.sampler!r}")
        for name, lo in (("steps", 2), ("n_samples", 10), ("n_boot", 20), ("classifier_steps", 1), ("seed", 0),
                         ("boot_seed", 0), ("classifier_seed", 0), ("threads", 0)):  # fmt: skip
            if not (is_int(getattr(self, name)) and getattr(self, name) >= lo):
                raise ValueError(f"{name} must be an int >= {lo}; got {getattr(self, name)!r}")
        if not isinstance(self.knees_only, bool):
            raise ValueError(f"knees_only must be true or false; got {self.knees_only!r}")
        if not self.tolerances:
            raise ValueError("tolerances must hold one or more of '<k>se', '<p>%'")
        for spec in self.tolerances:
            parse_tolerance(spec)


def run(cfg: Config, command: str) -> dict:
    """Every data set of the config, then the figure; returns the results file's content. With ``knees_only``, the
    knees of the rows already in ``out`` (the sampling command and options stay; ``knees_command`` is this one)."""
    from theory import VPLinear

    for dataset in cfg.datasets:
        if not cfg.knees_only:
            run_dataset(cfg, dataset, command)
            continue
        rows = _rows_in(cfg.out, dataset)
        _put(Path(cfg.out), dataset, {"knees": summarise(rows, cfg.tolerances, VPLinear())})
    from empirical.pipelines.fid_knee_figure import plot_knee

    record = {"knees_command": command} if cfg.knees_only else {"command": command, "options": dataclasses.asdict(cfg)}
    doc = update_json(Path(cfg.out), lambda d: d | record, {})
    plot_knee(doc, cfg.figure)
    return doc


def _rows_in(out: str, dataset: str) -> list[dict]:
    """The rows of ``dataset`` in the results file ``out``; ValueError naming knees_only when there are none."""
    doc = json.loads(Path(out).read_text()) if Path(out).is_file() else {}
    rows = doc.get("datasets", {}).get(dataset, {}).get("rows")
    if not rows:
        raise ValueError(f"knees_only needs rows: {out} holds none of {dataset}; run without --knees-only first")
    return rows


def main(argv: list[str] | None = None) -> int:
    from empirical._util.cli import command_line, print_config, refuse, typed_command
    from empirical._util.files import check_output_file

    try:
        cfg, args = typed_command(Config, "python -m empirical fid-knee", __doc__, argv)
        check_output_file(cfg.out, "out", holds="object")
        check_output_file(cfg.figure, "figure")
        for dataset in cfg.datasets if cfg.knees_only else ():
            _rows_in(cfg.out, dataset)
    except ValueError as err:
        return refuse(err)
    if args.dry_run:
        return print_config("fid-knee", cfg)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    doc = run(cfg, command_line("fid-knee", argv))
    for dataset in cfg.datasets:
        entry = doc["datasets"][dataset]
        knees = {k["tolerance"]: (k["knee"], k["se"]) for k in entry["knees"]}
        print(json.dumps({"dataset": dataset, "fid_t1": entry["rows"][-1]["fid"], "knees": knees}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
