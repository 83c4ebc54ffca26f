"""``empirical.measure.shell`` against theory's fixed points and the closed form of the noisy images' radius."""

import json

import numpy as np
import pytest

from empirical.measure.shell import main, shell_distance
from theory import VPLinear, fixed_points
from theory.data import DeltaMixture


def test_theory_fixed_points_lie_within_the_bound():
    """Every fixed point theory finds (stable or not) has norm <= kappa max |x_i|; at large t the centre
    sits near kappa times the data mean, well inside the bound."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)) + np.array([2.0, 0.0, -1.0])
    for t in (0.2, 0.5, 0.8):
        row = shell_distance(x, t)
        pts = fixed_points(DeltaMixture(x), VPLinear(), t, n_seeds=64)
        assert pts and max(np.linalg.norm(p.x) for p in pts) <= row["fixed_point_bound"] * (1 + 1e-12)


def test_kappa_and_radius_against_closed_forms():
    """VP, eta = 1: kappa = 2 theta / (1 + theta^2); E r^2 = theta^2 E|x0|^2 + sigma^2 d exactly, so the sample
    mean of r^2 (mean^2 + std^2) agrees with the closed form within 4 standard errors."""
    x = np.random.default_rng(1).normal(size=(50, 200)) * 0.7 + 0.3
    row = shell_distance(x, 0.6, n=4000, seed=2)
    th = float(VPLinear().theta(0.6))
    assert row["kappa"] == pytest.approx(2 * th / (1 + th**2), rel=1e-12)
    assert row["fixed_point_bound"] == pytest.approx(row["kappa"] * np.linalg.norm(x, axis=1).max(), rel=1e-12)
    r2 = row["radius_mean"] ** 2 + row["radius_std"] ** 2
    se = 2 * row["radius_mean"] * row["radius_std"] / np.sqrt(row["n"])
    assert abs(r2 - row["radius_closed_form"] ** 2) < 4 * se
    assert row["z"] == pytest.approx((row["radius_mean"] - row["fixed_point_bound"]) / row["radius_std"], rel=1e-12)


@pytest.mark.parametrize(
    ("kw", "name"), [({"t": 1.0}, "t"), ({"t": 0.5, "n": 1}, "n"), ({"t": 0.5, "seed": -1}, "seed")]
)
def test_bad_input_names_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        shell_distance(np.ones((3, 2)), **kw)


def test_cli_merges_rows_by_time(tmp_path, capsys):
    out = tmp_path / "shell.json"
    args = ["--dataset", "digits", "--classes", "0", "1", "--t", "0.3", "0.6", "--n", "50", "--out", str(out)]
    assert main(args) == 0 and main(args) == 0  # the second run replaces, not appends
    rows = json.loads(out.read_text())
    assert [r["t"] for r in rows] == [0.3, 0.6] and all(r["classes"] == [0, 1] and r["d"] == 64 for r in rows)
    assert rows[0]["command"].startswith("python -m empirical shell --dataset digits")
    capsys.readouterr()
    assert main(["--dataset", "digits", "--t", "1.5"]) == 2
    assert "t must be one or more times in (0, 1); got [1.5]" in capsys.readouterr().err
    (tmp_path / "object.json").write_text("{}")  # refused before any work: rows cannot be merged into an object
    assert main(["--dataset", "digits", "--t", "0.5", "--out", str(tmp_path / "object.json")]) == 2
    assert "holds a JSON object, not a list of rows" in capsys.readouterr().err
    assert main(["--dataset", "digits", "--t", "0.5", "--classes", "0", "1", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["shell"]["classes"] == [0, 1]
