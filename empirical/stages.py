r"""The stages both pipelines share (``empirical.breaking_time``, ``empirical.late_start``): folders, data, the
denoiser (trained or reused, or a diffusers model folder), the classifier, and the theory's prediction.

Each stage is a function of the config and of what earlier stages returned, so a pipeline's ``run`` reads as the
list of its stages, each timed by a ``Stopwatch``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import theory
from empirical.classifier import train_classifier
from empirical.config import PipelineConfig, TrainConfig, resolve_device
from empirical.datasets import Dataset, load_dataset
from empirical.denoiser import Denoiser
from empirical.train import check_out_dir, load_denoiser, train
from theory.paths import results_dir
from theory.symbolic import equal_norm_theta_c, lambdify
from theory.symbolic import eta as eta_sym
from theory.symbolic import lam as lam_sym

__all__ = ["Model", "folders", "load_data", "denoiser", "classifier", "predict", "device_name"]


@dataclass
class Model:
    """The denoiser a pipeline measures, and where it came from: a training run (``checkpoint``, ``train_config``,
    ``train_steps``, ``final_loss``) or a diffusers model folder (those None)."""

    denoiser: Denoiser
    device: str  # where it was trained ("cpu", "cuda"), or where the diffusers model was loaded
    source: str  # the checkpoint or the diffusers folder
    checkpoint: Path | None = None
    train_config: TrainConfig | None = None
    train_steps: int | None = None
    final_loss: float | None = None


def folders(cfg: PipelineConfig) -> Path:
    """The results folder (None: the repository's docs/results, wherever the command runs) and the run folder,
    created and checked before any long work; returns the results folder."""
    results = check_out_dir(results_dir() if cfg.results is None else cfg.results, "results")
    check_out_dir(cfg.run_dir, "run_dir")
    return results


def load_data(cfg: PipelineConfig) -> Dataset:
    """The training images of the config (the denoiser's, the classifier's and the prediction's)."""
    return load_dataset(cfg.dataset, **cfg.data_kwargs())


def denoiser(cfg: PipelineConfig, dim: int) -> Model:
    """Train the denoiser (``train`` returns at once when the run folder's checkpoint is complete, so both
    pipelines share one model), or load the diffusers model folder ``cfg.diffusers``; ``dim`` is the images'."""
    if cfg.diffusers is not None:
        from empirical.diffusers_adapter import load_diffusers

        device = resolve_device(cfg.device)
        den = load_diffusers(cfg.diffusers, device=device)
        if den.dim != dim:
            raise ValueError(
                f"diffusers model {cfg.diffusers} takes images of shape {den.image_shape} ({den.dim} values); "
                f"{cfg.dataset} has {dim}"
            )
        return Model(den, device, os.fspath(cfg.diffusers))
    tcfg = cfg.train_config()
    ckpt = train(tcfg)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    device = tcfg.resolved().device
    den = load_denoiser(ckpt, device=device)
    final_loss = float(stored["loss"][-200:].mean())
    return Model(den, stored["config"].get("device", "cpu"), str(ckpt), ckpt, tcfg, int(stored["step"]), final_loss)


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


def predict(x_train: np.ndarray, eta: float = 1.0, schedule=None) -> dict:
    """The critical time predicted from the training images alone (forward time, VP linear by default):
    ``t_c_predicted``, the exact ``theory.critical_time`` of the empirical distribution (a DeltaMixture of the
    images), its theta, kind and ``centre_t``, and the ``cheap_predictions``."""
    schedule = theory.VPLinear() if schedule is None else schedule
    ct = theory.critical_time(theory.DeltaMixture(x_train), schedule, eta=eta)
    return {
        "t_c_predicted": float(ct.t),
        "theta_c_predicted": float(ct.theta),
        "kind_predicted": ct.kind,
        "centre_t_predicted": float(ct.centre_t),
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
