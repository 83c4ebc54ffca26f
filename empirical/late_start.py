r"""The Gaussian late start (gls) against the vanilla start, for four few-step samplers, and two ways to choose t_start.

    python -m empirical.late_start --dataset digits            # CPU, ~10 minutes (one thread)
    python -m empirical.late_start --dataset digits --dry-run  # print the resolved config

One run: (1) trains (or reuses) the denoiser of ``empirical.breaking_time`` (same ``TrainConfig``, same run
folder, so both pipelines share one model) and a classifier on the training images (its features give the
project's FID/KID, its predictions the class composition); (2) predicts the critical time t_c of the training
set with ``breaking_time.predict`` (eta = 1); (3) sweeps t_start: FID (project features) against t_start for
each sampler and n, from N(0, I) ("late") and from the Gaussian fitted to the diffused training set ("gls"),
and reads off the best t_start and the knee (the maximum of the discrete second derivative); (4) fills the
table: per sampler and n, the vanilla start (N(0, I) at T = 1, uniform grid), gls at the theory's t_start,
gls at the sweep's best and knee, and the late start at its sweep's best, each on fresh samples (another
seed than the sweep's, so the sweep's choice is not scored on the samples that chose it); (5) the same with
DDIM converged (``converged_steps``): the vanilla start, gls and N(0, I) at t_c, and gls swept over t_start,
i.e. what the start costs once the step error is gone; (6) Inception FID (the standard TF-FID network) for a
small headline subset (DDIM at ``inception_steps``, vanilla and gls at t_c). It writes (atomically) the rows of
``<results>/late_start.json`` for (dataset, device), the curves, summary and sample pixels in
``<results>/late_start_<dataset>.json`` and the figures ``<results>/figures/late_start_<dataset>_*.png``
(``results`` defaults to docs/results of the repository, whatever the working directory).

The theory's rule, fixed before any sweep was run: **t_start = t_c**, the first bifurcation in the generative
direction of the training set's empirical distribution (``theory.critical_time`` through
``breaking_time.predict``, the reverse SDE, eta = 1). Until t_c the generative potential has a single stable
fixed point, so a Gaussian start skips no bifurcation; t_c is the latest start in generation (the smallest
t_start) with that guarantee. The rule was not tuned on the outcome.

Metrics: generated images are clipped to the data range [-1, 1], then FID and KID are computed on the
classifier's penultimate features against the whole training set (the reference, N_ref = 1797 for digits);
the floor of the FID from finite samples is the FID between two random halves of the training set. The
entropy of the predicted class composition (bits) is compared with the training set's (true labels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from empirical import breaking_time
from empirical.classifier import train_classifier
from empirical.cli import dataclass_parser, is_int, is_real, pipeline_config
from empirical.datasets import DATASETS, load_dataset
from empirical.metrics import class_composition, class_entropy_bits, fid, inception_features, kid
from empirical.results import finite, upsert_row, write_json_atomic
from empirical.samplers import generate, nfe
from empirical.train import TrainConfig, check_out_dir, load_denoiser, train
from theory.paths import results_dir

__all__ = ["Config", "SAMPLERS", "INITS", "RULES", "best_and_knee", "gls_ratios", "run", "main"]

# Table names of the samplers -> empirical.samplers' names.
SAMPLERS = {"ddpm": "ddpm", "ddim": "ddim", "pndm": "pndm", "dpm-solver++": "dpm++2m"}
INITS = ("vanilla", "late", "gls")
RULES = ("none", "theory", "sweep-best", "sweep-knee")  # how a row's t_start was chosen
ROW_KEYS = ("dataset", "sampler", "n_steps", "init", "t_start_rule", "device")
# The paper's (Raya & Ambrogioni 2023, MNIST, DDIM) FID ratios vanilla / gls at n = 3, 5, 10 steps.
PAPER_DDIM_RATIOS = {3: 3.58, 5: 1.91, 10: 1.83}
# The paper's class entropies (bits) on MNIST: the training set, DDIM-5, gls-DDIM-5.
PAPER_ENTROPY = {"training": 1.55, "ddim-5": 0.76, "gls-ddim-5": 1.19}
_BT = breaking_time.Config()  # the shared denoiser's defaults live there


@dataclasses.dataclass
class Config:
    """Everything one run depends on; the denoiser fields mirror ``breaking_time.Config`` (one shared model)."""

    dataset: str = "digits"
    n_train: int | None = _BT.n_train
    classes: tuple[int, ...] | None = _BT.classes
    steps: int = _BT.steps
    batch_size: int = _BT.batch_size
    net: str = _BT.net
    width: int = _BT.width
    depth: int = _BT.depth
    ch: int = _BT.ch
    seed: int = 0
    run_dir: str | None = None
    samplers: tuple[str, ...] = tuple(SAMPLERS)
    n_steps: tuple[int, ...] = (3, 5, 10)
    n_samples: int = 2000
    sweep_samples: int = 1000
    sweep_t: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 21))
    eta: float = 1.0
    classifier_steps: int = 1000
    kid_subsets: int = 20
    inception_n: int = 300
    inception_steps: tuple[int, ...] = (3, 5)
    converged_steps: int = 100
    n_grid: int = 10
    results: str | None = None  # None: docs/results of the repository (theory.paths.results_dir)
    device: str = "auto"
    threads: int = 1

    def __post_init__(self):
        for name in ("classes", "samplers", "n_steps", "sweep_t", "inception_steps"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}; got {self.dataset!r}")
        bad = [s for s in self.samplers if s not in SAMPLERS]
        if not self.samplers or bad:
            raise ValueError(f"samplers must be a non-empty subset of {tuple(SAMPLERS)}; got {self.samplers!r}")
        if not self.n_steps or not all(is_int(n) and n >= 2 for n in self.n_steps):
            raise ValueError(f"n_steps must be a non-empty tuple of ints >= 2; got {self.n_steps!r}")
        if not all(is_real(v) for v in self.sweep_t):
            raise ValueError(f"sweep_t must hold numbers; got {self.sweep_t!r}")
        t = np.asarray(self.sweep_t, dtype=float)
        if t.size < 3 or np.any(np.diff(t) <= 0) or t[0] <= 0.01 or t[-1] > 1.0:
            raise ValueError(f"sweep_t must hold >= 3 increasing times in (0.01, 1]; got {self.sweep_t!r}")
        if not (is_int(self.converged_steps) and (self.converged_steps == 0 or self.converged_steps >= 2)):
            raise ValueError(f"converged_steps must be 0 (skip) or an int >= 2; got {self.converged_steps!r}")
        for name in ("n_samples", "sweep_samples", "classifier_steps", "kid_subsets", "n_grid"):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an int >= 1; got {getattr(self, name)!r}")
        for name in ("n_samples", "sweep_samples"):
            if getattr(self, name) < 10:
                raise ValueError(f"{name} must be >= 10 (FID needs a covariance); got {getattr(self, name)}")
        if not (is_int(self.inception_n) and (self.inception_n == 0 or self.inception_n >= 10)):
            raise ValueError(f"inception_n must be 0 (skip) or an int >= 10; got {self.inception_n!r}")
        if self.inception_n > self.n_samples:
            raise ValueError(f"inception_n={self.inception_n} must not exceed n_samples={self.n_samples}")
        if self.inception_n and (not set(self.inception_steps) <= set(self.n_steps) or "ddim" not in self.samplers):
            raise ValueError("inception_steps must be a subset of n_steps, and Inception FID needs 'ddim' in samplers")
        if not (is_real(self.eta) and 0 < self.eta < math.inf):
            raise ValueError(f"eta must be a finite number > 0 (breaking_time.predict); got {self.eta!r}")
        if not (is_int(self.threads) and self.threads >= 0):
            raise ValueError(f"threads must be an int >= 0 (0: torch's default); got {self.threads!r}")
        if self.results is not None and not (isinstance(self.results, str) and self.results):
            raise ValueError(f"results must be a non-empty path or None (docs/results); got {self.results!r}")
        if self.run_dir is None:
            self.run_dir = f"runs/breaking-{self.dataset}"

    def train_config(self) -> TrainConfig:
        """The denoiser's ``TrainConfig``: ``breaking_time.Config``'s for the same fields (one shared model)."""
        return breaking_time.Config(
            dataset=self.dataset,
            n_train=self.n_train,
            classes=self.classes,
            steps=self.steps,
            batch_size=self.batch_size,
            net=self.net,
            width=self.width,
            depth=self.depth,
            ch=self.ch,
            seed=self.seed,
            run_dir=self.run_dir,
            device=self.device,
        ).train_config()


# --- choosing t_start from a sweep ---------------------------------------------------------------
def best_and_knee(t, fid_values) -> dict:
    r"""The best start time (smallest FID) and the knee of a curve FID(t_start), t (m,) increasing, m >= 3.

    The knee is the interior grid point where the discrete second derivative (three-point formula,
    exact for parabolas on any grid)

        f''_i = 2 [ (f_{i+1} - f_i) / (t_{i+1} - t_i) - (f_i - f_{i-1}) / (t_i - t_{i-1}) ] / (t_{i+1} - t_{i-1})

    is largest. Returns {best_t, best_fid, knee_t, knee_fid, second_derivative (m - 2,)}; None entries of
    fid_values (a failed cell) are skipped.

    >>> r = best_and_knee([0.1, 0.2, 0.3, 0.4, 0.5], [9.0, 4.0, 1.0, 0.5, 0.6])
    >>> r["best_t"], r["knee_t"]
    (0.4, 0.3)
    """
    t, f = np.asarray(t, dtype=float), np.asarray([np.nan if v is None else v for v in fid_values], dtype=float)
    keep = np.isfinite(f)
    t, f = t[keep], f[keep]
    if t.ndim != 1 or t.size < 3 or np.any(np.diff(t) <= 0):
        raise ValueError(f"need >= 3 finite points on an increasing grid; got t={t.tolist()}")
    slope = np.diff(f) / np.diff(t)
    d2 = 2.0 * np.diff(slope) / (t[2:] - t[:-2])
    i_best, i_knee = int(np.argmin(f)), int(np.argmax(d2)) + 1
    return {
        "best_t": float(t[i_best]),
        "best_fid": float(f[i_best]),
        "knee_t": float(t[i_knee]),
        "knee_fid": float(f[i_knee]),
        "second_derivative": d2.tolist(),
    }


def gls_ratios(rows, dataset: str, rule: str = "theory", metric: str = "fid") -> dict:
    """{(sampler, n_steps): metric(vanilla) / metric(gls with t_start_rule=rule)} from table rows."""
    by = {(r["sampler"], r["n_steps"], r["init"], r["t_start_rule"]): r for r in rows if r["dataset"] == dataset}
    out = {}
    for (s, n, init, _), r in by.items():
        gls = by.get((s, n, "gls", rule))
        if init == "vanilla" and gls and r.get(metric) is not None and gls.get(metric):
            out[s, n] = r[metric] / gls[metric]
    return out


# --- the pipeline ---------------------------------------------------------------------------------
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


def _hex(x: np.ndarray) -> list[str]:
    """Images (n, d) in [-1, 1] as 8-bit levels, one hex string (2 d characters) per image: small JSON for the
    sample grids (``bytes.fromhex`` reads them back)."""
    return [bytes(row).hex() for row in np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)]


class _Scorer:
    """Features, FID/KID against the training set, and class composition, for one classifier."""

    def __init__(self, clf, x_ref: np.ndarray, n_classes: int, kid_subsets: int, seed: int):
        self.clf, self.n_classes, self.kid_subsets, self.seed = clf, n_classes, kid_subsets, seed
        self.ref = clf.features(x_ref.astype(np.float32))

    def fid(self, x: np.ndarray) -> float:
        return fid(self.clf.features(np.clip(x, -1, 1).astype(np.float32)), self.ref)

    def full(self, x: np.ndarray) -> dict:
        x = np.clip(x, -1, 1).astype(np.float32)
        feats, labels = self.clf.features(x), self.clf.predict(x)
        k_mean, k_std = kid(feats, self.ref, self.kid_subsets, min(1000, len(feats), len(self.ref)), seed=self.seed)
        return {
            "fid": fid(feats, self.ref),
            "kid": k_mean,
            "kid_std": k_std,
            "entropy_bits": class_entropy_bits(labels, self.n_classes),
            "composition": np.round(class_composition(labels, self.n_classes), 4).tolist(),
        }


def run(cfg: Config, command: str) -> dict:
    """The whole pipeline for one data set; returns the curves file's content (also written to disk)."""
    wall0 = time.perf_counter()
    # None: the repository's docs/results, wherever the command runs; both folders checked before the long work
    results = check_out_dir(results_dir() if cfg.results is None else cfg.results, "results")
    check_out_dir(cfg.run_dir, "run_dir")
    ds = load_dataset(cfg.dataset, n=cfg.n_train, classes=cfg.classes, seed=0)
    x_train, n_classes = ds.x, int(ds.labels.max()) + 1
    clock = {}

    # 1. The denoiser (shared with breaking_time: train() returns at once when the checkpoint is complete).
    t0 = time.perf_counter()
    tcfg = cfg.train_config()
    ckpt = train(tcfg)
    clock["train_s"] = time.perf_counter() - t0
    device = torch.device(tcfg.resolved().device)
    den = load_denoiser(ckpt, device=device)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)

    # 2. The classifier: trained on 80 % of the training images, its accuracy measured on the other 20 %.
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(x_train))
    n_test = len(x_train) // 5
    clf = train_classifier(
        x_train[perm[n_test:]], ds.labels[perm[n_test:]], ds.image_shape, steps=cfg.classifier_steps, seed=cfg.seed
    )
    accuracy = float(np.mean(clf.predict(x_train[perm[:n_test]].astype(np.float32)) == ds.labels[perm[:n_test]]))
    scorer = _Scorer(clf, x_train, n_classes, cfg.kid_subsets, cfg.seed)
    half = rng.permutation(len(x_train))
    a, b = x_train[half[: len(half) // 2]], x_train[half[len(half) // 2 :]]
    fa, fb = clf.features(a.astype(np.float32)), clf.features(b.astype(np.float32))
    floor = {
        "fid": fid(fa, fb),
        "kid": kid(fa, fb, cfg.kid_subsets, min(1000, len(fa), len(fb)), seed=cfg.seed)[0],
        "n": [len(a), len(b)],
    }
    train_pred = clf.predict(x_train.astype(np.float32))
    clock["classifier_s"] = time.perf_counter() - t0

    # 3. The theory's start time: the critical time of the training set's empirical distribution.
    t0 = time.perf_counter()
    pred = breaking_time.predict(x_train, cfg.eta, den.schedule)
    t_theory = float(pred["t_c_predicted"])
    clock["predict_s"] = time.perf_counter() - t0

    def draw(sampler, n_steps, init, t_start, n, seed):
        x = generate(
            den,
            SAMPLERS[sampler],
            n_steps,
            n,
            init=init,
            t_start=None if init == "vanilla" else float(t_start),
            x_train=x_train,
            seed=seed,
        )
        return x.numpy()

    n_sweep = len(cfg.samplers) * len(cfg.n_steps) * 2 * len(cfg.sweep_t)
    n_sweep += len(cfg.sweep_t) if cfg.converged_steps else 0
    n_table = len(cfg.samplers) * len(cfg.n_steps) * 5 + (3 if cfg.converged_steps else 0)
    bar = tqdm(total=n_sweep + n_table, desc=f"late start {cfg.dataset}", dynamic_ncols=True)

    # 4. The sweep: FID against t_start (seed cfg.seed), from N(0, I) ("late") and from the fitted Gaussian.
    t0 = time.perf_counter()
    sweep = []
    for sampler in cfg.samplers:
        for n_steps in cfg.n_steps:
            for init in ("late", "gls"):
                curve = []
                for t in cfg.sweep_t:
                    curve.append(scorer.fid(draw(sampler, n_steps, init, t, cfg.sweep_samples, cfg.seed)))
                    bar.update(1)
                sweep.append(
                    {
                        "sampler": sampler,
                        "n_steps": n_steps,
                        "init": init,
                        "t": list(cfg.sweep_t),
                        "fid": curve,
                        "n_samples": cfg.sweep_samples,
                        **{k: v for k, v in best_and_knee(cfg.sweep_t, curve).items()},
                    }
                )
    # The same sweep with the sampler converged (DDIM, converged_steps): the cost of the Gaussian start alone.
    converged_sweep = None
    if cfg.converged_steps:
        curve = []
        for t in cfg.sweep_t:
            curve.append(scorer.fid(draw("ddim", cfg.converged_steps, "gls", t, cfg.sweep_samples, cfg.seed)))
            bar.update(1)
        converged_sweep = {
            "sampler": "ddim",
            "n_steps": cfg.converged_steps,
            "init": "gls",
            "t": list(cfg.sweep_t),
            "fid": curve,
            "n_samples": cfg.sweep_samples,
        }
    clock["sweep_s"] = time.perf_counter() - t0
    picks = {(c["sampler"], c["n_steps"], c["init"]): c for c in sweep}

    # 5. The table, on fresh samples (seed cfg.seed + 1): every sampler and n, vanilla against the late starts.
    t0 = time.perf_counter()
    dev_name = _device_name(device)
    rows, samples = [], []
    for sampler in cfg.samplers:
        for n_steps in cfg.n_steps:
            g, late = picks[sampler, n_steps, "gls"], picks[sampler, n_steps, "late"]
            cells = [
                ("vanilla", "none", 1.0),
                ("gls", "theory", t_theory),
                ("gls", "sweep-best", g["best_t"]),
                ("gls", "sweep-knee", g["knee_t"]),
                ("late", "sweep-best", late["best_t"]),
            ]
            for init, rule, t_start in cells:
                c0 = time.perf_counter()
                x = draw(sampler, n_steps, init, t_start, cfg.n_samples, cfg.seed + 1)
                gen_s = time.perf_counter() - c0
                row = {
                    "dataset": cfg.dataset,
                    "sampler": sampler,
                    "n_steps": n_steps,
                    "nfe": nfe(SAMPLERS[sampler], n_steps),
                    "init": init,
                    "t_start": float(t_start),
                    "t_start_rule": rule,
                    **scorer.full(x),
                    "fid_inception": None,
                    "n_samples": cfg.n_samples,
                    "n_ref": len(x_train),
                    "n_inception": None,
                    "entropy_bits_train": class_entropy_bits(ds.labels, n_classes),
                    "seed": cfg.seed + 1,
                    "generate_s": round(gen_s, 3),
                    "device": dev_name,
                    "torch_threads": torch.get_num_threads(),
                    "command": command,
                }
                rows.append(row)
                if rule in ("none", "theory"):
                    samples.append(
                        {"sampler": sampler, "n_steps": n_steps, "init": init, "t_start_rule": rule,
                         "hex": _hex(x[: cfg.n_grid])}
                    )  # fmt: skip
                if init == "gls" and rule == "theory" or init == "vanilla":
                    row["_x"] = x  # kept for the Inception cells, dropped before writing
                bar.update(1)
    # The sampler converged (DDIM with converged_steps): the model's own quality from each start at the same
    # seed, i.e. what is left when the step error is gone (how far a gain at few steps can go).
    converged = None
    if cfg.converged_steps:
        converged = {"sampler": "ddim", "n_steps": cfg.converged_steps, "n_samples": cfg.n_samples}
        for init, t_start in (("vanilla", 1.0), ("gls", t_theory), ("late", t_theory)):
            x = draw("ddim", cfg.converged_steps, init, t_start, cfg.n_samples, cfg.seed + 1)
            converged[init] = {"t_start": float(t_start), **scorer.full(x)}
            bar.update(1)
    bar.close()
    clock["table_s"] = time.perf_counter() - t0

    # 6. Inception FID for the headline cells (DDIM, inception_steps; vanilla and gls at the theory's t_start).
    t0 = time.perf_counter()
    inception = None
    if cfg.inception_n:
        # the reference and the floor: two disjoint random subsets of the training images
        sub = np.random.default_rng(cfg.seed + 2).permutation(len(x_train))
        n_inc = min(cfg.inception_n, len(x_train) // 2)
        cells = [r for r in rows if r["sampler"] == "ddim" and r["n_steps"] in cfg.inception_steps and "_x" in r]
        with tqdm(total=2 + len(cells), desc="inception features", dynamic_ncols=True) as ibar:
            ref = inception_features(x_train[sub[:n_inc]], ds.image_shape)
            ibar.update(1)
            other = inception_features(x_train[sub[n_inc : 2 * n_inc]], ds.image_shape)
            ibar.update(1)
            for r in cells:
                r["fid_inception"] = fid(inception_features(r["_x"][:n_inc], ds.image_shape), ref)
                r["n_inception"] = n_inc
                ibar.update(1)
        inception = {"n": n_inc, "n_ref": n_inc, "fid_floor": fid(other, ref)}
    clock["inception_s"] = time.perf_counter() - t0
    for r in rows:
        r.pop("_x", None)

    clock["total_s"] = time.perf_counter() - wall0
    summary = {
        "dataset": cfg.dataset,
        "n_train": len(x_train),
        "dim": int(x_train.shape[1]),
        "image_shape": list(ds.image_shape),
        "train_steps": int(stored["step"]),
        "classifier_accuracy": accuracy,
        "classifier_n_test": n_test,
        "entropy_bits_train": class_entropy_bits(ds.labels, n_classes),
        "entropy_bits_train_predicted": class_entropy_bits(train_pred, n_classes),
        "composition_train": np.round(class_composition(ds.labels, n_classes), 4).tolist(),
        "fid_floor": floor,
        "inception": inception,
        "converged": converged,
        **{k: finite(v) for k, v in pred.items()},
        "t_start_theory": t_theory,
        "theory_rule": f"t_start = t_c_predicted (breaking_time.predict, eta = {cfg.eta:g})",
        "paper_ddim_ratios": PAPER_DDIM_RATIOS,
        "paper_entropy_bits": PAPER_ENTROPY,
        "seconds": {k: round(v, 1) for k, v in clock.items()},
        "device": dev_name,
        "torch_threads": torch.get_num_threads(),
        "command": command,
    }
    curves = {
        "summary": summary,
        "config": dataclasses.asdict(cfg),
        "train_config": tcfg.to_dict(),
        "sweep": sweep,
        "converged_sweep": converged_sweep,
        "rows": rows,
        "samples": samples,
        "train_samples": _hex(x_train[: cfg.n_grid]),
    }
    write_json_atomic(
        Path(cfg.run_dir) / "late_start_config.json", {"late_start": curves["config"], "train": curves["train_config"]}
    )
    write_json_atomic(results / f"late_start_{cfg.dataset}.json", curves)
    for row in rows:
        upsert_row(results / "late_start.json", row, ROW_KEYS)
    from empirical.plots_late_start import plot_late_start

    plot_late_start(curves, results / "figures", cfg.dataset)
    return curves


# --- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """One typed option per ``Config`` field (``--n-samples``, ...) and ``--dry-run``."""
    return dataclass_parser(Config, "python -m empirical.late_start", __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg, train_cfg = pipeline_config(Config, args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"late_start": dataclasses.asdict(cfg), "train": train_cfg.to_dict()}, indent=1))
        return 0
    if cfg.threads:  # the ops are small: one thread is the fastest on a busy 2-core machine
        torch.set_num_threads(cfg.threads)
    curves = run(cfg, "python -m empirical.late_start " + shlex.join(argv))
    print(json.dumps(curves["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
