"""The fixed-point engine: folds by the extended system against independent solutions, sharding, results."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar

from theory import DeltaMixture, VPLinear, critical_time
from theory.systems import ThreeDeltas, TwoDeltas


def _weighted_fold_theta(w_plus, eta=1.0):
    """Fold of +-1 deltas with weights (1 - w, w) on VP, solved independently in numpy.

    R(x) = (theta m - x)/s2 - c x, m = tanh(theta x / s2 + b), b = ln(w / (1 - w)) / 2, c = -1/(1 + eta^2).
    R' = 0 gives m^2 = 1 - (1/s2 + c) s2^2 / theta^2 in closed form; the lighter point's fold has m < 0,
    and R(x(theta), theta) = 0 is one equation in theta.
    """
    c, b = -1.0 / (1.0 + eta**2), 0.5 * math.log(w_plus / (1.0 - w_plus))

    def g(theta):
        s2 = 1.0 - theta**2
        m2 = 1.0 - (1.0 / s2 + c) * s2**2 / theta**2
        if m2 <= 0:
            return math.nan
        m = -math.sqrt(m2)
        x = (math.atanh(m) - b) * s2 / theta
        return (theta * m - x) / s2 - c * x

    thetas = np.linspace(0.5, 0.99, 2000)
    vals = np.array([g(th) for th in thetas])
    i = np.nonzero(np.isfinite(vals[:-1]) & np.isfinite(vals[1:]) & (np.sign(vals[:-1]) != np.sign(vals[1:])))[0]
    return brentq(g, thetas[i[0]], thetas[i[0] + 1], xtol=1e-15, rtol=1e-15)


@pytest.mark.parametrize("w_plus", [0.7, 0.55])
def test_fold_of_weighted_deltas_against_independent_solution(w_plus):
    sys_ = TwoDeltas(1.0, [1 - w_plus, w_plus])
    ct = critical_time(sys_.data, VPLinear(), n_mass=0)
    assert ct.kind == "saddle-node"
    theta_f = _weighted_fold_theta(w_plus)
    assert abs(ct.theta - theta_f) < 1e-10
    assert abs(ct.t - float(VPLinear().t_from_theta(theta_f))) < 1e-10


def _three_delta_fold_theta(eta=1.0):
    """Saddle-node of three unit deltas at 120 degrees, on the axis through one of them (by symmetry the
    new attractor and its saddle lie there): x = s e, e . y = 1, -1/2, -1/2 and |y| = 1, so
    E[y.e | x] = (e^{as} - e^{-as/2}) / (e^{as} + 2 e^{-as/2}), a = theta / s2. The fold is where the
    maximum over s > 0 of the axial R touches 0."""
    c = -1.0 / (1.0 + eta**2)

    def R(s, theta):
        s2 = 1.0 - theta**2
        a = theta / s2
        e1, e2 = math.exp(a * s), math.exp(-a * s / 2)
        m = (e1 - e2) / (e1 + 2 * e2)
        return (theta * m - s) / s2 - c * s

    def peak(theta):
        res = minimize_scalar(lambda s: -R(s, theta), bounds=(0.05, 1.2), method="bounded", options={"xatol": 1e-12})
        return -res.fun

    return brentq(peak, 0.6, 0.9, xtol=1e-14)


def test_fold_of_three_deltas_against_independent_solution():
    ct = critical_time(ThreeDeltas().data, VPLinear(), n_mass=0)
    assert ct.kind == "saddle-node"
    assert abs(ct.theta - _three_delta_fold_theta()) < 1e-9


def test_basin_mass_of_a_symmetric_pitchfork_is_half():
    """Just below the paper's pitchfork each child holds half of p_t (symmetry), within 3 standard errors."""
    ct = critical_time(TwoDeltas(1.0).data, VPLinear(), n_mass=400)
    assert ct.kind == "pitchfork"
    assert abs(ct.basin_mass - 0.5) < 3 * max(ct.basin_mass_se, 0.025)
    assert ct.macroscopic is not None and ct.macroscopic.t == ct.t


