"""The pipelines' ``--model`` and ``--prediction`` (``empirical.pipelines.stages``) and the cloning stage's size
(``empirical.pipelines.breaking_time.stages``): a file measured without training and not re-exported, the benchmark's
exact prediction read and checked against the training images, cloning's cost counted through the network, and the
centre branches switched off."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import theory  # noqa: E402
from empirical.data.datasets import load_dataset  # noqa: E402
from empirical.measure.flow import count_rows  # noqa: E402
from empirical.pipelines import stages, steps_sweep  # noqa: E402
from empirical.pipelines.breaking_time import pipeline as breaking_time  # noqa: E402
from empirical.pipelines.breaking_time import stages as stages_breaking  # noqa: E402
from empirical.pipelines.late_start import pipeline as late_start  # noqa: E402
from empirical.training.train import export_weights, load_denoiser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "results.json"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _no_training(cfg):
    pytest.fail(f"the denoiser was trained ({cfg.out}); --model must load its file")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny digits MLP trained by the pipeline's own stage (30 steps, seconds), and its exported weights."""
    tmp = tmp_path_factory.mktemp("model")
    cfg = breaking_time.Config(width=16, depth=1, steps=30, batch_size=32, run_dir=str(tmp / "run"))
    model = stages.denoiser(cfg, 64)
    return model, export_weights(model.checkpoint, tmp / "export.pt")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").x


def test_model_file_is_loaded_not_trained(trained, tmp_path, monkeypatch):
    model, export = trained
    stored = torch.load(model.checkpoint, map_location="cpu", weights_only=True)
    assert model.trained and model.train_steps == 30
    assert model.final_loss == pytest.approx(np.mean(np.asarray(stored["loss"], dtype=np.float64)[-200:]), rel=1e-6)
    monkeypatch.setattr(stages, "train", _no_training)
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(0))
    for path, final_loss in ((model.checkpoint, model.final_loss), (export, None)):  # an export holds no losses
        # The training fields (steps, width) are ignored: the file's own config builds the network.
        cfg = breaking_time.Config(model=str(path), steps=5, width=8, run_dir=str(tmp_path / "run"))
        got = stages.denoiser(cfg, 64)
        assert not got.trained and got.train_steps == 30 and got.final_loss == final_loss
        assert got.train_config.width == 16 and got.source == str(path)
        assert torch.equal(got.denoiser(x, 0.4), model.denoiser(x, 0.4))
        assert stages_breaking.model_file(got, tmp_path, "digits") == str(path)  # named, not re-exported
    assert not list(tmp_path.glob("*.pt")) and not (tmp_path / "run" / "checkpoint.pt").exists()
    assert stages_breaking.model_file(model, tmp_path, "digits") == str(tmp_path / "digits_denoiser.pt")
    assert torch.equal(load_denoiser(tmp_path / "digits_denoiser.pt")(x, 0.4), model.denoiser(x, 0.4))


def test_model_of_other_images_is_refused(trained, tmp_path):
    export = str(trained[1])
    for other in ({"dataset": "mnist"}, {"classes": (0, 1)}, {"n_train": 100}):
        with pytest.raises(ValueError, match="model .*export.pt was trained on"):
            stages.denoiser(breaking_time.Config(model=export, run_dir=str(tmp_path), **other), 64)


