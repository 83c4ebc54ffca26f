"""What the pipelines share: ``PipelineConfig`` (the data, the denoiser to train or load, the prediction, the
folders) and ``pipeline_config``, which checks a command's paths before any work. ``PipelineConfig`` changes
three defaults of the trainer's (the pipelines' shared digits model: MLP depth 3, 12,000 steps, batch 256).

    >>> PipelineConfig().train_config().depth, TrainConfig().depth
    (3, 4)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from empirical._util.cli import config_from_args
from empirical.training.config import DEVICES, DataConfig, ModelConfig, TrainConfig, _check_int

__all__ = ["PipelineConfig", "pipeline_config"]


@dataclass
class PipelineConfig(ModelConfig, DataConfig):
    """What the pipelines share: the data, the denoiser (trained with ``train_config()``; or ``model``, a checkpoint
    or exported-weights file; or ``diffusers``, a diffusers model folder: the training fields are then unused), the
    exact prediction (computed, or read from ``prediction`` = FILE:KEY of a benchmark results file), the seed, and
    the folders. ``run_dir`` defaults to runs/breaking-<dataset>, one model for both pipelines.

    >>> PipelineConfig(model="m.pt", diffusers="folder")
    Traceback (most recent call last):
    ...
    ValueError: model and diffusers are exclusive (one denoiser to measure); got model='m.pt', diffusers='folder'
    """

    depth: int = field(default=3, metadata={"help": "mlp: residual blocks"})
    steps: int = field(default=12000, metadata={"help": "optimizer steps of the denoiser"})
    batch_size: int = field(default=256, metadata={"help": "batch size of the denoiser's training"})
    seed: int = field(default=0, metadata={"help": "seed of the training run, the classifier and the draws"})
    run_dir: str | None = field(default=None, metadata={"help": "training run folder (omit: runs/breaking-<dataset>)"})
    results: str | None = field(
        default=None, metadata={"help": "results folder (omit: results/ under the current directory)"}
    )
    device: str = field(default="auto", metadata={"help": "auto: cuda if available", "choices": DEVICES})
    diffusers: str | None = field(
        default=None, metadata={"help": "a diffusers UNet2DModel folder to measure instead of training"}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "a checkpoint or exported-weights file (empirical.training.train) instead of training"},
    )
    prediction: str | None = field(
        default=None,
        metadata={"help": "FILE:KEY of a benchmarks/critical_time.py results file: the exact t_c read, not computed"},
    )

    def __post_init__(self):
        self._check_data()
        self._check_model()
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("seed", self.seed, 0)
        for name in ("results", "run_dir", "diffusers", "model"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                setattr(self, name, value)
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"{name} must be a non-empty path or None; got {value!r}")
        if self.model is not None and self.diffusers is not None:
            raise ValueError(
                f"model and diffusers are exclusive (one denoiser to measure); got model={self.model!r}, "
                f"diffusers={self.diffusers!r}"
            )
        if self.prediction is not None:
            path, _, key = self.prediction.rpartition(":") if isinstance(self.prediction, str) else ("", "", "")
            if not (path and key):
                raise ValueError(
                    f"prediction must be FILE:KEY (benchmarks/results.json:fashion); got {self.prediction!r}"
                )
        if self.run_dir is None:
            self.run_dir = f"runs/breaking-{self.dataset if self.data is None else Path(self.data).stem}"

    def train_config(self) -> TrainConfig:
        """The denoiser's ``TrainConfig``: the same data and model fields, the pipeline's steps, batch and seed."""
        return TrainConfig(
            **self.model_fields(),
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(DataConfig)},
            steps=self.steps,
            batch_size=self.batch_size,
            seed=self.seed,
            out=self.run_dir,
            device=self.device,
        )


def pipeline_config(cls, args: argparse.Namespace):
    """(config, its TrainConfig) of a pipeline command, with its paths checked before any work: ``results`` and
    ``run_dir`` must not be existing files, ``model`` must be one, and ``prediction`` must name an entry of a
    results file. Raises ValueError naming the bad field."""
    from empirical.pipelines.stages import read_prediction  # here: stages imports this module

    cfg = config_from_args(cls, args)
    train_cfg = cfg.train_config()
    for name in ("results", "run_dir"):
        path = getattr(cfg, name)
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise ValueError(f"{name} must be a directory; {path} is an existing file")
    if cfg.model is not None and not Path(cfg.model).is_file():
        raise ValueError(f"model must be a checkpoint or exported-weights file; {cfg.model} is not a file")
    if cfg.prediction is not None:
        read_prediction(cfg.prediction)  # the file and its entry; the images are checked once loaded
    return cfg, train_cfg
