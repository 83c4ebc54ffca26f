"""empirical.pipelines.late_start.diffusers_fid at reduced size: ours and diffusers' FID agree far inside the seed
noise, the counted NFE is diffusers' own count of model calls (its timesteps) and our formula's (``samplers.nfe``), and
the command line refuses bad arguments by name.

The model is the exact eps of a 2D Gaussian mixture on VPLinear (``ExactDenoiser``; no training error, and the
bridge's continuous-schedule path, as for the digits network); FID is that of the raw coordinates against exact
draws of the data.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from empirical.metrics.scores import fid
from empirical.models.denoiser import ExactDenoiser
from empirical.sampling.samplers import nfe
from theory import GaussianMixture, VPLinear

pytest.importorskip("diffusers")  # the "diffusers" extra
# diffusers calls np.array on torch tensors (numpy 2's copy keyword): not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

MODEL = Path(__file__).resolve().parents[1] / "docs" / "results" / "digits_denoiser.pt"
N = 300


@pytest.fixture(scope="module")
def den():
    means = [[-1.5, 0.5], [1.0, 1.0], [0.3, -1.2]]
    covs = [np.diag([0.05, 0.1]), np.diag([0.2, 0.02]), np.array([[0.1, 0.03], [0.03, 0.08]])]
    return ExactDenoiser(GaussianMixture(means, covs, weights=[0.5, 0.3, 0.2]), VPLinear())


@pytest.fixture(scope="module")
def score(den):
    ref = np.asarray(den.data.sample(jax.random.PRNGKey(7), 0.0, den.schedule, 4000))
    return lambda x: fid(x, ref)


@pytest.mark.parametrize("sampler, n", [("ddim", 5), ("pndm", 5), ("dpm++2m", 6), ("unipc", 5)])
def test_fid_ours_and_diffusers_agree_inside_seed_noise(den, score, sampler, n):
    from empirical.interop.diffusers_schedulers import make_scheduler
    from empirical.pipelines.late_start.diffusers_fid import compare

    r = compare(den, score, sampler, n, seeds=(0, 1), n=N)
    # the seed noise is real at N = 300 (FID of 2D coordinates moves by ~1e-2 between seeds) ...
    assert min(r["seed_range_ours"], r["seed_range_diffusers"]) > 1e-3
    # ... and the implementations differ by float32 round-off in the samples, 1e-4 of it in FID at most
    assert r["max_abs_sample_diff"] < 1e-4
    assert r["max_abs_fid_diff"] < 1e-4 * min(r["seed_range_ours"], r["seed_range_diffusers"])
    np.testing.assert_allclose(r["fid_diff"], np.subtract(r["fid_ours"], r["fid_diffusers"]), rtol=0, atol=0)
    # one denoiser call per scheduler timestep (PNDM: n + 9, its Runge-Kutta warm-up), and our count formula
    assert r["nfe_diffusers"] == len(make_scheduler(sampler, n, den.schedule).timesteps)
    assert r["nfe_ours"] == nfe(sampler, n)
    # x_T is put at the first timestep: (n - 1) (1000 // n) for the "leading" spacing, 999 for "linspace"
    first = (n - 1) * (1000 // n) if sampler in ("ddim", "pndm") else 999
    assert r["t_first"] == pytest.approx((first + 1) / 1000, abs=1e-12)


def test_a_different_sampler_is_seen(den, score):
    # the comparison can tell samplers apart: DDIM against DPM-Solver++(2M) at n = 5 on the same x_T differ in
    # FID by far more than ours and diffusers' DDIM do (the previous test's bound)
    from empirical.pipelines.late_start.diffusers_fid import draw_pair

    a, b = draw_pair(den, "ddim", 5, N, seed=0), draw_pair(den, "dpm++2m", 5, N, seed=0)
    assert abs(score(a["ours"]) - score(b["diffusers"])) > 1e3 * abs(score(a["ours"]) - score(a["diffusers"]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samplers", "ipndm"], "samplers must be a non-empty subset of ('ddim', 'pndm'"),
        (["--samplers", "pndm", "--n-steps", "3"], "pndm cannot run n_steps=3: pndm needs n_steps >= 4"),
        (["--samplers", "pndm", "--n-steps", "8"], "pndm cannot run n_steps=8"),  # 1000 // 8 = 125 is odd
        (["--n-steps", "2000"], "n_steps must be <= n_train=1000"),
        (["--seeds", "3"], "seeds must hold >= 2 distinct ints >= 0"),
        (["--seeds", "1", "1"], "seeds must hold >= 2 distinct ints >= 0"),
        (["--n-samples", "5"], "n_samples must be an int >= 10; got 5"),
        (["--model", "no/such/model.pt"], "model must be a checkpoint file of empirical.training.train"),
        (["--threads", "-1"], "threads must be an int >= 0"),
        ([], "model: pass the checkpoint to sample"),
    ],
)
def test_cli_refuses_bad_arguments(argv, message, capsys):
    from empirical.pipelines.late_start.diffusers_fid import main

    argv = argv if "--model" in argv or not argv else ["--model", str(MODEL), *argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_folder_as_out(tmp_path, capsys):
    from empirical.pipelines.late_start.diffusers_fid import main

    assert main(["--model", str(MODEL), "--out", str(tmp_path)]) == 2
    assert f"out must be a JSON file path; {tmp_path} is a directory" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*carries no checksum")
def test_cli_rows_on_the_digits_model(tmp_path, capsys):
    # the whole command at tiny size: rows upserted (a rerun replaces them), the command in each row
    from empirical.pipelines.late_start.diffusers_fid import main

    out = tmp_path / "rows.json"
    argv = [
        "--model",
        str(MODEL),
        "--samplers",
        "ddim",
        "pndm",
        "--n-steps",
        "5",
        "--n-samples",
        "40",
        "--classifier-steps",
        "20",
    ]
    for _ in range(2):
        assert main([*argv, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["sampler"], r["n_steps"], r["nfe_ours"], r["nfe_diffusers"]) for r in rows] == [
        ("ddim", 5, 5, 5),
        ("pndm", 5, 14, 14),
    ]
    assert all(r["dataset"] == "digits" and r["n_ref"] == 1797 and r["model"] == "docs/results/digits_denoiser.pt"
               and r["command"].startswith("python -m empirical diffusers-fid --model ")
               for r in rows)  # fmt: skip
    assert all(max(abs(d) for d in r["fid_diff"]) < 1e-3 * r["seed_range_ours"] for r in rows)