def test_model_with_diffusers_or_missing_is_refused(trained, capsys):
    with pytest.raises(ValueError, match="model and diffusers are exclusive"):
        breaking_time.Config(model="m.pt", diffusers="folder")
    for main in (breaking_time.main, late_start.main):
        assert main(["--model", str(trained[1]), "--diffusers", "folder", "--dry-run"]) == 2
        assert "model and diffusers are exclusive" in capsys.readouterr().err
        assert main(["--model", "no/such/model.pt", "--dry-run"]) == 2
        assert "model must be a checkpoint" in capsys.readouterr().err
    assert breaking_time.main(["--model", str(trained[1]), "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"] is None and out["breaking_time"]["model"] == str(trained[1])


def test_prediction_is_read_not_computed(digits, monkeypatch):
    spec = f"{BENCH}:digits"
    committed = json.loads(BENCH.read_text())["digits"]
    entry = stages.read_prediction(spec, digits, "digits")
    names = ("t_c", "theta_c", "kind", "centre_t", "macroscopic_t")
    assert entry == {k: committed[k] for k in names} | {"source": spec}
    monkeypatch.setattr(theory, "critical_time", lambda *a, **k: pytest.fail("critical_time ran"))
    pred = stages.predict(digits, 1.0, None, entry)
    assert pred["t_c_predicted"] == committed["t_c"] and pred["kind_predicted"] == committed["kind"]
    assert pred["macroscopic_t_predicted"] == committed["macroscopic_t"] and pred["prediction"] == spec
    # The entry is on the benchmark's schedule, VPLinear: its theta_c is theta(t_c) there.
    assert float(theory.VPLinear().theta(pred["t_c_predicted"])) == pytest.approx(pred["theta_c_predicted"], rel=1e-9)
    cheap = stages.cheap_predictions(digits)  # still computed (tested against closed forms in test_measure_steps)
    assert {k: pred[k] for k in cheap} == cheap


def test_prediction_of_other_images_is_refused(digits, tmp_path, monkeypatch, capsys):
    spec = f"{BENCH}:digits"
    with pytest.raises(ValueError, match=r"prediction .* computed on N=1797 images of d=64; .* N=100, d=64"):
        stages.read_prediction(spec, digits[:100], "digits")
    with pytest.raises(ValueError, match=r"prediction .* N=1797 .* d=64; the training images are N=1797, d=63"):
        stages.read_prediction(spec, digits[:, :63], "digits")
    with pytest.raises(ValueError, match="computed on 'digits'; the dataset is 'mnist'"):
        stages.read_prediction(spec, digits, "mnist")
    with pytest.raises(ValueError, match="computed at eta = 1.0; eta is 0.5"):
        stages.read_prediction(spec, digits, "digits", eta=0.5)
    with pytest.raises(ValueError, match="has no entry 'cifar' with a t_c; entries: .*'digits'"):
        stages.read_prediction(f"{BENCH}:cifar")
    with pytest.raises(ValueError, match="prediction must be FILE:KEY"):
        stages.read_prediction(str(BENCH))
    with pytest.raises(ValueError, match="no results file"):
        stages.read_prediction(f"{tmp_path / 'none.json'}:digits")
    with pytest.raises(ValueError, match="computed on VPLinear"):
        stages.predict(digits, 1.0, theory.VPCosine(), stages.read_prediction(spec))
    with pytest.raises(ValueError, match="prediction must be FILE:KEY"):
        breaking_time.Config(prediction="results.json")
    assert breaking_time.main(["--prediction", f"{BENCH}:cifar", "--dry-run"]) == 2
    assert "no entry 'cifar'" in capsys.readouterr().err
    # The pipelines check the entry against the loaded images before any training; steps_sweep before measuring.
    monkeypatch.setattr(stages, "train", _no_training)
    for module in (breaking_time, late_start):
        cfg = module.Config(n_train=100, prediction=spec, run_dir=str(tmp_path / "run"), results=str(tmp_path))
        with pytest.raises(ValueError, match="prediction .* N=1797"):
            module.run(cfg, "pytest")
    model = str(BENCH.parents[1] / "docs" / "results" / "digits_denoiser.pt")  # read for its images, not measured
    assert steps_sweep.main(["--dataset", "digits", model, "--prediction", f"{BENCH}:mnist"]) == 2
    assert re.search("prediction .* N=10000", capsys.readouterr().err)


class _SignOfFirstPixel:
    def predict(self, x):
        return (x[:, 0] > 0).long().numpy()


def test_cloning_cost_counted_through_the_network(trained):
    """``clone``'s network rows, counted by a forward hook, are ``clone_rows``: linear in n_parents and n_clones."""
    den = load_denoiser(trained[1]).double()
    rows = count_rows(den)
    curve = stages_breaking.clone(den, _SignOfFirstPixel(), SimpleNamespace(n_parents=2, n_clones=3, eta=1.0, seed=0))
    assert rows[0] == stages_breaking.clone_rows(2, 3)
    assert len(curve.t) == len(stages_breaking.T_BRANCH) and next(den.parameters()).dtype == torch.float64
    per_clone = stages_breaking.clone_rows(1, 3) - stages_breaking.clone_rows(1, 2)
    assert stages_breaking.clone_rows(5, 4) == 5 * (stages_breaking.clone_rows(1, 0) + 4 * per_clone)


def test_centre_off_leaves_its_columns_empty():
    """--centre false: no branch is computed (d = 784 needs a dense Jacobian per step), the row's centre columns are
    None and the figures draw an empty branch panel."""
    import matplotlib

    matplotlib.use("Agg")
    from empirical.pipelines.plots import breaking_figures

    cfg = breaking_time.Config(centre=False, search="flow")
    assert stages_breaking.centre_branches(None, None, cfg) == (None, None)
    m = SimpleNamespace(t=0.4, t_lo=0.39, t_hi=0.41, points=[0, 1], grid_t=[0.5, 0.4], grid_count=[1, 2],
                        evaluations=[(0.5, 1), (0.41, 1), (0.39, 2)])  # fmt: skip
    cloned = SimpleNamespace(midpoint=0.45, chance=0.1, t=np.array([0.9, 0.1]), p_agree=np.array([0.1, 1.0]))
    pred = {"t_c_predicted": 0.5, "t_c_equal_norm": 0.5, "t_c_biroli": 0.25, "prediction": "f.json:k"}
    model = SimpleNamespace(train_steps=30, final_loss=None)
    row = stages_breaking.table_row(cfg, np.zeros((10, 4)), pred, m, None, None, cloned, 0.9, model, "m.pt")
    centre = {k: v for k, v in row.items() if k.startswith("centre_")}
    assert len(centre) == 9 and set(centre.values()) == {None}
    assert row["relative_error"] == pytest.approx(0.2) and row["relative_error_biroli"] == pytest.approx(0.6)
    assert row["search"] == "flow" and row["model"] == "m.pt" and row["prediction"] == "f.json:k"
    arc = {"t": 0.5, "s": [0.0, 1.0], "u_learned": [0.0, 1.0], "u_exact": [0.0, 0.5]}
    figs = breaking_figures(stages_breaking.curves(row, m, None, None, cloned, [arc]))
    assert set(figs) == {"fixed_points", "cloning", "potential"}


@pytest.mark.slow  # 8-12 s on a busy machine (cloning's 1,900 sequential steps, the classifier, figures)
def test_breaking_time_on_a_model_file_with_a_read_prediction(trained, digits, tmp_path, monkeypatch):
    """The command end to end at tiny size: the model file measured (no training, no export), the exact prediction
    read from the committed benchmark entry of the digits, no centre branches."""
    spec = f"{BENCH}:digits"
    monkeypatch.setattr(stages, "train", _no_training)
    monkeypatch.setattr(theory, "critical_time", lambda *a, **k: pytest.fail("critical_time ran"))
    argv = ["--model", str(trained[1]), "--prediction", spec, "--centre", "false", "--results",
            str(tmp_path / "results"), "--run-dir", str(tmp_path / "run"), "--n-starts", "2", "--n-grid", "4",
            "--tol-t", "0.09", "--t-min", "0.3", "--t-max", "0.9", "--n-parents", "2", "--n-clones", "2",
            "--classifier-steps", "20"]  # fmt: skip
    assert breaking_time.main(argv) == 0
    row = json.loads((tmp_path / "results" / "breaking_time.json").read_text())[0]
    committed = json.loads(BENCH.read_text())["digits"]
    assert row["model"] == str(trained[1]) and row["train_steps"] == 30 and row["final_loss"] is None
    assert row["prediction"] == spec and row["t_c_predicted"] == committed["t_c"]
    assert row["macroscopic_t_predicted"] == committed["macroscopic_t"]
    assert row["top_covariance_eigenvalue"] == pytest.approx(
        stages.cheap_predictions(digits)["top_covariance_eigenvalue"]
    )
    assert row["centre_t_measured"] is None and row["n_train"] == 1797
    scan = json.loads((tmp_path / "results" / "breaking_digits.json").read_text())["scan"]
    assert max(t for t, _ in scan["evaluations"]) <= 0.9  # --t-max reached the measurement
    assert not list((tmp_path / "results").glob("*.pt")) and not (tmp_path / "run" / "checkpoint.pt").exists()
    assert len(list((tmp_path / "results" / "figures").glob("breaking_digits_*.png"))) == 3


@pytest.mark.parametrize(
    "field, match",
    [
        ({"n_grid": 1}, r"n_grid must be an int >= 2"),
        ({"t_max": 0.01}, r"t_max must be None or lie in \(t_min=0.02, 1\]"),
        ({"t_max": 1.5}, r"t_max must be None or lie in"),
        ({"centre": "no"}, r"centre must be true or false"),
        ({"model": ""}, r"model must be a non-empty path or None"),
    ],
)
def test_measurement_options_are_checked(field, match):
    with pytest.raises(ValueError, match=match):
        breaking_time.Config(**field)