def test_critical_time_repr_is_short_and_none_says_why():
    ct = critical_time(TwoDeltas(1.0).data, VPLinear(), eta=0.0, n_mass=0)
    assert ct.kind == "none" and "covariance" in ct.message
    assert len(repr(ct)) < 400
    big = critical_time(TwoDeltas(1.0).data, VPLinear(), n_mass=0)
    assert "array" not in repr(big) and len(repr(big)) < 400


SHARDED = textwrap.dedent(
    """
    import json, jax, numpy as np
    from theory import GaussianMixture, VPLinear, critical_time
    from theory.systems import EqualNormSet, ThreeDeltas
    assert jax.device_count() == 2
    out = {}
    data = {  # N = 3 and K = 3: sharding pads them to a multiple of the 2 devices
        "three deltas": ThreeDeltas().data,
        "gaussians": GaussianMixture([[-1.0], [1.0], [0.2]], [0.1, 0.1, 0.2]),
        "equal-norm (pitchfork)": EqualNormSet.random(10, 10, 1.5, seed=0).data,
    }
    for name, d in data.items():
        a = critical_time(d, VPLinear(), n_mass=0)
        b = critical_time(d, VPLinear(), n_mass=0, devices=jax.devices()[:1])
        out[name] = [a.theta, b.theta, a.centre_theta, b.centre_theta, a.kind, b.kind]
    print(json.dumps(out))
    """
)


@pytest.mark.slow  # 30 s: a subprocess with two XLA host devices (make test-slow runs it)
def test_sharded_over_two_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for a, b, ca, cb, ka, kb in out.values():
        assert ka == kb
        assert abs(a - b) < 1e-10
        assert (math.isnan(ca) and math.isnan(cb)) or abs(ca - cb) < 1e-10


@pytest.fixture
def matrix_free(monkeypatch):
    """Every field built in the test works with products H v (theory._krylov), whatever its dimension."""
    import theory._krylov

    monkeypatch.setattr(theory._krylov, "MATRIX_FREE_D", 1)


def test_matrix_free_fold_of_three_deltas_in_eight_dimensions(matrix_free):
    """Lanczos, MINRES and the bordered GMRES give the fold of the independent axial solution; the three
    deltas are embedded in d = 8 (the extra coordinates are 0 for every point: the fold is unchanged)."""
    Y = np.zeros((3, 8))
    Y[:, :2] = np.asarray(ThreeDeltas().data.means)
    ct = critical_time(DeltaMixture(Y), VPLinear(), n_mass=0)
    assert ct.kind == "saddle-node"
    assert abs(ct.theta - _three_delta_fold_theta()) < 1e-9


@pytest.mark.slow  # about 25 s: the default run keeps the closed-form check above
def test_matrix_free_equals_dense(monkeypatch):
    """The same search with dense Hessians and with products only: the same kind, t and centre_t to 1e-9."""
    import theory._krylov
    from theory.systems import EqualNormSet

    rng = np.random.default_rng(3)
    clusters = rng.normal(size=(3, 12))
    mixed = np.concatenate([c + 0.3 * rng.normal(size=(8, 12)) for c in clusters]) / 3.0
    for data in (EqualNormSet.random(10, 10, 1.5, seed=0).data, DeltaMixture(mixed)):
        out = []
        for d_min in (10**9, 1):
            monkeypatch.setattr(theory._krylov, "MATRIX_FREE_D", d_min)
            out.append(critical_time(data, VPLinear(), n_mass=0))
        dense, free = out
        assert dense.kind == free.kind
        assert abs(dense.t - free.t) < 1e-9
        assert (math.isnan(dense.centre_t) and math.isnan(free.centre_t)) or abs(dense.centre_t - free.centre_t) < 1e-9


