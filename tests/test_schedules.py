"""Noise schedules held against closed forms written here, jax autodiff, finite differences,
numpy recomputations of the DDPM products, mpmath, and the paper's published numbers."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from theory import DDPM, VE, VPCosine, VPLinear

# --- independent closed forms (the test's own, not the package's) ------------------------------
S_COS = 0.008
PHI0 = S_COS / (1 + S_COS) * np.pi / 2
N_DDPM = 1000
BETAS_DDPM = np.linspace(1e-4, 0.02, N_DDPM)
THETA_DDPM_KNOTS = np.sqrt(np.concatenate([[1.0], np.cumprod(1.0 - BETAS_DDPM)]))  # theta_k, k = 0..N


def theta_vplinear(t):
    return np.exp(-(0.1 * t + 9.95 * t**2) / 2)


def theta_vpcosine(t):
    return np.cos((t + S_COS) / (1 + S_COS) * np.pi / 2) / np.cos(PHI0)


def sigma_ve(t):
    return 0.01 * (50.0 / 0.01) ** t


def theta_ddpm(t):
    """Between knots t_k = k/N the schedule interpolates log theta linearly (its documented definition)."""
    return np.exp(np.interp(t, np.arange(N_DDPM + 1) / N_DDPM, np.log(THETA_DDPM_KNOTS)))


def log_theta_ref(name, t):
    """ln theta in forms without cancellation near t = 0 (VP schedules)."""
    t = np.asarray(t, dtype=np.float64)
    if name == "VPLinear":
        return -(0.1 * t + 9.95 * t**2) / 2
    if name == "VPCosine":  # cos p - cos p0 = -2 sin((p + p0)/2) sin((p - p0)/2)
        dphi = t / (1 + S_COS) * np.pi / 2
        return np.log1p(-2 * np.sin(PHI0 + dphi / 2) * np.sin(dphi / 2) / np.cos(PHI0))
    return np.interp(t, np.arange(N_DDPM + 1) / N_DDPM, np.log(THETA_DDPM_KNOTS))


def theta_ref(name, t):
    t = np.asarray(t, dtype=np.float64)
    return {
        "VPLinear": theta_vplinear,
        "VPCosine": theta_vpcosine,
        "VE": lambda u: np.ones_like(u),
        "DDPM": theta_ddpm,
    }[name](t)


def sigma2_ref(name, t):
    """sigma^2 in forms without cancellation near t = 0."""
    t = np.asarray(t, dtype=np.float64)
    if name == "VE":
        return sigma_ve(t) ** 2
    if name == "VPLinear":
        return -np.expm1(-(0.1 * t + 9.95 * t**2))
    if name == "VPCosine":  # cos^2 p0 - cos^2 p = sin(p - p0) sin(p + p0), p - p0 = t/(1+s) pi/2
        dphi = t / (1 + S_COS) * np.pi / 2
        return np.sin(dphi) * np.sin(dphi + 2 * PHI0) / np.cos(PHI0) ** 2
    return -np.expm1(2 * np.log(theta_ddpm(t)))


def d1(f, t, h=1e-4):
    """Fourth-order central finite difference of f at t."""
    return (-f(t + 2 * h) + 8 * f(t + h) - 8 * f(t - h) + f(t - 2 * h)) / (12 * h)


MAKE = {"VPLinear": VPLinear, "VPCosine": VPCosine, "VE": VE, "DDPM": DDPM}
NAMES = list(MAKE)
VP_NAMES = ["VPLinear", "VPCosine", "DDPM"]
GRID = np.linspace(0.0, 1.0, 41)
# Same length as GRID (eager jax ops compile once per shape), strictly inside (0, T), two points near 0.
INTERIOR = np.concatenate([[1e-6, 1e-3], np.linspace(0.025, 0.975, 39)])
# Interior times off the DDPM knots (k/1000) and away from VPCosine's singular end t = T,
# where derivatives exist.
SMOOTH_T = (np.array([3, 71, 250, 499, 707, 900, 980]) + 0.37) / 1000.0


# --- theta, sigma ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_theta_and_sigma2_match_closed_forms(name):
    s = MAKE[name]()
    np.testing.assert_allclose(np.asarray(s.theta(GRID)), theta_ref(name, GRID), rtol=1e-13, atol=1e-16)
    # sigma^2 near 0 (t -> 0) is small: compare with a relative tolerance away from t = 0, absolute at 0.
    np.testing.assert_allclose(np.asarray(s.sigma2(GRID)), sigma2_ref(name, GRID), rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(np.asarray(s.sigma(GRID)), np.sqrt(sigma2_ref(name, GRID)), rtol=1e-11, atol=1e-15)


def test_ddpm_knots_are_the_cumulative_product():
    s = DDPM()
    k = np.arange(N_DDPM + 1)
    np.testing.assert_allclose(np.asarray(s.theta(k / N_DDPM)), THETA_DDPM_KNOTS, rtol=1e-13)
    np.testing.assert_allclose(s.theta_steps() ** 2, np.concatenate([[1.0], np.cumprod(1 - BETAS_DDPM)]), rtol=1e-13)


def test_ve_sigma_is_geometric():
    s = VE()
    np.testing.assert_allclose(np.asarray(s.sigma(GRID)), sigma_ve(GRID), rtol=1e-13)
    assert float(s.sigma(0.0)) == pytest.approx(0.01, rel=1e-14)
    assert float(s.sigma(1.0)) == pytest.approx(50.0, rel=1e-14)
    np.testing.assert_array_equal(np.asarray(s.theta(GRID)), 1.0)


@pytest.mark.parametrize("name", VP_NAMES)
def test_vp_variance_is_preserved(name):
    s = MAKE[name]()
    total = np.asarray(s.sigma2(GRID)) + np.asarray(s.theta(GRID)) ** 2
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-15)


# --- a(t) and g^2(t) --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_is_dlogtheta_dt_by_autodiff_and_finite_differences(name):
    s = MAKE[name]()
    a = np.asarray(s.a(SMOOTH_T))
    grad = np.asarray(jax.vmap(jax.grad(s.log_theta))(jnp.asarray(SMOOTH_T)))
    np.testing.assert_allclose(a, grad, rtol=1e-12, atol=1e-14)
    # Central difference of the closed-form ln theta (2h small enough to stay inside a DDPM interval).
    fd = d1(lambda u: np.log(theta_ref(name, u)), SMOOTH_T)
    np.testing.assert_allclose(a, fd, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_g2_is_dsigma2_dt_minus_2_a_sigma2(name):
    s = MAKE[name]()
    dsig2 = np.asarray(jax.vmap(jax.grad(s.sigma2))(jnp.asarray(SMOOTH_T)))
    expected = dsig2 - 2 * np.asarray(s.a(SMOOTH_T)) * np.asarray(s.sigma2(SMOOTH_T))
    np.testing.assert_allclose(np.asarray(s.g2(SMOOTH_T)), expected, rtol=1e-11)
    # Same identity with the closed forms and a central difference of sigma^2.
    fd_sig2 = d1(lambda u: sigma2_ref(name, u), SMOOTH_T)
    fd_a = d1(lambda u: np.log(theta_ref(name, u)), SMOOTH_T)
    np.testing.assert_allclose(np.asarray(s.g2(SMOOTH_T)), fd_sig2 - 2 * fd_a * sigma2_ref(name, SMOOTH_T), rtol=1e-8)


def test_vplinear_g2_is_beta():
    s = VPLinear()
    np.testing.assert_allclose(np.asarray(s.g2(GRID)), 0.1 + 19.9 * GRID, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(s.a(GRID)), -(0.1 + 19.9 * GRID) / 2, rtol=1e-14)


def test_g2_closed_forms_for_cosine_ve_ddpm():
    t = SMOOTH_T
    phi = (t + S_COS) / (1 + S_COS) * np.pi / 2
    np.testing.assert_allclose(np.asarray(VPCosine().g2(t)), np.pi / (1 + S_COS) * np.tan(phi), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(VE().g2(t)), 2 * np.log(5000.0) * sigma_ve(t) ** 2, rtol=1e-12)
    k = np.ceil(t * N_DDPM).astype(int)  # t in (t_{k-1}, t_k]
    np.testing.assert_allclose(np.asarray(DDPM().g2(t)), -N_DDPM * np.log(1 - BETAS_DDPM[k - 1]), rtol=1e-12)


# --- inverses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VP_NAMES)
def test_t_from_theta_inverts_theta(name):
    s = MAKE[name]()
    np.testing.assert_allclose(np.asarray(s.t_from_theta(s.theta(GRID))), GRID, rtol=0, atol=1e-12)
    # ... and on the closed-form theta (no shared code path).
    np.testing.assert_allclose(np.asarray(s.t_from_theta(theta_ref(name, INTERIOR))), INTERIOR, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_t_from_snr_inverts_snr_inside(name):
    s = MAKE[name]()
    snr = theta_ref(name, INTERIOR) ** 2 / sigma2_ref(name, INTERIOR)
    # rtol 1e-8, not tighter: VPCosine loses digits at t = 1e-6 (see test_vpcosine_sigma2_near_zero_accurate).
    np.testing.assert_allclose(np.asarray(s.snr(INTERIOR)), snr, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(s.t_from_snr(s.snr(INTERIOR))), INTERIOR, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "make",
    [VPLinear, VPCosine, DDPM, VE, pytest.param(lambda: VE(0.02, 100.0), id="VE(0.02,100)")],
)
def test_t_from_snr_inverts_snr_at_T(make):
    s = make()
    assert float(s.t_from_snr(s.snr(s.T))) == pytest.approx(s.T, abs=1e-12)


@pytest.mark.parametrize(
    "name",
    [*VP_NAMES, "VE"],
)
def test_t_from_snr_inverts_snr_at_0(name):
    s = MAKE[name]()
    assert float(s.t_from_snr(s.snr(0.0))) == pytest.approx(0.0, abs=1e-12)


def test_ve_t_from_sigma():
    s = VE()
    np.testing.assert_allclose(np.asarray(s.t_from_sigma(sigma_ve(INTERIOR))), INTERIOR, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(s.t_from_sigma(s.sigma(GRID))), GRID, rtol=0, atol=1e-12)
    assert float(s.t_from_sigma(1.0)) == pytest.approx(np.log(100.0) / np.log(5000.0), rel=1e-14)


# --- the paper's reference numbers ------------------------------------------------------------
THETA_C = np.sqrt(np.sqrt(2.0) - 1.0)  # Raya & Ambrogioni 2023, two deltas at +-1


def test_paper_reference_vplinear():
    s = VPLinear()
    assert float(s.theta(0.2926416543)) == pytest.approx(0.6435942529, abs=1e-9)
    assert float(s.t_from_theta(THETA_C)) == pytest.approx(0.2926416543, abs=1e-10)
    # Independently: 0.1 t + 9.95 t^2 = -2 ln theta_c, positive root by numpy.
    roots = np.roots([9.95, 0.1, 2 * np.log(THETA_C)])
    t_c = roots[roots > 0].real.item()
    assert float(s.t_from_theta(THETA_C)) == pytest.approx(t_c, abs=1e-14)


def test_paper_reference_ddpm_step():
    s = DDPM()
    k = s.forward_step(THETA_C)
    assert k in {292, 293}
    # The definition, checked on the numpy knots: max{k : theta_k > theta_c}.
    assert k == np.nonzero(THETA_DDPM_KNOTS > THETA_C)[0].max()
    assert N_DDPM - k == pytest.approx(707, abs=1)


def test_ddpm_discretises_vplinear():
    """theta_DDPM(k/N) vs VPLinear: the gap is the second-order discretisation term, written here.

    1/2 sum ln(1 - b_i) = -1/2 sum b_i - 1/4 sum b_i^2 - R, 0 <= R <= sum b_i^3 / (6 (1 - b_max)).
    The relative gap is NOT within 1e-3 for all k (it reaches ~3.3% at k = N); it is for k <= 100.
    """
    k = np.arange(N_DDPM + 1)
    tk = k / N_DDPM
    log_ratio = np.asarray(DDPM().log_theta(tk)) - np.asarray(VPLinear().log_theta(tk))
    b0, d = 1e-4, (0.02 - 1e-4) / (N_DDPM - 1)  # b_i = b0 + (i - 1) d
    sum_b = k * b0 + d * k * (k - 1) / 2
    sum_b2 = k * b0**2 + b0 * d * k * (k - 1) + d**2 * (k - 1) * k * (2 * k - 1) / 6
    int_beta = 0.1 * tk + 9.95 * tk**2
    predicted = -0.5 * sum_b - 0.25 * sum_b2 + 0.5 * int_beta
    bound = np.concatenate([[0.0], np.cumsum(BETAS_DDPM**3)]) / (6 * (1 - 0.02))
    assert np.all(np.abs(log_ratio - predicted) <= bound + 1e-14)
    rel = np.abs(np.exp(log_ratio) - 1)
    assert np.all(rel[:101] < 1e-3)
    assert np.all(rel < 0.04)


# --- derived quantities -----------------------------------------------------------------------
@pytest.mark.parametrize("name", VP_NAMES)
def test_ou_time_is_minus_log_theta_for_vp(name):
    s = MAKE[name]()
    t = INTERIOR
    # VPCosine only to 1e-8: its log_theta cancels near t = 0 (test_vpcosine_sigma2_near_zero_accurate).
    rtol = 1e-8 if name == "VPCosine" else 1e-10
    np.testing.assert_allclose(np.asarray(s.ou_time(t)), -log_theta_ref(name, t), rtol=rtol)


@pytest.mark.parametrize("name", NAMES)
def test_t_from_ou_time_inverts_ou_time(name):
    s = MAKE[name]()
    for t in (0.05 * s.T, 0.4 * s.T, 0.9 * s.T):
        assert abs(s.t_from_ou_time(float(s.ou_time(t))) - t) < 1e-9 * s.T
    assert math.isnan(s.t_from_ou_time(0.0)) and math.isnan(s.t_from_ou_time(-1.0))
    assert math.isnan(s.t_from_ou_time(2.0 * float(s.ou_time(s.T)) + 1.0))  # more noise than at T


def test_ou_time_ve():
    t = GRID
    np.testing.assert_allclose(np.asarray(VE().ou_time(t)), 0.5 * np.log1p(sigma_ve(t) ** 2), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_edm_sigma_is_sigma_over_theta(name):
    s = MAKE[name]()
    t = INTERIOR
    rtol = 1e-8 if name == "VPCosine" else 1e-10  # see test_vpcosine_sigma2_near_zero_accurate
    np.testing.assert_allclose(np.asarray(s.edm_sigma(t)), np.sqrt(sigma2_ref(name, t)) / theta_ref(name, t), rtol=rtol)


@pytest.mark.parametrize("t", [1e-12, 1e-9, 1e-6])
def test_vplinear_sigma2_has_no_cancellation_near_zero(t):
    got = float(VPLinear().sigma2(t))
    exact = -np.expm1(-(0.1 * t + 9.95 * t**2))
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(exact, rel=1e-12, abs=0)


def _vpcosine_sigma2_mp(t):
    with mpmath.workdps(50):
        s = mpmath.mpf(S_COS)
        phi = lambda u: (u + s) / (1 + s) * mpmath.pi / 2  # noqa: E731
        return float(1 - (mpmath.cos(phi(mpmath.mpf(t))) / mpmath.cos(phi(0))) ** 2)


def test_vpcosine_sigma2_reference_is_exact():
    """The test's cancellation-free closed form agrees with 50-digit mpmath."""
    for t in [1e-12, 1e-8, 1e-4, 0.5]:
        assert float(sigma2_ref("VPCosine", t)) == pytest.approx(_vpcosine_sigma2_mp(t), rel=1e-14, abs=0)


