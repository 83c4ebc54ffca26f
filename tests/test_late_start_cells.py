"""empirical.pipelines.late_start.cells and empirical.sampling.start_rule: argument errors; per-seed FIDs against an
independent computation (``samplers.generate`` and ``metrics.scores`` called here, on the exact denoiser of 300 digits
and a classifier trained for 40 steps: seconds); mean and std against numpy; the rule against hand-made curves whose
best is known, and the log-SNR offset against the closed form of VPLinear's SNR; the table comparison on hand-made
rows."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import load_dataset  # noqa: E402
from empirical.metrics.classifier import train_classifier  # noqa: E402
from empirical.metrics.scores import fid  # noqa: E402
from empirical.models.denoiser import ExactDenoiser  # noqa: E402
from empirical.pipelines.late_start import cells as cells_mod  # noqa: E402
from empirical.pipelines.late_start.cells import (  # noqa: E402
    Config,
    compare_with_table,
    main,
    resolve_t_start,
    score_cells,
)
from empirical.pipelines.late_start.stages import ALL_TABLE_SAMPLERS, Drawer, Scorer  # noqa: E402
from empirical.sampling.samplers import generate  # noqa: E402
from empirical.sampling.start_rule import calibrate, load_calibration, rule_t_start  # noqa: E402
from theory import DeltaMixture, VPLinear  # noqa: E402
from theory.paths import repo_root  # noqa: E402


def log_snr_vp_linear(t, b0=0.1, b1=20.0):
    """log(theta^2 / (1 - theta^2)) with log theta = -t^2 (b1 - b0) / 4 - t b0 / 2 (VPLinear's closed form)."""
    log_theta2 = -0.5 * t**2 * (b1 - b0) - t * b0
    return log_theta2 - math.log(-math.expm1(log_theta2))


# --- arguments ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samplers": ("ddim", "euler")}, "samplers must be a non-empty subset"),
        ({"grids": ("cosine",)}, "grids must be a non-empty subset"),
        ({"inits": ("gls", "gls")}, "inits must be a non-empty subset"),
        ({"inits": ()}, "inits must be a non-empty subset"),
        ({"n_steps": (1,)}, "n_steps must be"),
        ({"seeds": (1, 1)}, "seeds must be"),
        ({"seeds": (-1,)}, "seeds must be"),
        ({"t_start": ("1.5",)}, r"t_start must be 'tc', 'rule' or a number in \(0.001, 1\]"),
        ({"t_start": ("late",)}, "t_start must be"),
        ({"t_start": ("tc", "tc")}, "t_start must be a non-empty tuple of distinct"),
        ({"n_samples": 5}, "n_samples must be >= 10"),
        ({"classifier_steps": 0}, "classifier_steps must be"),
        ({"inception_n": 5}, r"inception_n must be 0 \(skip\) or an int in \[10, n_samples=500\]"),
        ({"inception_n": 50, "n_samples": 40}, r"inception_n must be .* \[10, n_samples=40\]"),
        ({"eta": -1.0}, "eta must be"),
        ({"dataset": "cifar"}, "dataset"),
    ],
)
def test_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Config(**kwargs)


