"""Training: kill-and-resume is bit for bit, the loss falls, torchrun + DDP (gloo, 2 CPU processes) trains
the global batch, checkpoints load with weights_only, configs are checked, files are written atomically."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from empirical import load_dataset
from empirical.denoiser import Denoiser
from empirical.nets import build_net
from empirical.train import (
    TrainConfig,
    _atomic_write,
    export_weights,
    load_denoiser,
    main,
    step_generator,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": 32, "depth": 1, "batch_size": 32, "n_train": 200, "warmup": 10, "lr": 3e-3}
LONG = 200  # steps of the subprocess runs: long enough that a kill lands well before the end
# One thread makes the subprocesses light and their float sums identical run to run; no torchrun variables leak in.
ENV = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")} | {"OMP_NUM_THREADS": "1"}

# In-process training on one thread too: small nets gain nothing from more, and lose a lot on a busy machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(out: Path, **options) -> list[str]:
    args = []
    for key, value in {**TINY, **options, "out": out}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _run(command: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_identical(a, b, where: str = "checkpoint") -> None:
    """Every tensor equal (torch.equal), every other leaf equal, the same keys."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> dict:
    """From the command line: a run of LONG steps SIGKILLed after its first checkpoint and then resumed by the
    same command, and, alongside it, the same run uninterrupted (the reference)."""
    ref_dir, out, logs = (tmp_path_factory.mktemp(name) for name in ("reference", "killed", "logs"))
    train_cmd = [sys.executable, "-m", "empirical.train"]
    command = [*train_cmd, *_cli(out, steps=LONG, ckpt_every=10)]
    # Logs go to files: a full pipe would stall a process that nobody reads.
    with open(logs / "reference.err", "w") as ref_err, open(logs / "killed.err", "w") as err:
        reference = subprocess.Popen(
            [*train_cmd, *_cli(ref_dir, steps=LONG, ckpt_every=10)],
            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=ref_err,
        )  # fmt: skip
        proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, f"exited before its first checkpoint: {(logs / 'killed.err').read_text()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        killed_at = _load(out / "checkpoint.pt")["step"]
        _run(command)  # the same command resumes from the checkpoint
        assert reference.wait(timeout=180) == 0, (logs / "reference.err").read_text()[-3000:]
    finally:
        for p in (proc, reference):
            if p.poll() is None:
                p.kill()
                p.wait()
    return {
        "killed_at": killed_at,
        "resumed": _load(out / "checkpoint.pt"),
        "reference": _load(ref_dir / "checkpoint.pt"),
    }


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A 40-step run in this process, checkpointed at 15, 30 and 40."""
    out = tmp_path_factory.mktemp("small")
    path = train(TrainConfig(**TINY, steps=40, ckpt_every=15, out=str(out)))
    assert path == out / "checkpoint.pt"
    return out


def test_sigkill_and_resume_is_bit_for_bit(killed_and_resumed):
    assert 0 < killed_and_resumed["killed_at"] < LONG  # the kill cut the run short
    resumed, reference = killed_and_resumed["resumed"], killed_and_resumed["reference"]
    assert resumed["step"] == LONG and resumed["loss"].shape == (LONG,)
    assert {**resumed["config"], "out": None} == {**reference["config"], "out": None}
    for key in ("model", "ema", "optimizer", "loss", "step"):
        _assert_identical(resumed[key], reference[key], key)


def test_loss_decreases(killed_and_resumed):
    loss = killed_and_resumed["reference"]["loss"]
    assert torch.isfinite(loss).all()
    # Against the untrained net (loss ~ 1, the variance of eps), a fitted net is clearly better.
    assert loss[-10:].mean() < 0.8 * loss[:10].mean()


def test_torchrun_two_processes(tmp_path):
    steps = 40
    args = _cli(tmp_path, steps=steps, ckpt_every=15)
    # Every checkpoint first checks that the two ranks hold identical weights (sha256 digests, all-gathered):
    # without DDP's gradient all-reduce they would diverge and the run would fail.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*command, "-m", "empirical.train", *args])
    assert json.loads((tmp_path / "config.json").read_text())["world_size"] == 2
    ckpt = _load(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == steps and ckpt["world_size"] == 2 and torch.isfinite(ckpt["loss"]).all()

    # Independently: the first logged loss is the mean of the two ranks' losses, each on batch_size / 2
    # examples drawn with its own step_generator(seed, 0, rank) by the initial net.
    x = torch.tensor(load_dataset("digits", n=TINY["n_train"], seed=0).x, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        den = Denoiser(build_net("mlp", (8, 8), width=TINY["width"], depth=TINY["depth"]))
    per_rank = []
    with torch.no_grad():
        for rank in (0, 1):
            gen = step_generator(0, 0, rank)
            idx = torch.randint(len(x), (TINY["batch_size"] // 2,), generator=gen)
            per_rank.append(float(den.loss(x[idx], gen)))
    assert abs(per_rank[0] - per_rank[1]) > 1e-3  # so the check below sees whether rank 1's batch entered
    assert float(ckpt["loss"][0]) == pytest.approx(sum(per_rank) / 2, rel=1e-5)

    model = load_denoiser(tmp_path / "checkpoint.pt")
    with torch.no_grad():
        assert torch.isfinite(model(x[:8], 0.5)).all()


def test_load_denoiser_and_export(small_run, tmp_path):
    ckpt = _load(small_run / "checkpoint.pt")
    assert ckpt["step"] == 40 and ckpt["loss"].shape == (40,)
    x, t = torch.randn(16, 64, generator=torch.Generator().manual_seed(1)), torch.linspace(0.01, 1.0, 16)
    outputs = {}
    for key in ("ema", "model"):
        net = build_net("mlp", (8, 8), width=TINY["width"], depth=TINY["depth"])
        net.load_state_dict(ckpt[key])
        with torch.no_grad():
            outputs[key] = Denoiser(net)(x, t)
    loaded = load_denoiser(small_run / "checkpoint.pt")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(x, t), outputs["ema"])
        assert torch.equal(load_denoiser(small_run / "checkpoint.pt", ema=False)(x, t), outputs["model"])
    assert not torch.equal(outputs["ema"], outputs["model"])  # the EMA is an average, not a copy

    small = export_weights(small_run / "checkpoint.pt", tmp_path / "digits.pt")
    assert small.stat().st_size < (small_run / "checkpoint.pt").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.pt"]
    with torch.no_grad():
        assert torch.equal(load_denoiser(small)(x, t), outputs["ema"])
    with pytest.raises(ValueError, match="no 'model' weights"):
        load_denoiser(small, ema=False)


def test_output_files(small_run):
    assert sorted(p.name for p in small_run.iterdir()) == ["checkpoint.pt", "config.json"]  # no temporaries
    config = json.loads((small_run / "config.json").read_text())
    assert config["device"] == "cpu" and config["bf16"] == "off" and config["world_size"] == 1
    assert config["torch"] == str(torch.__version__) and config["steps"] == 40 and config["image_shape"] == [8, 8]
    assert TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}).resolved()


def test_resume_extends_exactly_and_refuses_other_configs(small_run, tmp_path):
    straight = train(TrainConfig(**TINY, steps=50, ckpt_every=15, out=str(tmp_path / "straight")))
    out = tmp_path / "resumed"
    shutil.copytree(small_run, out)
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"torn")  # left by a kill during a write
    resumed = train(TrainConfig(**TINY, steps=50, ckpt_every=7, out=str(out)))  # steps and ckpt_every may change
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json"]
    a, b = _load(straight), _load(resumed)
    for key in ("model", "ema", "optimizer", "loss", "step"):
        _assert_identical(a[key], b[key], key)

    with pytest.raises(ValueError, match=r"lr=0\.003 there but 0\.002 now"):
        train(TrainConfig(**{**TINY, "lr": 2e-3}, steps=60, out=str(out)))
    with pytest.raises(ValueError, match="at step 50, beyond steps=30"):
        train(TrainConfig(**TINY, steps=30, out=str(out)))


def test_ema_decay_zero_tracks_the_weights(tmp_path):
    ckpt = _load(train(TrainConfig(**TINY, steps=3, ema_decay=0.0, out=str(tmp_path))))
    _assert_identical(ckpt["ema"], ckpt["model"])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"steps": 0}, "steps must be an int >= 1; got 0"),
        ({"batch_size": 2.0}, "batch_size must be an int >= 1"),
        ({"warmup": -1}, "warmup must be an int >= 0"),
        ({"n_train": 0}, "n_train must be None or an int >= 1"),
        ({"lr": math.nan}, "lr must be a finite number > 0"),
        ({"grad_clip": math.inf}, "grad_clip must be a finite number > 0"),
        ({"ema_decay": 1.0}, r"ema_decay must be a number in \[0, 1\)"),
        ({"net": "cnn"}, "net must be one of"),
        ({"dataset": "cifar10"}, "dataset must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"bf16": True}, "bf16 must be one of"),
        ({"classes": ()}, "classes must be None or a non-empty tuple"),
        ({"mult": (1, 0)}, "mult must be a non-empty tuple of ints >= 1"),
        ({"net": "unet", "ch": 12}, "must be multiples of min"),
        ({"out": ""}, "out must be None or a non-empty path"),
    ],
)
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_unet_levels_must_fit_the_image(tmp_path):
    with pytest.raises(ValueError, match="divisible by 16"):
        train(TrainConfig(net="unet", ch=8, mult=(1, 1, 1, 1, 1), steps=1, out=str(tmp_path)))


def test_cli_dry_run_and_errors(capsys):
    assert main(["--dry-run", "--steps", "5", "--classes", "0", "1", "--net", "unet", "--mult", "1", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 5 and printed["classes"] == [0, 1] and printed["mult"] == [1, 2]
    assert printed["device"] in ("cpu", "cuda") and printed["out"] == "runs/digits-unet"
    assert main(["--dry-run", "--lr", "-1"]) == 2
    assert "lr must be a finite number > 0; got -1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--steps", "ten"])


def test_atomic_write_failure_leaves_old_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    _atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
