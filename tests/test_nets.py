"""Backbones and the CPU recipe: output shapes, parameter counts against a count written out from the
architecture (layer by layer, with the closed-form size of each layer), the recipe's config as the trainer's
command line, one training step of the recipe, and the sample grid layout."""

import numpy as np
import pytest
import torch
from test_datasets import needs_fashion

from empirical._util.checkpoints import CHECKPOINT
from empirical.data.datasets import load_dataset
from empirical.models.nets import UNet, build_net
from empirical.pipelines.recipe import (
    MAX_EXPORT_BYTES,
    RECIPE,
    _classifier_metrics,
    _save_loss,
    image_grid,
    inception_reference,
    recipe_config,
    train_argv,
)
from empirical.training.train import build_parser, config_from_args, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Closed-form parameter counts of the layers (weights + biases).
def conv(cin, cout, k):
    return cin * cout * k * k + cout


def linear(a, b):
    return a * b + b


def norm(c):
    return 2 * c


def resblock(cin, cout, temb):
    skip = conv(cin, cout, 1) if cin != cout else 0
    return norm(cin) + conv(cin, cout, 3) + linear(temb, cout) + norm(cout) + conv(cout, cout, 3) + skip


def attention(c):
    return norm(c) + conv(c, 3 * c, 1) + conv(c, c, 1)


def unet_count(ch, mult, blocks, attn=True):
    """The DDPM U-Net of the docstring: stem, ``blocks`` residual blocks per level going down (a stride-2 conv
    between levels), middle (res, [attention], res), ``blocks + 1`` per level coming up, each taking the
    matching skip, an upsampling between levels, and the output head."""
    temb = 4 * ch
    total = linear(ch, temb) + linear(temb, temb) + conv(1, ch, 3)
    chans = [ch * m for m in mult]
    skips, c = [ch], ch
    for i, co in enumerate(chans):
        for _ in range(blocks):
            total += resblock(c, co, temb)
            c = co
            skips.append(c)
        if i < len(chans) - 1:
            total += conv(c, c, 3)
            skips.append(c)
    total += 2 * resblock(c, c, temb) + (attention(c) if attn else 0)
    for co in reversed(chans):
        for _ in range(blocks + 1):
            total += resblock(c + skips.pop(), co, temb)
            c = co
    return total + norm(c) + conv(c, 1, 3)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ch": 8, "mult": (1, 2), "blocks": 1},
        {"ch": 8, "mult": (1, 2, 2), "blocks": 2, "attn": False},
        {"ch": 32, "mult": (1, 2, 2), "blocks": 2},  # the trainer's default
        {"ch": 32, "mult": (1, 2, 2), "blocks": 1},
        {"ch": 16, "mult": (1, 2, 2), "blocks": 1},  # the recipe
    ],
)
def test_unet_parameter_count_matches_the_architecture(kwargs):
    assert n_params(build_net("unet", (28, 28), **kwargs)) == unet_count(**kwargs)


def test_resblock_count_by_hand():
    # ResBlock(64 -> 32, temb 128), layer by layer: GroupNorm(64), conv 3x3 64 -> 32, linear 128 -> 32,
    # GroupNorm(32), conv 3x3 32 -> 32, skip conv 1x1 64 -> 32.
    block = build_net("unet", (28, 28), ch=32, blocks=1).up[-1]  # the last up block: 32 + 32 skip -> 32
    assert n_params(block) == resblock(64, 32, 128) == 128 + 18464 + 4128 + 64 + 9248 + 2080


def test_attn_false_drops_exactly_the_attention_layer():
    c = 64  # ch 32 * mult 2 at the lowest resolution
    with_attn, without = UNet((28, 28), blocks=1), UNet((28, 28), blocks=1, attn=False)
    assert n_params(with_attn) - n_params(without) == attention(c) == 2 * c + 3 * c * c + 3 * c + c * c + c
    assert not any("qkv" in name for name, _ in without.named_parameters())


@pytest.mark.parametrize("attn", [True, False])
def test_unet_shapes_and_time_dependence(attn):
    torch.manual_seed(0)
    net = UNet((28, 28), ch=8, mult=(1, 2, 2), blocks=1, attn=attn)
    x = torch.randn(3, 784)
    out_a, out_b = net(x, torch.full((3,), 10.0)), net(x, torch.full((3,), 900.0))
    assert out_a.shape == x.shape
    assert not torch.allclose(out_a, out_b)  # the time embedding reaches the output


