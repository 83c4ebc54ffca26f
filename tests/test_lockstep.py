"""Branches in lock-step and the contraction certificates, against independent computations."""

import numpy as np
import pytest

from theory import DeltaMixture, VPLinear
from theory._field import MixtureField
from theory._lockstep import carry_many, cov_top, newton_many
from theory._search import stable_points


def _cov(Y, r):
    m = r @ Y
    return (Y * r[:, None]).T @ Y - np.outer(m, m)


def _posterior(Y, x, th, s2):
    logits = (th * Y @ x - 0.5 * th**2 * np.sum(Y**2, axis=1)) / s2
    r = np.exp(logits - logits.max())
    return r / r.sum()


def test_covariance_bound_by_the_posterior_ratio():
    """lam_max(Cov_r') <= max_j(r'_j / r_j) lam_max(Cov_r), the inequality behind both certificates, on random
    posteriors over random points (numpy eigenvalues)."""
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(40, 6))
    for _ in range(50):
        r, r2 = rng.dirichlet(np.ones(40)), rng.dirichlet(np.ones(40))
        top = np.linalg.eigvalsh(_cov(Y, r))[-1]
        assert np.linalg.eigvalsh(_cov(Y, r2))[-1] <= np.max(r2 / r) * top * (1 + 1e-12)


def test_split_bound_bounds_the_covariance_and_beats_the_ratio():
    """_split_bound from a bound at x0 (the exact lam_max(Cov), numpy) bounds lam_max(Cov[y | x1]) (numpy
    eigenvalues) for random points and moves, never exceeds the max-ratio bound, and is below it by 10x or more for
    some long moves (where a few far points' weights grow a lot but stay small)."""
    import jax.numpy as jnp

    from theory._lockstep import _split_bound

    rng = np.random.default_rng(2)
    Y = rng.normal(size=(200, 8))
    logw, ysq = np.full(200, -np.log(200.0)), np.sum(Y**2, axis=1)
    th, s2 = 0.8, 0.36
    gains = []
    for scale in (0.05, 0.3, 1.0):
        X0 = rng.normal(size=(16, 8)) * 0.5
        X1 = X0 + scale * rng.normal(size=(16, 8))
        r0 = [_posterior(Y, x, th, s2) for x in X0]
        r1 = [_posterior(Y, x, th, s2) for x in X1]
        cov0 = np.array([np.linalg.eigvalsh(_cov(Y, r))[-1] for r in r0])
        args = (Y, logw, ysq, X0, th, s2, X1, th, s2, cov0)
        split = np.asarray(_split_bound(*(jnp.asarray(a) for a in args)))
        for b, a, q, c0 in zip(split, r0, r1, cov0, strict=True):
            assert b >= np.linalg.eigvalsh(_cov(Y, q))[-1] * (1 - 1e-9)
            ratio = np.max(q / a) * c0
            assert b <= ratio * (1 + 1e-9)
            gains.append(ratio / b)
    assert max(gains) > 10.0


@pytest.fixture(scope="module")
def cluster_field():
    rng = np.random.default_rng(0)
    Y = np.concatenate([rng.normal(size=(30, 5)) * 0.3 + 1.0, rng.normal(size=(30, 5)) * 0.3 - 1.0])
    return MixtureField(DeltaMixture(Y), VPLinear(), 1.0), Y


def test_contraction_ball_points_converge_to_its_centre(cluster_field):
    """Every point of the certified ball flows, under the fixed-point map iterated in numpy, to its centre."""
    f, Y = cluster_field
    t = 0.6
    th, s2, _ = f.coeffs(t)
    x, ok = f.newton(f.kappa(t) * Y.mean(axis=0)[None], t, n_iter=30)
    radius = f.contraction_radius(x[0], t)
    assert ok[0] and radius > 0
    rng = np.random.default_rng(2)
    for u in rng.normal(size=(20, 5)):
        z = x[0] + radius * u / np.linalg.norm(u)
        for _ in range(400):
            z = f.kappa(t) * _posterior(Y, z, th, s2) @ Y
            assert np.linalg.norm(z - x[0]) <= radius * (1 + 1e-9)  # the ball is mapped into itself
        assert np.linalg.norm(z - x[0]) < 1e-8


