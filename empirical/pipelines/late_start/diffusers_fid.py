r"""Our samplers against diffusers' schedulers at the level of FID: same model, same timesteps, same x_T.

    python -m empirical diffusers-fid                  # the digits model: ~30 s on one CPU thread
    python -m empirical diffusers-fid --dry-run        # print the resolved config

For each sampler of ``empirical.interop.diffusers_schedulers`` (ddim, pndm, dpm++2m, dpm++3m, unipc), each n in
``n_steps`` and each seed of the initial noise, x_T ~ N(0, I) (float64, ``torch.Generator().manual_seed(seed)``) is
sampled twice: by diffusers' scheduler (``sample_diffusers``) and by our solver on the scheduler's timesteps
(``sample_ours``). Both sets are scored by the project's FID (the classifier's features, against the whole
training set; ``empirical.pipelines.late_start.stages.Scorer``, the late-start table's scorer, with the same classifier
``empirical.pipelines.stages.classifier(ds, classifier_steps, seed)``). A row per (sampler, n) holds, per seed, FID ours
and diffusers' and their difference, the seed range max - min of each (the sampling noise at this N), the
largest |sample difference|, and the denoiser calls each made (counted with a hook on the denoiser: PNDM's
Runge-Kutta warm-up costs n + 9 evaluations, not n). The rows go to ``docs/results/diffusers_fid.json``
(``upsert_row`` on dataset, model, sampler, n_steps), each with the command that produced it.

The training images are those of the checkpoint's own config (dataset, n_train, classes, data_seed), so the
reference statistics are the model's training set.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from empirical._util.cli import command_line, config_from_args, dataclass_parser, is_int
from empirical._util.files import check_output_file
from empirical._util.results import upsert_row
from empirical.interop.diffusers_schedulers import DIFFUSERS_SAMPLERS, make_scheduler, sample_diffusers, sample_ours
from empirical.sampling.grids import t_of_timestep
from theory import VPLinear
from theory.paths import repo_root

__all__ = ["Config", "counting", "draw_pair", "compare", "run", "main"]

ROW_KEYS = ("dataset", "model", "sampler", "n_steps")


@dataclasses.dataclass
class Config:
    """What one run depends on; every field is checked on construction (each (sampler, n) against the bridge)."""

    model: str | None = dataclasses.field(
        default=None,
        metadata={"help": "checkpoint (required; the project's digits model: docs/results/digits_denoiser.pt)"},
    )
    samplers: tuple[str, ...] = dataclasses.field(default=tuple(DIFFUSERS_SAMPLERS), metadata={"help": "samplers"})
    n_steps: tuple[int, ...] = dataclasses.field(default=(5, 10), metadata={"help": "inference steps n"})
    seeds: tuple[int, ...] = dataclasses.field(default=(0, 1), metadata={"help": "seeds of x_T (>= 2)"})
    n_samples: int = dataclasses.field(default=2000, metadata={"help": "samples per cell and seed"})
    train_timesteps: int = dataclasses.field(default=1000, metadata={"help": "diffusers' num_train_timesteps"})
    classifier_steps: int = dataclasses.field(default=1000, metadata={"help": "classifier training steps"})
    seed: int = dataclasses.field(default=0, metadata={"help": "classifier seed (the late-start table's)"})
    out: str = dataclasses.field(default="results/diffusers_fid.json", metadata={"help": "rows file"})
    threads: int = dataclasses.field(default=1, metadata={"help": "torch threads (0: torch's default)"})

    def __post_init__(self):
        for name in ("samplers", "n_steps", "seeds"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        if self.model is None:
            raise ValueError("model: pass the checkpoint to sample (the project's: docs/results/digits_denoiser.pt)")
        if not Path(self.model).is_file():
            raise ValueError(f"model must be a checkpoint file of empirical.training.train; {self.model} is not a file")
        if Path(self.out).is_dir():
            raise ValueError(f"out must be a JSON file path; {self.out} is a directory")
        bad = [s for s in self.samplers if s not in DIFFUSERS_SAMPLERS]
        if not self.samplers or bad:
            allowed = tuple(DIFFUSERS_SAMPLERS)
            raise ValueError(f"samplers must be a non-empty subset of {allowed}; got {self.samplers!r}")
        if not self.seeds or not all(is_int(s) and s >= 0 for s in self.seeds) or len(set(self.seeds)) < 2:
            raise ValueError(f"seeds must hold >= 2 distinct ints >= 0 (the sampling noise); got {self.seeds!r}")
        if not self.n_steps or not all(is_int(n) and n >= 1 for n in self.n_steps):
            raise ValueError(f"n_steps must be a non-empty tuple of ints >= 1; got {self.n_steps!r}")
        for name, lo in (("n_samples", 10), ("train_timesteps", 2), ("classifier_steps", 1), ("seed", 0)):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= lo):
                raise ValueError(f"{name} must be an int >= {lo}; got {getattr(self, name)!r}")
        if not (is_int(self.threads) and self.threads >= 0):
            raise ValueError(f"threads must be an int >= 0 (0: torch's default); got {self.threads!r}")
        for s in self.samplers:  # the bridge's constraints (PNDM: n >= 4, train_timesteps // n even)
            for n in self.n_steps:
                try:
                    make_scheduler(s, n, VPLinear(), self.train_timesteps)
                except ValueError as err:
                    raise ValueError(f"samplers and n_steps: {s} cannot run n_steps={n}: {err}") from None


@contextlib.contextmanager
def counting(den: torch.nn.Module):
    """Count the calls of ``den`` (one per batch evaluation of the denoiser) inside the block: yields a list
    whose first item is the count so far."""
    calls = [0]
    handle = den.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def draw_pair(den, sampler: str, n_steps: int, n: int, seed: int, train_timesteps: int = 1000) -> dict:
    """Both samples (n, d) float64 numpy from the same x_T (seed): {"ours", "diffusers", "nfe_ours",
    "nfe_diffusers", "max_abs_sample_diff"}."""
    x_T = torch.randn(n, den.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with counting(den) as ours_calls:
        ours = sample_ours(den, sampler, n_steps, x_T.clone(), train_timesteps)
    with counting(den) as their_calls:
        theirs = sample_diffusers(den, sampler, n_steps, x_T.clone(), train_timesteps)
    return {
        "ours": ours.numpy(),
        "diffusers": theirs.numpy(),
        "nfe_ours": ours_calls[0],
        "nfe_diffusers": their_calls[0],
        "max_abs_sample_diff": float((ours - theirs).abs().max()),
    }


def compare(
    den, score: Callable[[np.ndarray], float], sampler: str, n_steps: int, seeds: Sequence[int], n: int,
    train_timesteps: int = 1000,
) -> dict:  # fmt: skip
    """FID (``score``: samples (n, d) -> float) of ours and diffusers' per seed, the differences, the seed
    range max - min of each (the sampling noise), the largest |difference| over the seeds, its ratio to the
    smaller seed range, the counted NFE and the largest |sample difference|; the scheduler's timesteps and the
    forward time t_first of the first (x_T ~ N(0, I) is put there: below T for the "leading" spacing)."""
    fo, fd, nfe_o, nfe_d, dx = [], [], set(), set(), 0.0
    for seed in seeds:
        p = draw_pair(den, sampler, n_steps, n, seed, train_timesteps)
        fo.append(score(p["ours"]))
        fd.append(score(p["diffusers"]))
        nfe_o.add(p["nfe_ours"])
        nfe_d.add(p["nfe_diffusers"])
        dx = max(dx, p["max_abs_sample_diff"])
    if len(nfe_o) != 1 or len(nfe_d) != 1:  # a fixed-step sampler: the count cannot depend on the seed
        raise RuntimeError(f"{sampler} n={n_steps}: denoiser calls differ between seeds ({nfe_o}, {nfe_d})")
    diff = [a - b for a, b in zip(fo, fd, strict=True)]
    ks = make_scheduler(sampler, n_steps, den.schedule, train_timesteps).timesteps.tolist()
    noise = min(max(fo) - min(fo), max(fd) - min(fd))
    max_diff = max(abs(d) for d in diff)
    return {
        "sampler": sampler,
        "scheduler": DIFFUSERS_SAMPLERS[sampler][0],
        "n_steps": n_steps,
        "timesteps": ks,  # diffusers' timesteps, one per denoiser call (its "leading" spacing starts below T)
        "t_first": float(t_of_timestep(ks[0], train_timesteps, den.schedule.T)),
        "nfe_ours": nfe_o.pop(),
        "nfe_diffusers": nfe_d.pop(),
        "seeds": list(seeds),
        "n_samples": n,
        "fid_ours": fo,
        "fid_diffusers": fd,
        "fid_diff": diff,
        "seed_range_ours": max(fo) - min(fo),
        "seed_range_diffusers": max(fd) - min(fd),
        "max_abs_fid_diff": max_diff,
        "diff_over_noise": max_diff / noise if noise > 0 else None,
        "max_abs_sample_diff": dx,
    }


def _model_name(path: str) -> str:
    """The checkpoint's path relative to the repository when inside it (rows do not carry a machine's folders)."""
    p = Path(path).resolve()
    return os.fspath(p.relative_to(repo_root())) if p.is_relative_to(repo_root()) else os.fspath(p)


def run(cfg: Config, command: str) -> list[dict]:
    """Every (sampler, n) of the config; each row is upserted into ``cfg.out`` as soon as it is measured."""
    import diffusers

    from empirical._util.checkpoints import load_checkpoint
    from empirical.data.datasets import load_dataset
    from empirical.pipelines import stages
    from empirical.pipelines.late_start.stages import Scorer, floor
    from empirical.training.config import DataConfig
    from empirical.training.train import load_denoiser

    data = DataConfig.of(load_checkpoint(cfg.model)["config"])  # the model's own training images
    ds = load_dataset(data.dataset, **data.data_kwargs())
    den = load_denoiser(cfg.model)
    clf, accuracy, _ = stages.classifier(ds, cfg.classifier_steps, cfg.seed)
    n_classes = int(ds.labels.max()) + 1
    scorer = Scorer(clf, ds.x, n_classes, kid_subsets=1, seed=cfg.seed)
    shared = {
        "dataset": data.dataset,
        "model": _model_name(cfg.model),
        "n_ref": len(ds.x),
        "classifier_accuracy": accuracy,
        "fid_floor": floor(clf, ds.x, 1, cfg.seed)["fid"],
        "diffusers_version": diffusers.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": stages.device_name(next(den.parameters()).device),
        "command": command,
    }
    rows = []
    cells = [(s, n) for s in cfg.samplers for n in cfg.n_steps]
    for sampler, n in tqdm(cells, desc="ours vs diffusers", dynamic_ncols=True):
        t0 = time.perf_counter()
        cell = compare(den, scorer.fid, sampler, n, cfg.seeds, cfg.n_samples, cfg.train_timesteps)
        row = {**shared, **cell, "seconds": round(time.perf_counter() - t0, 2)}
        upsert_row(cfg.out, row, ROW_KEYS)
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    return dataclass_parser(Config, "python -m empirical diffusers-fid", __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(Config, args)
        check_output_file(cfg.out, "out", holds="list")  # before any sampling: writable, rows mergeable
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(cfg), indent=1))
        return 0
    if cfg.threads:  # the ops are small: one thread is the fastest on a busy machine
        torch.set_num_threads(cfg.threads)
    rows = run(cfg, command_line("diffusers-fid", argv))
    for r in rows:
        fo, fd = (", ".join(f"{v:.3f}" for v in r[k]) for k in ("fid_ours", "fid_diffusers"))
        print(f"{r['sampler']:8s} n={r['n_steps']:<3d} nfe={r['nfe_ours']:<3d} ours [{fo}]  diffusers [{fd}]  "
              f"|diff| {r['max_abs_fid_diff']:.2e}  seed range {r['seed_range_ours']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
