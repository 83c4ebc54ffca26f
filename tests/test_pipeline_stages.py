"""The pipelines as stages: one ModelConfig behind TrainConfig and both pipelines (the committed model's config
reproduced by the default command), attn reaching the UNet, the stopwatch, and both pipelines run end to end at
tiny size, on a trained MLP and on a diffusers UNet2DModel folder (--diffusers)."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical._util import stopwatch  # noqa: E402
from empirical._util.checkpoints import load_checkpoint  # noqa: E402
from empirical._util.cli import config_from_args  # noqa: E402
from empirical.models.denoiser import T_MIN  # noqa: E402
from empirical.models.nets import _Attention  # noqa: E402
from empirical.pipelines.breaking_time import pipeline as breaking_time  # noqa: E402
from empirical.pipelines.config import PipelineConfig  # noqa: E402
from empirical.pipelines.late_start import pipeline as late_start  # noqa: E402
from empirical.training.config import ModelConfig, TrainConfig  # noqa: E402
from empirical.training.train import _make_net, build_parser, load_denoiser, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_model_fields_are_declared_once_and_passed_to_training():
    for cls in (TrainConfig, breaking_time.Config, late_start.Config):
        assert issubclass(cls, ModelConfig)
        assert [f.name for f in dataclasses.fields(cls) if f.name in MODEL_FIELDS] == MODEL_FIELDS
    model = {"net": "unet", "width": 8, "depth": 1, "ch": 8, "mult": (1, 2), "blocks": 1, "attn": False}
    for cls in (breaking_time.Config, late_start.Config):
        tcfg = cls(**model).train_config()
        assert {k: getattr(tcfg, k) for k in MODEL_FIELDS} == model
    assert late_start.Config().train_config() == breaking_time.Config().train_config()


def test_default_command_reproduces_the_committed_digits_model():
    """docs/results/digits_denoiser.pt was trained by `python -m empirical breaking-time --dataset digits`: the
    stored config (written by that run) is what the pipeline's defaults give today, field for field."""
    path = ROOT / "docs" / "results" / "digits_denoiser.pt"
    if not path.exists():
        pytest.skip("no committed digits model")
    stored = load_checkpoint(path)["config"]
    now = breaking_time.Config(dataset="digits").train_config().to_dict()
    same = {k for k in stored if k not in ("device", "bf16", "out")}
    assert {k: stored[k] for k in same} == {k: now[k] for k in same}
    added = now.keys() - stored.keys()  # fields added since the model was trained: their defaults = what it did
    assert added <= {"attn", "snapshot_every", "t_train", "data"}
    assert now["attn"] is True and now["snapshot_every"] == 0 and now["data"] is None
    assert tuple(now.get("t_train", (T_MIN, 1.0))) == (T_MIN, 1.0)  # the whole range, as Denoiser.loss drew it then
    assert stored["out"] == now["out"] == "runs/breaking-digits"


def test_attn_reaches_the_unet(tmp_path):
    def n_attention(net):
        return sum(isinstance(m, _Attention) for m in net.modules())

    base = {"dataset": "digits", "net": "unet", "ch": 8, "mult": [1, 2], "blocks": 1, "width": 1, "depth": 1}
    assert n_attention(_make_net(base | {"attn": False}, (8, 8), 0)) == 0
    assert n_attention(_make_net(base | {"attn": True}, (8, 8), 0)) == 1
    assert n_attention(_make_net(base, (8, 8), 0)) == 1  # a checkpoint from before the field: attention, as then
    cfg = config_from_args(TrainConfig, build_parser().parse_args(["--net", "unet", "--ch", "8", "--attn", "false"]))
    assert cfg.attn is False and cfg.net_kwargs()["attn"] is False
    ckpt = train(dataclasses.replace(cfg, mult=(1, 2), blocks=1, steps=1, n_train=16, batch_size=4, out=str(tmp_path)))
    assert n_attention(load_denoiser(ckpt).net) == 0
    with pytest.raises(ValueError, match="attn must be True or False"):
        ModelConfig(attn="no")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--attn", "maybe"])


def test_stopwatch_adds_up_each_stage(monkeypatch):
    ticks = iter([0.0, 1.0, 3.5, 4.0, 4.25, 10.0])  # start; a: 1 -> 3.5; a: 4 -> 4.25; total at 10
    monkeypatch.setattr(stopwatch.time, "perf_counter", lambda: next(ticks))
    clock = stopwatch.Stopwatch()
    for _ in range(2):
        with clock("a"):
            pass
    assert clock["a"] == 2.75 and clock.seconds() == {"a_s": 2.75, "total_s": 10.0}


def test_pipeline_config_checks_its_fields():
    with pytest.raises(ValueError, match="diffusers must be a non-empty path or None"):
        PipelineConfig(diffusers="")
    with pytest.raises(ValueError, match="unet channels"):
        breaking_time.Config(net="unet", ch=12)
    assert PipelineConfig(dataset="mnist").run_dir == "runs/breaking-mnist"


def test_without_diffusers_the_adapter_says_what_to_install(monkeypatch, tmp_path):
    from empirical.interop.diffusers_unet import load_diffusers

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[diffusers\]'"):
        load_diffusers(tmp_path)


