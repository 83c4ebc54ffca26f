"""empirical.pipelines.fid_knee and empirical.metrics.bootstrap: the knee finder on curves with a closed-form crossing,
its bootstrap spread on curves with known per-replicate knees, the bootstrap FID against a direct computation (and its
standard error against the spread over independent draws), the rows kept or dropped on a rerun, and the bad inputs."""

import json
import math

import numpy as np
import pytest

from empirical.metrics import fid
from empirical.metrics.bootstrap import Reference, bootstrap_fid, bootstrap_indices
from empirical.pipelines import fid_knee
from empirical.pipelines.fid_knee import Config, knee, knee_with_error, parse_tolerance, steps_for, summarise


# --- the knee --------------------------------------------------------------------------------------------------
def ramp(t, t0, slope, f1):
    """FID = f1 + slope (t0 - t) below t0, f1 above: piecewise linear (interpolation on a grid holding t0 is exact)."""
    return f1 + slope * np.maximum(t0 - np.asarray(t), 0.0)


def test_knee_of_a_ramp_is_its_closed_form_crossing():
    t = np.round(np.arange(0.35, 1.0001, 0.05), 10)
    f1, slope, t0 = 20.0, 400.0, 0.65
    for p in (0.1, 0.5, 2.0):  # crossing f1 + slope (t0 - t*) = (1 + p) f1
        exact = t0 - p * f1 / slope
        f = ramp(t, t0, slope, f1)
        assert knee(t, f - f1 - p * f1) == pytest.approx(exact, abs=1e-12)
        out = knee_with_error(t, f, np.tile(f, (3, 1)), f"{100 * p:g}%")
        assert out["knee"] == pytest.approx(exact, abs=1e-12) and out["lo"] == out["hi"] == pytest.approx(exact)


def test_knee_of_a_smooth_curve_within_the_interpolation_bound():
    """FID = c + A exp(-(t - a) / w): FID(t*) - FID(1) = tol at t* = a - w ln((tol + A e^{-(1 - a)/w}) / A). Linear
    interpolation on a grid of step h misses it by at most h^2 max|e''| / (8 |e'|) = h^2 / (8 w) near t*."""
    c, amp, a, w, tol = 10.0, 5.0, 0.5, 0.05, 3.0
    exact = a - w * math.log((tol + amp * math.exp(-(1 - a) / w)) / amp)
    for h in (0.05, 0.025, 0.01):
        t = np.linspace(0.3, 1.0, int(round(0.7 / h)) + 1)
        f = c + amp * np.exp(-(t - a) / w)
        got = knee(t, f - f[-1] - tol)
        assert abs(got - exact) <= h**2 / (8 * w) * math.exp(h / w) + 1e-12, (h, got, exact)


def test_knee_is_the_first_crossing_from_below_and_none_outside_the_scan():
    t = [0.2, 0.4, 0.6, 0.8, 1.0]
    assert knee(t, [4.0, -1.0, 2.0, -1.0, -1.0]) == pytest.approx(0.2 + 0.2 * 4 / 5)  # the later excess is ignored
    assert knee(t, [-1.0, 2.0, 2.0, -1.0, -1.0]) is None  # fine at the smallest t: below the scan
    assert knee(t, [1.0, 1.0, 1.0, 1.0, 1.0]) is None  # never within the tolerance: above the scan


def test_knee_spread_is_the_spread_of_known_replicate_knees():
    """Bootstrap curves = the ramp with t0 shifted by delta_b: each replicate's knee is t0 + delta_b - p f1 / slope,
    so the knee's se is std(delta) and its 16-84 % band the percentiles of those knees."""
    t = np.round(np.arange(0.3, 1.0001, 0.025), 10)
    f1, slope, t0, p = 30.0, 300.0, 0.6, 0.5
    delta = np.random.default_rng(0).normal(0.0, 0.01, 64)
    boot = np.array([ramp(t, t0 + d, slope, f1) for d in delta])
    out = knee_with_error(t, ramp(t, t0, slope, f1), boot, "50%")
    knees = t0 + delta - p * f1 / slope
    assert out["knee"] == pytest.approx(t0 - p * f1 / slope, abs=1e-12)
    assert out["se"] == pytest.approx(np.std(knees, ddof=1), rel=1e-9)
    assert (out["lo"], out["hi"]) == pytest.approx(tuple(np.percentile(knees, [16, 84])), rel=1e-9)
    assert out["n_boot_with_knee"] == 64 and out["kind"] == "relative" and out["value"] == 0.5


