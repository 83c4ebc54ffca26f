"""Diffused densities of DeltaMixture and GaussianMixture held against scipy densities written here,
jax autodiff of the single-point kernels, finite differences, and statistical tests of the samplers."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from theory import VE, DeltaMixture, GaussianMixture, VPLinear

K = 3
N_SAMPLES = 20000
KINDS = ["delta", "full", "diag", "iso"]
DIMS = [1, 2, 3]
# (schedule, t) pairs: near the data, in the middle, and at T, for a VP and a VE schedule.
TIMES = [("VPLinear", 1e-4), ("VPLinear", 0.3), ("VPLinear", 1.0), ("VE", 1e-4), ("VE", 0.5), ("VE", 1.0)]
SCHED = {"VPLinear": VPLinear(), "VE": VE()}


# --- random seeded mixtures, with their parameters kept as plain numpy arrays ---------------------
@functools.cache
def make_mixture(kind, d, seed=0, weights=None):
    """Return (data, means (K, d), covariances (K, d, d), weights (K,)); deltas have zero covariance.

    Cached, so that the jitted autodiff references below compile once per mixture.
    """
    rng = np.random.default_rng([seed, d, KINDS.index(kind)])
    means = rng.normal(size=(K, d)) * 1.5
    w = rng.dirichlet(np.full(K, 2.0)) if weights is None else np.asarray(weights, dtype=np.float64)
    if kind == "delta":
        return DeltaMixture(means, w), means, np.zeros((K, d, d)), w
    if kind == "full":
        A = rng.normal(size=(K, d, d)) * 0.5
        covs = A @ np.swapaxes(A, 1, 2) + 0.2 * np.eye(d)
        arg = covs
    elif kind == "diag":
        arg = rng.uniform(0.1, 1.0, size=(K, d))
        covs = np.stack([np.diag(a) for a in arg])
    else:
        arg = rng.uniform(0.1, 1.0, size=K)
        covs = arg[:, None, None] * np.eye(d)
    return GaussianMixture(means, arg, w), means, covs, w


@functools.cache
def autodiff(data):
    """(x, theta, s2) -> (jax.grad, jax.hessian) of the package's single-point log density, vmapped over
    points; one jitted function per mixture, so one compile."""

    def both(x, th, s2):
        grad = jax.vmap(jax.grad(data.log_prob_ts), in_axes=(0, None, None))(x, th, s2)
        hess = jax.vmap(jax.hessian(data.log_prob_ts), in_axes=(0, None, None))(x, th, s2)
        return grad, hess

    return jax.jit(both)


def theta_s2(name, t):
    """theta, sigma^2 from the closed forms (not from the package)."""
    if name == "VPLinear":
        th, s2 = np.exp(-(0.1 * t + 9.95 * t**2) / 2), -np.expm1(-(0.1 * t + 9.95 * t**2))
    else:
        th, s2 = 1.0, (0.01 * 5000.0**t) ** 2
    return np.float64(th), np.float64(s2)  # one dtype (no weak types): one compile per jitted reference


def diffused(means, covs, th, s2):
    d = means.shape[1]
    return th * means, th**2 * covs + s2 * np.eye(d)


def ref_log_components(x, means, covs, w, th, s2):
    """ln w_k + ln N(x; theta mu_k, theta^2 Sigma_k + sigma^2 I) by scipy; x (..., d) -> (..., K)."""
    mus, Ss = diffused(means, covs, th, s2)
    xf = np.asarray(x, dtype=np.float64).reshape(-1, means.shape[1])
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    cols = [logw[k] + np.atleast_1d(stats.multivariate_normal(mus[k], Ss[k]).logpdf(xf)) for k in range(len(w))]
    return np.stack(cols, axis=-1).reshape(np.shape(x)[:-1] + (len(w),))


def ref_log_prob(x, means, covs, w, th, s2):
    return special.logsumexp(ref_log_components(x, means, covs, w, th, s2), axis=-1)


def stencil_grad(f, x, h):
    """Fourth-order central-difference gradient of f: (n, d) -> (n,), evaluated in one batched call."""
    n, d = x.shape
    steps = np.array([-2, -1, 1, 2])[:, None, None] * h * np.eye(d)[None]  # (4, d, d)
    vals = np.asarray(f((x[:, None, None, :] + steps[None]).reshape(-1, d)))
    vals = vals.reshape((n, 4, d) + vals.shape[1:])
    c = np.array([1, -8, 8, -1]) / (12 * h)
    return np.einsum("s,ns...->n...", c, vals)


def probe_points(means, covs, th, s2, rng):
    """Points near each diffused mean and points far from all of them; (2K + 2, d)."""
    d = means.shape[1]
    near = th * means + np.sqrt(s2 + th**2 * 0.3) * rng.normal(size=means.shape) * 0.5
    mid = th * means.mean(0) + 0.1 * rng.normal(size=(K, d))
    far = 6.0 * rng.normal(size=(2, d)) + 6.0
    return np.concatenate([near, mid, far])


CASES = list(itertools.product(KINDS, DIMS, TIMES))
CASE_IDS = [f"{k}-d{d}-{s}-t{t:g}" for k, d, (s, t) in CASES]


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request):
    kind, d, (sname, t) = request.param
    data, means, covs, w = make_mixture(kind, d)
    th, s2 = theta_s2(sname, t)
    rng = np.random.default_rng([7, d, KINDS.index(kind)])
    x = probe_points(means, covs, th, s2, rng)
    # Smallest standard deviation of any diffused component: the length scale for finite differences.
    scale = np.sqrt(th**2 * np.linalg.eigvalsh(covs).min() + s2)
    return dict(data=data, means=means, covs=covs, w=w, sched=SCHED[sname], t=t, th=th, s2=s2, x=x, scale=scale)


# --- log_prob, score, hessian, hvp -------------------------------------------------------------
def test_log_prob_matches_scipy(case):
    c = case
    got = np.asarray(c["data"].log_prob(c["x"], c["t"], c["sched"]))
    ref = ref_log_prob(c["x"], c["means"], c["covs"], c["w"], c["th"], c["s2"])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-9)


def test_score_matches_autodiff_and_finite_differences(case):
    c = case
    data, x = c["data"], c["x"]
    score = np.asarray(data.score(x, c["t"], c["sched"]))
    grad = autodiff(data)(jnp.asarray(x), c["th"], c["s2"])[0]
    size = np.abs(score).max() + 1.0 / c["scale"]
    np.testing.assert_allclose(score, np.asarray(grad), rtol=1e-10, atol=1e-12 * size)
    # Finite differences of the scipy log density (fully independent of the package).
    ref = lambda y: ref_log_prob(y, c["means"], c["covs"], c["w"], c["th"], c["s2"])  # noqa: E731
    fd = stencil_grad(ref, x, 1e-3 * c["scale"])
    np.testing.assert_allclose(score, fd, rtol=1e-6, atol=1e-7 * size)


def test_hessian_matches_autodiff_and_finite_differences(case):
    c = case
    data, x, t, s = c["data"], c["x"], c["t"], c["sched"]
    H = np.asarray(data.hessian(x, t, s))
    assert H.shape == x.shape + (x.shape[-1],)
    Hj = autodiff(data)(jnp.asarray(x), c["th"], c["s2"])[1]
    size = np.abs(H).max() + 1.0 / c["scale"] ** 2
    # atol 1e-9 * size: the posterior covariance E[yy^T] - m m^T cancels when one point dominates,
    # an absolute error ~ eps |y|^2 theta^2 / sigma^4, i.e. ~ eps |y|^2 / sigma^2 relative to 1 / sigma^2.
    np.testing.assert_allclose(H, np.asarray(Hj), rtol=1e-9, atol=1e-9 * size)
    np.testing.assert_allclose(H, np.swapaxes(H, -1, -2), rtol=0, atol=1e-12 * size)
    fd = stencil_grad(lambda y: np.asarray(data.score(y, t, s)), x, 1e-3 * c["scale"])  # (n, d_deriv, d_comp)
    np.testing.assert_allclose(H, np.swapaxes(fd, 1, 2), rtol=1e-6, atol=1e-7 * size)


def test_hvp_is_hessian_times_vector(case):
    c = case
    data, x, t, s = c["data"], c["x"], c["t"], c["sched"]
    v = np.random.default_rng(3).normal(size=x.shape)
    H = np.asarray(data.hessian(x, t, s))
    got = np.asarray(data.hvp(x, v, t, s))
    size = np.abs(H).max() * np.abs(v).max()
    # atol 1e-9 * size: same posterior-covariance cancellation as in the Hessian test.
    np.testing.assert_allclose(got, np.einsum("nij,nj->ni", H, v), rtol=1e-10, atol=1e-9 * size)


@pytest.mark.parametrize("kind,d", [("delta", 1), ("full", 3)])  # the two kernel families; d = 1 and d > 1
def test_batching_equals_loop(kind, d):
    data, means, covs, w = make_mixture(kind, d)
    s = VPLinear()
    rng = np.random.default_rng(11)
    x = rng.normal(size=(5, 4, d))
    v = rng.normal(size=(5, 4, d))
    tt = rng.uniform(0.05, 0.95, size=(5, 4))
    for t in [0.3, tt]:
        lp = np.asarray(data.log_prob(x, t, s))
        sc = np.asarray(data.score(x, t, s))
        H = np.asarray(data.hessian(x, t, s))
        hv = np.asarray(data.hvp(x, v, t, s))
        assert lp.shape == (5, 4) and sc.shape == (5, 4, d) and H.shape == (5, 4, d, d) and hv.shape == (5, 4, d)
        ref = np.empty((5, 4))
        for i, j in itertools.product(range(5), range(4)):
            ti = t if np.ndim(t) == 0 else float(t[i, j])
            xij = x[i, j]
            np.testing.assert_allclose(lp[i, j], np.asarray(data.log_prob(xij, ti, s)), rtol=1e-13)
            np.testing.assert_allclose(sc[i, j], np.asarray(data.score(xij, ti, s)), rtol=1e-12, atol=1e-14)
            if (i + j) % 3 == 0:  # a spread-out third of the points for the costlier kernels
                np.testing.assert_allclose(H[i, j], np.asarray(data.hessian(xij, ti, s)), rtol=1e-12, atol=1e-14)
                hvij = np.asarray(data.hvp(xij, v[i, j], ti, s))
                np.testing.assert_allclose(hv[i, j], hvij, rtol=1e-12, atol=1e-14)
            ref[i, j] = ref_log_prob(xij, means, covs, w, *theta_s2("VPLinear", ti))
        # ... and each against scipy with its own t.
        np.testing.assert_allclose(lp, ref, rtol=1e-10)


# --- finiteness at the ends of the time interval ------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sname", ["VPLinear", "VE"])
@pytest.mark.parametrize("t", [1e-6, 1.0])
def test_finite_at_extreme_times(kind, sname, t):
    d = 2
    data, means, covs, w = make_mixture(kind, d)
    s = SCHED[sname]
    th, s2 = theta_s2(sname, t)
    far = np.array([[30.0, -40.0], [0.0, 0.0], [-25.0, 5.0], [3.0, 3.0]])
    x = np.concatenate([th * means + 1e-3, th * means.mean(0, keepdims=True), far])  # (8, 2)
    lp = np.asarray(data.log_prob(x, t, s))
    sc = np.asarray(data.score(x, t, s))
    H = np.asarray(data.hessian(x, t, s))
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(sc)) and np.all(np.isfinite(H))
    # DeltaMixture expands |x - theta y|^2 = |x|^2 - 2 theta y.x + theta^2 |y|^2, which costs an absolute
    # error ~ eps (|x|^2 + theta^2 |y|^2) / sigma^2 (~1e-9 at t = 1e-6 near the data): allowed for here.
    ref = ref_log_prob(x, means, covs, w, th, s2)
    err_bound = 1e-10 * np.abs(ref) + 64 * np.finfo(float).eps * (np.sum(x**2, -1) + th**2 * np.max(means**2)) / s2
    assert np.all(np.abs(lp - ref) <= err_bound)
    # The score of the component that dominates far away: -S_k^{-1}(x - theta mu_k), from scipy's posterior.
    lc = ref_log_components(x, means, covs, w, th, s2)
    r = special.softmax(lc, axis=-1)
    mus, Ss = diffused(means, covs, th, s2)
    ref_score = -np.einsum("nk,kij,nkj->ni", r, np.linalg.inv(Ss), x[:, None, :] - mus[None])
    np.testing.assert_allclose(sc, ref_score, rtol=1e-7, atol=1e-9 * np.abs(ref_score).max())


@pytest.mark.parametrize("kind", ["delta", "full"])  # the two kernel families (diag/iso share "full"'s)
def test_zero_weight_component(kind):
    """A component with weight 0 changes nothing and causes no NaN (log 0 = -inf inside log-sum-exp)."""
    d = 2
    data, means, covs, w = make_mixture(kind, d, weights=(0.4, 0.6, 0.0))
    s, t = VPLinear(), 0.2
    th, s2 = theta_s2("VPLinear", t)
    x = probe_points(means, covs, th, s2, np.random.default_rng(4))  # (8, 2), near each mean (the dead one too)
    lp = np.asarray(data.log_prob(x, t, s))
    ref = special.logsumexp(ref_log_components(x, means[:2], covs[:2], w[:2], th, s2), axis=-1)
    np.testing.assert_allclose(lp, ref, rtol=1e-11)
    outs = [
        data.score(x, t, s),
        data.hessian(x, t, s),
        data.hvp(x, x, t, s),
        data.responsibilities(x, t, s),
        *autodiff(data)(jnp.asarray(x), th, s2),
    ]
    for o in outs:
        assert np.all(np.isfinite(np.asarray(o)))
    # Posterior weights against scipy's, and exactly 0 for the dead component.
    resp = np.asarray(data.responsibilities(x, t, s))
    lc = ref_log_components(x, means, covs, w, th, s2)
    np.testing.assert_allclose(resp, special.softmax(lc, axis=-1), rtol=1e-9, atol=1e-14)
    assert np.all(resp[:, 2] == 0.0)
    # Never sampled: at t = 1e-4 (delta) every sample lies near one of the two live points.
    if kind == "delta":
        xs = np.asarray(data.sample(jax.random.PRNGKey(5), 1e-4, s, N_SAMPLES))
        dist = np.linalg.norm(xs[:, None, :] - means[None], axis=-1)
        assert np.all(dist.argmin(1) != 2)


# --- sampling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["delta", "iso"])
@pytest.mark.parametrize("sname,t", [("VPLinear", 1e-4), ("VPLinear", 0.3), ("VE", 0.5)])
def test_sample_1d_kolmogorov_smirnov(kind, sname, t):
    data, means, covs, w = make_mixture(kind, 1)
    th, s2 = theta_s2(sname, t)
    sd = np.sqrt(th**2 * covs[:, 0, 0] + s2)
    cdf = lambda z: np.sum(w * stats.norm.cdf((np.asarray(z)[..., None] - th * means[:, 0]) / sd), axis=-1)  # noqa: E731
    xs = np.asarray(data.sample(jax.random.PRNGKey(0), t, SCHED[sname], N_SAMPLES))
    assert xs.shape == (N_SAMPLES, 1)
    assert stats.kstest(xs[:, 0], cdf).pvalue > 1e-3
    # The test has power: the same samples against a slightly wrong diffusion time are rejected.
    th2, s22 = theta_s2(sname, t * 1.5 if t > 0.01 else 0.3)
    sd2 = np.sqrt(th2**2 * covs[:, 0, 0] + s22)
    wrong = lambda z: np.sum(w * stats.norm.cdf((np.asarray(z)[..., None] - th2 * means[:, 0]) / sd2), axis=-1)  # noqa: E731
    assert stats.kstest(xs[:, 0], wrong).pvalue < 1e-3


def exact_moments(means, covs, w, th, s2):
    mus, Ss = diffused(means, covs, th, s2)
    m = w @ mus
    c = mus - m
    return m, np.einsum("k,kij->ij", w, Ss) + (c * w[:, None]).T @ c


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sname,t", [("VPLinear", 0.1), ("VE", 0.5)])
def test_sample_2d_moments(kind, sname, t):
    data, means, covs, w = make_mixture(kind, 2)
    th, s2 = theta_s2(sname, t)
    m, C = exact_moments(means, covs, w, th, s2)
    xs = np.asarray(data.sample(jax.random.PRNGKey(1), t, SCHED[sname], N_SAMPLES))
    assert xs.shape == (N_SAMPLES, 2)
    se_mean = np.sqrt(np.diag(C) / N_SAMPLES)
    assert np.all(np.abs(xs.mean(0) - m) < 5 * se_mean)
    # Covariance entries: the sample mean of (x_i - m_i)(x_j - m_j) around the exact mean, its SE from the samples.
    prod = (xs - m)[:, :, None] * (xs - m)[:, None, :]
    se_cov = prod.std(0) / np.sqrt(N_SAMPLES)
    assert np.all(np.abs(prod.mean(0) - C) < 5 * se_cov)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [1, 2])
def test_importance_sampling_identity(kind, d):
    """E_{x ~ p_t}[q(x) / p_t(x)] = 1 for any density q; checks sample and log_prob together.

    q = N(mean of p_t, c I) with c = 1.5 lambda_min(S_k*) < 2 lambda_min(S_k*): then q^2 / p_t is
    integrable (p_t >= w_k* N(S_k*)), so the ratio has finite variance and the SE is meaningful.
    """
    data, means, covs, w = make_mixture(kind, d)
    s, t = VPLinear(), 0.15
    th, s2 = theta_s2("VPLinear", t)
    mus, Ss = diffused(means, covs, th, s2)
    lam_min = np.linalg.eigvalsh(Ss).min(axis=1)
    cq = 1.5 * lam_min[np.argmax(lam_min * (w > 0))]
    m, _ = exact_moments(means, covs, w, th, s2)
    xs = np.asarray(data.sample(jax.random.PRNGKey(2), t, s, N_SAMPLES))
    log_q = stats.multivariate_normal(m, cq * np.eye(d)).logpdf(xs)
    ratio = np.exp(log_q - np.asarray(data.log_prob(xs, t, s)))
    se = ratio.std() / np.sqrt(N_SAMPLES)
    assert abs(ratio.mean() - 1.0) < 5 * se
    assert se < 0.05  # the check is informative


# --- moments of the data -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", DIMS)
def test_mean_and_covariance(kind, d):
    data, means, covs, w = make_mixture(kind, d)
    mean = np.average(means, axis=0, weights=w)
    cov = np.cov(means.T, aweights=w, bias=True).reshape(d, d) + np.tensordot(w, covs, axes=1)
    np.testing.assert_allclose(np.asarray(data.mean()), mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.asarray(data.covariance()), cov, rtol=1e-12, atol=1e-14)


def test_two_deltas_closed_form(two_deltas):
    """p_t = [N(theta, s2) + N(-theta, s2)] / 2: score = (theta tanh(theta x / s2) - x) / s2."""
    s = VPLinear()
    x = np.linspace(-3, 3, 13)[:, None]
    for t in [0.05, 0.2926416543, 0.8]:
        th, s2 = theta_s2("VPLinear", t)
        score = (th * np.tanh(th * x / s2) - x) / s2
        np.testing.assert_allclose(np.asarray(two_deltas.score(x, t, s)), score, rtol=1e-11, atol=1e-13)
        hess = (th**2 / s2 / np.cosh(th * x / s2) ** 2 - 1) / s2
        np.testing.assert_allclose(np.asarray(two_deltas.hessian(x, t, s))[..., 0], hess, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(two_deltas.covariance()), [[1.0]], rtol=1e-15)