def test_vpcosine_sigma2_near_zero_is_finite_and_positive():
    for t in [1e-12, 1e-10, 1e-8]:
        got = float(VPCosine().sigma2(t))
        assert np.isfinite(got) and got > 0
        assert got == pytest.approx(_vpcosine_sigma2_mp(t), rel=1e-3, abs=0)


def test_vpcosine_sigma2_near_zero_accurate():
    for t in [1e-10, 1e-8]:
        assert float(VPCosine().sigma2(t)) == pytest.approx(_vpcosine_sigma2_mp(t), rel=1e-9, abs=0)


# --- vectorisation, jit, vmap -----------------------------------------------------------------
METHODS = ["theta", "sigma2", "sigma", "log_theta", "a", "g2", "snr", "ou_time", "edm_sigma"]


def test_vectorised_equals_loop(schedules):
    t = SMOOTH_T[::2]
    for s in schedules:
        for m in METHODS:
            f = getattr(s, m)
            vec = np.asarray(f(t))
            loop = np.array([float(f(float(ti))) for ti in t])
            assert vec.shape == t.shape
            np.testing.assert_allclose(vec, loop, rtol=1e-14, err_msg=f"{s}.{m}")
        t2 = t.reshape(1, -1).repeat(2, axis=0)
        assert np.asarray(s.theta(t2)).shape == t2.shape


