"""``empirical.steps_sweep``'s cheap predictions against the pipeline's ``predict`` (which takes Biroli's estimate
from ``theory.speciation_time`` and the covariance from the data model), and its table row's arithmetic."""

import numpy as np
import pytest

from empirical.stages import predict
from empirical.steps_sweep import cheap_predictions, table_row


def test_cheap_predictions_match_the_pipeline():
    x = np.random.default_rng(0).normal(size=(40, 3)) * np.array([2.0, 1.0, 0.5])
    full, cheap = predict(x), cheap_predictions(x)
    for key in ("t_c_equal_norm", "t_c_biroli", "top_covariance_eigenvalue"):
        assert cheap[key] == pytest.approx(full[key], rel=1e-9), key


def test_table_row_errors():
    x = np.random.default_rng(1).normal(size=(30, 2)) * 2.0
    sweep_row = {
        "dataset": "digits", "step": 5, "checkpoint": "c.pt", "t_c_measured": 0.45, "t_lo": 0.449, "t_hi": 0.451,
        "n_attractors_at_t_lo": 2, "seconds": 1.0, "options": {"search": "flow"}, "threads": 1,
    }  # fmt: skip
    pred = {"t_c": 0.5, "kind": "saddle-node", "macroscopic_t": None, "source": "f.json:k"}
    row = table_row(sweep_row, x, pred, "cmd")
    assert row["relative_error"] == pytest.approx(0.1, rel=1e-12)
    assert row["relative_error_biroli"] == pytest.approx(abs(0.45 - row["t_c_biroli"]) / row["t_c_biroli"])
    assert row["t_c_measured_bracket"] == [0.449, 0.451] and row["dim"] == 2 and row["search"] == "flow"
