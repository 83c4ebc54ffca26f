r"""The configuration dataclasses, composed instead of copied: ``DataConfig`` (which images), ``ModelConfig`` (the
backbone) and ``TrainConfig`` (both, plus the optimiser); ``empirical.pipelines.config.PipelineConfig`` extends
the first two for the pipelines.

Each field is declared once; fields stay flat, so command lines (``--net unet --ch 16``), checkpoints'
``config`` dicts and the committed commands keep their form.

    >>> TrainConfig(net="unet", ch=16).net_kwargs()["ch"]
    16
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from empirical._util.cli import is_int, is_real
from empirical.data.datasets import DATASETS, Dataset, load_dataset, load_images, subset
from empirical.models.denoiser import T_MIN
from empirical.models.nets import NETS

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "net_kwargs", "DEVICES", "BF16"]

DEVICES = ("auto", "cpu", "cuda")
BF16 = ("auto", "on", "off")


def _check_int(name: str, value, lo: int, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if not (is_int(value) and value >= lo):
        raise ValueError(f"{name} must be {'None or ' if none_ok else ''}an int >= {lo}; got {value!r}")


def _check_choices(cfg) -> None:
    for f in dataclasses.fields(cfg):
        if "choices" in f.metadata and getattr(cfg, f.name) not in f.metadata["choices"]:
            raise ValueError(f"{f.name} must be one of {f.metadata['choices']}; got {getattr(cfg, f.name)!r}")


def _tuples(cfg, *names: str) -> None:
    for name in names:  # JSON and argparse give lists
        if isinstance(getattr(cfg, name), list):
            setattr(cfg, name, tuple(getattr(cfg, name)))


@dataclass
class DataConfig:
    """Which training images: ``empirical.data.datasets.load_dataset(dataset, n=n_train, classes=classes,
    seed=data_seed)``, or with ``data`` the images of that file (``load_images``), subset the same way."""

    dataset: str = field(default="digits", metadata={"help": "data set", "choices": DATASETS})
    n_train: int | None = field(default=None, metadata={"help": "number of training images (omit for all)"})
    classes: tuple[int, ...] | None = field(default=None, metadata={"help": "keep only these labels (omit for all)"})
    data_seed: int = field(default=0, metadata={"help": "seed of the n_train subset"})
    data: str | None = field(
        default=None,
        metadata={"help": "an .npy/.npz file of your images (n, H, W), uint8 or in [-1, 1], instead of --dataset"},
    )

    def __post_init__(self):
        self._check_data()

    def _check_data(self) -> None:
        _tuples(self, "classes")
        _check_choices(self)
        _check_int("n_train", self.n_train, 1, none_ok=True)
        if self.classes is not None:
            if not (isinstance(self.classes, tuple) and self.classes and all(is_int(c) for c in self.classes)):
                raise ValueError(f"classes must be None or a non-empty tuple of ints; got {self.classes!r}")
        _check_int("data_seed", self.data_seed, 0)
        if isinstance(self.data, os.PathLike):
            self.data = os.fspath(self.data)
        if self.data is not None and not (isinstance(self.data, str) and self.data.endswith((".npy", ".npz"))):
            raise ValueError(f"data must be None or the path of an .npy/.npz file; got {self.data!r}")

    def data_kwargs(self) -> dict:
        """The ``load_dataset`` arguments after the name."""
        return {"n": self.n_train, "classes": self.classes, "seed": self.data_seed}

    def load(self, split: str = "train") -> Dataset:
        """The selected images: the data file's (which has one split) or the built-in set's."""
        if self.data is None:
            return load_dataset(self.dataset, split=split, **self.data_kwargs())
        if split != "train":
            raise ValueError(f"data file {self.data} has one split, 'train'; got split={split!r}")
        return subset(load_images(self.data), **self.data_kwargs())

    @classmethod
    def of(cls, config: Mapping) -> DataConfig:
        """The training images named by a config dict (a checkpoint's stored one, a pipeline's fields); fields
        missing from an older checkpoint take their defaults (``_tuples`` makes a stored list of classes a tuple).

        >>> DataConfig.of({"dataset": "mnist", "classes": [0, 1], "lr": 1e-3})
        DataConfig(dataset='mnist', n_train=None, classes=(0, 1), data_seed=0, data=None)
        """
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})


@dataclass
class ModelConfig:
    """The backbone: ``build_net(net, image_shape, **net_kwargs())``.

    >>> ModelConfig(net="unet", ch=4, attn=False).net_kwargs()
    {'ch': 4, 'mult': (1, 2, 2), 'blocks': 2, 'attn': False}
    """

    net: str = field(default="mlp", metadata={"help": "backbone", "choices": NETS})
    width: int = field(default=256, metadata={"help": "mlp: hidden width"})
    depth: int = field(default=4, metadata={"help": "mlp: residual blocks"})
    ch: int = field(default=32, metadata={"help": "unet: base channels"})
    mult: tuple[int, ...] = field(default=(1, 2, 2), metadata={"help": "unet: channel multiplier per level"})
    blocks: int = field(default=2, metadata={"help": "unet: residual blocks per level"})
    attn: bool = field(default=True, metadata={"help": "unet: self-attention at the lowest resolution"})

    def __post_init__(self):
        self._check_model()

    def _check_model(self) -> None:
        _tuples(self, "mult")
        _check_choices(self)
        for name in ("width", "depth", "ch", "blocks"):
            _check_int(name, getattr(self, name), 1)
        if not (isinstance(self.mult, tuple) and self.mult and all(is_int(m) and m >= 1 for m in self.mult)):
            raise ValueError(f"mult must be a non-empty tuple of ints >= 1; got {self.mult!r}")
        if not isinstance(self.attn, bool):
            raise ValueError(f"attn must be True or False; got {self.attn!r}")
        if self.net == "unet":  # GroupNorm(min(8, ch)) at every level, 4 attention heads at the lowest
            groups = min(8, self.ch)
            if any(self.ch * m % groups for m in self.mult) or self.ch * self.mult[-1] % 4:
                raise ValueError(
                    f"unet channels ch * mult = {[self.ch * m for m in self.mult]} must be multiples of "
                    f"min(8, ch) = {groups}, and the last one a multiple of 4; got ch={self.ch}, mult={self.mult}"
                )

    def model_fields(self) -> dict:
        """The ``ModelConfig`` fields of this config (of a subclass too)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)}

    def net_kwargs(self) -> dict:
        """The arguments of ``build_net`` for this config's backbone."""
        return net_kwargs(self.model_fields())