# --- both pipelines end to end at tiny size ----------------------------------------------------------------
TINY_BT = {"n_starts": 2, "tol_t": 0.09, "t_min": 0.3, "n_parents": 2, "n_clones": 2, "classifier_steps": 20}
TINY_LS = {"samplers": ("ddim", "dpm-solver++"), "n_steps": (2,), "n_samples": 20, "sweep_samples": 20,
           "sweep_t": (0.4, 0.7, 1.0), "classifier_steps": 20, "kid_subsets": 2, "inception_n": 0,
           "converged_steps": 0, "n_grid": 2}  # fmt: skip


def _check_outputs(results: Path, row: dict, curves: dict, cfg) -> None:
    table = json.loads((results / "breaking_time.json").read_text())
    assert [r["dataset"] for r in table] == ["digits"] and table[0]["t_c_predicted"] == row["t_c_predicted"]
    assert set(row["seconds"]) >= {"train_s", "predict_s", "measure_s", "centre_branch_s", "cloning_s", "total_s"}
    rows = json.loads((results / "late_start.json").read_text())
    assert len(rows) == len(cfg.samplers) * len(cfg.n_steps) * 5 == len(curves["rows"])
    assert {r["t_start"] for r in rows if r["t_start_rule"] == "theory"} == {row["t_c_predicted"]}
    assert set(curves["summary"]["seconds"]) == {f"{k}_s" for k in ("train", "classifier", "predict", "sweep", "table",
                                                                     "inception", "total")}  # fmt: skip
    assert len(list((results / "figures").glob("*.png"))) == 3 + 4


@pytest.mark.slow
def test_both_pipelines_on_a_trained_mlp(tmp_path):
    """Both commands' run() on one tiny MLP (minutes on a busy machine: the prediction, the fixed-point scan and the
    centre branches on all 1797 digits); the outputs of a reduced run were compared before and after the stages
    refactor and are identical."""
    common = {"width": 32, "depth": 1, "steps": 60, "batch_size": 32, "run_dir": str(tmp_path / "run"),
              "results": str(tmp_path / "results")}  # fmt: skip
    row = breaking_time.run(breaking_time.Config(**common, **TINY_BT), "pytest")
    cfg = late_start.Config(**common, **TINY_LS)
    curves = late_start.run(cfg, "pytest")
    _check_outputs(tmp_path / "results", row, curves, cfg)
    assert row["train_steps"] == curves["summary"]["train_steps"] == 60 and row["final_loss"] > 0
    assert Path(row["model"]) == tmp_path / "results" / "digits_denoiser.pt"


@pytest.fixture
def diffusers_folder(tmp_path):
    """A tiny UNet2DModel on the digits' 8x8 images, v prediction on a scaled_linear schedule, saved as a pipeline."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, add_attention=False,
    )  # fmt: skip
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_end=0.02, prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _theta_knots() -> np.ndarray:
    """theta_k, k = 0..1000, of that scheduler, from its definition (numpy, not theory.DDPM)."""
    return np.sqrt(np.concatenate([[1.0], np.cumprod(1 - np.linspace(1e-4**0.5, 0.02**0.5, 1000) ** 2)]))


@pytest.mark.slow  # 36-44 s; the adapter's own tests (test_diffusers_adapter.py) run by default
def test_late_start_on_a_diffusers_folder(diffusers_folder, tmp_path):
    """`--diffusers PATH`: no training; the theory's t_start is the critical time on the scheduler's schedule.
    (100 images keep the prediction, theory.critical_time of the training set, short.)"""
    cfg = late_start.Config(diffusers=str(diffusers_folder), n_train=100, results=str(tmp_path / "results"),
                            run_dir=str(tmp_path / "run"), **TINY_LS)  # fmt: skip
    curves = late_start.run(cfg, "pytest")
    s = curves["summary"]
    assert curves["train_config"] is None and s["train_steps"] is None and s["n_train"] == 100
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    k = int(np.floor(s["t_c_predicted"] * 1000))  # theta(t_c) lies between the knots around t_c
    assert _theta_knots()[k + 1] <= s["theta_c_predicted"] <= _theta_knots()[k]
    rows = json.loads((tmp_path / "results" / "late_start.json").read_text())
    assert len(rows) == len(cfg.samplers) * 5
    assert {r["t_start"] for r in rows if r["t_start_rule"] == "theory"} == {s["t_c_predicted"]}
    assert late_start.main(["--diffusers", str(diffusers_folder), "--dry-run"]) == 0


@pytest.mark.slow
def test_breaking_time_on_a_diffusers_folder(diffusers_folder, tmp_path, capsys):
    """The command line with --diffusers (minutes: dense Jacobians through the UNet in float64)."""
    argv = [
        "--diffusers",
        str(diffusers_folder),
        "--n-train",
        "100",
        "--results",
        str(tmp_path / "results"),
        "--run-dir",
        str(tmp_path / "run"),
        *(f"--{k.replace('_', '-')}={v}" for k, v in TINY_BT.items()),
    ]
    assert breaking_time.main([*argv, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["train"] is None
    assert breaking_time.main(argv) == 0
    row = json.loads((tmp_path / "results" / "breaking_time.json").read_text())[0]
    assert row["model"] == str(diffusers_folder) and row["train_steps"] is None and row["final_loss"] is None
    k = int(np.floor(row["t_c_predicted"] * 1000))
    assert _theta_knots()[k + 1] <= row["theta_c_predicted"] <= _theta_knots()[k]
    assert len(list((tmp_path / "results" / "figures").glob("breaking_digits_*.png"))) == 3