def test_bootstrap_curves_are_held_to_the_point_curves_tolerance():
    """A replicate offset by a constant c (the bias of a resampled set's FID) has the point curve's knee: the
    tolerance p FID(1) is the point curve's, so the offset cancels in FID(t) - FID(1)."""
    t = np.round(np.arange(0.3, 1.0001, 0.05), 10)
    f = ramp(t, 0.6, 300.0, 30.0)
    out = knee_with_error(t, f, np.array([f + c for c in (0.0, 10.0, 30.0)]), "50%")
    assert out["knee"] == out["lo"] == out["hi"] == pytest.approx(0.6 - 0.5 * 30.0 / 300.0, abs=1e-12)
    assert out["se"] == pytest.approx(0.0, abs=1e-12)


def test_se_tolerance_is_k_times_the_paired_difference_se():
    """boot[b] = f + z_b g with g(1) = 0: FID(t) - FID(1) varies by |g(t)| std(z) across replicates."""
    t = np.linspace(0.4, 1.0, 7)
    f, g = ramp(t, 0.7, 200.0, 25.0), np.linspace(3.0, 0.0, 7)
    z = np.random.default_rng(1).normal(size=200)
    out = knee_with_error(t, f, f + z[:, None] * g, "2.5se")
    assert np.allclose(out["tol"], 2.5 * g * np.std(z, ddof=1), rtol=1e-9, atol=1e-12)
    e = f - f[-1] - 2.5 * g * np.std(z, ddof=1)
    i = int(np.argmax(e <= 0))
    assert out["knee"] == pytest.approx(t[i - 1] + e[i - 1] / (e[i - 1] - e[i]) * (t[i] - t[i - 1]), rel=1e-12)


def test_summarise_reads_the_rows_and_needs_the_full_process():
    from theory import VPLinear

    t = np.round(np.arange(0.4, 1.0001, 0.1), 10)
    f = ramp(t, 0.7, 100.0, 10.0)
    rows = [{"t_start": float(s), "fid": float(v), "boot": [float(v)] * 4} for s, v in zip(t, f, strict=True)]
    (k,) = summarise(rows[::-1], ("100%",), VPLinear())
    assert k["knee"] == pytest.approx(0.6) and k["theta"] == pytest.approx(float(VPLinear().theta(0.6)))
    with pytest.raises(ValueError, match=r"t_start = T = 1.0"):
        summarise(rows[:-1], ("100%",), VPLinear())


# --- the bootstrap ---------------------------------------------------------------------------------------------
def test_bootstrap_fid_is_fid_of_the_resampled_rows():
    rng = np.random.default_rng(2)
    ref_feats, feats = rng.normal(size=(400, 5)), rng.normal(0.3, 1.2, size=(60, 5))
    idx = bootstrap_indices(60, 50, seed=3)
    assert np.array_equal(idx, np.random.default_rng(3).integers(0, 60, size=(50, 60)))
    direct = np.array([fid(feats[i], ref_feats) for i in idx])
    ref = Reference.of(ref_feats)
    assert np.allclose(bootstrap_fid(feats, ref, idx), direct, rtol=1e-9, atol=1e-12)
    assert ref.score(feats) == pytest.approx(fid(feats, ref_feats), rel=1e-10)


def test_bootstrap_se_matches_the_spread_over_independent_draws():
    """Samples of N(m, I) in 3-d against a large reference of N(0, I), |m| = 1: the std of FID over 300 independent
    sample sets against the mean bootstrap se of 20 of them (n = 100)."""
    rng = np.random.default_rng(4)
    ref = Reference.of(rng.normal(size=(20000, 3)))
    m = np.array([1.0, 0.0, 0.0])
    spread = np.std([ref.score(rng.normal(size=(100, 3)) + m) for _ in range(300)], ddof=1)
    idx = bootstrap_indices(100, 200, seed=5)
    se = np.mean([bootstrap_fid(rng.normal(size=(100, 3)) + m, ref, idx).std(ddof=1) for _ in range(20)])
    assert se == pytest.approx(spread, rel=0.2), (se, spread)


# --- sampling grid and reruns ------------------------------------------------------------------------------------
def test_steps_keep_one_step_length():
    for t in (0.35, 0.5, 0.625, 1.0):
        m = steps_for(t, 100, 1e-3)
        assert abs((t - 1e-3) / (m - 1) - 0.999 / 99) <= 0.999 / 99 / (2 * (m - 1)) + 1e-12
    assert steps_for(0.002, 100, 1e-3) == 2


def test_a_rerun_keeps_the_rows_of_its_spec_and_drops_others(tmp_path):
    path = tmp_path / "k.json"
    header = {"spec": {"n_samples": 300}, "command": "a"}
    assert fid_knee._start_entry(path, "mnist", header) == set()
    for s in (0.5, 1.0):
        fid_knee._put(path, "mnist", row={"t_start": s, "fid": s})
    fid_knee._put(path, "mnist", row={"t_start": 0.5, "fid": 2.0})  # a row of the same t_start replaces the old one
    assert fid_knee._start_entry(path, "mnist", header | {"command": "b"}) == {0.5, 1.0}
    assert [r["fid"] for r in fid_knee._put(path, "mnist")["rows"]] == [2.0, 1.0]
    assert fid_knee._start_entry(path, "mnist", header | {"spec": {"n_samples": 400}}) == set()


