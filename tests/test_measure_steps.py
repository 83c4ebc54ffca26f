"""The cheap predictions (``empirical.pipelines.stages.cheap_predictions``) against independent computations, and
``empirical.pipelines.steps_sweep``'s table row arithmetic, and each row's own command."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import theory
from empirical.models.denoiser import T_MIN
from empirical.pipelines import steps_sweep
from empirical.pipelines.stages import cheap_predictions
from empirical.pipelines.steps_sweep import table_row

ROOT = Path(__file__).resolve().parents[1]


def test_cheap_predictions_against_closed_forms_and_the_theory():
    x = np.random.default_rng(0).normal(size=(40, 3)) * np.array([2.0, 1.0, 0.5])
    cheap, s = cheap_predictions(x), theory.VPLinear()
    lam = np.linalg.svd(x - x.mean(0), compute_uv=False)[0] ** 2 / len(x)  # the top covariance eigenvalue, by SVD
    assert cheap["top_covariance_eigenvalue"] == pytest.approx(lam, rel=1e-12)
    # Equal norm (eta = 1): 2 (sigma^2 - theta^2 lam) = sigma^4 at t_c.
    t = cheap["t_c_equal_norm"]
    th, s2 = float(s.theta(t)), float(s.sigma2(t))
    assert 2.0 * (s2 - th**2 * lam) == pytest.approx(s2**2, rel=1e-10)
    # Biroli: OU time 1/2 ln lam, i.e. theta = e^{-s} = lam^{-1/2} on a VP schedule; and theory's speciation_time.
    assert float(s.theta(cheap["t_c_biroli"])) == pytest.approx(lam**-0.5, rel=1e-10)
    assert cheap["t_c_biroli"] == pytest.approx(theory.speciation_time(theory.DeltaMixture(x), s).biroli_t, rel=1e-10)
    assert math.isnan(cheap_predictions(np.ones((5, 2)) * 0.3)["t_c_biroli"])  # no spread: no speciation


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


def test_rows_of_two_invocations_keep_their_own_commands(tmp_path):
    out = tmp_path / "sweep.json"
    model = str(ROOT / "docs" / "results" / "digits_denoiser.pt")
    base = ["--dataset", "digits", model, "--n-starts", "4", "--n-grid", "2", "--tol-t", "0.05", "--out", str(out)]
    first, second = [*base, "--t-max", "0.9", "--t-min", "0.5"], [*base, "--t-max", "0.8", "--t-min", "0.5"]
    assert steps_sweep.main(first) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["command"] == "python -m empirical steps-sweep " + " ".join(first)
    assert row["options"]["t_max"] == 0.9
    assert steps_sweep.main(second) == 0  # the same (dataset, step): its row replaces the first one
    (row,) = json.loads(out.read_text())["rows"]
    assert row["command"].endswith("--t-max 0.8 --t-min 0.5") and row["options"]["t_max"] == 0.8


def test_a_subset_sweep_checks_the_checkpoints_images_and_keeps_its_own_rows(tmp_path):
    """--classes measures on the subset the checkpoint was trained on: a checkpoint of all images is refused for
    it, and a subset's row sits beside the full set's row of the same step instead of replacing it."""
    from empirical._util.checkpoints import load_checkpoint, save_checkpoint

    model = ROOT / "docs" / "results" / "digits_denoiser.pt"
    ckpt = load_checkpoint(model)
    subset = tmp_path / "digits_0_1.pt"
    save_checkpoint(subset, ckpt | {"config": ckpt["config"] | {"classes": [0, 1]}}, keep_previous=False)
    out = tmp_path / "sweep.json"
    base = ["--n-starts", "4", "--n-grid", "2", "--tol-t", "0.05", "--t-max", "0.9", "--t-min", "0.5"]
    base += ["--out", str(out)]
    with pytest.raises(ValueError, match="trained on DataConfig.*classes=None"):
        steps_sweep.main(["--dataset", "digits", str(model), "--classes", "0", "1", *base])
    old = {"dataset": "digits", "step": ckpt["step"], "t_c_measured": 0.5}  # a row from before classes were stored
    out.write_text(json.dumps({"command": "earlier", "rows": [old]}))
    assert steps_sweep.main(["--dataset", "digits", str(subset), "--classes", "0", "1", *base]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r.get("classes"), r["step"]) for r in rows] == [(None, ckpt["step"]), ([0, 1], ckpt["step"])]
    assert rows[0] == old
    with pytest.raises(SystemExit):  # argparse's error: the selection is checked before any checkpoint is read
        steps_sweep.main(["--dataset", "digits", "--n-train", "0", str(model), *base])


def test_rows_of_two_backbones_at_one_step_are_both_kept(tmp_path):
    """A capacity comparison: the same data and step on two widths are two rows; the same width replaces."""
    out = tmp_path / "sweep.json"
    narrow = {"dataset": "digits", "step": 3, "net": {"net": "unet", "ch": 8}, "t_c_measured": 0.4}
    wide = narrow | {"net": {"net": "unet", "ch": 24}, "t_c_measured": 0.5}
    for row in (narrow, wide, wide | {"t_c_measured": 0.6}):
        steps_sweep._merge(out, row)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["net"]["ch"], r["t_c_measured"]) for r in rows] == [(24, 0.6), (8, 0.4)]  # sorted by the net's JSON


def test_a_row_names_the_checkpoints_backbone(tmp_path):
    from empirical._util.checkpoints import load_checkpoint

    model = ROOT / "docs" / "results" / "digits_denoiser.pt"
    config = load_checkpoint(model)["config"]
    step, net, training = steps_sweep._step(model, steps_sweep.DataConfig(dataset="digits"))
    assert net == {"net": config["net"], "width": config["width"], "depth": config["depth"]}
    assert training == {"t_train": [T_MIN, 1.0], "seed": config["seed"]}  # trained before t_train was stored


def test_rows_of_two_training_windows_or_seeds_at_one_step_are_all_kept(tmp_path):
    """A network trained on a window of times, or with another seed, is a row of its own beside the full-range
    run of the same backbone and step; a row without these fields is the full-range run of seed 0."""
    out = tmp_path / "sweep.json"
    net = {"net": "unet", "ch": 16}
    full = {"dataset": "digits", "step": 3, "net": net, "t_c_measured": 0.4}  # written before t_train was stored
    window = full | {"t_train": [0.4, 0.9], "seed": 0, "t_c_measured": 0.5}
    for row in (full, window, window | {"seed": 1}, full | {"t_train": [T_MIN, 1.0], "seed": 0, "t_c_measured": 0.3}):
        steps_sweep._merge(out, row)
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["t_train"][0], r["seed"], r["t_c_measured"]) for r in rows) == [
        (T_MIN, 0, 0.3), (0.4, 0, 0.5), (0.4, 1, 0.5)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("nonsense", "--device 'nonsense'"),
        ("meta", "cpu or cuda[:index]"),
        pytest.param("cuda", "CUDA device(s)", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU")),
    ],
)
def test_a_bad_device_is_refused_before_any_work(device, message, capsys):
    model = ROOT / "docs" / "results" / "digits_denoiser.pt"
    with pytest.raises(SystemExit):
        steps_sweep.main(["--dataset", "digits", str(model), "--device", device])
    assert message in capsys.readouterr().err
