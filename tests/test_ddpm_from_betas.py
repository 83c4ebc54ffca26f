"""theory.DDPM.from_betas: an explicit beta sequence gives the same schedule as the linear constructor when the
betas are the same, the cumulative product of any other sequence, and refuses betas outside (0, 1)."""

import numpy as np
import pytest

from theory.schedules import DDPM


def test_linear_betas_give_the_linear_schedule():
    ref, explicit = DDPM(), DDPM.from_betas(np.linspace(1e-4, 0.02, 1000))
    t = np.linspace(0.0, 1.0, 2001)
    for name in ("log_theta", "a", "sigma2", "g2"):
        np.testing.assert_array_equal(np.asarray(getattr(explicit, name)(t)), np.asarray(getattr(ref, name)(t)))
    theta = np.asarray(ref.theta(t[1:]))
    np.testing.assert_array_equal(np.asarray(explicit.t_from_theta(theta)), np.asarray(ref.t_from_theta(theta)))
    assert explicit != ref and explicit == DDPM.from_betas(np.linspace(1e-4, 0.02, 1000))  # repr tells them apart
    assert hash(explicit) == hash(DDPM.from_betas(np.linspace(1e-4, 0.02, 1000)))


def test_any_sequence_is_its_cumulative_product():
    betas = np.random.default_rng(0).uniform(1e-3, 0.3, 17)
    s = DDPM.from_betas(betas, T=2.0)
    np.testing.assert_allclose(s.theta_steps() ** 2, np.concatenate([[1.0], np.cumprod(1 - betas)]), rtol=1e-13)
    k = np.arange(18)
    np.testing.assert_allclose(np.asarray(s.theta(2.0 * k / 17)), s.theta_steps(), rtol=1e-13)
    # a(t) = N / (2T) ln(1 - beta_k) on (t_{k-1}, t_k]
    mid = 2.0 * (k[1:] - 0.5) / 17
    np.testing.assert_allclose(np.asarray(s.a(mid)), 17 / 4 * np.log1p(-betas), rtol=1e-13)
    assert s != DDPM.from_betas(betas * (1 + 1e-12), T=2.0)


@pytest.mark.parametrize("betas", [[], [[0.1]], [0.1, 1.0], [0.0, 0.1], [0.1, float("nan")]])
def test_bad_betas(betas):
    with pytest.raises(ValueError, match="betas must"):
        DDPM.from_betas(betas)
