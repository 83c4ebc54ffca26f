r"""Checkpoint files of ``empirical.training.train``: written atomically with a digest, verified on load, and the resume
that falls back to the previous checkpoint when the latest is damaged.

A checkpoint is a dict of plain tensors and numbers (loadable with ``torch.load(..., weights_only=True)``) with a
``sha256`` entry, the digest of everything else (``state_digest``: every tensor's dtype, shape and bytes, every
key and number). torch.load does not check the zip CRCs, so flipped bytes would otherwise load as other weights.
A file that is truncated, corrupt, fails its digest or holds NaN/inf weights raises ``CheckpointError`` naming
it; one written before digests existed still loads, with a warning. Saving first renames the current file to
``checkpoint.prev.pt`` (``PREVIOUS``), the fall-back of ``resume_from``. A full disk during a save raises
``OSError(ENOSPC)`` naming the file and its disk (``empirical._util.files.atomic_write``).

>>> import torch
>>> state = {"step": 3, "config": {}, "model": {"w": torch.zeros(2)}}
>>> state_digest(state) == state_digest({**state, "sha256": "anything"})  # the digest leaves itself out
True
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from empirical._util.files import atomic_write

__all__ = [
    "CHECKPOINT",
    "PREVIOUS",
    "CheckpointError",
    "state_digest",
    "load_checkpoint",
    "save_checkpoint",
    "resume_from",
    "atomic_write",
    "non_finite",
]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before the last one: the fall-back if the last is damaged


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: unreadable (truncated, corrupt), a digest mismatch, NaN weights."""


def _digest_into(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _digest_into(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _digest_into(h, v)
    else:  # numbers, strings, None: repr is exact (floats round-trip)
        h.update(f"V{obj!r}".encode())


def state_digest(state: Mapping) -> str:
    """sha256 of a checkpoint's contents (every tensor's dtype, shape and bytes, every key and number), the
    ``sha256`` entry itself left out; the same on every machine for the same contents."""
    h = hashlib.sha256()
    _digest_into(h, {k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def non_finite(state: Mapping) -> list[str]:
    """The keys of a state dict whose floating-point tensors hold NaN or inf."""
    return [
        k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()
    ]


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint or export, read with ``weights_only=True`` and verified: ``CheckpointError`` (naming the file)
    if it cannot be read, fails its digest or holds NaN/inf weights; a warning if it carries no digest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, pickle errors, EOFError, ... for damaged files
        raise CheckpointError(f"{path} cannot be read as a checkpoint (truncated or corrupt): {err}") from err
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of empirical.training.train (no config in it)")
    stored = ckpt.pop("sha256", None)
    if stored is None:
        warnings.warn(
            f"{path} carries no checksum (written before checksums); its integrity is not verified", stacklevel=2
        )
    elif (actual := state_digest(ckpt)) != stored:
        raise CheckpointError(
            f"{path} is corrupt: its contents hash to {actual[:16]}..., not the recorded {stored[:16]}..."
        )
    for key in ("model", "ema"):
        if key in ckpt and (bad := non_finite(ckpt[key])):
            raise CheckpointError(f"{path} holds NaN or inf {key} weights in {', '.join(bad[:3])}")
    return ckpt


def save_checkpoint(path: Path, state: Mapping, keep_previous: bool) -> None:
    """Write ``state`` with its digest, atomically; the current file first becomes ``PREVIOUS`` (a rename)."""
    state = _to_cpu(dict(state))
    state["sha256"] = state_digest(state)
    if keep_previous and path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    atomic_write(path, lambda f: torch.save(state, f))


def resume_from(out: Path) -> tuple[Path, dict, bool] | None:
    """(path, checkpoint, the latest file is sound) of the newest usable checkpoint in ``out``, or None if there
    is none. A damaged latest checkpoint falls back to the previous one with a warning; both damaged: an error."""
    errors = []
    for path in (out / CHECKPOINT, out / PREVIOUS):
        if not path.exists():
            continue
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if path.name == PREVIOUS:
            why = errors[0] if errors else f"{out / CHECKPOINT} is missing (a kill between rename and write)"
            warnings.warn(f"resuming from the previous checkpoint {path} (step {ckpt['step']}): {why}", stacklevel=3)
        return path, ckpt, not errors
    if errors:
        raise CheckpointError(f"no usable checkpoint in {out}: " + "; ".join(errors) + " (move them away to restart)")
    return None


def _to_cpu(obj):
    """A copy of a nest of dicts/lists holding tensors, with every tensor on the CPU (device-free checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
