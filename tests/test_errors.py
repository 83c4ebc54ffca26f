"""Invalid input raises ValueError (TypeError for wrong types) with a message naming the parameter."""

import numpy as np
import pytest

import theory
from theory import DDPM, VE, DeltaMixture, GaussianMixture, VPCosine, VPLinear

X1 = np.array([[0.3]])


# --- schedules ------------------------------------------------------------------------------------
def test_vplinear_beta_order():
    with pytest.raises(ValueError, match="beta_max must be >= beta_min"):
        VPLinear(beta_min=2, beta_max=1)


@pytest.mark.parametrize("T", [0, -1, np.nan, np.inf])
def test_vplinear_T_must_be_positive(T):
    with pytest.raises(ValueError, match=r"^T must be"):
        VPLinear(T=T)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: VPLinear(beta_min=0), r"^beta_min"),
        (lambda: VPLinear(beta_max=-3), r"^beta_max"),
        (lambda: VPCosine(s=0), r"^s must"),
        (lambda: VPCosine(T=-2), r"^T must"),
        (lambda: VE(sigma_min=1.0, sigma_max=0.5), "sigma_max must be > sigma_min"),
        (lambda: VE(sigma_min=-1.0), r"^sigma_min"),
        (lambda: DDPM(n_steps=0), r"^n_steps"),
        (lambda: DDPM(beta_start=0.1, beta_end=0.01), "beta_start <= beta_end"),
        (lambda: DDPM(beta_end=1.0), "beta_end"),
    ],
)
def test_schedule_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("n_steps", [10.5, 10.0, "10", True])
def test_ddpm_n_steps_must_be_an_integer(n_steps):
    with pytest.raises(TypeError, match=r"^n_steps must be an integer; got"):
        DDPM(n_steps=n_steps)


def test_schedule_parameter_wrong_type_names_parameter():
    with pytest.raises(TypeError, match="beta_min"):
        VPLinear(beta_min=None)


@pytest.mark.parametrize("t", [1.5, -0.1, np.nan, np.array([0.2, 1.01])])
def test_check_t(schedules, t):
    for s in schedules:
        with pytest.raises(ValueError, match=r"^t must lie in \[0.0, 1.0\]"):
            s.check_t(t)


@pytest.mark.parametrize("t", [1.5, -0.1])
def test_data_methods_check_t(two_deltas, t):
    s = VPLinear()
    for call in [
        lambda: two_deltas.score(X1, t, s),
        lambda: two_deltas.log_prob(X1, t, s),
        lambda: two_deltas.hessian(X1, t, s),
        lambda: two_deltas.hvp(X1, X1, t, s),
        lambda: two_deltas.responsibilities(X1, t, s),
    ]:
        with pytest.raises(ValueError, match=r"^t must lie"):
            call()
    with pytest.raises(ValueError, match=r"^t must lie"):
        theory.drift(two_deltas, s, X1, t)


@pytest.mark.parametrize("theta", [0.0, 1.5, -0.2, np.nan])
@pytest.mark.parametrize("make", [VPLinear, VPCosine, DDPM])
def test_t_from_theta_out_of_range(make, theta):
    if make is VPCosine and theta == 0.0:  # theta(T) = 0 exactly on the cosine schedule: its inverse is T
        assert float(make().t_from_theta(theta)) == pytest.approx(1.0, abs=1e-15)
        return
    with pytest.raises(ValueError, match=r"^theta"):
        make().t_from_theta(theta)


def test_t_from_theta_below_theta_T():
    s = VPLinear()
    with pytest.raises(ValueError, match=r"^theta \(this schedule spans"):
        s.t_from_theta(0.5 * float(s.theta(1.0)))


def test_ve_has_no_t_from_theta():
    with pytest.raises(ValueError, match="theta"):
        VE().t_from_theta(0.5)


@pytest.mark.parametrize("sigma", [0.005, 51.0])
def test_ve_t_from_sigma_out_of_range(sigma):
    with pytest.raises(ValueError, match=r"^sigma must lie"):
        VE().t_from_sigma(sigma)


# --- data -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_delta_points_must_be_finite(bad):
    with pytest.raises(ValueError, match="points must be finite"):
        DeltaMixture([[0.0, 1.0], [bad, 2.0]])


def test_gaussian_means_and_covariances_must_be_finite():
    with pytest.raises(ValueError, match="means must be finite"):
        GaussianMixture([[np.nan], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="covariances must be finite"):
        GaussianMixture([[0.0], [1.0]], [1.0, np.inf])


@pytest.mark.parametrize(
    "covs",
    [np.ones((2, 3, 3)), np.ones((2, 3)), np.ones(3), np.ones((3, 2, 2))],
    ids=["full-dim", "diag-dim", "iso-count", "full-count"],
)
def test_gaussian_covariance_shape_mismatch(covs):
    with pytest.raises(ValueError, match=r"^covariances must have shape"):
        GaussianMixture(np.zeros((2, 2)), covs)


def test_gaussian_covariance_not_symmetric():
    c = np.array([[[1.0, 0.2], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="covariances must be symmetric"):
        GaussianMixture(np.zeros((2, 2)), c)


@pytest.mark.parametrize(
    "covs",
    [
        np.array([[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]),  # eigenvalues 3, -1
        np.array([[1.0, 0.0], [1.0, 1.0]]),  # a zero diagonal variance
        np.array([1.0, -1.0]),  # a negative isotropic variance
    ],
    ids=["full-indefinite", "diag-zero", "iso-negative"],
)
def test_gaussian_covariance_not_positive_definite(covs):
    with pytest.raises(ValueError, match="covariances must be positive definite"):
        GaussianMixture(np.zeros((2, 2)), covs)


@pytest.mark.parametrize(
    "weights,match",
    [
        ([-0.5, 1.5], "weights must be >= 0"),
        ([0.3, 0.3], "weights must sum to 1"),
        ([1.0], r"weights must have shape \(2,\)"),
        ([0.2, 0.3, 0.5], r"weights must have shape \(2,\)"),
        ([np.nan, 1.0], "weights must be finite"),
    ],
)
def test_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        DeltaMixture([[-1.0], [1.0]], weights)
    with pytest.raises(ValueError, match=match):
        GaussianMixture([[-1.0], [1.0]], [0.5, 0.5], weights)


@pytest.mark.parametrize("x", [np.zeros(3), np.zeros((4, 3)), np.float64(0.0)], ids=["(3,)", "(4,3)", "scalar"])
def test_x_wrong_last_dimension(x):
    data = GaussianMixture(np.zeros((2, 2)), [1.0, 2.0])
    s = VPLinear()
    for call in [data.score, data.log_prob, data.hessian, data.responsibilities]:
        with pytest.raises(ValueError, match=r"^x must have shape \(\.\.\., 2\)"):
            call(x, 0.3, s)
    with pytest.raises(ValueError, match=r"^v must have shape \(\.\.\., 2\)"):
        data.hvp(np.zeros(2), np.zeros(3), 0.3, s)


def test_schedule_must_be_a_schedule(two_deltas):
    with pytest.raises(TypeError, match="schedule must be a theory Schedule"):
        two_deltas.score(X1, 0.3, "VPLinear")


# --- dynamics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [-1, np.nan])
def test_eta_must_be_nonnegative(two_deltas, eta):
    s = VPLinear()
    for f in [theory.drift, theory.potential, theory.drift_jacobian]:
        with pytest.raises(ValueError, match=r"^eta must be a finite number >= 0"):
            f(two_deltas, s, X1, 0.3, eta=eta)
