"""The LS and ELS machines (``empirical.models.local_score``) against independent computations: the exact denoiser of
the training set (a patch that covers the image), the closed form of ELS with 1 x 1 patches, and brute-force loops
over patches in numpy."""

import numpy as np
import pytest
import torch

from empirical.models.denoiser import ExactDenoiser, schedule_coeffs
from empirical.models.local_score import LocalScoreDenoiser
from theory import DeltaMixture, VPLinear

RNG = np.random.default_rng(7)
Y = RNG.uniform(-1.0, 1.0, (5, 4, 6))  # five 4 x 6 training images: not square, so rows and columns differ
X = torch.tensor(RNG.normal(size=(3, 24)))


def coeffs(t):
    return (float(c) for c in schedule_coeffs(VPLinear(), t, "theta", "sigma"))


def brute(y, x, t, P, equivariant):
    """x0_hat by loops: the zero-padded P x P patch of x around each pixel against every training patch (same
    location, or every location), the full squared distance, softmax weights, the mean of the centres."""
    theta, sigma = coeffs(t)
    N, H, W = y.shape
    r = P // 2
    yp = np.pad(y, ((0, 0), (r, r), (r, r)))
    out = np.zeros((len(x), H * W))
    for b in range(len(x)):
        xp = np.pad(x[b].reshape(H, W), r)
        for u in range(H):
            for v in range(W):
                where = [(q, s) for q in range(H) for s in range(W)] if equivariant else [(u, v)]
                cand = np.array([yp[:, q : q + P, s : s + P] for q, s in where])  # (positions, N, P, P)
                centre = np.array([y[:, q, s] for q, s in where])
                dist = ((xp[u : u + P, v : v + P] - theta * cand) ** 2).sum((2, 3))
                w = np.exp(-(dist - dist.min()) / (2 * sigma**2))
                out[b, u * W + v] = (w * centre).sum() / w.sum()
    return out


@pytest.mark.parametrize("t", [0.02, 0.3, 0.7, 1.0])
def test_a_patch_covering_the_image_gives_the_exact_denoiser(t):
    den = LocalScoreDenoiser(Y, patch=2 * 6 - 1, max_bytes=1)  # one image a chunk: the running log-sum-exp
    exact = ExactDenoiser(DeltaMixture(Y.reshape(5, 24)))
    eps, eps_exact = den(X, t), exact(X, t)
    assert torch.allclose(eps, eps_exact, rtol=0, atol=1e-10 * float(eps_exact.abs().max()))
    assert torch.allclose(den.x0(X, t), exact.x0(X, t), rtol=0, atol=1e-10)


def test_els_with_one_pixel_patches_is_the_posterior_over_all_training_pixel_values():
    t = 0.4
    theta, sigma = coeffs(t)
    values = Y.ravel()  # every pixel of every image, with its multiplicity
    x = X.numpy()
    logw = -((x[..., None] - theta * values) ** 2) / (2 * sigma**2)
    w = np.exp(logw - logw.max(-1, keepdims=True))
    expected = (w * values).sum(-1) / w.sum(-1)
    got = LocalScoreDenoiser(Y, patch=1, equivariant=True).x0(X, t).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("P", [1, 3, 5])
def test_ls_matches_a_loop_over_patches(P):
    for t in (0.05, 0.5):
        got = LocalScoreDenoiser(Y, patch=P, max_bytes=1).x0(X, t).numpy()
        np.testing.assert_allclose(got, brute(Y, X.numpy(), t, P, False), rtol=0, atol=1e-10)


def test_els_matches_a_loop_over_patches_at_every_location():
    y = np.concatenate([Y[:2], np.zeros((1, 4, 6)), np.ones((1, 4, 6))])  # repeated patches: merged with counts
    for t in (0.05, 0.5):
        got = LocalScoreDenoiser(y, patch=3, equivariant=True, max_bytes=1).x0(X, t).numpy()
        np.testing.assert_allclose(got, brute(y, X.numpy(), t, 3, True), rtol=0, atol=1e-10)