def test_knees_only_recomputes_the_knees_and_the_figure_from_the_rows(tmp_path, capsys):
    t = np.round(np.arange(0.4, 1.0001, 0.1), 10)
    f = ramp(t, 0.7, 100.0, 10.0)
    rows = [
        {"t_start": float(s), "fid": float(v), "se": 1.0, "boot": [float(v)] * 4} for s, v in zip(t, f, strict=True)
    ]
    entry = {"rows": rows, "spec": {"sampler": "ddpm", "n_samples": 300}, "floor": {"fid": 5.0}, "predictions": {}}
    out, fig = tmp_path / "k.json", tmp_path / "k.png"
    out.write_text(json.dumps({"datasets": {"mnist": entry}, "command": "sampling"}))
    argv = ["--datasets", "mnist", "--knees-only", "--tolerances", "100%", "--out", str(out), "--figure", str(fig)]
    assert fid_knee.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"] == "sampling" and "--knees-only" in doc["knees_command"] and fig.stat().st_size > 0
    (k,) = doc["datasets"]["mnist"]["knees"]
    assert k["tolerance"] == "100%" and k["knee"] == pytest.approx(0.6)
    assert fid_knee.main([*argv[:1], "fashion-mnist", *argv[2:]]) == 2
    assert "knees_only needs rows" in capsys.readouterr().err


# --- bad inputs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"t_start": (0.5, 0.9)}, r"t_start must be >= 3 increasing times in \(0.001, 1\] ending at 1"),
        ({"t_start": (0.5, 0.7, 0.9)}, r"t_start must be .* ending at 1"),
        ({"t_start": (0.7, 0.5, 1.0)}, r"t_start must be >= 3 increasing"),
        ({"t_start": (0.0, 0.5, 1.0)}, r"t_start must be .* in \(0.001, 1\]"),
        ({"n_samples": 5}, r"n_samples must be an int >= 10; got 5"),
        ({"steps": 1}, r"steps must be an int >= 2; got 1"),
        ({"n_boot": 3}, r"n_boot must be an int >= 20; got 3"),
        ({"sampler": "pndm"}, r"sampler must be one of \('ddpm', 'ddim'\)"),
        ({"datasets": ("digits",)}, r"datasets must be one or more of \('mnist', 'fashion-mnist'\)"),
        ({"tolerances": ()}, r"tolerances must hold one or more"),
        ({"tolerances": ("3",)}, r"tolerances must be '<k>se' \(k > 0 standard errors\) or '<p>%' \(0 < p <= 1000"),
        ({"tolerances": ("0se",)}, r"tolerances must be .*; got '0se'"),
        ({"tolerances": ("2000%",)}, r"tolerances must be .*0 < p <= 1000 percent.*; got '2000%'"),
    ],
)
def test_bad_config_names_the_parameter_and_its_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Config(**kwargs)


def test_bad_inputs_of_the_functions():
    with pytest.raises(ValueError, match=r"n must be an int >= 2; got 1"):
        bootstrap_indices(1, 10, 0)
    with pytest.raises(ValueError, match=r"n_boot must be an int >= 2"):
        bootstrap_indices(10, 1, 0)
    ref = Reference.of(np.random.default_rng(0).normal(size=(50, 3)))
    with pytest.raises(ValueError, match=r"feats must have shape \(n, 3\)"):
        bootstrap_fid(np.zeros((10, 4)), ref, bootstrap_indices(10, 5, 0))
    with pytest.raises(ValueError, match=r"idx must be \(n_boot, 10\) indices in \[0, 10\)"):
        bootstrap_fid(np.zeros((10, 3)), ref, bootstrap_indices(12, 5, 0))
    with pytest.raises(ValueError, match=r"t must be >= 2 increasing times"):
        knee([0.5, 0.4, 1.0], [1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match=r"boot must be \(n_boot, 3\)"):
        knee_with_error([0.5, 0.7, 1.0], [3.0, 2.0, 1.0], np.zeros((4, 2)), "3se")
    assert parse_tolerance(" 1.5se ") == ("se", 1.5)


def test_the_command_refuses_bad_options_and_dry_runs(capsys):
    assert fid_knee.main(["--n-samples", "5"]) == 2
    assert "n_samples must be an int >= 10" in capsys.readouterr().err
    assert fid_knee.main(["--datasets", "mnist", "--tolerances", "2se", "10%", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '"fid-knee"' in out and '"10%"' in out and '"ddpm"' in out