def test_recipe_config_is_the_trainers_command_line():
    cfg = recipe_config(out="runs/x")
    parsed = config_from_args(build_parser().parse_args(train_argv(cfg)))
    assert parsed == cfg
    assert {k: getattr(cfg, k) for k in RECIPE} == {k: v for k, v in RECIPE.items()}
    # float32 weights with some room for the file's keys: under the committed-file limit
    assert 4 * unet_count(cfg.ch, cfg.mult, cfg.blocks) < MAX_EXPORT_BYTES


@needs_fashion  # the recipe trains on Fashion-MNIST
def test_recipe_trains_one_step_and_resumes(tmp_path):
    cfg = recipe_config(out=str(tmp_path / "run"), steps=1, n_train=128, ckpt_every=1)
    path = train(cfg)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert path.name == CHECKPOINT and ckpt["step"] == 1 and ckpt["image_shape"] == [28, 28]
    assert ckpt["loss"].shape == (1,) and 0.1 < float(ckpt["loss"][0]) < 10.0  # eps MSE of an untrained net ~ 1
    assert sum(v.numel() for v in ckpt["ema"].values() if v.is_floating_point()) == unet_count(16, (1, 2, 2), 1)
    train(recipe_config(out=str(tmp_path / "run"), steps=2, n_train=128, ckpt_every=1))  # resumes at step 1
    assert torch.load(path, map_location="cpu", weights_only=True)["loss"].shape == (2,)


def test_image_grid_places_each_image():
    x = np.stack([np.full(4, v) for v in (-1.0, 0.0, 1.0)])  # three 2x2 images: black, grey, white
    grid = image_grid(x, (2, 2), cols=2)
    assert grid.shape == (2 * 2 + 1, 2 * 2 + 1)
    np.testing.assert_allclose(grid[:2, :2], 0.0)
    np.testing.assert_allclose(grid[:2, 3:], 0.5)
    np.testing.assert_allclose(grid[3:, :2], 1.0)
    np.testing.assert_allclose(grid[3:, 3:], 1.0)  # the empty cell stays background (white)
    np.testing.assert_allclose(grid[2, :], 1.0)  # the gap row


def test_inception_reference_reads_its_cache(tmp_path):
    ref, floor = np.arange(6.0).reshape(3, 2), -np.arange(6.0).reshape(3, 2)
    np.savez(tmp_path / "inception_fashion-mnist_n3_seed7.npz", ref=ref, floor=floor)
    got = inception_reference("fashion-mnist", 3, 7, tmp_path)  # no Inception pass: the cached arrays come back
    np.testing.assert_array_equal(got["ref"], ref)
    np.testing.assert_array_equal(got["floor"], floor)


def test_loss_curve_reports_the_mean_of_the_last_window(tmp_path):
    losses = np.random.default_rng(0).uniform(0.05, 1.0, size=250)
    out = _save_loss(losses, tmp_path / "loss.png", window=100)
    assert out["window"] == 100 and out["final_loss_mean"] == pytest.approx(losses[-100:].mean(), rel=1e-12)
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert _save_loss(losses[:7], tmp_path / "short.png")["final_loss_mean"] == pytest.approx(losses[:7].mean())


def test_classifier_metrics_without_a_test_split_use_training_images_for_the_floor():
    # digits has no test split: the floor is n training images drawn with the seed, so scoring exactly those
    # images as "samples" must give the floor's FID, and the classifier is scored on a held-out fifth.
    x = load_dataset("digits").x
    n, seed = 300, 3
    floor_x = x[np.random.default_rng(seed).choice(len(x), size=n, replace=False)]
    got = _classifier_metrics(floor_x, "digits", steps=60, seed=seed)
    assert got["fid"] == pytest.approx(got["fid_floor_train_images"], rel=1e-12)
    assert "fid_floor_test_images" not in got and got["n"] == n and got["n_ref"] == len(x)
    assert got["classifier_held_out_20pct_accuracy"] > 0.5  # ten classes: chance is 0.1