def test_a_patch_size_per_time_and_every_patch_size_at_once():
    den = LocalScoreDenoiser(Y, patch=lambda t: 3 if t < 0.5 else 5)
    t = torch.tensor([0.2, 0.8, 0.3])  # one batch, two patch sizes
    got = den.x0(X, t).numpy()
    for i, (s, P) in enumerate(zip(t.tolist(), (3, 5, 3), strict=True)):
        np.testing.assert_allclose(got[i], brute(Y, X.numpy()[i : i + 1], s, P, False)[0], rtol=0, atol=1e-10)
    many = den.x0_by_patch(X, 0.5, [1, 3, 11]).numpy()
    for k, P in enumerate((1, 3, 11)):
        np.testing.assert_allclose(many[k], brute(Y, X.numpy(), 0.5, P, False), rtol=0, atol=1e-10)


@pytest.mark.parametrize("equivariant", [False, True])
def test_jacobian_vector_products_match_finite_differences(equivariant):
    den = LocalScoreDenoiser(Y, patch=3, equivariant=equivariant)
    v, h = torch.tensor(RNG.normal(size=24)), 1e-6
    fd = (den.x0(X[:1] + h * v, 0.4) - den.x0(X[:1] - h * v, 0.4))[0] / (2 * h)
    assert torch.allclose(den.x0_jvp(X[0], 0.4, v), fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"patch": 4}, ValueError, "patch must be an odd integer in \\[1, 11\\]"),
        ({"patch": 0}, ValueError, "patch must be an integer in \\[1, 11\\]"),
        ({"patch": 13}, ValueError, "patch must be an integer in \\[1, 11\\]"),
        ({"patch": 3.0}, TypeError, "patch must be an integer"),
        ({"patch": 3, "equivariant": "yes"}, TypeError, "equivariant must be a bool"),
        ({"patch": 3, "max_bytes": 0}, ValueError, "max_bytes must be an integer >= 1"),
    ],
)
def test_bad_parameters_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        LocalScoreDenoiser(Y, **kwargs)


def test_bad_images_and_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="images must be finite"):
        LocalScoreDenoiser(np.where(Y > 0.9, np.nan, Y), patch=3)
    with pytest.raises(ValueError, match="give image_shape"):
        LocalScoreDenoiser(Y.reshape(5, 24), patch=3)
    with pytest.raises(ValueError, match="image_shape must be \\(H, W\\) with H \\* W = 24"):
        LocalScoreDenoiser(Y.reshape(5, 24), patch=3, image_shape=(5, 5))
    with pytest.raises(ValueError, match="images must have shape"):
        LocalScoreDenoiser(Y[0, 0], patch=3)
    den = LocalScoreDenoiser(Y.reshape(5, 24), patch=lambda t: 2, image_shape=(4, 6))
    with pytest.raises(ValueError, match="patch must be an odd integer"):
        den(X, 0.5)
    with pytest.raises(ValueError, match="x must have shape \\(n, 24\\)"):
        LocalScoreDenoiser(Y, patch=3)(X[:, :20], 0.5)


def test_calibration_picks_the_patch_size_that_reproduces_the_network():
    from empirical.pipelines.local_score import calibrate

    den = LocalScoreDenoiser(Y, patch=3)
    patches, times = [1, 3, 5], [0.2, 0.6]
    machine = np.stack([den.x0_by_patch(X, t, patches).numpy() for t in times])  # (times, patches, n, d)
    network = np.stack([machine[0, 2], machine[1, 0]])  # a "network" that is the machine at P = 5, then P = 1
    rows = calibrate(machine, network, patches, times)
    assert [r["patch"] for r in rows] == [5, 1] and all(r["r2_median"] == 1.0 for r in rows)
    ref = network[0]
    r2 = 1 - ((machine[0, 0] - ref) ** 2).sum(1) / ((ref - ref.mean(1, keepdims=True)) ** 2).sum(1)
    assert rows[0]["r2_median_by_patch"]["1"] == pytest.approx(np.median(r2), abs=1e-12)
