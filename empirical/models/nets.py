"""Backbones for ``empirical.models.denoiser.Denoiser``: ``net(x, c_noise)`` with x (n, d) flat rows, c_noise (n,).

- ``MLP``: a residual MLP with a sinusoidal time embedding, for 8x8 digits (d = 64).
- ``UNet``: a DDPM-style U-Net (time embedding, residual blocks with GroupNorm, self-attention at the
  lowest resolution, optional) for 28x28 images.

``build_net(name, image_shape, **kwargs)`` builds either from plain arguments, so a checkpoint stores
the arguments, not pickled code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "UNet", "build_net", "NETS"]


def timestep_embedding(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of c_noise (n,) -> (n, dim), frequencies 1 .. 1/10000 (Transformer/DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=c_noise.device, dtype=c_noise.dtype) / half)
    args = c_noise[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _TimeMLP(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.dim = dim
        self.layers = nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, c_noise):
        return self.layers(timestep_embedding(c_noise, self.dim).to(self.layers[0].weight.dtype))


class MLP(nn.Module):
    """x (n, d) -> (n, d): input layer, ``depth`` residual blocks (LayerNorm, SiLU, Linear) that each add
    the time embedding, output layer."""

    def __init__(self, dim: int, width: int = 512, depth: int = 4, emb: int = 128):
        super().__init__()
        self.time = _TimeMLP(emb, width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x, c_noise):
        h, e = self.inp(x), self.time(c_noise)
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(e)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class _Attention(nn.Module):
    def __init__(self, ch: int, groups: int, heads: int = 4):
        super().__init__()
        self.norm, self.heads = nn.GroupNorm(groups, ch), heads
        self.qkv, self.proj = nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class UNet(nn.Module):
    """DDPM-style U-Net on (n, H*W) rows of ``image_shape`` (H, W divisible by 2**(len(mult) - 1)).

    Each level has ``blocks`` residual blocks; self-attention runs at the lowest resolution, between the two
    middle residual blocks (``attn=False`` drops it; benchmarks/unet_steps.py times both).
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        ch: int = 32,
        mult: tuple[int, ...] = (1, 2, 2),
        blocks: int = 2,
        attn: bool = True,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        groups, temb = min(8, ch), 4 * ch
        self.time = _TimeMLP(ch, temb)
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        chans, skips, c = [ch * m for m in mult], [ch], ch
        self.down = nn.ModuleList()
        for i, co in enumerate(chans):
            for _ in range(blocks):
                self.down.append(_ResBlock(c, co, temb, groups))
                c = co
                skips.append(c)
            if i < len(chans) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        middle = [_Attention(c, groups)] if attn else []
        self.mid = nn.ModuleList([_ResBlock(c, c, temb, groups), *middle, _ResBlock(c, c, temb, groups)])
        self.up = nn.ModuleList()
        for i, co in reversed(list(enumerate(chans))):
            for _ in range(blocks + 1):
                self.up.append(_ResBlock(c + skips.pop(), co, temb, groups))
                c = co
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x, c_noise):
        e = self.time(c_noise)
        h = self.inp(x.reshape(x.shape[0], 1, *self.image_shape))
        hs = [h]
        for layer in self.down:
            h = layer(h, e) if isinstance(layer, _ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, e) if isinstance(layer, _ResBlock) else layer(h)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], 1), e) if isinstance(layer, _ResBlock) else layer(h)
        return self.out(h).reshape(x.shape)


NETS = ("mlp", "unet")


def build_net(name: str, image_shape: tuple[int, int], **kwargs) -> nn.Module:
    """``build_net("mlp", (8, 8), width=256)`` or ``build_net("unet", (28, 28), ch=32)``.

    >>> net = build_net("mlp", (8, 8), width=64, depth=2)
    >>> net(torch.zeros(3, 64), torch.ones(3)).shape
    torch.Size([3, 64])
    """
    if name == "mlp":
        return MLP(image_shape[0] * image_shape[1], **kwargs)
    if name == "unet":
        return UNet(tuple(image_shape), **kwargs)
    raise ValueError(f"net must be one of {NETS}; got {name!r}")
