r"""The stages both pipelines share (``empirical.pipelines.breaking_time.pipeline``,
``empirical.pipelines.late_start.pipeline``): folders, data, the denoiser (trained or reused; a checkpoint or
exported-weights file, ``--model``; or a diffusers model folder), the classifier, and the theory's prediction (computed,
or the exact one read from a benchmark results file, ``--prediction FILE:KEY``, with the cheap ones computed).

Each stage is a function of the config and of what earlier stages returned, so a pipeline's ``run`` reads as the
list of its stages, each timed by a ``Stopwatch``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import theory
from empirical._util.checkpoints import load_checkpoint
from empirical._util.files import check_output_file
from empirical.data.datasets import DATASETS, Dataset
from empirical.metrics.classifier import train_classifier
from empirical.models.denoiser import Denoiser
from empirical.pipelines.config import PipelineConfig
from empirical.training.config import DataConfig, TrainConfig, resolve_device
from empirical.training.train import check_out_dir, load_denoiser, train
from theory.symbolic import equal_norm_theta_c, lambdify
from theory.symbolic import eta as eta_sym
from theory.symbolic import lam as lam_sym

__all__ = [
    "Model", "folders", "load_data", "denoiser", "classifier", "read_prediction", "known_prediction",
    "cheap_predictions", "predict", "device_name",
]  # fmt: skip

TABLES = ("breaking_time.json", "late_start.json")  # the results tables the pipelines merge rows into

# The schedule and eta of benchmarks/critical_time.py's entries (theory.critical_time's defaults on VPLinear).
BENCHMARK_SCHEDULE, BENCHMARK_ETA = theory.VPLinear(), 1.0


@dataclass
class Model:
    """The denoiser a pipeline measures, and where it came from: a training run of this pipeline (``trained``), a
    checkpoint or exported-weights file (``--model``; ``final_loss`` None when it holds no loss history), or a
    diffusers model folder (``checkpoint``, ``train_config``, ``train_steps``, ``final_loss`` None)."""

    denoiser: Denoiser
    device: str  # where it was trained ("cpu", "cuda"), or where the diffusers model was loaded
    source: str  # the checkpoint, the --model file or the diffusers folder
    checkpoint: Path | None = None
    train_config: TrainConfig | None = None  # a file's: its stored config
    train_steps: int | None = None
    final_loss: float | None = None
    trained: bool = False  # trained (or resumed) by this pipeline in its run folder


def folders(cfg: PipelineConfig) -> Path:
    """The results folder (None: results/ under the current directory), its tables and the run folder, created and
    checked before any long work; returns the results folder."""
    results = check_out_dir("results" if cfg.results is None else cfg.results, "results")
    check_out_dir(cfg.run_dir, "run_dir")
    for table in TABLES:  # the pipelines merge their rows into these: they must be lists of rows
        check_output_file(results / table, "results", holds="list")
    return results


def load_data(cfg: PipelineConfig) -> Dataset:
    """The training images of the config (the denoiser's, the classifier's and the prediction's)."""
    return cfg.load()


def denoiser(cfg: PipelineConfig, dim: int) -> Model:
    """Train the denoiser (``train`` returns at once when the run folder's checkpoint is complete, so both
    pipelines share one model), or load the file ``cfg.model`` or the diffusers model folder ``cfg.diffusers``;
    ``dim`` is the images'."""
    if cfg.diffusers is not None:
        from empirical.interop.diffusers_unet import load_diffusers

        device = resolve_device(cfg.device)
        den = load_diffusers(cfg.diffusers, device=device)
        if den.dim != dim:
            raise ValueError(
                f"diffusers model {cfg.diffusers} takes images of shape {den.image_shape} ({den.dim} values); "
                f"{cfg.dataset} has {dim}"
            )
        return Model(den, device, os.fspath(cfg.diffusers))
    if cfg.model is not None:
        return _from_file(Path(cfg.model), cfg, dim)
    tcfg = cfg.train_config()
    return _from_file(train(tcfg), cfg, dim, tcfg)


def _from_file(path: Path, cfg: PipelineConfig, dim: int, tcfg: TrainConfig | None = None) -> Model:
    """The ``Model`` of a checkpoint or export: trained here when ``tcfg`` is given, else the ``--model`` file,
    whose training images (its stored data fields) must be the pipeline's."""
    stored = load_checkpoint(path)
    config = stored["config"]
    if tcfg is None:
        names = [f.name for f in dataclasses.fields(TrainConfig)]
        ours, theirs = DataConfig.of(vars(cfg)), DataConfig.of(config)
        if ours != theirs:
            raise ValueError(
                f"model {path} was trained on {theirs}; the pipeline's training images are {ours} "
                "(set --dataset, --n-train, --classes, --data-seed to the model's)"
            )
    den = load_denoiser(path, device=resolve_device(cfg.device))  # tcfg.device is cfg.device
    if den.dim != dim:
        raise ValueError(f"model {path} takes images of {den.dim} values; {cfg.dataset} has {dim}")
    loss = stored.get("loss")
    final_loss = None if loss is None or len(loss) == 0 else float(torch.as_tensor(loss)[-200:].mean())
    return Model(
        den, config.get("device", "cpu"), str(path), path,
        tcfg if tcfg is not None else TrainConfig(**{k: v for k, v in config.items() if k in names}),
        int(stored["step"]), final_loss, trained=tcfg is not None,
    )  # fmt: skip


def classifier(ds: Dataset, steps: int, seed: int):
    """(classifier, its accuracy, n_test): trained on a seeded 80 % of the training images, its accuracy measured
    on the other 20 % (its features give FID/KID, its predictions the class composition and the clones' classes)."""
    n_test = len(ds.x) // 5
    perm = np.random.default_rng(seed).permutation(len(ds.x))
    clf = train_classifier(ds.x[perm[n_test:]], ds.labels[perm[n_test:]], ds.image_shape, steps=steps, seed=seed)
    accuracy = float(np.mean(clf.predict(ds.x[perm[:n_test]].astype(np.float32)) == ds.labels[perm[:n_test]]))
    return clf, accuracy, n_test


def cheap_predictions(x_train: np.ndarray, eta: float = 1.0, schedule=None) -> dict:
    """The predictions that need only the top eigenvalue lam of the images' covariance (VP linear by default):

    - ``t_c_equal_norm``: the equal-norm closed form (1 + eta^2)(sigma^2 - theta^2 lam) = sigma^4;
    - ``t_c_biroli``: Biroli et al.'s speciation time 1/2 ln lam (OU time) mapped to the schedule.
    """
    schedule = theory.VPLinear() if schedule is None else schedule
    lam = float(np.linalg.eigvalsh(np.atleast_2d(np.cov(x_train.T, bias=True)))[-1])
    theta_en = float(lambdify(equal_norm_theta_c(), (lam_sym, eta_sym))(lam, eta))
    biroli = schedule.t_from_ou_time(0.5 * math.log(lam)) if lam > 0 else math.nan
    return {"t_c_equal_norm": _t_from_theta(schedule, theta_en), "t_c_biroli": biroli, "top_covariance_eigenvalue": lam}


def read_prediction(spec: str, x_train: np.ndarray | None = None, dataset: str | None = None, eta: float = 1.0):
    """The exact prediction stored in a benchmark results file, ``spec`` = "FILE:KEY" (``benchmarks/critical_time.py``
    writes one entry per data set: ``t_c``, ``theta_c``, ``kind``, ``centre_t``, ``macroscopic_t``, with ``N``, ``d``
    and ``data``). Returns {t_c, theta_c, kind, centre_t, macroscopic_t, source: spec}.

    The entry must state its N and d and a t_c in (0, T]; with ``x_train`` (N, d) it must have been computed on the
    same images: its N and d (and the data set named by its ``data``, and its eta, 1 unless it stores one) must
    match, else ValueError naming ``prediction``.
    """
    path, _, key = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not (path and key):
        raise ValueError(f"prediction must be FILE:KEY (benchmarks/results.json:fashion); got {spec!r}")
    if not Path(path).is_file():
        raise ValueError(f"prediction {spec!r}: no results file at {path}")
    results = json.loads(Path(path).read_text())
    if not isinstance(results, dict) or not isinstance(results.get(key), dict) or "t_c" not in results[key]:
        keys = (
            sorted(k for k, v in results.items() if isinstance(v, dict) and "t_c" in v)
            if isinstance(results, dict)
            else []
        )
        raise ValueError(f"prediction {spec!r}: {path} has no entry {key!r} with a t_c; entries: {keys}")
    entry = results[key]
    _check_entry(spec, entry)
    if x_train is not None:
        n, d = np.shape(x_train)
        if entry["N"] != n or entry["d"] != d:
            raise ValueError(
                f"prediction {spec!r} was computed on N={entry.get('N')} images of d={entry.get('d')}; the training "
                f"images are N={n}, d={d} (the same data set, n_train and classes, or run critical_time on them)"
            )
    name = str(entry.get("data", "")).split(" ")[0]
    if dataset is not None and name in DATASETS and name != dataset:
        raise ValueError(f"prediction {spec!r} was computed on {entry['data']!r}; the dataset is {dataset!r}")
    if entry.get("eta", BENCHMARK_ETA) != eta:
        raise ValueError(f"prediction {spec!r} was computed at eta = {entry.get('eta', BENCHMARK_ETA)}; eta is {eta}")
    names = ("t_c", "theta_c", "kind", "centre_t", "macroscopic_t")
    return {k: entry.get(k) for k in names} | {"source": spec}


def _check_entry(spec: str, entry: dict) -> None:
    """An entry states the images it was computed on (N, d) and a critical time inside the schedule, (0, T]."""
    missing = [k for k in ("N", "d") if not (isinstance(entry.get(k), int) and entry[k] >= 1)]
    if missing:
        raise ValueError(
            f"prediction {spec!r} does not state {' and '.join(missing)} (the number and size of its images), so it "
            "cannot be checked against the training images; use an entry of benchmarks/critical_time.py"
        )
    T, t_c = BENCHMARK_SCHEDULE.T, entry["t_c"]
    if isinstance(t_c, bool) or not isinstance(t_c, (int, float)) or not 0 < t_c <= T:
        raise ValueError(f"prediction {spec!r} has t_c = {t_c!r}; a critical time must lie in (0, T={T}]")


def known_prediction(cfg: PipelineConfig, x_train: np.ndarray) -> dict | None:
    """``read_prediction`` of ``cfg.prediction`` checked against the training images (None without one); the
    pipelines call it before any long work."""
    return None if cfg.prediction is None else read_prediction(cfg.prediction, x_train, cfg.dataset, cfg.eta)


def predict(x_train: np.ndarray, eta: float = 1.0, schedule=None, known: dict | None = None) -> dict:
    """The critical time predicted from the training images alone (forward time, VP linear by default):
    ``t_c_predicted``, the exact ``theory.critical_time`` of the empirical distribution (a DeltaMixture of the
    images), its theta, kind, ``centre_t`` and ``macroscopic_t`` (the first bifurcation with a macroscopic basin),
    ``prediction`` (where they come from), and the ``cheap_predictions``. ``known``: a ``read_prediction`` (made
    on the benchmark's schedule, VPLinear) used instead of running ``theory.critical_time``."""
    schedule = theory.VPLinear() if schedule is None else schedule
    if known is None:
        ct = theory.critical_time(theory.DeltaMixture(x_train), schedule, eta=eta)
        m = ct.macroscopic
        known = {"t_c": ct.t, "theta_c": ct.theta, "kind": ct.kind, "centre_t": ct.centre_t,
                 "macroscopic_t": None if m is None else m.t, "source": "theory.critical_time"}  # fmt: skip
    elif schedule != BENCHMARK_SCHEDULE:
        raise ValueError(
            f"prediction {known['source']!r} was computed on {BENCHMARK_SCHEDULE!r}; the denoiser's schedule is "
            f"{schedule!r} (omit --prediction to compute it on that schedule)"
        )

    def real(v):
        return None if v is None else float(v)

    return {
        "t_c_predicted": float(known["t_c"]),
        "theta_c_predicted": real(known["theta_c"]),
        "kind_predicted": known["kind"],
        "centre_t_predicted": real(known["centre_t"]),
        "macroscopic_t_predicted": real(known["macroscopic_t"]),
        "prediction": known["source"],
        **cheap_predictions(x_train, eta, schedule),
    }


def _t_from_theta(schedule, theta: float) -> float:
    """t(theta), or nan where theta is outside the schedule's range [theta(T), 1] (no transition there)."""
    lo = float(schedule.theta(schedule.T))
    return float(schedule.t_from_theta(theta)) if lo <= theta <= 1.0 else float("nan")


def device_name(device: str | torch.device) -> str:
    """The GPU's name, or "cpu (<cores> cores)": the results' device column."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores)"
