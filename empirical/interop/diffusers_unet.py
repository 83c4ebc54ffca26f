r"""A diffusers ``UNet2DModel`` and its DDPM scheduler configuration as an ``empirical.models.denoiser.Denoiser``.

The scheduler's betas (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps`` or
``trained_betas``) become the theory's discrete schedule ``theory.DDPM.from_betas``; the network's
output (``prediction_type``) becomes eps:

    epsilon:       eps_hat = out
    v_prediction:  eps_hat = sigma x + theta out       (v = theta eps - sigma x0, theta^2 + sigma^2 = 1)
    sample:        eps_hat = (x - theta out) / sigma

so that x0_hat = (x - sigma eps_hat) / theta is diffusers' ``pred_original_sample`` (without clipping or
thresholding, which are sampler heuristics, not the posterior mean). Time: ``theory.DDPM`` puts the model's
timestep j = 0..N-1 (alpha-bar_j = theta^2 there) at t = (j + 1) T / N, so t maps to j(t) = N t / T - 1.
Between the knots the sinusoidal embedding takes the fractional j ("continuous", DPM-Solver's convention
for discrete-time models: a smooth function of t for the fixed-point searches), or the nearest integer
("integer"; forced for a learned embedding table).

    >>> ddpm_betas({"beta_schedule": "scaled_linear", "beta_start": 0.01, "beta_end": 0.04,
    ...             "num_train_timesteps": 3}).round(6).tolist()  # linspace(0.1, 0.2, 3)^2
    [0.01, 0.0225, 0.04]

diffusers is an optional extra (``pip install -e ".[diffusers]"``); it is imported when a model is loaded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from empirical.models.denoiser import Denoiser, schedule_coeffs
from theory.schedules import DDPM

__all__ = ["DiffusersDenoiser", "load_diffusers", "ddpm_betas", "ddpm_schedule", "PREDICTIONS", "TIMESTEPS"]

PREDICTIONS = ("epsilon", "v_prediction", "sample")
TIMESTEPS = ("continuous", "integer")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def _require_diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            "empirical.interop.diffusers_unet needs the optional package diffusers: pip install -e '.[diffusers]' "
            "(or pip install 'diffusers>=0.30')"
        ) from err
    return diffusers


def ddpm_betas(config: Mapping) -> np.ndarray:
    """beta_1..beta_N (float64) of a diffusers scheduler config, by the rules of diffusers' ``DDPMScheduler``
    (which computes them in float32); ``trained_betas`` wins over ``beta_schedule``."""
    if config.get("rescale_betas_zero_snr"):
        raise ValueError("rescale_betas_zero_snr=True gives theta(T) = 0, which theory.DDPM does not support")
    if config.get("trained_betas") is not None:
        return np.asarray(config["trained_betas"], dtype=np.float64)
    n = int(config.get("num_train_timesteps", 1000))
    lo, hi = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        return np.linspace(lo, hi, n)
    if kind == "scaled_linear":  # latent diffusion's: linear in sqrt(beta)
        return np.linspace(lo**0.5, hi**0.5, n) ** 2
    if kind == "squaredcos_cap_v2":  # the cosine schedule (Nichol & Dhariwal), each beta capped at 0.999
        alpha_bar = np.cos((np.arange(n + 1) / n + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    if kind == "sigmoid":  # GeoDiff's
        return 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, n))) * (hi - lo) + lo
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES} (or trained_betas given); got {kind!r}")


def ddpm_schedule(config: Mapping, T: float = 1.0) -> DDPM:
    """The theory's discrete schedule of a diffusers scheduler config (``theory.DDPM.from_betas``)."""
    return DDPM.from_betas(ddpm_betas(config), T=T)


