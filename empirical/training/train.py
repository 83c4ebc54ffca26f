r"""Train eps-prediction denoisers on the offline image data sets: one CPU, one GPU, or many (torchrun + DDP).

The model is ``Denoiser(build_net(...), VPLinear())`` trained by denoising score matching
(``Denoiser.loss``) with Adam, a linear learning-rate warm-up, gradient-norm clipping and an EMA of the
weights. Command line::

    python -m empirical train --dataset digits --steps 20000 --out runs/digits
    torchrun --nproc_per_node 8 -m empirical train --dataset fashion-mnist --net unet --out runs/fmnist
    python -m empirical train --dry-run      # print the resolved config and exit

Files in ``out``: ``config.json`` (the resolved config, world size, torch version), ``checkpoint.pt``
(model, EMA, optimizer state, step, config, loss history: plain tensors and numbers, loadable with
``torch.load(..., weights_only=True)``) and ``checkpoint.prev.pt``, the checkpoint before it, all written
atomically.

Integrity (``empirical._util.checkpoints``): every checkpoint carries a digest of its contents, checked on load; a
damaged file raises ``CheckpointError`` naming it, and a resume falls back to ``checkpoint.prev.pt``. A run whose
loss or weights become NaN or inf stops (``FloatingPointError``) without writing over the last checkpoint.

Reproducibility: step k on rank r draws its batch indices, t and eps from a CPU generator seeded by
(seed, k, r) (``step_generator``), so the checkpoint holds all the state there is, and a run killed and
resumed from its last checkpoint ends with the same weights, bit for bit, as one never interrupted (on
the CPU with a fixed thread count; GPU kernels need not be deterministic). Multi-node runs need ``out`` on
a file system that every node sees.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import sys
import warnings
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from empirical._util.checkpoints import (
    CHECKPOINT,
    PREVIOUS,
    atomic_write,
    load_checkpoint,
    non_finite,
    resume_from,
    save_checkpoint,
)
from empirical._util.cli import config_from_args as _config_from_args
from empirical._util.cli import dataclass_parser
from empirical._util.files import OutputInUse, locked, remove_stale_temporaries
from empirical._util.files import check_output_dir as check_out_dir
from empirical.data.datasets import load_dataset
from empirical.models.denoiser import Denoiser
from empirical.models.nets import build_net
from empirical.training.config import DataConfig, TrainConfig, net_kwargs
from theory.schedules import VPLinear

__all__ = [
    "TrainConfig",
    "train",
    "load_denoiser",
    "training_images",
    "export_weights",
    "step_generator",
    "build_parser",
    "config_from_args",
    "main",
]

CONFIG = "config.json"
# Fields that may change when a run resumes: none of them changes the arithmetic of a step.
_RESUMABLE = ("steps", "ckpt_every", "snapshot_every", "out")


def _make_net(config: Mapping, image_shape, seed: int) -> nn.Module:
    """The backbone with initial weights drawn from ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_net(config["net"], tuple(image_shape), **net_kwargs(config))


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator of optimizer step ``step`` on rank ``rank``: all the randomness of that step.

    SeedSequence mixes the three integers, so neighbouring steps and ranks get unrelated streams.

    >>> a, b = step_generator(0, 7, 1), step_generator(0, 7, 1)
    >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    True
    """
    hi, lo = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(hi) << 32 | int(lo))


def _lr(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up from lr / warmup to lr over the first ``warmup`` steps, then constant, so ``steps``
    may grow on resume without changing the steps already taken."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


def _ema_decay(decay: float, step: int) -> float:
    """EMA decay ramped up as (1 + k) / (10 + k), so the early average does not linger on the initial weights."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def _ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), net.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), net.buffers(), strict=True):
        e.copy_(b)


def _remove_stale_temporaries(out: Path) -> None:
    """Remove the temporary files of writes cut short by a kill (under the run folder's lock: no writer is live)."""
    for name in (CHECKPOINT, PREVIOUS, CONFIG):
        remove_stale_temporaries(out / name)
    for tmp in (out / "snapshots").glob(".step*.pt.*.tmp"):  # a snapshot's, whose file may not exist yet
        remove_stale_temporaries(tmp.with_name(tmp.name[1:].split(".pt.")[0] + ".pt"))


def _check_resumable(stored: Mapping, cfg: TrainConfig, path: Path) -> None:
    new = cfg.to_dict()
    # A field missing from an older checkpoint had its default then (attn: the UNet always had attention).
    default = TrainConfig().to_dict()
    differ = [k for k in new if k not in _RESUMABLE and stored.get(k, default[k]) != new[k]]
    if differ:
        diffs = ", ".join(f"{k}={stored.get(k)!r} there but {new[k]!r} now" for k in differ)
        raise ValueError(
            f"cannot resume {path}: its config differs in {diffs}; only {', '.join(_RESUMABLE)} may change on "
            "resume (choose another out directory to start a new run)"
        )


def _distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device) from torchrun's WORLD_SIZE / RANK / LOCAL_RANK; joins the process
    group (nccl on cuda, gloo on cpu) when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if device == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return rank, world, dev


