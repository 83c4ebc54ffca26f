"""The speciation pipeline (empirical.pipelines.speciation): Lambda, the OU-to-VP conversion, the reading of t_S on a
curve and its error, the published row's grid reading, and the measured curve of an exact denoiser, each held against
an independent computation."""

import json
import math

import numpy as np
import pytest

from empirical.pipelines import speciation as sp
from theory import DeltaMixture, VPLinear
from theory.cloning_curve import biroli_cloning_probability, cloning_curve


def two_clusters(n=40, d=12, seed=0):
    """n images in [-1, 1]: two clusters at -+0.8 (1, ..., 1) with small noise (Lambda ~ 0.64 d in [-1, 1] units)."""
    rng = np.random.default_rng(seed)
    sign = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)
    return np.clip(0.8 * sign[:, None] + 0.1 * rng.normal(size=(n, d)), -1.0, 1.0)


def test_paper_lambda_is_the_top_singular_value_of_the_centred_unit_pixels():
    x = two_clusters()
    u = (x + 1.0) / 2.0  # pixels in [0, 1]
    s = np.linalg.svd(u - u.mean(0), compute_uv=False)
    assert sp.paper_lambda(x) == pytest.approx(s[0] ** 2 / (len(x) - 1), rel=1e-12)
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        sp.paper_lambda(np.zeros(5))


def test_speciation_times_against_svd_and_the_vp_linear_closed_form():
    x = two_clusters()
    n = len(x)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    st = sp.speciation_times(x)
    assert st["Lambda"] == pytest.approx(s[0] ** 2 / n, rel=1e-12)  # network units, covariance with N
    assert st["Lambda_paper"] == pytest.approx(st["Lambda"] / 4 * n / (n - 1), rel=1e-12)
    assert st["t_S_ou"] == pytest.approx(0.5 * math.log(s[0] ** 2 / n), rel=1e-12)
    # VP linear: -ln theta(t) = (b0 t + (b1 - b0) t^2 / 2) / 2 = s, a quadratic in t
    b0, b1, s_ou = 0.1, 20.0, st["t_S_ou"]
    assert st["t_S"] == pytest.approx((-b0 + math.sqrt(b0**2 + 4 * (b1 - b0) * s_ou)) / (b1 - b0), abs=1e-9)


def test_read_crossing_on_a_piecewise_linear_curve_in_any_order():
    t, phi = [0.6, 0.2, 0.8, 0.4], [0.7, 0.95, 0.55, 0.85]
    # between t = 0.6 (0.70) and t = 0.4 (0.85): 0.6 + (0.775 - 0.70) / 0.15 * (0.4 - 0.6) = 0.5
    assert sp.read_crossing(t, phi, 0.775) == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(sp.read_crossing(t, phi, 0.99))  # never reached
    with pytest.raises(ValueError, match="level must be a probability"):
        sp.read_crossing(t, phi, 1.5)
    with pytest.raises(ValueError, match="t and phi must be 1D"):
        sp.read_crossing([0.1, 0.2], [0.5], 0.7)


def test_read_crossing_finds_the_two_gaussians_speciation_time():
    # Biroli et al.'s two Gaussians: phi(s_S) at s_S = 1/2 ln d exactly; read on a grid of OU times
    d = 256
    s_true = 0.5 * math.log(d)
    level = float(biroli_cloning_probability(s_true, d))
    s = np.linspace(s_true - 0.5, s_true + 0.5, 101) + 0.0037  # the crossing falls between grid points
    phi = biroli_cloning_probability(s, d)
    assert sp.read_crossing(s, phi, level) == pytest.approx(s_true, abs=2e-4)


def test_crossing_error_is_the_delta_method_of_the_reading():
    t, phi, se = np.array([0.8, 0.6, 0.4, 0.2]), np.array([0.55, 0.7, 0.85, 0.95]), np.array([0.03, 0.04, 0.02, 0.01])
    h, grads = 1e-7, []
    for k in (1, 2):  # the two points around the crossing; central differences of read_crossing
        up, dn = phi.copy(), phi.copy()
        up[k] += h
        dn[k] -= h
        grads.append((sp.read_crossing(t, up, 0.775) - sp.read_crossing(t, dn, 0.775)) / (2 * h))
    want = math.hypot(grads[0] * se[1], grads[1] * se[2])
    assert sp.crossing_error(t, phi, se, 0.775) == pytest.approx(want, rel=1e-6)
    assert sp.crossing_error(t[::-1], phi[::-1], se[::-1], 0.775) == pytest.approx(want, rel=1e-6)