class DiffusersDenoiser(Denoiser):
    """``Denoiser`` of a diffusers ``UNet2DModel`` (x (n, d) flat rows of (C, H, W) images) and its scheduler
    config. ``timesteps``: "continuous" or "integer" (see the module's docstring)."""

    def __init__(self, unet: nn.Module, scheduler_config: Mapping, timesteps: str = "continuous"):
        cfg = unet.config
        if cfg.get("time_embedding_type", "positional") not in ("positional", "learned"):
            raise ValueError(
                f"time_embedding_type must be 'positional' or 'learned' (a discrete DDPM model); got "
                f"{cfg.get('time_embedding_type')!r} (fourier embeddings take a continuous noise level)"
            )
        if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
            raise ValueError("class-conditional UNet2DModel (num_class_embeds/class_embed_type) is not supported")
        if cfg.get("in_channels") != cfg.get("out_channels"):
            raise ValueError(f"in_channels={cfg.get('in_channels')} must equal out_channels={cfg.get('out_channels')}")
        if timesteps not in TIMESTEPS:
            raise ValueError(f"timesteps must be one of {TIMESTEPS}; got {timesteps!r}")
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}; got {self.prediction_type!r}")
        super().__init__(unet, ddpm_schedule(scheduler_config))
        self.timesteps = "integer" if cfg.get("time_embedding_type") == "learned" else timesteps
        size = cfg["sample_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.image_shape = (int(cfg["in_channels"]), int(h), int(w))

    @property
    def dim(self) -> int:
        return int(np.prod(self.image_shape))

    def timestep(self, t) -> torch.Tensor:
        """The model's timestep j(t) = N t / T - 1 (float32, or int64 rounded to 0..N-1 for "integer")."""
        j = torch.as_tensor(t, dtype=torch.float64) * (self.schedule.n_steps / self.schedule.T) - 1.0
        if self.timesteps == "integer":
            return j.round().clamp(0, self.schedule.n_steps - 1).long()
        return j.float()

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        return self._eps(x, self._t(x, t).to(device=x.device))  # t stays float64: j(t) is exact at the knots

    def _out(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the network's output, theta, sigma), each (n, d) or (n, 1), in x's dtype; t (n,) or (1,) float64."""
        # t's values as plain floats: under torch.func's transforms (x0_jacobian, x0_jvp) any torch op on t, even
        # .detach(), returns a wrapped tensor that the schedule's jax call cannot read.
        t64 = np.asarray(t.tolist(), dtype=np.float64)
        theta, sigma = (c[:, None] for c in schedule_coeffs(self.schedule, t64, "theta", "sigma", like=x))
        n, dtype = x.shape[0], next(self.net.parameters()).dtype
        out = self.net(
            x.reshape(n, *self.image_shape).to(dtype), self.timestep(t64).to(x.device)
        ).sample  # (1,): broadcast
        return out.reshape(n, -1).to(x.dtype), theta, sigma

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out, theta, sigma = self._out(x, t)
        if self.prediction_type == "epsilon":
            return out
        if self.prediction_type == "v_prediction":
            return sigma * x + theta * out
        return (x - theta * out) / sigma

    def x0(self, x: torch.Tensor, t) -> torch.Tensor:
        """x0_hat in the model's own parametrisation, as diffusers computes ``pred_original_sample``: the same
        value as Tweedie's (x - sigma eps_hat) / theta, without its float32 cancellation near t = T for v and
        sample models (x - sigma^2 x = theta^2 x)."""
        out, theta, sigma = self._out(x, self._t(x, t).to(device=x.device))
        if self.prediction_type == "epsilon":
            return (x - sigma * out) / theta
        return theta * x - sigma * out if self.prediction_type == "v_prediction" else out


def _read_json(path: Path, what: str) -> dict:
    """The JSON object of a config file; ValueError naming the file if it is missing, cut or not an object."""
    if not path.is_file():
        raise ValueError(f"{what}: {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{what}: {path} is not valid JSON (truncated or corrupt): {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{what}: {path} must hold a JSON object of settings; got a {type(config).__name__}")
    return config


WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _check_unet_config(config: dict, path: Path) -> None:
    """Every down block but the last halves the image, so the size must divide by 2^(blocks - 1); diffusers
    would fail only at the first forward pass, on mismatched skip connections."""
    size, blocks = config.get("sample_size"), config.get("down_block_types", ["DownBlock2D"] * 4)  # its default
    sizes = [size] if isinstance(size, int) else size
    if not (isinstance(sizes, list) and sizes and all(isinstance(v, int) and v >= 1 for v in sizes)):
        raise ValueError(f"UNet config: {path} has sample_size={size!r}; it must be an int or [H, W] of ints >= 1")
    if not (isinstance(blocks, list) and blocks):
        raise ValueError(f"UNet config: {path} has down_block_types={blocks!r}; it must be a non-empty list")
    halvings = 2 ** (len(blocks) - 1)
    if any(v % halvings for v in sizes):
        raise ValueError(
            f"UNet config: {path} has sample_size={size} with {len(blocks)} down blocks; each size must be "
            f"divisible by 2^{len(blocks) - 1} = {halvings} (the image is halved {len(blocks) - 1} times)"
        )


def _load_unet(diffusers, unet_dir: Path):
    """The UNet2DModel of a folder; ValueError naming the folder for missing weights or weights that cannot be
    read (a cut or corrupt file)."""
    if not any((unet_dir / name).is_file() for name in WEIGHTS):
        raise ValueError(f"UNet weights: {unet_dir} holds none of {', '.join(WEIGHTS)}")
    try:
        return diffusers.UNet2DModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
    except Exception as err:  # safetensors, torch and diffusers raise their own types for a damaged file
        raise ValueError(f"UNet weights: {unet_dir} cannot be loaded (truncated or corrupt?): {err}") from err


def load_diffusers(
    path: str | os.PathLike, device: str | torch.device = "cpu", timesteps: str = "continuous"
) -> DiffusersDenoiser:
    """The ``DiffusersDenoiser`` of a local folder, in eval mode on ``device``, parameters not requiring grad.

    ``path`` is a pipeline folder (``unet/`` and ``scheduler/scheduler_config.json``, as
    ``DDPMPipeline.save_pretrained`` writes) or one folder holding the UNet (``config.json`` and weights) and
    ``scheduler_config.json``. Nothing is downloaded.
    """
    diffusers = _require_diffusers()
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"diffusers model folder {path} is not a directory")
    if (path / "unet").is_dir():
        unet_dir, sched_file = path / "unet", path / "scheduler" / "scheduler_config.json"
    else:
        unet_dir, sched_file = path, path / "scheduler_config.json"
    unet_cfg = _read_json(unet_dir / "config.json", "UNet config")
    if unet_cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"{unet_dir} holds a {unet_cfg['_class_name']}; only UNet2DModel is supported")
    scheduler_config = _read_json(sched_file, "scheduler config")
    _check_unet_config(unet_cfg, unet_dir / "config.json")
    unet = _load_unet(diffusers, unet_dir)
    return DiffusersDenoiser(unet, scheduler_config, timesteps).to(device).eval().requires_grad_(False)