def test_jit_and_vmap(schedules):
    t = jnp.asarray(SMOOTH_T)
    for s in schedules:
        every = lambda u, s=s: [getattr(s, m)(u) for m in METHODS]  # noqa: E731
        # One compile per schedule: jit of vmap exercises both transformations.
        out = jax.jit(jax.vmap(every))(t)
        for m, e, o in zip(METHODS, every(t), out, strict=True):
            # 1e-13: XLA may fuse and reorder the jitted arithmetic (seen: 1.07e-14 for VPCosine.theta).
            np.testing.assert_allclose(np.asarray(o), np.asarray(e), rtol=1e-13, err_msg=f"{s}.{m}")


@pytest.mark.parametrize("name", ["VPLinear", "VPCosine"])
def test_t_from_theta_vmap_and_grad(name):
    s = MAKE[name]()
    th = theta_ref(name, SMOOTH_T)
    np.testing.assert_allclose(np.asarray(jax.vmap(s.t_from_theta)(jnp.asarray(th))), SMOOTH_T, atol=1e-12)
    # dt/dtheta = 1 / (dtheta/dt) = 1 / (a theta), with a from a finite difference of the closed form.
    dtheta_dt = d1(lambda u: theta_ref(name, u), SMOOTH_T)
    grads = np.asarray(jax.vmap(jax.grad(s.t_from_theta))(jnp.asarray(th)))
    np.testing.assert_allclose(grads, 1.0 / dtheta_dt, rtol=1e-8)


@pytest.mark.parametrize("name", VP_NAMES)
def test_t_from_theta_jit(name):
    s = MAKE[name]()
    th = jnp.asarray(theta_ref(name, SMOOTH_T))
    np.testing.assert_allclose(np.asarray(jax.jit(s.t_from_theta)(th)), SMOOTH_T, atol=1e-12)


def test_ve_t_from_sigma_jit_and_vmap():
    s = VE()
    sig = jnp.asarray(sigma_ve(SMOOTH_T))
    np.testing.assert_allclose(np.asarray(jax.jit(s.t_from_sigma)(sig)), SMOOTH_T, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.vmap(s.t_from_snr)(1 / sig**2)), SMOOTH_T, atol=1e-12)


def test_ddpm_step_time_map():
    # Step k sits at t = k T / N, where theta is the discrete sqrt(cumprod(1 - beta)) (numpy, independent).
    s = DDPM()
    k = np.array([0, 1, 292, 707, 1000])
    np.testing.assert_array_equal(s.t_of_step(k), k / 1000)
    theta_k = np.sqrt(np.concatenate([[1.0], np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))]))
    np.testing.assert_allclose(np.asarray(s.theta(s.t_of_step(k))), theta_k[k], rtol=1e-12)