def net_kwargs(config: Mapping) -> dict:
    """``build_net``'s arguments from a flat config dict (a checkpoint's: one written before ``attn`` existed
    had attention, the UNet's default)."""
    if config["net"] == "mlp":
        return {"width": config["width"], "depth": config["depth"]}
    return {
        "ch": config["ch"],
        "mult": tuple(config["mult"]),
        "blocks": config["blocks"],
        "attn": config.get("attn", True),
    }


@dataclass
class TrainConfig(ModelConfig, DataConfig):
    """Everything a training run depends on; the defaults train the 8x8 digits on two CPU cores in minutes.

    Every field is checked on construction:

    >>> TrainConfig(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an int >= 1; got 0
    >>> TrainConfig(net="unet", ch=4).net_kwargs()
    {'ch': 4, 'mult': (1, 2, 2), 'blocks': 2, 'attn': True}
    """

    steps: int = field(default=20000, metadata={"help": "optimizer steps in total"})
    batch_size: int = field(default=128, metadata={"help": "global batch size (split over ranks)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate after warm-up"})
    warmup: int = field(default=500, metadata={"help": "steps of linear learning-rate warm-up"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the weights, in [0, 1)"})
    grad_clip: float = field(default=1.0, metadata={"help": "maximal gradient norm"})
    seed: int = field(default=0, metadata={"help": "seed of the initial weights and of every step's draws"})
    ckpt_every: int = field(default=1000, metadata={"help": "steps between checkpoints"})
    snapshot_every: int = field(
        default=0, metadata={"help": "steps between kept EMA snapshots out/snapshots/step<N>.pt (0: none)"}
    )
    t_train: tuple[float, ...] = field(
        default=(T_MIN, 1.0), metadata={"help": "training times t ~ U(lo, hi), T_MIN <= lo < hi <= T = 1"}
    )
    out: str | None = field(default=None, metadata={"help": "output directory (omit for runs/<dataset>-<net>)"})
    device: str = field(default="auto", metadata={"help": "auto: cuda if available", "choices": DEVICES})
    bf16: str = field(default="auto", metadata={"help": "bf16 autocast (auto: on cuda)", "choices": BF16})

    def __post_init__(self):
        if isinstance(self.out, os.PathLike):
            self.out = os.fspath(self.out)
        self._check_data()
        self._check_model()
        _tuples(self, "t_train")
        lo_hi = self.t_train
        if not (len(lo_hi) == 2 and all(is_real(v) for v in lo_hi) and T_MIN <= lo_hi[0] < lo_hi[1] <= 1.0):
            raise ValueError(f"t_train must be two numbers lo < hi in [T_MIN={T_MIN}, T=1]; got {self.t_train!r}")
        for name in ("seed", "warmup", "snapshot_every"):
            _check_int(name, getattr(self, name), 0)
        for name in ("steps", "batch_size", "ckpt_every"):
            _check_int(name, getattr(self, name), 1)
        if self.snapshot_every % self.ckpt_every:  # snapshots are taken from the checkpoint just written
            raise ValueError(
                f"snapshot_every must be 0 or a multiple of ckpt_every={self.ckpt_every}; got {self.snapshot_every}"
            )
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if not (is_real(value) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        if not (is_real(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must be a number in [0, 1); got {self.ema_decay!r}")
        if self.out is not None and not (isinstance(self.out, str) and self.out):
            raise ValueError(f"out must be None or a non-empty path; got {self.out!r}")

    def resolved(self) -> TrainConfig:
        """A copy with ``device``, ``bf16`` and ``out`` made explicit (auto -> what this machine has)."""
        device = resolve_device(self.device)
        bf16 = self.bf16 if self.bf16 != "auto" else ("on" if device == "cuda" else "off")
        out = self.out if self.out is not None else f"runs/{self.dataset}-{self.net}"
        return dataclasses.replace(self, device=device, bf16=bf16, out=out)

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists), the form stored in checkpoints and config.json."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" if torch sees one, else "cpu"; "cuda" without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch.cuda.is_available() is False; use device='cpu' or 'auto'")
    return device