def test_main_rejects_bad_paths_and_prints_the_dry_run(tmp_path, capsys):
    assert main(["--table", str(tmp_path / "none.json"), "--dry-run"]) == 2
    assert "table must be a late_start curves file" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--dry-run"]) == 2
    assert "out must be a file path" in capsys.readouterr().err
    assert main(["--t-start", "0", "--dry-run"]) == 2
    assert "t_start must be" in capsys.readouterr().err
    assert main(["--t-start", "rule", "0.5", "--seeds", "4", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["late_start_cells"]["t_start"] == ["rule", "0.5"] and out["late_start_cells"]["seeds"] == [4]
    assert out["out"].endswith("late_start_cells_digits.json")


def test_rule_rejects_an_uncalibrated_n_and_a_bad_t_c():
    cal = calibrate([{"init": "gls", "n_steps": 3, "t": [0.2, 0.4, 0.6], "fid": [3.0, 1.0, 2.0]}], 0.4, VPLinear())
    with pytest.raises(ValueError, match=r"n_steps must be one the rule was calibrated at, \[3\]"):
        rule_t_start(5, 0.4, VPLinear(), cal)
    with pytest.raises(ValueError, match=r"t_c must be a number in \(0, T=1.0\]"):
        rule_t_start(3, 1.2, VPLinear(), cal)
    with pytest.raises(ValueError, match="no curves with init 'gls'"):
        calibrate([{"init": "late", "n_steps": 3, "t": [0.2, 0.4, 0.6], "fid": [3.0, 1.0, 2.0]}], 0.4, VPLinear())
    with pytest.raises(ValueError, match="calibration must be a late_start curves file"):
        load_calibration("no/such/file.json", VPLinear())


# --- the rule --------------------------------------------------------------------------------------------
def test_rule_reproduces_its_calibration_from_curves_with_a_known_best(tmp_path):
    """Three curves at n = 3 whose individual minima disagree; divided by their minima, their median over curves
    is [1.111, 1, 1.1, 2] on t = [0.2, 0.3, 0.4, 0.5]: the best is t = 0.3. At n = 10 the best is the last point,
    T: the rule starts there whatever t_c."""
    t = [0.2, 0.3, 0.4, 0.5]
    curves = [{"init": "gls", "n_steps": 3, "t": t, "fid": f} for f in
              ([4.0, 2.0, 2.2, 8.0], [3.0, 3.3, 3.0, 6.0], [5.0, 4.5, 6.0, 5.0])]  # fmt: skip
    curves.append({"init": "gls", "n_steps": 10, "t": [0.5, 0.75, 1.0], "fid": [3.0, 2.0, 1.0]})
    curves.append({"init": "late", "n_steps": 3, "t": t, "fid": [1.0, 9.0, 9.0, 9.0]})  # another init: ignored
    t_c = 0.41
    path = tmp_path / "curves.json"
    path.write_text(json.dumps({"sweep": curves, "summary": {"t_start_theory": t_c, "dataset": "hand"}}))
    cal = load_calibration(path, VPLinear())
    by_n = cal["by_n"]
    assert cal["t_c"] == t_c and cal["source"] == str(path) and set(by_n) == {"3", "10"}
    assert by_n["3"]["t_best"] == 0.3 and by_n["3"]["n_curves"] == 3 and not by_n["3"]["at_T"]
    np.testing.assert_allclose(by_n["3"]["median_relative_fid"], [1.1111, 1.0, 1.1, 2.0], atol=1e-4)
    delta = log_snr_vp_linear(0.3) - log_snr_vp_linear(t_c)
    assert by_n["3"]["delta_log_snr"] == pytest.approx(delta, rel=1e-10)
    assert by_n["3"]["ratio_t_c"] == pytest.approx(0.3 / t_c)
    # the calibration's own t_c gives back the calibration's best; another t_c keeps the log-SNR offset
    assert rule_t_start(3, t_c, VPLinear(), by_n) == pytest.approx(0.3, abs=1e-10)
    t_new = rule_t_start(3, 0.6, VPLinear(), by_n)
    assert log_snr_vp_linear(t_new) - log_snr_vp_linear(0.6) == pytest.approx(delta, abs=1e-8)
    assert by_n["10"]["at_T"] and rule_t_start(10, 0.2, VPLinear(), by_n) == 1.0
    # a target SNR below SNR(T) is clamped to T
    far = {"3": {**by_n["3"], "delta_log_snr": -50.0}}
    assert rule_t_start(3, 0.6, VPLinear(), far) == 1.0
    assert resolve_t_start("rule", 3, t_c, VPLinear(), cal) == rule_t_start(3, t_c, VPLinear(), by_n)
    assert resolve_t_start("tc", 3, t_c, VPLinear(), None) == t_c
    assert resolve_t_start("0.25", 3, t_c, VPLinear(), None) == 0.25


# --- scoring cells against an independent computation -------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(one_torch_thread):
    """The exact denoiser of 300 digits and a classifier trained on them for 40 steps (a few seconds)."""
    ds = load_dataset("digits", n=300, seed=0)
    clf = train_classifier(ds.x, ds.labels, ds.image_shape, steps=40, seed=0)
    return ExactDenoiser(DeltaMixture(ds.x)), ds, clf


def test_per_seed_fids_equal_an_independent_computation(tiny):
    den, ds, clf = tiny
    cfg = Config(samplers=("dpm-solver++",), grids=("uniform", "logsnr"), n_steps=(3,),
                 inits=("vanilla", "gls", "teleport"), seeds=(0, 7), t_start=("tc", "0.5"), n_samples=40)  # fmt: skip
    bar = __import__("tqdm").tqdm(disable=True)
    scorer = Scorer(clf, ds.x, 10, 2, 0)
    out = score_cells(Drawer(den, ds.x, bar), scorer, cfg, t_c=0.41, calibration=None)
    assert len(out) == 1 * 2 * 1 * 2 * 3
    ref = clf.features(ds.x.astype(np.float32))
    for c in out:
        t = {"tc": 0.41, "0.5": 0.5, "none": None}[c["t_start_spec"]]
        assert c["t_start"] == (1.0 if c["init"] == "vanilla" else t)
        for seed, value in zip(cfg.seeds, c["fid"], strict=True):
            name = ALL_TABLE_SAMPLERS[c["sampler"]]
            x = generate(den, name, 3, 40, init=c["init"], t_start=t, x_train=ds.x, seed=seed, grid=c["grid"]).numpy()
            assert value == fid(clf.features(np.clip(x, -1, 1).astype(np.float32)), ref)
        assert c["mean"] == np.mean(c["fid"]) and c["std"] == np.std(c["fid"], ddof=1)
        assert c["fid"][0] != c["fid"][1]  # two seeds, two draws
    one = score_cells(Drawer(den, ds.x, bar), scorer, Config(inits=("gls",), seeds=(3,), n_steps=(3,), n_samples=20),
                      t_c=0.41, calibration=None)  # fmt: skip
    assert all(c["std"] is None and c["mean"] == c["fid"][0] for c in one)


def test_a_killed_run_resumes_and_each_seed_gets_its_inception_fid(tiny):
    """score_cells hands each cell to on_cell as it is done; a rerun given those cells draws only the rest; the
    inception callable (here a stand-in, the samples' mean) scores every seed's draw."""
    den, ds, clf = tiny
    cfg = Config(samplers=("ddim",), n_steps=(3,), inits=("vanilla", "gls"), seeds=(0, 1), n_samples=20)
    bar, scorer, calls, saved = __import__("tqdm").tqdm(disable=True), Scorer(clf, ds.x, 10, 2, 0), [], []

    def inception(x):
        calls.append(1)
        return float(x.mean())

    def kill(cells):
        saved.extend(cells)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_cells(Drawer(den, ds.x, bar), scorer, cfg, 0.41, None, inception, on_cell=kill)
    assert len(saved) == 1 and len(calls) == 2  # the first cell, both seeds
    out = score_cells(Drawer(den, ds.x, bar), scorer, cfg, 0.41, None, inception, done=saved)
    assert out[0] == saved[0] and len(calls) == 4  # only the second cell was drawn again
    for c in out:
        for seed, value in zip(cfg.seeds, c["fid_inception"], strict=True):
            t = None if c["init"] == "vanilla" else 0.41
            x = generate(den, "ddim", 3, 20, init=c["init"], t_start=t, x_train=ds.x, seed=seed).numpy()
            assert value == float(x.mean())


def test_run_writes_the_output_atomically(tmp_path, monkeypatch, one_torch_thread, capsys):
    """The command on the committed digits model (one cell, 20 samples, the classifier at 20 steps), the theory's
    t_c stubbed (its search takes minutes; tests/test_pipeline_stages.py tests it), the rule from the committed
    digits curves."""
    monkeypatch.setattr(cells_mod.stages, "predict", lambda *args: {"t_c_predicted": 0.45, "prediction": "stub"})
    out = tmp_path / "cells.json"
    model = str(repo_root() / "docs/results/digits_denoiser.pt")
    argv = ["--model", model, "--samplers", "ddim", "--n-steps", "3", "--inits", "gls", "--seeds", "1", "2",
            "--t-start", "rule", "--n-samples", "20", "--classifier-steps", "20", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["cells.json"]  # no temporary file left
    (c,) = data["cells"]
    by_n = data["calibration"]["by_n"]
    assert c["t_start"] == pytest.approx(rule_t_start(3, 0.45, VPLinear(), by_n), abs=1e-12)
    assert data["calibration"]["source"].endswith("docs/results/late_start_digits.json")
    assert c["seeds"] == [1, 2] and len(c["fid"]) == 2 and data["comparison"] is None
    assert data["command"].startswith("python -m empirical late-start-cells --model")
    assert data["classifier"] == {"steps": 20, "seed": 0, "accuracy": data["classifier"]["accuracy"]}
    assert data["complete"] is True and data["inception"] is None and "fid_inception" not in c
    # an unfinished file of the same config is resumed: its cell is kept, not drawn again
    out.write_text(json.dumps(data | {"complete": False, "cells": [c | {"fid": [-1.0, -2.0]}]}))
    assert main(argv) == 0
    assert json.loads(out.read_text())["cells"][0]["fid"] == [-1.0, -2.0]
    # one more seed: the seeds an unfinished run scored are kept, only the new one is drawn
    out.write_text(json.dumps(data | {"complete": False, "cells": [c | {"fid": [-1.0, -2.0]}]}))
    assert main([*argv, "--seeds", "1", "2", "3"]) == 0
    (c3,) = json.loads(out.read_text())["cells"]
    assert c3["seeds"] == [1, 2, 3] and c3["fid"][:2] == [-1.0, -2.0] and c3["fid"][2] > 0
    # an unfinished run of another config (other numbers: n_samples) is refused before any work, its file kept
    unfinished = json.dumps(data | {"complete": False})
    out.write_text(unfinished)
    capsys.readouterr()
    assert main([*argv, "--n-samples", "30"]) == 2
    assert "holds an unfinished run whose config differs in n_samples" in capsys.readouterr().err
    assert out.read_text() == unfinished


def test_compare_with_table():
    def row(init, rule, fid, t=0.6, seed=1, n=500):
        return {"sampler": "ddim", "grid": "uniform", "n_steps": 5, "init": init, "t_start_rule": rule, "fid": fid,
                "t_start": t, "seed": seed, "n_samples": n}  # fmt: skip

    table = [row("gls", "theory", 20.0), row("gls", "sweep-best", 10.0, t=0.4), row("teleport", "theory", 25.0)]
    base = {"sampler": "ddim", "grid": "uniform", "n_steps": 5, "seeds": [2, 1], "n_samples": 500}
    cells = [
        {**base, "init": "gls", "t_start_spec": "tc", "t_start": 0.6, "fid": [30.0, 20.0]},
        {**base, "init": "teleport", "t_start_spec": "tc", "t_start": 0.6, "fid": [24.0, 25.5]},
        {**base, "init": "gls", "t_start_spec": "rule", "t_start": 0.45, "fid": [9.0, 10.9]},
        {**base, "init": "gls", "t_start_spec": "0.3", "t_start": 0.3, "fid": [9.0, 11.2]},
        {**base, "init": "gls", "t_start_spec": "rule", "t_start": 0.45, "fid": [1.0], "seeds": [2]},  # no seed 1
    ]
    summary = compare_with_table(cells, table)
    assert summary == {"reproduced": [["ddim", "uniform", 5, "gls", True], ["ddim", "uniform", 5, "teleport", False]],
                       "within_10pct": 1, "compared": 3}  # fmt: skip
    assert [c.get("within_10pct") for c in cells] == [False, None, True, False, None]
    assert cells[2]["table"] == {"seed": 1, "gls_sweep_best": 10.0, "gls_sweep_best_t": 0.4, "gls_theory": 20.0,
                                 "teleport_theory": 25.0}  # fmt: skip
    assert cells[2]["fid_at_table_seed"] == 10.9


def test_ratio_table_sets_each_late_start_against_the_vanilla_cell_of_its_sampler_grid_and_n():
    from empirical.pipelines.late_start.cells import ratio_table

    def cell(init, grid, fids, inception, t=1.0):
        return {"sampler": "ipndm", "grid": grid, "n_steps": 10, "init": init, "t_start": t,
                "mean": float(np.mean(fids)), "fid_inception": inception}  # fmt: skip

    cells = [
        cell("vanilla", "edm", [40.0, 20.0], [100.0]),
        cell("gls", "edm", [10.0], [40.0], 0.6091),
        cell("gls", "logsnr", [5.0], [5.0], 0.6091),
    ]  # fmt: skip  (no vanilla on logsnr: no row)
    lines = ratio_table(cells).splitlines()
    assert lines[2:] == ["| ipndm | edm | 10 | gls (0.6091) | 30.00 | 10.00 | 3.00x | 100.00 | 40.00 | 2.50x |"]
    assert "Inception" not in ratio_table([{k: v for k, v in c.items() if k != "fid_inception"} for c in cells])


def test_the_packaged_calibration_is_the_committed_curves():
    """The rule's calibration shipped with the package equals the one computed from docs/results' digits curves."""
    from empirical.sampling.start_rule import DIGITS_CURVES, packaged_calibration

    assert packaged_calibration() == json.loads(json.dumps(load_calibration(repo_root() / DIGITS_CURVES, VPLinear())))