def test_newton_many_equals_newton_one_by_one(cluster_field):
    f, Y = cluster_field
    t = 0.3
    X0 = f.kappa(t) * Y[::7] + 0.01
    Xm, okm = newton_many(f, X0, t, n_iter=30)
    Xs, oks = f.newton(X0, t, n_iter=30)
    both = okm & oks
    assert both.sum() >= len(X0) // 2
    assert np.max(np.abs(Xm[both] - Xs[both])) < 1e-9


def test_cov_top_against_the_dense_hessian(cluster_field):
    f, Y = cluster_field
    t = 0.3
    X, _ = f.newton(f.kappa(t) * Y[::10], t, n_iter=30)
    cov, stable = cov_top(f, X, t)
    th, s2, _ = f.coeffs(t)
    for x, cv, st in zip(X, cov, stable, strict=True):
        dense = np.linalg.eigvalsh(_cov(Y, _posterior(Y, x, th, s2)))[-1]
        assert abs(cv - dense) < 1e-8 * (1 + dense)
        assert st == (np.linalg.eigvalsh(f.hessian(x, t))[-1] < 0)


@pytest.mark.parametrize("step", [None, [0.125, 0.125], [0.5, 0.25]])
def test_carry_many_ends_the_lighter_attractor_at_its_fold(step):
    """Deltas at +-1 weighted 0.3 / 0.7 (VP, eta = 1): carried up across the lighter point's fold, solved
    independently in numpy (test_engine), the heavier point's attractor reaches the end and the lighter one's ends
    at the fold, to the resolution of the steps (1/8 of the way), whatever the first steps; the last successful
    steps are powers of two of the way, no longer than the way made."""
    from test_engine import _weighted_fold_theta

    from theory.systems import TwoDeltas

    f = MixtureField(TwoDeltas(1.0, [0.3, 0.7]).data, VPLinear(), 1.0)
    t_fold = float(VPLinear().t_from_theta(_weighted_fold_theta(0.7)))
    t0, t1 = t_fold - 0.03, t_fold + 0.05
    X, ok = f.newton(np.array([[-0.9], [0.9]]) * f.kappa(t0), t0, n_iter=30)
    assert ok.all() and X[0, 0] < 0 < X[1, 0]
    reached, _, t_end, _, last = carry_many(f, X, t0, t1, 8, step=step)
    assert reached.tolist() == [False, True]
    assert t_end[0] < t_fold <= t_end[0] + (t1 - t0) / 8 + 1e-12
    made = (t_end - t0) / (t1 - t0)
    assert np.all(np.log2(last) == np.round(np.log2(last))) and np.all((last >= 1 / 8) & (last <= made + 1e-12))


def test_descent_stops_in_certified_balls_at_the_plain_descents_limits():
    """Draws that enter an attractor's certified ball stop there; they end where the plain descent ends."""
    rng = np.random.default_rng(0)
    corners = (np.full(8, 1.0), np.full(8, -1.0), np.r_[np.ones(4), -np.ones(4)])
    f = MixtureField(
        DeltaMixture(np.concatenate([0.3 * rng.normal(size=(20, 8)) + c for c in corners])), VPLinear(), 1.0
    )
    t = 0.3
    A = stable_points(f, t, 60)
    assert len(A) == 3 and all(f.contraction_radius(a, t) > 0.1 for a in A)
    S = f.sample(t, 200, 1)
    plain, _ = f.descend(S, t)
    balls, res = f.descend(S, t, attractors=A)
    assert np.all(res == 0.0)  # every draw was stopped by a ball
    assert np.max(np.linalg.norm(plain - balls, axis=1)) < 1e-6 * (1.0 + f.scale)


