"""Every bad input is refused by name: a table of bad or edge inputs across both packages.

Each row calls the public API with one bad input and expects a named error: the message names the parameter
(and, where there is one, the allowed range) or the file; or a warning where the result is still usable.
docs/checks.md lists the classes of checks these rows stand for.
"""

import gzip
import math
import re
import signal
import warnings

import numpy as np
import pytest
import torch

from empirical._util.checkpoints import CheckpointError, load_checkpoint, state_digest
from empirical._util.files import OutputInUse
from empirical.data.datasets import load_dataset
from empirical.measure.fixed_points import measure_critical_time
from empirical.measure.flow import FlowSearch
from empirical.metrics.classifier import Classifier, train_classifier
from empirical.metrics.scores import class_composition, fid, kid
from empirical.models.denoiser import Denoiser, ExactDenoiser
from empirical.pipelines.breaking_time import pipeline as breaking_time
from empirical.pipelines.late_start import pipeline as late_start
from empirical.pipelines.stages import read_prediction
from empirical.sampling.samplers import GaussianInit, generate, sample
from empirical.training.train import TrainConfig, load_denoiser, train
from theory import (
    DDPM,
    VE,
    DeltaMixture,
    GaussianMixture,
    Trajectories,
    VPCosine,
    VPLinear,
    attractor_labels,
    attractor_posterior,
    bifurcation_diagram,
    bifurcation_tree,
    commitment,
    critical_time,
    descend,
    drift,
    drift_jacobian,
    fixed_points,
    potential,
    simulate,
    simulate_forward,
)
from theory import symbolic as S
from theory.cloning_curve import biroli_cloning_probability, cloning_curve
from theory.collapse import CollapseTime, biroli_times, excess_entropy
from theory.systems import EqualNormSet, TwoDeltas, TwoGaussians