def test_centre_search_gives_the_same_first_bifurcation():
    """centre='search' stops the centre branch where the search stops: the same first bifurcation."""
    out = {}
    for name, data in (("three", ThreeDeltas().data), ("weighted", TwoDeltas(1.0, [0.3, 0.7]).data)):
        out[name] = [critical_time(data, VPLinear(), n_mass=0, centre=c) for c in ("full", "search")]
    for full, cut in out.values():
        assert cut.kind == full.kind == "saddle-node" and abs(cut.t - full.t) < 1e-12
    three, three_cut = out["three"]
    assert three.centre_t < three.t  # the centre loses stability after the saddle-nodes, within the searched cells
    assert abs(three_cut.centre_t - three.centre_t) < 1e-12 and not three_cut.message
    with pytest.raises(ValueError, match="centre must be"):
        critical_time(ThreeDeltas().data, VPLinear(), centre="half")


def test_hessian_products_equal_the_dense_hessian():
    """H V of the matrix-free operator (posterior computed once, two passes a block) and of the generic kernel
    (posterior inside each product) equal the dense Hessian times V, for one column and for a block."""
    from theory import _krylov
    from theory._engine import exact_field

    rng = np.random.default_rng(5)
    f = exact_field(DeltaMixture(rng.normal(size=(40, 6))), VPLinear(), 1.0)
    x, t = rng.normal(size=6), 0.4
    V = rng.normal(size=(6, 3))
    H = f.hessian(x, t)
    fixed = _krylov.HessianOperator(f, x, t)
    assert np.max(np.abs(fixed @ V - H @ V)) < 1e-12 * np.max(np.abs(H))
    assert np.max(np.abs(fixed @ V[:, 0] - H @ V[:, 0])) < 1e-12 * np.max(np.abs(H))
    f.k_post = None  # the generic path (Gaussian mixtures take it)
    generic = _krylov.HessianOperator(f, x, t)
    assert np.max(np.abs(generic @ V - H @ V)) < 1e-12 * np.max(np.abs(H))


def test_matrix_free_escape_from_a_saddle_reaches_an_attractor(monkeypatch):
    """Without eigendecompositions, ``minimise`` steps off a saddle along the top eigenvector, descends and polishes:
    from the centre of the +-1 deltas below their pitchfork (a saddle; embedded in d = 8) it lands on an attractor
    found independently by the 1D bracketing of ``theory.fixed_points``."""
    from theory import fixed_points
    from theory._engine import exact_field

    t = 0.2  # below t_c = 0.2926: the centre is a saddle
    one_d = [p.x[0] for p in fixed_points(DeltaMixture([[-1.0], [1.0]]), VPLinear(), t) if p.stable]
    import theory._krylov

    monkeypatch.setattr(theory._krylov, "MATRIX_FREE_D", 1)  # after the 1D reference (dense there)
    Y = np.zeros((2, 8))
    Y[:, 0] = [-1.0, 1.0]
    f = exact_field(DeltaMixture(Y), VPLinear(), 1.0)
    assert f.matrix_free and f.top_eig(np.zeros(8), t)[0] > 0
    X, ok = f.minimise(np.zeros((1, 8)), t)
    assert ok[0] and f.stable(X[0], t)
    assert min(abs(X[0, 0] - x) for x in one_d) < 1e-9 and np.max(np.abs(X[0, 1:])) < 1e-9


def test_long_searches_show_their_progress(capsys):
    """progress=True draws a tqdm bar on stderr naming the search and its phase; False draws nothing."""
    from theory import bifurcation_tree, collapse_time, critical_time, order_parameter

    data = DeltaMixture([[-1.0], [1.0]])
    critical_time(data, VPLinear(), progress=True)
    order_parameter(data, VPLinear(), [0.5, 0.2], n_samples=8, progress=True)
    collapse_time(data, VPLinear(), n_grid=8, progress=True)
    bifurcation_tree(data, VPLinear(), n_grid=8, progress=True)
    err = capsys.readouterr().err
    for name in ("critical time", "macroscopic: m=", "order parameter", "collapse time", "bifurcation tree"):
        assert name in err
    critical_time(data, VPLinear(), progress=False)
    assert capsys.readouterr().err == ""
