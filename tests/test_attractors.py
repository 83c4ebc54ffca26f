"""``empirical.measure.attractors``: a network's stable points against the exact drift's, checked on the exact denoiser
(every point is its own exact limit, the counts are ``theory.fixed_points``'), on a denoiser whose x0 is shifted by a
constant (distances in closed form), and the command line."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import theory
from empirical.measure.attractors import compare_with_exact, main, start_points
from empirical.measure.fixed_points import measure_critical_time
from empirical.measure.flow import FlowSearch
from empirical.models.denoiser import ExactDenoiser, schedule_coeffs
from theory import DeltaMixture, VPLinear

pytestmark = pytest.mark.usefixtures("one_torch_thread")
THREE = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # a saddle-node away from the centre (t_c = 0.2526)
DIGITS_MODEL = Path(__file__).resolve().parents[1] / "docs" / "results" / "digits_denoiser.pt"


class ShiftedDenoiser(ExactDenoiser):
    """The exact denoiser with x0 moved by a constant b: eps' = eps - theta b / sigma, so x0' = x0 + b (and the
    Jacobian of x0, a derivative, is unchanged)."""

    def __init__(self, data, b):
        super().__init__(data)
        self.b = torch.as_tensor(b, dtype=torch.float64)

    def forward(self, x, t):
        theta, sigma = schedule_coeffs(self.schedule, self._t(x, t), "theta", "sigma", like=x)
        return super().forward(x, t) - (theta / sigma)[:, None] * self.b.to(x.dtype)


def _stable(data, t):
    return [p.x for p in theory.fixed_points(data, VPLinear(), t) if p.stable]


def test_starts_are_the_measurements():
    # The starts at t are the ones measure_critical_time searches at t (its first grid time, T, has no warm starts).
    den, x = ExactDenoiser(DeltaMixture(THREE)), THREE
    seen = []

    def record(t, starts, eta):
        seen.append((t, starts.clone()))
        raise StopIteration

    with pytest.raises(StopIteration):
        measure_critical_time(den, x, n_starts=2, seed=3, t_max=0.9, search=record)
    t, starts = seen[0]
    ours, pick = start_points(den, x, t, n_starts=2, seed=3)
    assert t == 0.9 and torch.equal(ours, starts) and len(pick) == 2 and ours.shape == (5, 2)


@pytest.mark.parametrize("factor", [0.5, 1.3])  # three attractors below t_c, the centre alone above
def test_exact_denoiser_points_are_their_own_exact_limits(factor):
    data = DeltaMixture(THREE)
    t = factor * theory.critical_time(data, VPLinear()).t
    r = compare_with_exact(ExactDenoiser(data), THREE, t, n_starts=8, points=True)
    expected = _stable(data, t)
    assert r["n_network_stable"] == r["n_exact_stable"] == len(expected) == (3 if factor < 1 else 1)
    th = float(VPLinear().theta(t))
    assert r["kappa"] == pytest.approx(2 * th / (1 + th**2), rel=1e-12)  # VP, eta = 1
    for p in r["network"]:
        assert min(np.linalg.norm(np.array(p["x"]) - e) for e in expected) < 1e-8  # the theory's attractors
        assert p["exact"]["to_start"] < 1e-8 and p["exact_residual"] < 1e-8 and p["to_nearest_exact_attractor"] < 1e-8
        assert p["exact"]["stable"] and p["mu"] == pytest.approx(p["exact"]["mu"], abs=1e-8)  # two Jacobian routes
    # The same map on both sides: the same basins; below t_c the start kappa E[y] (on the symmetry axis) ends on a
    # saddle of the axis, so it counts on neither side.
    assert sorted(p["basin"] for p in r["network"]) == sorted(a["basin"] for a in r["exact_attractors"])
    assert r["network_unassigned"] == r["exact_unassigned"] == (1 if factor < 1 else 0) and r["n_start_points"] == 7
    # The posterior at the centre, recomputed here: softmax of theta x.y / sigma^2 - theta^2 |y|^2 / (2 sigma^2).
    c, s2 = np.array(r["centre"]["x"]), float(VPLinear().sigma2(t))
    logits = th * THREE @ c / s2 - 0.5 * th**2 * (THREE**2).sum(1) / s2
    w = np.exp(logits - logits.max())
    w /= w.sum()
    centre_attr = [a for a in r["exact_attractors"] if np.linalg.norm(np.array(a["x"]) - c) < 1e-8]
    assert r["centre"]["stable"] == (factor > 1) == bool(centre_attr)
    if centre_attr:
        assert centre_attr[0]["posterior_entropy"] == pytest.approx(-(w * np.log(w)).sum(), rel=1e-10)
        assert centre_attr[0]["posterior_top_weight"] == pytest.approx(w.max(), rel=1e-10)


@pytest.mark.parametrize("factor", [0.5, 1.5])
def test_shifted_denoiser_distances_in_closed_form(factor):
    # Deltas at (+-1, 0), x0 shifted by b = (0, beta): the posterior depends on x_1 alone, so the network's fixed
    # points are (x1*, kappa beta) with x1* the exact ones, the exact mean shift from there drops x_2 to 0 in one
    # step, and the Jacobians agree. Distances: kappa beta; exact residual: kappa beta / |(x1*, kappa beta)|.
    P, beta = np.array([[-1.0, 0.0], [1.0, 0.0]]), 0.3
    data = DeltaMixture(P)
    t = factor * theory.critical_time(data, VPLinear()).t
    r = compare_with_exact(ShiftedDenoiser(data, [0.0, beta]), P, t, n_starts=4, points=True)
    x1 = sorted(float(e[0]) for e in _stable(data, t))
    kb = r["kappa"] * beta
    assert sorted(p["x"][0] for p in r["network"]) == pytest.approx(x1, abs=1e-9)
    assert r["n_network_stable"] == r["n_exact_stable"] == len(x1) == (2 if factor < 1 else 1)
    for p in r["network"]:
        a = p["x"][0]
        assert p["x"][1] == pytest.approx(kb, rel=1e-10)
        assert p["to_nearest_exact_attractor"] == pytest.approx(kb, rel=1e-8)
        assert p["exact"]["to_start"] == pytest.approx(kb, rel=1e-8) and p["exact"]["stable"]
        assert p["exact"]["to_centre"] == pytest.approx(abs(a), abs=1e-8)  # the centre (saddle below t_c) is 0
        assert p["to_exact_centre"] == pytest.approx(math.hypot(a, kb), rel=1e-8)
        assert p["exact_residual"] == pytest.approx(kb / math.hypot(a, kb), rel=1e-8)
        assert p["mu"] == pytest.approx(p["exact"]["mu"], abs=1e-8)
    assert r["centre"]["norm"] < 1e-12 and r["centre"]["stable"] == (factor > 1)
    if factor > 1:  # on the centre line both images weigh 1/2
        assert r["network"][0]["posterior_entropy"] == pytest.approx(math.log(2), rel=1e-12)
        assert r["network"][0]["exact_residual"] == pytest.approx(1.0, rel=1e-12)


def test_flow_search_finds_the_same_points():
    data = DeltaMixture(THREE)
    t, den = 0.5 * theory.critical_time(data, VPLinear()).t, ExactDenoiser(data)
    r = compare_with_exact(den, THREE, t, n_starts=8, search=FlowSearch(den))
    assert r["n_network_stable"] == 3 and r["network_unassigned"] == 1  # kappa E[y] ends on a saddle (above)
    assert max(p["exact"]["to_start"] for p in r["network"]) < 1e-6


def test_bad_arguments_name_the_parameter():
    den = ExactDenoiser(DeltaMixture(THREE))
    for kw, name in [({"t": 1.0}, "t"), ({"t": 0.0}, "t"), ({"t": 0.3, "n_starts": 0}, "n_starts")]:
        with pytest.raises(ValueError, match=name):
            compare_with_exact(den, THREE, **kw)
    with pytest.raises(ValueError, match="x_train"):
        compare_with_exact(den, THREE[:, :1], 0.3)


@pytest.mark.parametrize(
    "args, name",
    [
        (["--dataset", "digits", str(DIGITS_MODEL), "--t", "1.5"], "t must be one or more times in (0, 1)"),
        (["--dataset", "digits", str(DIGITS_MODEL), "--t", "0.3", "0"], "t must be one or more times"),
        (["--dataset", "digits", "no/such/model.pt", "--t", "0.3"], "model: no/such/model.pt is not a file"),
        (["--dataset", "mnist", str(DIGITS_MODEL), "--t", "0.3"], "trained on 'digits'"),  # the model's are the digits
        (["--dataset", "digits", str(DIGITS_MODEL), "--t", "0.3", "--n-starts", "0"], "n_starts must be"),
        (["--dataset", "digits", str(DIGITS_MODEL), "--t", "0.3", "--out", "/proc/version"], "out=/proc/version"),
    ],
)
def test_cli_bad_arguments_exit_2(args, name, capsys):
    assert main(args) == 2 and name in capsys.readouterr().err


def test_cli_unknown_data_set_is_argparses_error(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--dataset", "cifar", str(DIGITS_MODEL), "--t", "0.3"])
    assert err.value.code == 2 and "--dataset" in capsys.readouterr().err


def test_cli_writes_rows_with_their_command(tmp_path):
    out = tmp_path / "a.json"
    args = ["--dataset", "digits", str(DIGITS_MODEL), "--t", "0.6", "--search", "iterate", "--n-starts", "2"]
    assert main([*args, "--out", str(out)]) == 0
    assert main([*args, "--out", str(out)]) == 0  # the same row, replaced
    (row,) = json.loads(out.read_text())
    th = float(VPLinear().theta(0.6))
    assert row["kappa"] == pytest.approx(2 * th / (1 + th**2), rel=1e-12) and row["n_train"] == 1797
    assert row["command"].startswith("python -m empirical attractors --dataset digits") and row["dim"] == 64
    assert row["n_exact_stable"] >= 1 and len(row["network"]) == row["n_network_stable"]
