"""``empirical.measure.denoising_gap`` against closed forms and an independent posterior mean."""

import json
from pathlib import Path

import numpy as np
import pytest

from empirical.measure.denoising_gap import denoising_gap, main
from empirical.models.denoiser import ExactDenoiser
from theory import VPLinear
from theory.data import DeltaMixture

ROOT = Path(__file__).resolve().parents[1]


def test_the_exact_denoiser_has_no_gap_to_itself():
    rng = np.random.default_rng(0)
    x_train, y = rng.normal(size=(30, 4)), rng.normal(size=(12, 4))
    row = denoising_gap(ExactDenoiser(DeltaMixture(x_train)), x_train, y, 0.5)
    assert row["gap"] == 0.0 and row["mse_network"] == row["mse_exact"] and row["gap_over_spread"] == 0.0


def test_a_shifted_denoiser_misses_by_its_shift():
    """One training image: the exact posterior mean is that image at every x, so a denoiser of the image moved
    by c has gap |c|^2 / d, its error on the image itself is |c|^2 / d, the exact one's 0, and the spread 0."""
    y0, c = np.array([[1.0, -2.0, 0.5]]), np.array([0.3, 0.1, -0.2])
    row = denoising_gap(ExactDenoiser(DeltaMixture(y0 + c)), y0, np.repeat(y0, 5, axis=0), 0.7)
    shift = float(c @ c) / 3
    assert row["gap"] == pytest.approx(shift, rel=1e-12) and row["mse_network"] == pytest.approx(shift, rel=1e-12)
    assert row["mse_exact"] == pytest.approx(0.0, abs=1e-24) and row["gap_over_spread"] is None


def test_exact_errors_equal_an_independent_posterior_mean():
    """The exact side by hand: softmax weights exp(-|x - theta y_j|^2 / (2 sigma^2)) over the training images,
    with the same seeded noise draw x = theta y + sigma eps."""
    rng = np.random.default_rng(1)
    x_train, y, t, seed = rng.normal(size=(7, 2)) * 2.0, rng.normal(size=(9, 2)), 0.4, 3
    zero = ExactDenoiser(DeltaMixture(np.zeros((1, 2))))  # x0 = 0: its error is |y|^2 / d
    row = denoising_gap(zero, x_train, y, t, seed=seed)
    s = VPLinear()
    theta, sigma = float(s.theta(t)), float(np.sqrt(s.sigma2(t)))
    x = theta * y + sigma * np.random.default_rng(seed).standard_normal(y.shape)
    logw = -((x[:, None, :] - theta * x_train[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = np.exp(logw - logw.max(1, keepdims=True))
    post = (w / w.sum(1, keepdims=True)) @ x_train
    assert row["mse_exact"] == pytest.approx(((post - y) ** 2).sum(1).mean() / 2, rel=1e-10)
    assert row["gap"] == pytest.approx((post**2).sum(1).mean() / 2, rel=1e-10)
    assert row["spread"] == pytest.approx(((post - x_train.mean(0)) ** 2).sum(1).mean() / 2, rel=1e-10)
    assert row["mse_network"] == pytest.approx((y**2).sum(1).mean() / 2, rel=1e-12)


def test_bad_input_is_refused():
    x = np.zeros((3, 2))
    den = ExactDenoiser(DeltaMixture(x))
    with pytest.raises(ValueError, match="t must lie in"):
        denoising_gap(den, x, x, 1.0)
    with pytest.raises(ValueError, match="share d"):
        denoising_gap(den, x, np.zeros((3, 5)), 0.5)
    with pytest.raises(ValueError, match="seed"):
        denoising_gap(den, x, x, 0.5, seed=-1)


def test_cli_on_the_digits_model_writes_rows_by_key(tmp_path, capsys):
    model, out = str(ROOT / "docs" / "results" / "digits_denoiser.pt"), tmp_path / "gap.json"
    args = ["--dataset", "digits", model, "--t", "0.3", "0.6", "--n", "40", "--out", str(out)]
    assert main(args) == 0 and main(args) == 0  # the second run replaces its rows
    rows = json.loads(out.read_text())
    assert [(r["t"], r["split"], r["n"]) for r in rows] == [(0.3, "train", 40), (0.6, "train", 40)]  # no test split
    assert all(r["mse_network"] > 0 and r["gap"] > 0 for r in rows)
    bad_args = (
        (["--t", "1.0"], "t must be one or more times in (0, 1)"),
        (["--n", "0"], "n must be an integer >= 1"),
        (["--dataset", "mnist"], "trained on"),
        (["--out", str(tmp_path)], f"out must be a file; {tmp_path} is a directory"),
    )
    for bad, match in bad_args:
        assert main([*args, *bad]) == 2
        assert match in capsys.readouterr().err