TWO = DeltaMixture([[-1.0], [1.0]])
GM = GaussianMixture([[-1.0], [1.0]], [0.1, 0.1])
LIN, COS = VPLinear(), VPCosine()
X1 = np.array([0.5])
DEN = ExactDenoiser(TWO)
DEN3 = ExactDenoiser(GaussianMixture([[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]))
DEN_COS = ExactDenoiser(TWO, COS)
XS = torch.zeros(2, 1)
CLF = (np.zeros((4, 4)), [0, 1, 0, 1], (2, 2))  # x, labels, image_shape of a tiny classifier problem


class NanDenoiser(ExactDenoiser):
    """A model that has gone wrong: eps = NaN everywhere."""

    def forward(self, x, t):
        return torch.full_like(x, math.nan)


def _measure(**kwargs):
    from empirical.measure.fixed_points import measure_critical_time

    return measure_critical_time(DEN, np.array([[-1.0], [1.0]]), **kwargs)


def _tiny_train(tmp_path, **kwargs):
    cfg = {"width": 8, "depth": 1, "batch_size": 8, "n_train": 20, "warmup": 1, "steps": 2, "ckpt_every": 1}
    return train(TrainConfig(**{**cfg, **kwargs}))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny trained run (two steps) to damage."""
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    return _tiny_train(out, out=str(out))


def _truncated(ckpt, tmp):
    bad = tmp / "truncated.pt"
    bad.write_bytes(ckpt.read_bytes()[:3000])
    return load_denoiser(bad)


def _flipped(ckpt, tmp):
    data = bytearray(ckpt.read_bytes())
    first = next(iter(torch.load(ckpt, weights_only=True)["model"].values())).numpy().tobytes()[:32]
    data[data.find(first) + 8] ^= 0xFF
    bad = tmp / "flipped.pt"
    bad.write_bytes(bytes(data))
    return load_denoiser(bad)


def _legacy(ckpt, tmp):
    state = {k: v for k, v in torch.load(ckpt, weights_only=True).items() if k != "sha256"}
    torch.save(state, tmp / "legacy.pt")
    return load_denoiser(tmp / "legacy.pt")


def _nan_weights(ckpt, tmp):
    state = load_checkpoint(ckpt)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] * math.nan
    state["sha256"] = state_digest(state)
    torch.save(state, tmp / "nan.pt")
    return load_denoiser(tmp / "nan.pt", ema=False)


def _out_is_a_file(ckpt, tmp):
    (tmp / "a_file").write_text("x")
    return _tiny_train(tmp, out=str(tmp / "a_file"))


def _out_below_a_file(ckpt, tmp):
    (tmp / "a_file").write_text("x")  # a folder that cannot be made (root can write anywhere else)
    return _tiny_train(tmp, out=str(tmp / "a_file" / "run"))


def _out_in_use(ckpt, tmp):
    from empirical._util.files import locked

    with locked(tmp, wait=False):  # another run holds the folder (flock: also against this process's second open)
        _tiny_train(tmp, out=str(tmp))


def _disk_full_on_save(ckpt, tmp, monkeypatch):
    import errno

    import empirical._util.checkpoints as checkpoints

    def full(state, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full)
    _tiny_train(tmp, out=str(tmp / "run"))


def _prediction_file(tmp, entry):
    import json

    (tmp / "pred.json").write_text(json.dumps({"k": entry}))
    from empirical.pipelines.stages import read_prediction

    return read_prediction(f"{tmp / 'pred.json'}:k")


def _diffusers_folder(tmp, damage):
    """A tiny UNet2DModel folder (config.json, weights, scheduler_config.json), then one thing damaged."""
    diffusers = pytest.importorskip("diffusers")
    from empirical.interop.diffusers_unet import load_diffusers

    size = 7 if damage == "odd-size" else 8  # two down blocks: the image is halved once
    diffusers.UNet2DModel(
        sample_size=size, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).save_pretrained(tmp)  # fmt: skip
    diffusers.DDPMScheduler().save_pretrained(tmp)
    weights = tmp / "diffusion_pytorch_model.safetensors"
    if damage == "config-cut":
        (tmp / "config.json").write_text((tmp / "config.json").read_text()[:40])
    elif damage == "scheduler-list":
        (tmp / "scheduler_config.json").write_text("[1, 2]")
    elif damage == "weights-missing":
        weights.unlink()
    elif damage == "weights-cut":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return load_diffusers(tmp)


def _export_over_weights(ckpt, tmp):
    from empirical.pipelines.recipe import export

    (tmp / "res").mkdir()
    (tmp / "res" / "digits_denoiser.pt").write_bytes(b"committed weights")
    export(ckpt.parent, tmp / "res")


def _pipeline_table_object(tmp):
    from empirical.pipelines import stages
    from empirical.pipelines.config import PipelineConfig

    (tmp / "late_start.json").write_text('{"rows": []}')
    stages.folders(PipelineConfig(results=str(tmp), run_dir=str(tmp / "run")))


def _command(module: str, argv: list[str]):
    """Run ``python -m empirical <command>`` in-process; a refusal (exit status 2) raises ValueError with its stderr."""
    import contextlib
    import importlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = importlib.import_module(f"empirical.{module}").main(argv)
    if status == 2:
        raise ValueError(err.getvalue())
    raise AssertionError(f"accepted with status {status}: {argv}")


def _classifier_file(tmp, damage):
    path = tmp / "clf.pt"
    clf = train_classifier(np.linspace(-1, 1, 16 * 64).reshape(16, 64), [0, 1] * 8, (8, 8), steps=2)
    clf.save(path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:2000]
    else:  # flip a byte inside the first weight matrix
        data[data.find(next(iter(clf.state_dict().values())).numpy().tobytes()[:32]) + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    return Classifier.load(path)


def _corrupt_gzip(ckpt, tmp, monkeypatch):
    (tmp / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip")
    (tmp / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp))
    return load_dataset("fashion-mnist")


# (id, call, expected exception or warning class, regex the message must match)
THEORY = [
    # --- the endpoints of time
    ("score-t0", lambda: TWO.score(X1, 0.0, LIN), ValueError, r"t must be > 0 here: sigma\(t\)\^2 = 0 at t = 0"),
    ("log_prob-t0", lambda: TWO.log_prob(X1, 0.0, LIN), ValueError, r"t must be > 0 .*singular"),
    ("hessian-t0", lambda: TWO.hessian(X1, 0.0, LIN), ValueError, r"t must be > 0"),
    ("resp-t0-ddpm", lambda: TWO.responsibilities(X1, 0.0, DDPM()), ValueError, r"t must be > 0"),
    ("hvp-t0", lambda: TWO.hvp(X1, X1, 0.0, LIN), ValueError, r"t must be > 0"),
    ("score-t-above-T", lambda: TWO.score(X1, 1.5, LIN), ValueError, r"t must lie in \[0.0, 1.0\]; got 1.5"),
    ("score-t-nan", lambda: GM.score(X1, math.nan, LIN), ValueError, r"t must lie in \[0.0, 1.0\]"),
    ("simulate-cosine-at-T", lambda: simulate(TWO, COS, 4, n_steps=100), ValueError, r"t_start must be below T"),
    ("simulate-t_end-above", lambda: simulate(TWO, LIN, 2, t_start=0.3, t_end=0.5), ValueError, r"t_end \(below"),
    ("simulate-t_start-neg", lambda: simulate(TWO, LIN, 2, t_start=-0.1), ValueError, r"t_start must be a finite"),
    ("fixed_points-t0", lambda: fixed_points(TWO, LIN, 0.0), ValueError, r"\bt\b"),
    ("descend-t0", lambda: descend(TWO, LIN, np.array([[0.3]]), 0.0), ValueError, r"\bt\b"),
    ("bifurcation-t0", lambda: bifurcation_diagram(TWO, LIN, [0.0]), ValueError, r"\bts\b"),
    ("descend-X-nan", lambda: descend(TWO, LIN, [[math.nan]], 0.2), ValueError, r"X must be finite"),
    ("descend-X-shape", lambda: descend(TWO, LIN, [[0.1, 0.2]], 0.2), ValueError, r"X must have shape \(n, d=1\)"),
    ("labels-X-complex", lambda: attractor_labels(TWO, LIN, [[1j]], 0.2), TypeError, r"X must be real"),
    ("posterior-X-inf", lambda: attractor_posterior(TWO, LIN, [[math.inf]], 0.2), ValueError, r"X must be finite"),
    ("bifurcation-ts-complex", lambda: bifurcation_diagram(TWO, LIN, [0.5, 1j]), TypeError, r"ts must be real"),
    # --- tolerances and counts
    ("critical-tol_t-0", lambda: critical_time(TWO, LIN, tol_t=0.0), ValueError, r"tol_t"),
    ("sample-n-0", lambda: TWO.sample(None, 0.5, LIN, 0), ValueError, r"n must be an integer >= 1; got 0"),
    ("sample-n-float", lambda: GM.sample(None, 0.5, LIN, 2.5), TypeError, r"n must be an integer; got 2.5"),
    ("simulate-n_steps-0", lambda: simulate(TWO, LIN, 2, n_steps=0), ValueError, r"n_steps must be an integer >= 1"),
    ("simulate-n-neg", lambda: simulate(TWO, LIN, -1), ValueError, r"n must be an integer >= 1; got -1"),
    ("simulate-seed-neg", lambda: simulate(TWO, LIN, 2, seed=-1), ValueError, r"seed must be an integer >= 0"),
    ("simulate-method", lambda: simulate(TWO, LIN, 2, method="rk4"), ValueError, r"method must be 'euler' or 'heun'"),
    ("simulate-eta-neg", lambda: simulate(TWO, LIN, 2, eta=-1.0), ValueError, r"eta must be a finite number >= 0"),
    ("simulate-x_start", lambda: simulate(TWO, LIN, 2, x_start=np.zeros((3, 1))), ValueError, r"x_start must have"),
    ("simulate_forward-0", lambda: simulate_forward(TWO, LIN, 5, n_steps=0), ValueError, r"n_steps must be an"),
    (
        "commitment-every-0",
        lambda: commitment(TWO, LIN, Trajectories(np.array([0.5, 0.4]), np.zeros((2, 2, 1))), every=0),
        ValueError,
        "every",
    ),
    ("drift-eta-nan", lambda: drift(TWO, LIN, X1, 0.5, eta=math.nan), ValueError, r"eta must be a finite number >= 0"),
    ("ddpm-n_steps-0", lambda: DDPM(n_steps=0), ValueError, r"n_steps must be an integer >= 1; got 0"),
    ("ddpm-n_steps-str", lambda: DDPM(n_steps="10"), TypeError, r"n_steps must be an integer; got '10'"),
    ("ddpm-beta_end", lambda: DDPM(beta_end=1.0), ValueError, r"need 0 < beta_start <= beta_end < 1"),
    ("vplinear-beta_min", lambda: VPLinear(beta_min=-1.0), ValueError, r"beta_min must be a finite number > 0"),
    ("vplinear-order", lambda: VPLinear(beta_min=5.0, beta_max=1.0), ValueError, r"beta_max must be >= beta_min"),
    ("vpcosine-s", lambda: VPCosine(s=0.0), ValueError, r"s must be a finite number > 0"),
    ("ve-sigmas", lambda: VE(sigma_min=1.0, sigma_max=0.5), ValueError, r"sigma_max must be > sigma_min"),
    ("t_from_theta-range", lambda: LIN.t_from_theta(1.5), ValueError, r"theta must lie in"),
    ("ve-t_from_theta", lambda: VE().t_from_theta(0.5), ValueError, r"VE has theta = 1"),
    ("lambdify-backend", lambda: S.lambdify(S.a, (S.a,), backend="torch"), ValueError, r"backend must be 'numpy'"),
    # --- wrong types and shapes
    ("critical-data-str", lambda: critical_time("data", LIN), TypeError, r"\bdata\b"),
    ("simulate-data-str", lambda: simulate("data", LIN, 2), TypeError, r"data must be a theory DeltaMixture"),
    ("score-schedule-str", lambda: TWO.score(X1, 0.5, "vp"), TypeError, r"schedule must be a theory Schedule"),
    ("points-ragged", lambda: DeltaMixture([[1.0], [1.0, 2.0]]), ValueError, r"points must be a rectangular array"),
    ("points-nan", lambda: DeltaMixture([[math.nan]]), ValueError, r"points must be finite"),
    ("weights-sum", lambda: DeltaMixture([[0.0], [1.0]], [0.5, 0.6]), ValueError, r"weights must sum to 1"),
    ("weights-neg", lambda: DeltaMixture([[0.0], [1.0]], [1.5, -0.5]), ValueError, r"weights must be >= 0"),
    ("weights-shape", lambda: DeltaMixture([[0.0], [1.0]], [1.0]), ValueError, r"weights must have shape \(2,\)"),
    ("gm-not-pd", lambda: GaussianMixture([[0.0]], [-1.0]), ValueError, r"covariances must be positive definite"),
    ("gm-cov-shape", lambda: GaussianMixture([[0.0]], [[1.0, 2.0]]), ValueError, r"covariances must have shape"),
    ("x-wrong-dim", lambda: TWO.score(np.zeros(2), 0.5, LIN), ValueError, r"x must have shape \(\.\.\., 1\)"),
    # --- resource guards
    (  # 100 Hessians of size 20000^2: ~1 TB; the broadcast x costs nothing, and the guard runs before any copy
        "hessian-memory",
        lambda: DeltaMixture(np.zeros((2, 20000))).hessian(np.broadcast_to(np.zeros(20000), (100, 20000)), 0.5, LIN),
        MemoryError,
        r"the Hessian of 100 points .* would need about [\d.]+ GiB",
    ),
    ("simulate-memory", lambda: simulate(TWO, LIN, 10**6, n_steps=10**6), MemoryError, r"simulate of 1000000 paths"),
    # --- reference systems
    ("system-a-0", lambda: TwoDeltas(0.0), ValueError, r"a must be a finite number > 0"),
    ("system-norms", lambda: EqualNormSet([[1.0, 0.0], [-2.0, 0.0]]), ValueError, r"points must have equal"),
    ("system-centred", lambda: EqualNormSet([[1.0, 0.0], [0.0, 1.0]]), ValueError, r"points must be centred"),
    ("system-no-closed", lambda: TwoDeltas(1.0, [0.3, 0.7]).t_c(LIN), ValueError, r"no closed form for the critical"),
    ("system-schedule", lambda: TwoDeltas().centre_t_c("vp"), TypeError, r"schedule must be a theory Schedule"),
    # --- times outside the schedule's domain [0, T], in every public function of t
    ("theta-t-above-T", lambda: LIN.theta(1.5), ValueError, r"t must lie in \[0.0, 1.0\]; got 1.5"),
    ("sigma2-t-neg-ddpm", lambda: DDPM().sigma2(-0.1), ValueError, r"t must lie in \[0.0, 1.0\]; got -0.1"),
    ("g2-t-nan-ve", lambda: VE().g2(math.nan), ValueError, r"t must lie in \[0.0, 1.0\]; got nan"),
    ("log_snr-t-array", lambda: COS.log_snr(np.array([0.5, 2.0])), ValueError, r"t must lie in .*; got 2.0"),
    ("beta-t-above-T", lambda: LIN.beta(1.5), ValueError, r"t must lie in \[0.0, 1.0\]"),
    ("drift-t-above-T", lambda: drift(TWO, LIN, X1, 2.0), ValueError, r"t must lie in \[0.0, 1.0\]; got 2.0"),
    ("potential-t-neg", lambda: potential(GM, LIN, X1, -1.0), ValueError, r"t must lie in \[0.0, 1.0\]"),
    ("t_from_snr-nan", lambda: LIN.t_from_snr(math.nan), ValueError, r"snr must be a number >= 0 \(inf: t = 0\)"),
    ("t_from_snr-neg-ve", lambda: VE().t_from_snr(-1.0), ValueError, r"snr must be a number >= 0"),
    ("t_of_step-fraction", lambda: DDPM().t_of_step(1.5), ValueError, r"k must be integer steps in \[0, 1000\]"),
    ("forward_step-theta-1", lambda: DDPM().forward_step(1.0), ValueError, r"theta_c must lie in \[0.0, 1.0\)"),
    (
        "reduced_drift-theta-1",
        lambda: TwoDeltas().reduced_drift(0.1, 1.0),
        ValueError,
        r"theta must lie in \[0.0, 1.0\)",
    ),
    ("cloning-ts-below", lambda: cloning_curve(TWO, LIN, [1e-4]), ValueError, r"ts \(above t_end=0.001\) must lie in"),
    ("cloning-t_end-nan", lambda: cloning_curve(TWO, LIN, [0.5], t_end=math.nan), ValueError, r"t_end must lie in"),
    # --- arrays: real, finite, floating (complex and booleans are a wrong type; integers are numbers)
    ("points-complex", lambda: DeltaMixture([[1j], [1.0]]), TypeError, r"points must be real; got complex values"),
    ("points-bool", lambda: DeltaMixture([[True], [False]]), TypeError, r"points must be real numbers, not booleans"),
    (
        "points-no-dims",
        lambda: DeltaMixture(np.zeros((2, 0))),
        ValueError,
        r"points must have shape \(N, d\) with N, d >= 1",
    ),
    ("weights-complex", lambda: DeltaMixture([[0.0], [1.0]], [0.5 + 0j, 0.5]), TypeError, r"weights must be real"),
    ("weights-nan", lambda: DeltaMixture([[0.0], [1.0]], [math.nan, 0.5]), ValueError, r"weights must be finite"),
    ("means-nan", lambda: GaussianMixture([[math.nan]], [1.0]), ValueError, r"means must be finite"),
    ("gm-no-components", lambda: GaussianMixture(np.zeros((0, 1)), np.zeros(0)), ValueError, r"with K, d >= 1"),
    ("gm-cov-complex", lambda: GaussianMixture([[0.0]], [1 + 1j]), TypeError, r"covariances must be real"),
    ("gm-cov-inf", lambda: GaussianMixture([[0.0]], [math.inf]), ValueError, r"covariances must be finite"),
    (
        "gm-cov-asymmetric",
        lambda: GaussianMixture([[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]),
        ValueError,
        r"covariances must be symmetric; covariance 0 differs from its transpose by 0.5",
    ),
    (
        "gm-cov-not-psd",
        lambda: GaussianMixture([[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]),
        ValueError,
        r"covariances must be positive definite; covariance 0 has the eigenvalue -1",
    ),
    (
        "score-x-nan",
        lambda: TWO.score(np.array([math.nan]), 0.5, LIN),
        ValueError,
        r"x must be finite; it contains NaN",
    ),
    ("score-x-complex", lambda: TWO.score(np.array([0.5 + 1j]), 0.5, LIN), TypeError, r"x must be real; got complex"),
    ("hvp-v-inf", lambda: GM.hvp(X1, np.array([math.inf]), 0.5, LIN), ValueError, r"v must be finite"),
    ("score-t-complex", lambda: TWO.score(X1, 0.5 + 0j, LIN), TypeError, r"t must be real; got complex"),
    ("score-t-str", lambda: TWO.score(X1, "0.5", LIN), TypeError, r"t must be real numbers; got '0.5'"),
    ("drift-x-nan", lambda: drift(TWO, LIN, np.array([math.nan]), 0.5), ValueError, r"x must be finite"),
    ("drift-x-complex", lambda: drift(TWO, LIN, np.array([1j]), 0.5), TypeError, r"x must be real; got complex"),
    ("potential-x-inf", lambda: potential(TWO, LIN, np.array([math.inf]), 0.5), ValueError, r"x must be finite"),
    ("jacobian-x-complex", lambda: drift_jacobian(GM, LIN, np.array([1j]), 0.5), TypeError, r"x must be real"),
    ("jacobian-data-str", lambda: drift_jacobian("data", LIN, X1, 0.5), TypeError, r"data must be a theory Delta"),
    ("f-x-nan", lambda: LIN.f(np.array([math.nan]), 0.5), ValueError, r"x must be finite"),
    ("simulate-x_start-complex", lambda: simulate(TWO, LIN, 1, x_start=[[1j]]), TypeError, r"x_start must be real"),
    ("simulate-t_end-complex", lambda: simulate(TWO, LIN, 1, t_end=0.1 + 0j), TypeError, r"t_end must be real"),
    (
        "drift-eta-complex",
        lambda: drift(TWO, LIN, X1, 0.5, eta=1 + 0j),
        TypeError,
        r"eta must be real; got the complex",
    ),
    ("drift-eta-bool", lambda: drift(TWO, LIN, X1, 0.5, eta=True), TypeError, r"eta must be a real number; got True"),
    ("fixed_points-t-complex", lambda: fixed_points(TWO, LIN, 0.5 + 0j), TypeError, r"\bt\b.* must be real"),
    (
        "commitment-traj-nan",
        lambda: commitment(TWO, LIN, Trajectories(np.array([0.5, 0.4]), np.full((2, 2, 1), math.nan))),
        ValueError,
        r"traj.x must be finite",
    ),
    (
        "commitment-traj-shape",
        lambda: commitment(TWO, LIN, Trajectories(np.array([0.5, 0.4]), np.zeros((3, 2, 1)))),
        ValueError,
        r"traj.x must have shape \(2, n, 1\)",
    ),
    ("cloning-ts-nan", lambda: cloning_curve(TWO, LIN, [math.nan]), ValueError, r"ts must be finite"),
    ("cloning-ts-complex", lambda: cloning_curve(TWO, LIN, [0.5 + 0j]), TypeError, r"ts must be real"),
    (
        "biroli-phi-s-complex",
        lambda: biroli_cloning_probability(1 + 1j, 3),
        TypeError,
        r"s \(Ornstein-Uhlenbeck time\)",
    ),
    ("from_betas-complex", lambda: DDPM.from_betas([0.1 + 0j]), TypeError, r"betas must be real"),
    ("owned_fraction-nan", lambda: _collapse().owned_fraction(math.nan), ValueError, r"t must be finite"),
    ("excess_entropy-nan", lambda: excess_entropy(np.full((3, 2), math.nan), 0.5), ValueError, r"Y must be finite"),
    ("biroli-schedule-str", lambda: biroli_times(TWO, "vp"), TypeError, r"schedule must be a theory Schedule"),
    ("reduced_drift-x-nan", lambda: TwoDeltas().reduced_drift(math.nan, 0.5), ValueError, r"x must be finite"),
    ("sample_components-idx", lambda: GM.sample_components(None, [5]), ValueError, r"idx must be .* in \[0, 2\)"),
    # --- values so large that float64 overflows downstream: refused with the allowed range
    ("eta-huge", lambda: drift(TWO, LIN, X1, 0.5, eta=1e200), ValueError, r"eta must be a finite number <= 1e\+50"),
    ("critical-eta-huge", lambda: critical_time(TWO, LIN, eta=1e200), ValueError, r"eta must be a finite number <="),
    ("tree-eta-huge", lambda: bifurcation_tree(TWO, LIN, eta=1e200), ValueError, r"eta must be a finite number <="),
    ("system-a-huge", lambda: TwoDeltas(1e200), ValueError, r"a must be a finite number <= 1e\+100 .*; got 1e\+200"),
    ("system-v0-huge", lambda: TwoGaussians(1.0, 1e200), ValueError, r"v0 must be a finite number <= 1e\+100"),
    ("system-eta-huge", lambda: TwoDeltas().centre_t_c(LIN, 1e200), ValueError, r"eta must be a finite number <="),
    ("points-huge", lambda: DeltaMixture([[1e200], [1.0]]), ValueError, r"points must have every \|value\| <= 1e\+100"),
    ("x-huge", lambda: TWO.score(np.array([1e200]), 0.5, LIN), ValueError, r"x must have every \|value\| <= 1e\+100"),
    ("ve-sigma_max-huge", lambda: VE(sigma_max=1e300), ValueError, r"sigma_max must be a finite number <= 1e\+100"),
    # --- requests too large for the machine, refused before jax allocates (an XLA failure aborts the process)
    ("cloning-memory", lambda: cloning_curve(TWO, LIN, [0.5], n=10**9), MemoryError, r"cloning_curve of 2000000000"),
    ("sample-memory", lambda: TWO.sample(None, 0.5, LIN, 10**12), MemoryError, r"sampling 1000000000000 points"),
]


def _collapse():
    """A collapse result built directly (its owned fraction reads t_own only)."""
    return CollapseTime(0.3, 0.6, 0.6, 0.5, np.array([0.3, 0.4]), ("fold", "fold"), None)


EMPIRICAL = [
    # --- tolerances and counts
    ("measure-tol_t-neg", lambda: _measure(tol_t=-1.0), ValueError, r"tol_t"),
    ("measure-n_starts-0", lambda: _measure(n_starts=0), ValueError, r"n_starts"),
    ("sample-n_steps-0", lambda: sample(DEN, "ddim", 0, XS, 0.5), ValueError, r"n_steps must be an integer >= 1"),
    ("sample-t_start", lambda: sample(DEN, "ddim", 5, XS, 1.5), ValueError, r"t_start must be a number in \(t_end"),
    ("sample-t_end", lambda: sample(DEN, "ddim", 5, XS, 0.5, t_end=0.0), ValueError, r"t_end must be a number in"),
    ("pndm-cosine-at-T", lambda: sample(DEN_COS, "pndm", 5, XS, 1.0), ValueError, r"t_start must be below 1.0 .*theta"),
    ("generate-cosine-T", lambda: generate(DEN_COS, "ddim", 5, 2, dim=1), ValueError, r"theta\(t_start\) = 0"),
    ("generate-n-0", lambda: generate(DEN, "ddim", 5, 0, dim=1), ValueError, r"n must be an integer >= 1; got 0"),
    ("generate-seed-float", lambda: generate(DEN, "ddim", 5, 2, dim=1, seed=1.5), TypeError, r"seed must be an int"),
    ("generate-batch-0", lambda: generate(DEN, "ddim", 5, 2, dim=1, batch_size=0), ValueError, r"batch_size must be"),
    ("gls-rank-0", lambda: GaussianInit.analytic(np.ones((5, 3)), LIN, 0.5, rank=0), ValueError, r"rank must be None"),
    ("gls-cov0-shape", lambda: GaussianInit.from_moments(np.zeros(2), np.eye(3), LIN, 0.5), ValueError, r"cov0 must"),
    ("gls-ragged", lambda: GaussianInit.analytic([[1.0], [1.0, 2.0]], LIN, 0.5), ValueError, r"x_train must be a rect"),
    ("gls-t_start", lambda: GaussianInit.analytic(np.ones((5, 3)), LIN, 0.0), ValueError, r"t_start must be a number"),
    (
        "gls-memory",
        lambda: GaussianInit.from_moments(np.zeros(10**6), np.zeros((1, 1)), LIN, 0.5),
        MemoryError,
        r"a full 1000000 x 1000000 covariance would need about [\d.]+ GiB.*pass rank=k",
    ),
    ("denoiser-t0", lambda: DEN(XS, 0.0), ValueError, r"t must lie in \(0, T=1.0\]"),
    ("denoiser-x0-cos-T", lambda: DEN_COS.x0(XS, 1.0), ValueError, r"t must be below T for x0 .*theta = 0"),
    ("denoiser-net", lambda: Denoiser("unet"), TypeError, r"net must be a torch nn.Module; got str"),
    ("exact-data-str", lambda: ExactDenoiser("data"), TypeError, r"data must be a theory DeltaMixture"),
    ("sample-x_start-nan", lambda: sample(DEN, "ddim", 3, XS * math.nan, 0.5), ValueError, r"x_start must be finite"),
    ("sample-model-nan", lambda: sample(NanDenoiser(TWO), "ddim", 3, XS, 0.5), FloatingPointError, r"ddim with n_st"),
    ("train-steps-0", lambda: TrainConfig(steps=0), ValueError, r"steps must be an int >= 1; got 0"),
    ("train-lr-nan", lambda: TrainConfig(lr=math.nan), ValueError, r"lr must be a finite number > 0"),
    ("train-batch-float", lambda: TrainConfig(batch_size=2.0), ValueError, r"batch_size must be an int >= 1"),
    ("train-ema", lambda: TrainConfig(ema_decay=1.0), ValueError, r"ema_decay must be a number in \[0, 1\)"),
    ("bt-tol_t-0", lambda: breaking_time.Config(tol_t=0.0), ValueError, r"tol_t must lie in \(0, 0.1\)"),
    ("bt-n_starts-bool", lambda: breaking_time.Config(n_starts=True), ValueError, r"n_starts must be an int >= 1"),
    ("bt-t_min", lambda: breaking_time.Config(t_min=1.5), ValueError, r"t_min must lie in \(0, 1\)"),
    ("ls-n_steps-1", lambda: late_start.Config(n_steps=(1,)), ValueError, r"n_steps must be a non-empty tuple"),
    ("ls-eta-0", lambda: late_start.Config(eta=0.0), ValueError, r"eta must be a finite number > 0"),
    ("dataset-n-0", lambda: load_dataset("digits", n=0), ValueError, r"n must be a positive int"),
    ("dataset-name", lambda: load_dataset("cifar10"), ValueError, r"unknown dataset 'cifar10'"),
    ("dataset-seed", lambda: load_dataset("digits", seed=-1), ValueError, r"seed must be an int >= 0"),
    ("dataset-classes", lambda: load_dataset("digits", classes=[11]), ValueError, r"classes=\[11\] must be"),
    ("clf-lr-0", lambda: train_classifier(*CLF, lr=0.0), ValueError, r"lr must be a finite number > 0; got 0.0"),
    ("clf-seed", lambda: train_classifier(*CLF, seed=-1), ValueError, r"seed must be an integer >= 0; got -1"),
    ("clf-labels-float", lambda: train_classifier(CLF[0], [0.5] * 4, (2, 2)), TypeError, r"labels must be integers"),
    ("clf-x-nan", lambda: train_classifier(CLF[0] * math.nan, *CLF[1:]), ValueError, r"x must be finite"),
    ("fid-width", lambda: fid(np.ones((5, 2)), np.ones((5, 3))), ValueError, r"feats_a and feats_b must have the same"),
    ("kid-subsets", lambda: kid(np.ones((5, 2)), np.ones((5, 2)), n_subsets=0), ValueError, r"n_subsets must be"),
    ("composition-n", lambda: class_composition([0, 1], 0), ValueError, r"n_classes must be an integer >= 1"),
    # --- NaN in the measurement's images; the flow search's options; a prediction that states no N and d
    (
        "measure-x_train-nan",
        lambda: measure_critical_time(DEN, np.array([[math.nan], [1.0]])),
        ValueError,
        r"x_train must be finite; it contains NaN or inf \(first at index \(0, 0\)\)",
    ),
    ("flow-newton_tol-0", lambda: FlowSearch(DEN, newton_tol=0.0), ValueError, r"newton_tol must be a finite number"),
    ("flow-tol-nan", lambda: FlowSearch(DEN, tol=math.nan), ValueError, r"tol must be a finite number > 0; got nan"),
    ("flow-max_iter-0", lambda: FlowSearch(DEN, max_iter=0), ValueError, r"max_iter must be an integer >= 1; got 0"),
    ("flow-den", lambda: FlowSearch("unet"), TypeError, r"den64 must be an empirical Denoiser; got str"),
    (
        "prediction-no-N-d",
        lambda: read_prediction("benchmarks/results.json:paper", np.zeros((1797, 64)), "digits"),
        ValueError,
        r"prediction 'benchmarks/results.json:paper' does not state N and d",
    ),
]

FILES = [  # (id, call(checkpoint, tmp_path[, monkeypatch]), expected, regex)
    ("ckpt-truncated", _truncated, CheckpointError, r"truncated\.pt cannot be read as a checkpoint"),
    ("ckpt-flipped", _flipped, CheckpointError, r"flipped\.pt is corrupt: its contents hash to"),
    ("ckpt-nan", _nan_weights, CheckpointError, r"nan\.pt holds NaN or inf model weights"),
    ("ckpt-legacy", _legacy, UserWarning, r"legacy\.pt carries no checksum"),
    ("ckpt-missing", lambda c, t: load_checkpoint(t / "none.pt"), FileNotFoundError, r"no checkpoint file at"),
    ("train-out-file", _out_is_a_file, ValueError, r"out must be a directory; .*a_file is an existing file"),
    ("train-out-unmakeable", _out_below_a_file, ValueError, r"out=.*a_file/run is not a writable directory"),
    ("clf-truncated", lambda c, t: _classifier_file(t, "truncate"), CheckpointError, r"clf\.pt cannot be read"),
    ("clf-flipped", lambda c, t: _classifier_file(t, "flip"), CheckpointError, r"clf\.pt is corrupt"),
    ("data-bad-gzip", _corrupt_gzip, ValueError, r"train-images-idx3-ubyte\.gz is corrupt or truncated"),
    ("train-out-in-use", _out_in_use, OutputInUse, r"out=.* is in use by another process \(pid \d+"),
    ("ckpt-disk-full", _disk_full_on_save, OSError, r"cannot write .*run/checkpoint\.pt: no space left on the disk"),
    (
        "prediction-t_c-above-T",
        lambda c, t: _prediction_file(t, {"N": 2, "d": 1, "t_c": 7.5}),
        ValueError,
        r"has t_c = 7.5; a critical time must lie in \(0, T=1.0\]",
    ),
    ("prediction-no-d", lambda c, t: _prediction_file(t, {"N": 2, "t_c": 0.3}), ValueError, r"does not state d \("),
    ("recipe-export-over-weights", _export_over_weights, ValueError, r"digits_denoiser\.pt exists .*pass --overwrite"),
    (
        "recipe-export-results-file",
        lambda c, t: _command("pipelines.recipe", ["export", str(c.parent), "--results", str(c)]),
        ValueError,
        r"results must be a directory; .*checkpoint\.pt is an existing file",
    ),
    (
        "memorisation-results-object",
        lambda c, t: (
            (t / "memorisation.json").write_text("{}")
            and _command("measure.memorisation", ["--results", str(t), "--out", str(t)])
        ),
        ValueError,
        r"results=.*memorisation\.json holds a JSON object, not a list of rows",
    ),  # fmt: skip
    (
        "attractors-out-object",
        lambda c, t: (
            (t / "a.json").write_text('{"a": 1}')
            and _command(
                "measure.attractors", [str(c), "--dataset", "digits", "--t", "0.5", "--out", str(t / "a.json")]
            )
        ),
        ValueError,
        r"out=.*a\.json holds a JSON object, not a list of rows",
    ),
    (
        "denoising-gap-out-proc",
        lambda c, t: _command(
            "measure.denoising_gap", [str(c), "--dataset", "digits", "--t", "0.5", "--out", "/proc/gap.json"]
        ),
        ValueError,
        r"out=/proc/gap\.json cannot be written: its folder=/proc is not a writable directory",
    ),  # fmt: skip
    (
        "steps-sweep-t_min-0",
        lambda c, t: _command("pipelines.steps_sweep", ["--dataset", "digits", str(c), "--t-min", "0"]),
        ValueError,
        r"t_min must be a number in \(0, t_max=1.0\); got 0.0",
    ),
    (
        "late-start-cells-out-proc",
        lambda c, t: _command("pipelines.late_start.cells", ["--model", str(c), "--out", "/proc/cells.json"]),
        ValueError,
        r"out=/proc/cells\.json cannot be written",
    ),
    (
        "pipeline-table-object",
        lambda c, t: _pipeline_table_object(t),
        ValueError,
        r"results=.*late_start\.json holds a JSON object, not a list of rows",
    ),
    (
        "diffusers-fid-out-torn",
        lambda c, t: (
            (t / "rows.json").write_text("{")
            and _command("pipelines.late_start.diffusers_fid", ["--model", str(c), "--out", str(t / "rows.json")])
        ),
        ValueError,
        r"out=.*rows\.json cannot be merged into: it is not a readable JSON file",
    ),
    ("diffusers-config-cut", lambda c, t: _diffusers_folder(t, "config-cut"), ValueError, r"config\.json is not valid"),
    (
        "diffusers-scheduler-list",
        lambda c, t: _diffusers_folder(t, "scheduler-list"),
        ValueError,
        r"scheduler config: .*scheduler_config\.json must hold a JSON object of settings; got a list",
    ),
    (
        "diffusers-weights-missing",
        lambda c, t: _diffusers_folder(t, "weights-missing"),
        ValueError,
        r"UNet weights: .* holds none of diffusion_pytorch_model\.safetensors",
    ),
    ("diffusers-weights-cut", lambda c, t: _diffusers_folder(t, "weights-cut"), ValueError, r"UNet weights: .*cannot"),
    (
        "diffusers-odd-size",
        lambda c, t: _diffusers_folder(t, "odd-size"),
        ValueError,
        r"config\.json has sample_size=7 with 2 down blocks; each size must be divisible by 2\^1 = 2",
    ),
]


def _timeout(signum, frame):
    raise TimeoutError("no answer within 20 s: a bad input must be refused at once, not looped on")


def _expect(call, expected, pattern):
    previous = signal.signal(signal.SIGALRM, _timeout)  # a hang (tol_t = 0) fails the row instead of the run
    signal.alarm(20)
    try:
        _expect_now(call, expected, pattern)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _expect_now(call, expected, pattern):
    if issubclass(expected, Warning):
        with pytest.warns(expected, match=pattern):
            call()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(expected, match=pattern):
                call()


def test_the_table_is_large_and_ids_are_unique():
    ids = [row[0] for row in THEORY + EMPIRICAL + FILES]
    assert len(ids) >= 50 and len(set(ids)) == len(ids)
    for row in THEORY + EMPIRICAL + FILES:
        re.compile(row[3])  # every pattern is a valid regex


@pytest.mark.parametrize("name, call, expected, pattern", THEORY, ids=[r[0] for r in THEORY])
def test_theory_bad_input(name, call, expected, pattern):
    _expect(call, expected, pattern)


@pytest.mark.parametrize("name, call, expected, pattern", EMPIRICAL, ids=[r[0] for r in EMPIRICAL])
def test_empirical_bad_input(name, call, expected, pattern):
    _expect(call, expected, pattern)


@pytest.mark.parametrize("name, call, expected, pattern", FILES, ids=[r[0] for r in FILES])
def test_bad_files(name, call, expected, pattern, checkpoint, tmp_path, monkeypatch):
    takes_monkeypatch = name in ("data-bad-gzip", "ckpt-disk-full")
    args = (checkpoint, tmp_path, monkeypatch) if takes_monkeypatch else (checkpoint, tmp_path)
    _expect(lambda: call(*args), expected, pattern)


# --- edge inputs that now give the correct result -------------------------------------------------
def test_cosine_schedule_has_its_limits_at_T():
    assert float(COS.theta(1.0)) == 0.0 and float(COS.sigma2(1.0)) == 1.0
    assert float(COS.g2(1.0)) == math.inf and float(COS.snr(1.0)) == 0.0
    assert float(COS.t_from_theta(0.0)) == pytest.approx(1.0, abs=1e-15)
    # Just below T, theta follows the closed form cos(phi(t)) / cos(phi(0)) (no spurious floor of 1e-16).
    phi = lambda t: (t + 0.008) / 1.008 * math.pi / 2  # noqa: E731
    assert float(COS.theta(1 - 1e-9)) == pytest.approx(math.cos(phi(1 - 1e-9)) / math.cos(phi(0)), rel=1e-6)


def test_exact_denoiser_of_integer_images_is_float64():
    # eps of a uint8 image is a real number: float64 (it was cast back to uint8: 255 for -1.0752).
    x8 = torch.tensor([[3]], dtype=torch.uint8)
    eps = DEN(x8, 0.5)
    th, s2 = float(LIN.theta(0.5)), float(LIN.sigma2(0.5))
    score = (
        th * math.tanh(3 * th / s2) - 3
    ) / s2  # the pair at +-1: grad log p_t = (theta tanh(theta x / s2) - x) / s2
    assert eps.dtype == torch.float64 and float(eps[0, 0]) == pytest.approx(-math.sqrt(s2) * score, rel=1e-12)
    assert DEN(x8.float(), 0.5).dtype == torch.float32  # a floating input keeps its dtype


def test_a_failed_export_leaves_no_half_written_folder(checkpoint, tmp_path, monkeypatch):
    # The files are made in a staging folder and moved in at the end: a failure mid-way (here the sampler) leaves
    # the results folder as it was and removes the staging folder.
    from empirical.pipelines import recipe

    def broken(*args, **kwargs):
        raise RuntimeError("sampler failed")

    monkeypatch.setattr(recipe, "generate", broken)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "notes.txt").write_text("kept")
    with pytest.raises(RuntimeError, match="sampler failed"):
        recipe.export(checkpoint.parent, tmp_path / "res")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["notes.txt"]


def test_integer_arrays_are_real_numbers():
    # Integers are exact real numbers: points and x of any integer dtype give the float64 result.
    th, s2 = float(LIN.theta(0.3)), float(LIN.sigma2(0.3))
    score = DeltaMixture(np.array([[-1], [1]], dtype=np.int8)).score(np.array([1], dtype=np.uint8), 0.3, LIN)
    assert score.dtype == np.float64
    assert float(score[0]) == pytest.approx((th * math.tanh(th / s2) - 1.0) / s2, rel=1e-13)


@pytest.mark.parametrize("a", [1e3, 1e25, 1e100])
def test_closed_form_holds_for_far_apart_points(a):
    # eta = 1: s^2 + 2 a^2 s - 1 = 0, so theta_c^2 = 1 / (a^2 + sqrt(a^4 + 1)) (no cancellation; a^4 as (a^2)^2
    # scaled). The textbook root gave 0.707 at a = 1e25 and overflowed at 1e100.
    s = 1.0 / (a**2 + a**2 * math.sqrt(1.0 + a**-4))
    assert TwoDeltas(a).centre_theta_c(1.0) == pytest.approx(math.sqrt(s), rel=1e-14)


_UNDER_A_LIMIT = """
import resource
from theory import DeltaMixture, VPLinear
from theory._checks import _read_number
from theory.cloning_curve import cloning_curve
vm = _read_number("/proc/self/status", "VmSize:", 1024)
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))  # ulimit -v: 1 GiB more
try:
    cloning_curve(DeltaMixture([[-1.0], [1.0]]), VPLinear(), [0.5], n=10**6)  # 6 GiB of paths