def _check_in_sync(modules: list[nn.Module], world: int, step: int) -> None:
    """Raise on every rank if the ranks' weights differ (DDP keeps them equal; a broken all-reduce would not)."""
    if world == 1:
        return
    h = hashlib.sha256()
    for module in modules:
        for p in module.state_dict().values():
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    digests = [None] * world
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks out of sync after step {step}: weight digests {digests}")


def _mean_over_ranks(losses: list[torch.Tensor], world: int) -> list[float]:
    """Each step's loss averaged over the ranks: the loss of the global batch (one collective per call)."""
    buf = torch.stack(losses).float()
    if world > 1:
        dist.all_reduce(buf)  # SUM: gloo has no AVG
        buf /= world
    return buf.double().cpu().tolist()


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) the run described by ``cfg``; return the path of the final checkpoint.

    Under torchrun every process calls this; each draws ``batch_size // world_size`` examples a step with
    its own ``step_generator(seed, step, rank)``, and only rank 0 writes files.
    """
    cfg = cfg.resolved()
    rank, world, device = _distributed(cfg.device)
    try:
        with _run_lock(cfg.out, rank):
            return _train(cfg, rank, world, device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run_lock(out: str, rank: int):
    """Rank 0 holds the run folder's lock for the whole run: a second run on the same ``out`` would rotate and
    overwrite the same checkpoints, so it is refused (``OutputInUse``) before it loads anything."""
    if rank != 0:
        return contextlib.nullcontext()
    return locked(check_out_dir(out), wait=False, name="out")


def _training_data(cfg: TrainConfig):
    """The training set, checked against the network (a U-Net halves the image size at every level)."""
    data = cfg.load()
    if cfg.net == "unet" and any(s % 2 ** (len(cfg.mult) - 1) for s in data.image_shape):
        raise ValueError(
            f"unet with {len(cfg.mult)} levels needs an image size divisible by {2 ** (len(cfg.mult) - 1)}; "
            f"{cfg.data or cfg.dataset} is {data.image_shape} (use fewer mult entries)"
        )
    return data


def _resume(out: Path, cfg: TrainConfig, modules, rank: int, world: int) -> tuple[int, list, bool]:
    """Load the newest readable checkpoint of ``out`` into (net, ema, optimizer); returns (step, losses,
    keep_previous): a damaged latest file must never be rotated over the good previous one."""
    net, ema, opt = modules
    step, losses = 0, []
    resume = resume_from(out)
    keep_previous = resume is None or resume[2]
    if resume is not None:
        # On the CPU: load_state_dict moves the tensors to the parameters' device, and Adam wants its step counts
        # on the CPU.
        resumed_path, ckpt, _ = resume
        _check_resumable(ckpt["config"], cfg, resumed_path)
        net.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        step, losses = ckpt["step"], ckpt["loss"].tolist()
        if step > cfg.steps:
            raise ValueError(f"{resumed_path} is at step {step}, beyond steps={cfg.steps}; steps must be >= {step}")
        if ckpt["world_size"] != world and rank == 0:
            warnings.warn(
                f"resuming a run of world size {ckpt['world_size']} with {world} processes: each step now draws "
                "other examples, so the result will differ from an uninterrupted run",
                stacklevel=3,
            )
    if world > 1:  # every rank must have read the same checkpoint (a shared file system)
        steps_seen = [None] * world
        dist.all_gather_object(steps_seen, step)
        if len(set(steps_seen)) != 1:
            raise RuntimeError(f"ranks resumed from different steps {steps_seen}: out must be on a shared file system")
    return step, losses, keep_previous


def _train(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> Path:
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be a multiple of the world size {world}")
    out = Path(cfg.out)  # checked and locked by train()
    ckpt_path = out / CHECKPOINT
    data = _training_data(cfg)
    x = torch.tensor(data.x, dtype=torch.float32, device=device)

    net = _make_net(cfg.to_dict(), data.image_shape, cfg.seed).to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    step, losses, keep_previous = _resume(out, cfg, (net, ema, opt), rank, world)

    info = {"world_size": world, "torch": str(torch.__version__), "image_shape": list(data.image_shape)}
    if rank == 0:
        _remove_stale_temporaries(out)
        text = json.dumps({**cfg.to_dict(), **info, "n_images": len(x)}, indent=2) + "\n"
        atomic_write(out / CONFIG, lambda f: f.write(text.encode()))

    def save() -> None:
        nonlocal keep_previous
        _check_finite(step, losses, net, ema, ckpt_path)
        _check_in_sync([net, ema], world, step)  # a collective: also the barrier before the write
        if rank == 0:
            state = {
                "step": step,
                "config": cfg.to_dict(),
                **info,
                "model": net.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "loss": torch.tensor(losses, dtype=torch.float64),
            }
            save_checkpoint(ckpt_path, state, keep_previous)
            keep_previous = True
            if cfg.snapshot_every and step % cfg.snapshot_every == 0:  # for the breaking time against steps
                (out / "snapshots").mkdir(exist_ok=True)
                export_weights(ckpt_path, out / "snapshots" / f"step{step}.pt")
        if world > 1:
            dist.barrier()

    # DDP wraps the backbone, so Denoiser.loss goes through DDP's forward and the gradients are all-reduced.
    if world > 1:
        backbone = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        backbone = net
    den = Denoiser(backbone, VPLinear())
    per_rank = cfg.batch_size // world
    pending, recent = [], deque(maxlen=100)
    bar = tqdm(total=cfg.steps, initial=step, disable=rank != 0, desc=f"train {cfg.dataset}", dynamic_ncols=True)
    while step < cfg.steps:
        gen = step_generator(cfg.seed, step, rank)
        idx = torch.randint(len(x), (per_rank,), generator=gen).to(device)
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 == "on"):
            loss = den.loss(x[idx], gen, cfg.t_train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        _ema_update(ema, net, _ema_decay(cfg.ema_decay, step))
        pending.append(loss.detach())
        recent.append(pending[-1])
        step += 1
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            losses += _mean_over_ranks(pending, world)
            pending = []
            save()
        bar.update(1)
        if step % 50 == 0 or step == cfg.steps:  # .item() waits for the GPU: not every step
            mean = torch.stack(list(recent)).mean().item()
            if not math.isfinite(mean):
                _check_finite(step, pending, net, ema, ckpt_path)
            bar.set_postfix(loss=f"{mean:.4f}")
    bar.close()
    return ckpt_path


def _check_finite(step: int, losses, net: nn.Module, ema: nn.Module, ckpt_path: Path) -> None:
    """Stop a diverged run before it writes: FloatingPointError if a loss or a weight is NaN or inf."""
    bad_loss = [float(v) for v in losses if not math.isfinite(float(v))]
    bad = non_finite(net.state_dict()) + non_finite(ema.state_dict())
    if bad_loss or bad:
        what = f"loss {bad_loss[0]}" if bad_loss else f"non-finite weights in {', '.join(bad[:3])}"
        raise FloatingPointError(
            f"training diverged by step {step} ({what}); stopped without writing, so {ckpt_path} keeps the last "
            "good state (lower lr or grad_clip, then resume)"
        )


def load_denoiser(path: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> Denoiser:
    """The trained ``Denoiser`` of a checkpoint (or of an ``export_weights`` file), in eval mode on ``device``.

    ``ema`` picks the EMA weights (the default) or the raw ones. Parameters do not require grad, so
    autograd with respect to x (scores, Jacobians) accumulates nothing in the model.
    """
    ckpt = load_checkpoint(path)
    key = "ema" if ema else "model"
    if key not in ckpt:
        raise ValueError(f"{path} holds no {key!r} weights (an export holds the EMA only); use ema=True")
    net = _make_net(ckpt["config"], ckpt["image_shape"], seed=0)
    net.load_state_dict(ckpt[key])
    return Denoiser(net, VPLinear()).to(device).eval().requires_grad_(False)


def training_images(path: str | os.PathLike, dataset: str, split: str = "train") -> np.ndarray:
    """The images (n, d) of the checkpoint's stored data selection (``DataConfig.of``), refused unless it was
    trained on ``dataset``. ``split="test"``: the test images of the same classes (all of them)."""
    data = DataConfig.of(load_checkpoint(path)["config"])
    if data.dataset != dataset:
        raise ValueError(f"dataset is {dataset!r}; model {path} was trained on {data.dataset!r}")
    if split == "train":
        return data.load().x
    return load_dataset(dataset, split=split, classes=data.classes).x


def export_weights(path_in: str | os.PathLike, path_out: str | os.PathLike) -> Path:
    """Write the EMA weights (float32) with the config of checkpoint ``path_in`` to ``path_out``, atomically:
    the small file to ship (no optimizer state, no raw weights), with its own digest. ``load_denoiser`` reads it."""
    ckpt = load_checkpoint(path_in)
    small = {
        "step": ckpt["step"],
        "config": ckpt["config"],
        "image_shape": ckpt["image_shape"],
        "torch": ckpt["torch"],
        "ema": {k: v.float() if v.is_floating_point() else v for k, v in ckpt["ema"].items()},
    }
    path_out = Path(path_out)
    save_checkpoint(path_out, small, keep_previous=False)
    return path_out


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one typed option per ``TrainConfig`` field (``--batch-size``, ...) and ``--dry-run``;
    pass ``parser`` to add them to another command's parser."""
    description = "Train an eps-prediction denoiser (torchrun for several processes)."
    return dataclass_parser(TrainConfig, "python -m empirical train", description, parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of parsed ``build_parser`` options."""
    return _config_from_args(TrainConfig, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        out = Path(cfg.resolved().out)
        if out.exists() and not out.is_dir():  # checked before any work, also for --dry-run
            raise ValueError(f"out must be a directory; {out} is an existing file")
        if args.dry_run:
            resolved = cfg.resolved().to_dict()
            world = int(os.environ.get("WORLD_SIZE", "1"))
            print(json.dumps({**resolved, "world_size": world, "torch": str(torch.__version__)}, indent=2))
            return 0
        if int(os.environ.get("RANK", "0")) == 0:
            check_out_dir(out)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        path = train(cfg)
    except OutputInUse as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