def test_certified_stable_rows_have_negative_dense_eigenvalues(cluster_field):
    """Rows that certified_stable passes have lam_max(H) < 0 by numpy's dense eigenvalues; near the data points the
    trace bound passes rows that the contraction bound cannot."""
    from theory._certify import certified_stable

    f, Y = cluster_field
    rng = np.random.default_rng(3)
    for t in (0.1, 0.3, 0.6):
        kappa = f.kappa(t)
        X = np.concatenate([kappa * Y + 0.02 * rng.normal(size=Y.shape), rng.normal(size=(40, 5))])
        ok = certified_stable(f, X, t)
        top = np.array([np.linalg.eigvalsh(f.hessian(x, t))[-1] for x in X])
        assert np.all(top[ok] < 0), t
        if t == 0.1:
            assert np.sum(ok & ~(f.contraction_bounds(X, t) < 0.9)) >= 10


def test_cov_bound_bounds_the_dense_covariance(cluster_field):
    """cov_bound's values bound lam_max(Cov[y | x]) from above, and its stable mask is the dense Hessian's."""
    from theory._lockstep import cov_bound

    f, Y = cluster_field
    for t in (0.1, 0.3):
        X, _ = f.newton(f.kappa(t) * Y[::5], t, n_iter=30)
        cov, stable = cov_bound(f, X, t)
        th, s2, _ = f.coeffs(t)
        for x, cv, st in zip(X, cov, stable, strict=True):
            assert cv >= np.linalg.eigvalsh(_cov(Y, _posterior(Y, x, th, s2)))[-1] * (1 - 1e-9)
            assert st == (np.linalg.eigvalsh(f.hessian(x, t))[-1] < 0)


def test_chained_margin_has_the_sign_of_the_dense_margin_and_bounds_it(cluster_field):
    """Along Newton points from the data's mean at times from 0.9 down to 0.2 (through the loss of stability of
    the centre of two clusters), ChainedMargin has the sign of -lam_max(H) sigma^2 from the dense Hessian (numpy)
    and never exceeds it: where the chain certifies stability its value is a lower bound."""
    from theory._lockstep import ChainedMargin

    f, Y = cluster_field
    chained = ChainedMargin(f)
    signs = set()
    for t in np.linspace(0.9, 0.2, 36):
        x, ok = f.newton(f.kappa(t) * Y.mean(axis=0)[None], t, n_iter=30)
        assert ok[0]
        exact = -np.linalg.eigvalsh(np.asarray(f.hessian(x[0], t)))[-1] * f.coeffs(t)[1]
        m = chained(x[0], t)
        assert (m > 0) == (exact > 0) and m <= exact + 1e-9 * abs(exact) + 1e-12, (t, m, exact)
        signs.add(bool(exact > 0))
    assert signs == {True, False}  # both sides of the crossing were visited


def test_the_centre_carried_in_lock_step_loses_stability_at_the_closed_form(monkeypatch):
    """Deltas at +-1 in 3 dimensions with products only (the lock-step path): the centre branch is carried across
    the grid's cells by ``carry_many`` (each cell checked by carrying back), and its loss of stability, located
    by ``continue_branch`` in the cell where the carry stops, is the pitchfork of ``TwoDeltas`` in closed form."""
    import theory._critical as critical
    import theory._krylov
    from theory import critical_time
    from theory.systems import TwoDeltas

    monkeypatch.setattr(theory._krylov, "MATRIX_FREE_D", 1)
    carried, carry = [], critical._Run.carry_centre
    monkeypatch.setattr(critical._Run, "carry_centre", lambda run, i: carried.append(carry(run, i)) or carried[-1])
    Y = np.zeros((2, 3))
    Y[:, 0] = [-1.0, 1.0]
    ct = critical_time(DeltaMixture(Y), VPLinear(), n_mass=0)
    t_c = TwoDeltas(1.0).centre_t_c(VPLinear(), 1.0)
    assert ct.kind == "pitchfork" and abs(ct.centre_t - t_c) < 1e-9 and abs(ct.t - t_c) < 1e-9
    assert sum(carried) >= 3 and carried[-1] is False  # carried across cells, then the cell where it ends
