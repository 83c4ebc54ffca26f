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
from empirical._util.checkpoints import CheckpointError, atomic_write, load_checkpoint, state_digest
from empirical.models.denoiser import Denoiser
from empirical.models.nets import build_net
from empirical.training.train import TrainConfig, export_weights, load_denoiser, main, step_generator, train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": 32, "depth": 1, "batch_size": 32, "n_train": 200, "warmup": 10, "lr": 3e-3}
FILES = sorted(["checkpoint.pt", "checkpoint.prev.pt", "config.json"])  # what a run leaves in its out directory
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
    train_cmd = [sys.executable, "-m", "empirical.training.train"]
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
        # The kill may land between the rename of checkpoint.pt to checkpoint.prev.pt and the new write.
        killed_at = max(_load(p)["step"] for p in (out / "checkpoint.pt", out / "checkpoint.prev.pt") if p.exists())
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
    _run([*command, "-m", "empirical.training.train", *args])
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
    assert _load(small)["sha256"] == state_digest({k: v for k, v in _load(small).items() if k != "sha256"})
    with torch.no_grad():
        assert torch.equal(load_denoiser(small)(x, t), outputs["ema"])
    with pytest.raises(ValueError, match="no 'model' weights"):
        load_denoiser(small, ema=False)


def test_output_files(small_run):
    assert sorted(p.name for p in small_run.iterdir()) == FILES  # no temporaries
    config = json.loads((small_run / "config.json").read_text())
    assert config["device"] == "cpu" and config["bf16"] == "off" and config["world_size"] == 1
    assert config["torch"] == str(torch.__version__) and config["steps"] == 40 and config["image_shape"] == [8, 8]
    # config.json round-trips: rebuilt from its fields, the config resolves to the same fields, out included.
    fields = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}
    assert fields.keys() == TrainConfig.__dataclass_fields__.keys()
    assert TrainConfig(**fields).resolved().to_dict() == fields and fields["out"] == str(small_run)
    # The previous checkpoint is the one before the last: step 30 of the checkpoints at 15, 30, 40.
    assert _load(small_run / "checkpoint.prev.pt")["step"] == 30


def test_resume_extends_exactly_and_refuses_other_configs(small_run, tmp_path):
    straight = train(TrainConfig(**TINY, steps=50, ckpt_every=15, out=str(tmp_path / "straight")))
    out = tmp_path / "resumed"
    shutil.copytree(small_run, out)
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"torn")  # left by a kill during a write
    resumed = train(TrainConfig(**TINY, steps=50, ckpt_every=7, out=str(out)))  # steps and ckpt_every may change
    assert sorted(p.name for p in out.iterdir()) == FILES
    a, b = _load(straight), _load(resumed)
    for key in ("model", "ema", "optimizer", "loss", "step"):
        _assert_identical(a[key], b[key], key)

    with pytest.raises(ValueError, match=r"lr=0\.003 there but 0\.002 now"):
        train(TrainConfig(**{**TINY, "lr": 2e-3}, steps=60, out=str(out)))
    with pytest.raises(ValueError, match="at step 50, beyond steps=30"):
        train(TrainConfig(**TINY, steps=30, out=str(out)))


def test_snapshots_are_the_ema_weights_at_their_steps(small_run, tmp_path):
    out = tmp_path / "snap"
    train(TrainConfig(**TINY, steps=40, ckpt_every=5, snapshot_every=15, out=str(out)))
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step15.pt", "step30.pt"]
    # step 30's EMA, from the 30-step prefix of the small run (resumable in steps), equals the snapshot
    prefix = _load(train(TrainConfig(**TINY, steps=30, ckpt_every=15, out=str(tmp_path / "prefix"))))
    snap = _load(out / "snapshots" / "step30.pt")
    assert snap["step"] == 30
    _assert_identical(snap["ema"], prefix["ema"], "ema")
    # the last snapshot's successor is the run itself: the 40-step EMA equals small_run's
    _assert_identical(_load(out / "checkpoint.pt")["ema"], _load(small_run / "checkpoint.pt")["ema"], "ema")


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
        ({"ckpt_every": 10, "snapshot_every": 15}, "snapshot_every must be 0 or a multiple of ckpt_every=10; got 15"),
        ({"snapshot_every": -1000}, "snapshot_every must be an int >= 0"),
        ({"t_train": (0.5, 0.4)}, "t_train must be two numbers lo < hi"),
        ({"t_train": (0.0, 0.5)}, "t_train must be two numbers lo < hi"),
        ({"t_train": (0.5,)}, "t_train must be two numbers lo < hi"),
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
    atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


# --- file integrity: digests, damaged files, the previous checkpoint, NaN -------------------------------------
def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _tensor_offset(path: Path) -> int:
    """The offset of the first weight byte, far from the zip headers: the bytes of the first net weight, found
    in the raw file (torch stores tensor data uncompressed)."""
    first = next(iter(_load(path)["model"].values()))
    offset = path.read_bytes().find(first.contiguous().numpy().tobytes()[:64])
    assert offset > 0
    return offset + 16