def test_published_grid_reading_reproduces_the_printed_t_S():
    # the authors' reading, written out in numpy: the first DDPM step with alpha-bar < 1/Lambda, as -1/2 ln alpha-bar
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    j = int(np.where(abar < 1.0 / sp.PUBLISHED["Lambda"])[0][0])
    grid = sp.ddpm_grid_ou_time(sp.PUBLISHED["Lambda"], sp.PUBLISHED["measured_over_theory_steps"])
    assert grid["step"] == j and grid["ou_time"] == pytest.approx(-0.5 * math.log(abar[j]), rel=1e-12)
    assert grid["ou_time"] == pytest.approx(sp.PUBLISHED["t_S_ou"], abs=1e-5)  # their float32 cumprod
    jm = sp.PUBLISHED["measured_over_theory_steps"] * j
    assert grid["measured_ou_time"] == pytest.approx(np.interp(jm, np.arange(1000), -0.5 * np.log(abar)), rel=1e-12)
    row = sp.published_row()
    assert row["t_S"] == (j + 1) / 1000 and row["measured_over_theory_ou"] < 1.0
    with pytest.raises(ValueError, match="need lam > 1"):
        sp.ddpm_grid_ou_time(0.5)


def test_measured_curve_of_the_exact_denoiser_follows_the_exact_posterior():
    torch = pytest.importorskip("torch")
    from empirical.models.denoiser import ExactDenoiser

    pts = np.array([[-1.0, 0.3], [-1.0, -0.3], [1.0, 0.3], [1.0, -0.3]])
    labels = np.array([0, 0, 1, 1])
    data, ts = DeltaMixture(pts), (0.2, 0.3, 0.45)
    exact = cloning_curve(data, VPLinear(), ts, labels=labels, n=4000, n_steps=2, seed=1).posterior

    def classify(x):
        return (x[:, 0] > 0).to(torch.int64).numpy()

    net = sp.measured_curve(ExactDenoiser(data), classify, ts, 0.775, n_parents=200, n_steps=50, seed=0)
    order = np.argsort(np.asarray(ts))[::-1]  # the measured curve comes in decreasing t
    np.testing.assert_allclose(net["t"], np.asarray(ts)[order], atol=0.01)  # snapped to the grid
    assert np.all(np.abs(net["p"] - exact[order]) < 4 * net["se"] + 0.02)
    assert net["se"] == pytest.approx(np.sqrt(net["p"] * (1 - net["p"]) / 200), rel=1e-6)
    t_exact = sp.read_crossing(np.asarray(ts), exact, 0.775)  # ~0.26, between 0.2 and 0.3
    assert abs(net["t_S"] - t_exact) < 3 * net["t_S_se"] + 0.02


def test_config_names_the_bad_option():
    for kwargs, match in (({"classes": (1,)}, "classes must be two"), ({"t": (0.5,)}, "t must be"),
                          ({"n_parents": 1}, "n_parents"), ({"dataset": "cifar"}, "dataset must be")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            sp.Config(**kwargs)


def test_command_runs_end_to_end_on_a_tiny_digits_model(tmp_path, capsys):
    from empirical.training.config import TrainConfig
    from empirical.training.train import train

    tcfg = TrainConfig(dataset="digits", classes=(0, 1), net="mlp", width=32, depth=1, steps=5, batch_size=16,
                       warmup=1, ckpt_every=5, out=str(tmp_path / "run"), device="cpu")  # fmt: skip
    ckpt = train(tcfg)
    out = tmp_path / "speciation.json"
    argv = ["--model", str(ckpt), "--dataset", "digits", "--classes", "0", "1", "--t", "0.6", "0.3",
            "--n-parents", "4", "--n-steps", "4", "--exact-pairs", "4", "--exact-steps", "2",
            "--classifier-steps", "5", "--out", str(out)]  # fmt: skip
    assert sp.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["command"].startswith("python -m empirical speciation --model")
    assert res["data"]["per_class"] == {"0": 178, "1": 182} and res["theory"]["Lambda"] > 0
    assert set(res["timings"]) >= {"data_s", "theory_s", "exact_s", "classifier_s", "network_s", "total_s"}
    assert res["published"]["Lambda"] == 7.66 and len(res["network"]["p"]) == 2
    assert sp.main([*argv[:5], "1", "2", *argv[7:]]) == 2  # trained on 0 and 1, asked for 1 and 2
    assert "was trained on" in capsys.readouterr().err
