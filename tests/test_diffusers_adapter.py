"""empirical.interop.diffusers_unet: a small UNet2DModel built and saved here (no download) gives, through the adapter,
the x0 of diffusers' own DDPMScheduler.step; the theory's schedule has the scheduler's betas; measure and samplers
run on it unchanged."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from empirical.interop.diffusers_unet import DiffusersDenoiser, ddpm_betas, load_diffusers  # noqa: E402
from empirical.measure.fixed_points import measure_critical_time  # noqa: E402
from empirical.sampling.samplers import generate  # noqa: E402

N = 1000


def _unet(seed: int = 0, **kw) -> "diffusers.UNet2DModel":
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4, **kw,
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pipeline folder (unet/, scheduler/) as DDPMPipeline.save_pretrained writes it."""
    folder = tmp_path_factory.mktemp("ddpm")
    diffusers.DDPMPipeline(unet=_unet(), scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_betas_are_the_schedulers(schedule):
    """float64 betas against diffusers' float32 ones: equal to float32 round-off."""
    sched = diffusers.DDPMScheduler(beta_schedule=schedule, beta_start=1e-4, beta_end=0.02, num_train_timesteps=N)
    np.testing.assert_allclose(ddpm_betas(sched.config), sched.betas.double().numpy(), rtol=2e-6, atol=1e-9)
    trained = sched.betas.double().numpy()[:10]
    np.testing.assert_array_equal(ddpm_betas({"trained_betas": trained.tolist(), "beta_schedule": "nope"}), trained)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_x0_is_the_schedulers_pred_original_sample(saved, prediction, schedule, tmp_path):
    """At every model timestep j (t = (j + 1) / N), adapter.x0 == DDPMScheduler.step(...).pred_original_sample."""
    sched = diffusers.DDPMScheduler(
        beta_schedule=schedule, prediction_type=prediction, clip_sample=False, num_train_timesteps=N
    )
    sched.save_pretrained(tmp_path)  # scheduler_config.json beside the unet's files: the one-folder layout
    unet = diffusers.UNet2DModel.from_pretrained(saved / "unet", low_cpu_mem_usage=False)
    unet.save_pretrained(tmp_path)
    den = load_diffusers(tmp_path)
    assert den.schedule.n_steps == N and den.dim == 64 and den.prediction_type == prediction
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    for j in (0, 1, 250, 617, 998, 999):
        with torch.no_grad():
            out = unet(x.reshape(3, 1, 8, 8), j).sample
            want = sched.step(out, j, x.reshape(3, 1, 8, 8)).pred_original_sample.reshape(3, 64)
            got = den.x0(x, (j + 1) / N)
        scale = float(want.abs().max())
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=2e-6 * scale, err_msg=f"j={j}")


def test_timestep_map_and_integer_mode(saved):
    """t_k = k / N is the model's step j = k - 1; "integer" rounds between knots (and at a learned embedding)."""
    den = load_diffusers(saved)
    t = torch.tensor([0.001, 0.5, 1.0, 0.0314], dtype=torch.float64)
    np.testing.assert_array_equal(den.timestep(t).numpy(), np.float32([0.0, 499.0, 999.0, 30.4]))
    assert den.timestep(t).dtype == torch.float32
    assert load_diffusers(saved, timesteps="integer").timestep(t).tolist() == [0, 499, 999, 30]
    learned = DiffusersDenoiser(_unet(time_embedding_type="learned", num_train_timesteps=N), {})
    assert learned.timesteps == "integer" and learned.timestep(t).dtype == torch.int64
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # an eps-model: eps_hat is the unet's output at the rounded step
        np.testing.assert_array_equal(learned(x, 0.0314).numpy(), learned.net(x.reshape(2, 1, 8, 8), 30).sample.
                                      reshape(2, 64).numpy())  # fmt: skip


def test_bad_inputs(saved, tmp_path):
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        DiffusersDenoiser(_unet(), {"prediction_type": "flow"})
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        DiffusersDenoiser(_unet(), {"beta_schedule": "laplace"})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        DiffusersDenoiser(_unet(), {"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="timesteps must be one of"):
        DiffusersDenoiser(_unet(), {}, timesteps="nearest")
    with pytest.raises(ValueError, match="fourier"):
        DiffusersDenoiser(_unet(time_embedding_type="fourier"), {})
    with pytest.raises(ValueError, match="is not a directory"):
        load_diffusers(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="scheduler config: .*scheduler_config.json does not exist"):
        load_diffusers(tmp_path)


def test_measure_and_samplers_run_unchanged(tmp_path):
    """A tiny smoke run on a 4x4 model: the fixed-point search (dense Jacobians through the UNet in float64) and
    every sampler from the Gaussian late start, on the adapter as on any Denoiser."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=4, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    diffusers.DDPMPipeline(
        unet=unet, scheduler=diffusers.DDPMScheduler(prediction_type="v_prediction")
    ).save_pretrained(tmp_path)
    den = load_diffusers(tmp_path).double()
    x_train = np.random.default_rng(0).uniform(-1, 1, (4, 16))
    m = measure_critical_time(den, x_train, n_starts=1, n_grid=2, tol_t=0.3, t_min=0.3, max_iter=10)
    assert len(m.grid_t) >= 1 and (math.isnan(m.t) or 0.3 <= m.t <= 1.0)
    for sampler in ("ddim", "ddpm", "pndm", "dpm++2m"):
        x = generate(den, sampler, 3, 4, init="gls", t_start=0.5, x_train=x_train, seed=0)
        assert x.shape == (4, 16) and bool(torch.isfinite(x).all())
