"""The cheap predictions (``empirical.pipelines.stages.cheap_predictions``) against independent computations, and
``empirical.pipelines.steps_sweep``'s table row arithmetic, and each row's own command."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import theory
from empirical._util.cli import typed_command
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


def test_a_subset_sweep_checks_the_checkpoints_images_and_keeps_its_own_rows(tmp_path, capsys):
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
    assert steps_sweep.main(["--dataset", "digits", str(model), "--classes", "0", "1", *base]) == 2  # before work
    assert re.search(r"trained on DataConfig.*classes=None", capsys.readouterr().err)
    assert not out.exists()
    old = {"dataset": "digits", "step": ckpt["step"], "t_c_measured": 0.5}  # a row from before classes were stored
    out.write_text(json.dumps({"command": "earlier", "rows": [old]}))
    assert steps_sweep.main(["--dataset", "digits", str(subset), "--classes", "0", "1", *base]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r.get("classes"), r["step"]) for r in rows] == [(None, ckpt["step"]), ([0, 1], ckpt["step"])]
    assert rows[0] == old
    # the selection is checked before any checkpoint is read
    assert steps_sweep.main(["--dataset", "digits", "--n-train", "0", str(model), *base]) == 2
    assert "n_train must be None or an int >= 1; got 0" in capsys.readouterr().err


def test_a_checkpoint_after_the_classes_is_a_checkpoint(tmp_path):
    """``--classes 0 1 CKPT``: the list of labels ends at the file (it used to read the file as a label)."""
    model = str(ROOT / "docs" / "results" / "digits_denoiser.pt")
    cfg, _ = typed_command(steps_sweep.Config, "steps-sweep", "", ["--dataset", "digits", "--classes", "0", "1", model])
    assert cfg.classes == (0, 1) and cfg.checkpoints == (model,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--t-min", "0"], "t_min must be a number in (0, t_max=1.0); got 0.0"),  # it used to scan from 0.02
        (["--t-max", "0.3", "--t-min", "0.5"], "t_min must be a number in (0, t_max=0.3); got 0.5"),
        (["--tol-t", "0"], "tol_t must be a finite number > 0"),
        (["--prediction", "benchmarks/results.json:paper"], "does not state N and d"),
    ],
)
def test_bad_options_are_refused_before_any_work(args, message, tmp_path, capsys):
    model = str(ROOT / "docs" / "results" / "digits_denoiser.pt")
    out = tmp_path / "sweep.json"
    assert steps_sweep.main(["--dataset", "digits", model, "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_an_output_of_another_kind_is_refused_before_any_work(tmp_path, capsys):
    model = str(ROOT / "docs" / "results" / "digits_denoiser.pt")
    (tmp_path / "list.json").write_text("[]")
    assert steps_sweep.main(["--dataset", "digits", model, "--out", str(tmp_path / "list.json")]) == 2
    assert "is not a table of this command (an object with a 'rows' list)" in capsys.readouterr().err
    (tmp_path / "object.json").write_text("{}")
    assert steps_sweep.main(["--dataset", "digits", model, "--table", str(tmp_path / "object.json")]) == 2
    assert "table=" in capsys.readouterr().err


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
    assert steps_sweep.main(["--dataset", "digits", str(model), "--device", device]) == 2
    assert message in capsys.readouterr().err