except MemoryError as err:
    print("refused:", err)
"""


def test_memory_guard_sees_an_address_space_limit():
    # Under `ulimit -v` the machine's MemAvailable still shows every free GiB: the guard must see the limit,
    # or the paths are allocated inside XLA, which aborts the process (std::bad_alloc) instead of raising.
    import subprocess
    import sys

    env = {"OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    root = str(__import__("pathlib").Path(__file__).parents[1])
    out = subprocess.run(
        [sys.executable, "-c", _UNDER_A_LIMIT], capture_output=True, text=True, timeout=300, env=env, cwd=root
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: cloning_curve of 2000000 paths of 200 steps in d = 1 would need about 6.1 GiB" in out.stdout


def test_heun_to_t_zero_lands_on_the_data():
    # The corrector at sigma = 0 would need the singular score: the last step is Euler, and the samples end
    # near the two points, within a few sigma(t_K-1) = 0.018 of them (the last Euler step does not close the gap).
    tr = simulate(TWO, LIN, 200, t_end=0.0, method="heun", eta=0.0, n_steps=400)
    x, sigma_last = tr.x[-1, :, 0], float(LIN.sigma(tr.t[-2]))
    assert np.all(np.isfinite(x)) and np.abs(np.abs(x) - 1.0).max() < 4 * sigma_last
    assert 0.3 < np.mean(x > 0) < 0.7  # both points reached


def test_cosine_runs_just_below_T_end_on_the_data():
    x = simulate(TWO, COS, 64, t_start=1 - 1e-3, eta=0.0, n_steps=400).x[-1, :, 0]
    assert np.abs(np.abs(x) - 1.0).max() < 0.05  # the 1e-3 T end time leaves sigma ~ 0.02
    for sampler in ("pndm", "ddim"):
        out = sample(DEN_COS, sampler, 20, torch.tensor([[-0.7], [0.4]]), 1 - 1e-3)
        assert torch.allclose(out.abs(), torch.ones_like(out), atol=1e-3), (sampler, out)
        assert torch.equal(torch.sign(out), torch.tensor([[-1.0], [1.0]], dtype=torch.float64))


def test_numpy_scalars_are_numbers():
    # np.float32(0.5) is a number, wherever a time is asked for.
    a = generate(DEN3, "ddim", 3, 2, init="late", t_start=np.float32(0.5), dim=3, seed=np.int64(1))
    b = generate(DEN3, "ddim", 3, 2, init="late", t_start=0.5, dim=3, seed=1)
    assert torch.equal(a, b)
    tr = simulate(TWO, LIN, 3, t_start=np.float32(0.5), n_steps=np.int64(4))
    assert tr.t[0] == 0.5 and tr.x.shape == (5, 3, 1)
    assert breaking_time.Config(eta=np.float32(1.0), n_starts=np.int64(8)).n_starts == 8


def test_cli_refuses_an_output_file_before_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert breaking_time.main(["--results", str(a_file), "--dry-run"]) == 2
    assert f"results must be a directory; {a_file} is an existing file" in capsys.readouterr().err
    assert late_start.main(["--run-dir", str(a_file), "--dry-run"]) == 2
    assert f"run_dir must be a directory; {a_file} is an existing file" in capsys.readouterr().err
