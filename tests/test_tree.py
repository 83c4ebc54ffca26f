"""The bifurcation tree against the closed-form pitchfork, the engine's saddle-nodes and a brute-force count."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from theory import DeltaMixture, VPLinear, bifurcation_tree, collapse_time, critical_time
from theory.systems import ThreeDeltas, TwoDeltas


def test_two_deltas_one_pitchfork():
    s = VPLinear()
    tree = bifurcation_tree(TwoDeltas(1.0).data, s, n_grid=16, labels=["left", "right"])
    assert [(n.kind, n.parent) for n in tree.nodes] == [("root", None), ("pitchfork", 0), ("pitchfork", 0)]
    root, a, b = tree.nodes
    assert abs(a.t_birth - TwoDeltas(1.0).t_c(s)) < 1e-8 and a.t_birth == b.t_birth == root.t_end
    assert root.end == "crossing" and a.end == b.end == "t_min"
    assert abs(a.theta_birth - np.sqrt(np.sqrt(2) - 1)) < 1e-8  # the paper's theta_c
    assert root.composition == {"left": 1, "right": 1}
    assert sorted([a.composition, b.composition], key=str) == [{"left": 1}, {"right": 1}]
    assert np.sign(a.points[-1][0]) != np.sign(b.points[-1][0])
    assert tree.n_attractors(0.5) == 1 and tree.n_attractors(0.1) == 2


@pytest.mark.slow
def test_two_gaussians_pitchfork():
    from theory.systems import TwoGaussians

    system = TwoGaussians(1.0, 0.1)
    tree = bifurcation_tree(system.data, VPLinear(), n_grid=16)
    assert [(n.kind, n.parent) for n in tree.nodes] == [("root", None), ("pitchfork", 0), ("pitchfork", 0)]
    assert abs(tree.nodes[1].t_birth - system.t_c(VPLinear())) < 1e-8


def test_three_deltas_saddle_nodes_match_critical_time():
    s = VPLinear()
    tree = bifurcation_tree(ThreeDeltas(1.0).data, s, n_grid=16)
    ref = critical_time(ThreeDeltas(1.0).data, s, n_mass=0)
    kids = tree.children(0)
    assert len(kids) == 3 and all(tree.nodes[k].kind == "saddle-node" for k in kids)
    assert all(abs(tree.nodes[k].t_birth - ref.t) < 1e-8 for k in kids)
    assert abs(tree.nodes[0].t_end - ref.centre_t) < 1e-8 and tree.nodes[0].end == "crossing"
    assert tree.first_bifurcation().t_birth == max(tree.nodes[k].t_birth for k in kids)
    assert sorted(int(m) for k in kids for m in tree.nodes[k].members) == [0, 1, 2]


def _minima_count(Y, t, schedule, n_random=48, seed=0):
    """Distinct local minima of u = -log p_t - |x|^2/4 (VP, eta = 1) by L-BFGS (numpy and scipy only)."""
    th, s2 = float(schedule.theta(t)), float(schedule.sigma2(t))

    def u(x):
        logits = -np.sum((x - th * Y) ** 2, axis=1) / (2 * s2)
        r = np.exp(logits - logsumexp(logits))
        return -logsumexp(logits) - 0.25 * x @ x, (x - th * r @ Y) / s2 - 0.5 * x

    rng = np.random.default_rng(seed)
    kappa = th / (1 - 0.5 * s2)
    starts = np.concatenate([kappa * Y, [kappa * Y.mean(0)], rng.normal(size=(n_random, Y.shape[1])) * Y.std()])
    found = []
    for x0 in starts:
        x = minimize(u, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000}).x
        if not any(np.linalg.norm(x - y) < 1e-4 for y in found):
            found.append(x)
    return len(found)


@pytest.mark.slow
def test_small_set_counts_and_collapse():
    s = VPLinear()
    Y = np.random.default_rng(1).normal(size=(6, 3))
    tree = bifurcation_tree(DeltaMixture(Y), s, n_grid=32, t_min=0.01)
    assert tree.n_attractors(tree.t_min) == 6 and not tree.truncated
    assert sum(n.kind == "root" for n in tree.nodes) == 1
    assert all(n.parent is not None for n in tree.nodes[1:])
    # Between consecutive births the count is constant: check it midway against brute force.
    b = np.concatenate([[1.0], tree.births(), [tree.t_min]])
    for lo, hi in zip(b[1:], b[:-1], strict=True):
        if hi - lo > 1e-3:
            t = 0.5 * (lo + hi)
            assert tree.n_attractors(t) == _minima_count(Y, t, s), t
    # The last birth of the tree is the collapse time (no attractor dies in this set).
    ct = collapse_time(DeltaMixture(Y), s, n_grid=32)
    if all(n.end != "fold" for n in tree.nodes):
        assert abs(tree.births()[-1] - ct.t) < 1e-8


def test_truncation_and_bad_inputs():
    s = VPLinear()
    Y = np.random.default_rng(1).normal(size=(6, 3))
    tree = bifurcation_tree(DeltaMixture(Y), s, n_grid=12, t_min=0.01, max_nodes=2)
    assert "max_nodes" in tree.truncated and len(tree.nodes) <= 2
    exact = bifurcation_tree(DeltaMixture(Y), s, n_grid=12, t_min=0.01, max_nodes=None)
    # Truncated: the exact tree down to the grid time where it stopped.
    assert len(exact.nodes) > 2 and tree.t_min > exact.t_min
    np.testing.assert_allclose(tree.births(), exact.births()[exact.births() >= tree.t_min], atol=1e-8)
    assert tree.n_attractors(tree.t_min) == exact.n_attractors(tree.t_min)
    heavy = bifurcation_tree(DeltaMixture(Y), s, n_grid=12, t_min=0.01, min_mass=0.3)
    assert "min_mass" in heavy.truncated and 1 < len(heavy.nodes) < len(exact.nodes)
    assert all(n.share >= 0.3 for n in heavy.nodes)
    # The heavy nodes are nodes of the exact tree: the same births, to 1e-8.
    assert all(np.min(np.abs(exact.births() - tb)) < 1e-8 for tb in heavy.births())
    with pytest.raises(ValueError, match="labels"):
        bifurcation_tree(DeltaMixture(Y), s, labels=[0, 1])
    with pytest.raises(ValueError, match="min_mass"):
        bifurcation_tree(DeltaMixture(Y), s, min_mass=2.0)
    with pytest.raises(ValueError, match="t_min"):
        bifurcation_tree(DeltaMixture(Y), s, t_min=0.0)
    with pytest.raises(TypeError, match="n_grid"):
        bifurcation_tree(DeltaMixture(Y), s, n_grid=3.5)