def test_flipped_bytes_are_refused_and_resume_falls_back(small_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    _flip_byte(out / "checkpoint.pt", _tensor_offset(out / "checkpoint.pt"))
    # torch.load itself does not notice (no CRC check): the digest does.
    assert _load(out / "checkpoint.pt")["step"] == 40
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is corrupt: its contents hash to"):
        load_denoiser(out / "checkpoint.pt")
    # A resume warns and continues from the previous checkpoint (step 30), which it keeps.
    with pytest.warns(UserWarning, match=r"resuming from the previous checkpoint .*step 30.*is corrupt"):
        train(TrainConfig(**TINY, steps=45, ckpt_every=15, out=str(out)))
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 45
    assert load_checkpoint(out / "checkpoint.prev.pt")["step"] == 30  # not overwritten by the damaged file
    # ... and ends as a run that never saw the damage: resumed from 30, 15 steps more, as the straight run.
    straight = _load(train(TrainConfig(**TINY, steps=45, ckpt_every=15, out=str(tmp_path / "straight"))))
    _assert_identical(_load(out / "checkpoint.pt")["model"], straight["model"], "model")


def test_truncated_checkpoint_names_the_file(small_run, tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes((small_run / "checkpoint.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"{bad} cannot be read as a checkpoint \(truncated or corrupt\)"):
        load_denoiser(bad)
    with pytest.raises(CheckpointError, match="no usable checkpoint in"):  # no previous file to fall back on
        train(TrainConfig(**TINY, steps=45, out=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_without_digest_loads_with_a_warning(small_run, tmp_path):
    # A checkpoint written before digests existed (plain torch.save) still loads and resumes.
    legacy = {k: v for k, v in _load(small_run / "checkpoint.pt").items() if k != "sha256"}
    out = tmp_path / "legacy"
    out.mkdir()
    torch.save(legacy, out / "checkpoint.pt")
    with pytest.warns(UserWarning, match="carries no checksum"):
        model = load_denoiser(out / "checkpoint.pt")
    with torch.no_grad():
        assert torch.equal(
            model(torch.zeros(2, 64), 0.5), load_denoiser(small_run / "checkpoint.pt")(torch.zeros(2, 64), 0.5)
        )
    with pytest.warns(UserWarning, match="carries no checksum"):
        train(TrainConfig(**TINY, steps=41, ckpt_every=15, out=str(out)))
    assert "sha256" in _load(out / "checkpoint.pt") and _load(out / "checkpoint.prev.pt")["step"] == 40


def test_nan_weights_in_a_file_are_refused(small_run, tmp_path):
    ckpt = load_checkpoint(small_run / "checkpoint.pt")
    name = next(iter(ckpt["ema"]))
    ckpt["ema"][name] = torch.full_like(ckpt["ema"][name], math.nan)
    ckpt["sha256"] = state_digest(ckpt)  # a sound file holding NaN
    torch.save(ckpt, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=f"holds NaN or inf ema weights in {name}"):
        load_denoiser(tmp_path / "nan.pt")


def test_diverged_run_stops_without_overwriting(tmp_path, monkeypatch):
    calls = {"n": 0}
    loss = Denoiser.loss

    def poisoned(self, x, gen, t_range=None):
        calls["n"] += 1
        return loss(self, x, gen, t_range) * (math.nan if calls["n"] > 4 else 1.0)  # NaN from step 5 on

    monkeypatch.setattr(Denoiser, "loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"training diverged by step 6 \(loss nan\); stopped without writing"):
        train(TrainConfig(**TINY, steps=9, ckpt_every=3, out=str(tmp_path)))
    good = load_checkpoint(tmp_path / "checkpoint.pt")
    assert good["step"] == 3 and all(v.isfinite().all() for v in good["model"].values())


def test_out_must_be_a_writable_directory(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["--out", str(a_file), "--steps", "1"]) == 2
    assert f"out must be a directory; {a_file} is an existing file" in capsys.readouterr().err
    assert main(["--out", str(a_file), "--dry-run"]) == 2
    with pytest.raises(ValueError, match="out must be a directory"):
        train(TrainConfig(**TINY, steps=1, out=str(a_file)))
    if os.geteuid() != 0:  # root writes everywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["--out", str(locked / "run"), "--steps", "1"]) == 2
        assert "is not a writable directory" in capsys.readouterr().err


def test_the_loss_draws_its_times_in_the_window():
    """t_range=(T_MIN, T) is the default draw bit for bit; a window's times are the same uniforms mapped into it."""
    from empirical.models.denoiser import T_MIN

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            seen.append(t.clone())
            return torch.zeros_like(x)

    den, x0 = Denoiser(Spy()), torch.zeros(64, 3)
    losses = [den.loss(x0, torch.Generator().manual_seed(0), r) for r in (None, (T_MIN, 1.0), (0.5, 0.8))]
    assert torch.equal(seen[0], seen[1]) and torch.equal(losses[0], losses[1])
    t0, t2 = (s.double() / 1000 for s in (seen[0], seen[2]))  # the backbone sees 1000 t (float32)
    u = (t0 - T_MIN) / (1.0 - T_MIN)
    assert torch.allclose(t2, 0.5 + 0.3 * u, rtol=0, atol=1e-6) and bool(((t2 >= 0.5) & (t2 <= 0.8)).all())
    with pytest.raises(ValueError, match="t_range must satisfy"):
        den.loss(x0, None, (0.8, 0.5))
