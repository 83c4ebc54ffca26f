"""The N sweep's data and rows: nested subsets written as files that the trainer reads back to the same images,
and rows merged field by field with the gap to the exact prediction."""

import json

import numpy as np
import pytest

from empirical import load_dataset
from empirical.pipelines.n_sweep import merge_row, nested_indices, write_subsets
from empirical.training.config import DataConfig


def test_subsets_are_nested_and_read_back_as_the_same_images(tmp_path, monkeypatch):
    import empirical.pipelines.n_sweep as ns

    monkeypatch.setattr(ns, "load_dataset", lambda name: load_dataset("digits"))  # 8-bit levels 0..16 of 16
    paths = write_subsets("digits", (10, 50), tmp_path)
    small, large = (DataConfig(data=str(paths[n])).load() for n in (10, 50))
    rows = nested_indices(1797, (10, 50))
    digits = load_dataset("digits")
    assert set(rows[10]) <= set(rows[50]) and small.x.shape == (10, 64)
    # the files hold 8-bit levels: the digits' 17 levels come back to within one 8-bit step
    assert np.abs(large.x - digits.x[rows[50]]).max() <= 1 / 255 + 1e-12
    assert np.array_equal(large.labels, digits.labels[rows[50]])
    with pytest.raises(ValueError, match=r"sizes must be ints in \[1, 1797\]"):
        nested_indices(1797, (0,))


def test_merge_row_adds_fields_and_the_gap(tmp_path):
    path = tmp_path / "rows.json"
    merge_row(path, 64, {"t_exact": 0.5}, "cmd a")
    merge_row(path, 256, {"t_exact": 0.6}, "cmd a")
    row = merge_row(path, 64, {"t_measured": 0.4}, "cmd b")
    assert row["relative_gap"] == pytest.approx(-0.2, abs=1e-15) and row["commands"] == ["cmd a", "cmd b"]
    rows = json.loads(path.read_text())
    assert sorted(r["n_train"] for r in rows) == [64, 256]
    assert next(r for r in rows if r["n_train"] == 256)["relative_gap"] is None


def test_loss_windows_average_the_checkpoint_history(tmp_path):
    import torch

    from empirical.pipelines.n_sweep import loss_windows

    loss = np.r_[np.full(1000, 2.0), np.arange(1000.0), np.full(500, 9.0)]  # the last partial window is left out
    torch.save({"loss": torch.tensor(loss)}, tmp_path / "checkpoint.pt")
    w = loss_windows(tmp_path / "checkpoint.pt")
    assert w["mean"] == [2.0, 499.5] and w["se"][0] == 0.0
    assert w["se"][1] == pytest.approx(np.sqrt((1000**2 - 1) / 12 * 1000 / 999 / 1000), rel=1e-12)  # uniform 0..999
    assert w["last_change"] == pytest.approx((499.5 - 2.0) / 2.0, rel=1e-15)
