"""The tree's births against critical_time and the closed forms, on every reference problem, schedule and eta.

A pitchfork is held against the closed-form loss of the centre (``theory.systems``: theory.symbolic's theta_c);
a saddle-node against its fold solved here in numpy: on the line through the birth point along its symmetry axis
(the only direction in 1D), R(s u) . u = 0 and d/ds of it = 0, from the posterior written out (no jax kernel).
"""

import math

import numpy as np
import pytest
from scipy.optimize import root
from scipy.special import softmax

from theory import DDPM, VE, VPCosine, VPLinear, bifurcation_tree, critical_time
from theory.systems import reference_problems

SCHEDULES = {"vplinear": VPLinear(), "vpcosine": VPCosine(), "ve": VE(), "ddpm": DDPM()}
PROBLEMS = {p.name: p for p in reference_problems()}
SLOW_PROBLEMS = {"equal-norm, N=20, d=10"}  # 20 points in d = 10: ~10 s a tree


def _c(schedule, eta):
    """c = a / k of the reduced field R = score - c x: -1/(1 + eta^2) on VP (g^2 = -2a), 0 on VE (a = 0)."""
    return -1.0 / (1.0 + eta**2) if schedule.variance_preserving else 0.0


def _ray_fold(data, schedule, eta, x0, t0):
    """(t, s) of the fold of the fixed points on the line s u, u the unit vector of the data point nearest x0."""
    Y, w = np.asarray(data.points), np.asarray(data.weights)
    u = Y[np.argmax(Y @ x0)] if Y.shape[1] > 1 else np.sign(x0)
    u = u / np.linalg.norm(u)
    c = _c(schedule, eta)

    def eqs(z):
        s, t = z
        th, s2 = float(schedule.theta(t)), float(schedule.sigma2(t))
        r = softmax(np.log(w) + th * (Y @ u) * s / s2 - 0.5 * th**2 * np.sum(Y**2, axis=1) / s2)
        m = r @ Y
        var_u = r @ (Y @ u) ** 2 - (m @ u) ** 2  # u^T Cov[y | x] u
        R = (th * (m @ u) - s) / s2 - c * s
        dR = th**2 * var_u / s2**2 - 1.0 / s2 - c
        return [R * s2, dR * s2**2]

    sol = root(eqs, [float(u @ x0), t0], method="hybr", options={"xtol": 1e-14})
    assert np.max(np.abs(eqs(sol.x))) < 1e-12, sol  # converged ("xtol too small" only says it cannot do better)
    return float(sol.x[1]), float(sol.x[0])


def _etas(problem, schedule):
    """The problem's own eta; on VP also 0.5 and 2 (on VE every eta has the same fixed points, c = 0), and the
    ODE (eta = 0) where it has one attractor at T: data covariance below 1 and theta(T) > 0 (on the cosine
    schedule theta(T) = 0 puts the ODE's fixed points x = E[y | x] / theta at infinity)."""
    out = {problem.eta}
    if schedule.variance_preserving:
        out |= {0.5, 2.0}
        lam = float(np.linalg.eigvalsh(np.asarray(problem.data.covariance()))[-1])
        if lam < 1.0 and float(schedule.theta(schedule.T)) > 0:
            out.add(0.0)
    return sorted(out)


def _cases():
    for name, problem in PROBLEMS.items():
        for sname, schedule in SCHEDULES.items():
            for eta in _etas(problem, schedule):
                # default tier: each problem's own eta on VP linear and DDPM (where the tree once split a pitchfork),
                # and the paper's pair on every schedule; the rest run with `pytest -m slow`
                other = sname not in ("vplinear", "ddpm") and name != "deltas +-1 (paper)"
                slow = name in SLOW_PROBLEMS or eta != problem.eta or other
                marks = [pytest.mark.slow] if slow else []
                yield pytest.param(name, sname, eta, marks=marks, id=f"{name}-{sname}-eta{eta:g}")


@pytest.mark.parametrize("name, sname, eta", list(_cases()))
def test_tree_births_agree_with_critical_time_and_closed_forms(name, sname, eta):
    problem, schedule = PROBLEMS[name], SCHEDULES[sname]
    tree = bifurcation_tree(problem.data, schedule, eta, n_grid=32)
    ct = critical_time(problem.data, schedule, eta, n_mass=0)
    first = tree.first_bifurcation()
    assert first is not None and first.kind == ct.kind, (first, ct)
    assert abs(first.t_birth - ct.t) < 1e-9, (first.t_birth, ct.t)
    if problem.system is not None and problem.system.kind is not None:
        assert ct.kind == problem.system.kind
    # Independent references: the closed form of a pitchfork, the numpy fold of a saddle-node.
    if ct.kind == "pitchfork":
        ref = problem.system.centre_t_c(schedule, eta)
        twins = [n for n in tree.nodes if n.parent == first.parent and n.kind == "pitchfork"]
        assert len(twins) == 2 and all(n.t_birth == tree.nodes[first.parent].t_end for n in twins)
        assert tree.nodes[first.parent].end == "crossing"
    else:
        ref, s = _ray_fold(problem.data, schedule, eta, np.asarray(ct.x), ct.t)
        assert first.birth_how == "fold" and abs(np.linalg.norm(first.x_birth) - abs(s)) < 1e-4
    assert abs(first.t_birth - ref) < 1e-9, (first.t_birth, ref)
    # Where the centre loses stability, the root's end is that loss.
    root = tree.nodes[0]
    if math.isfinite(ct.centre_t) and ct.centre_t > tree.t_min:
        assert root.end == "crossing" and abs(root.t_end - ct.centre_t) < 1e-9


def test_the_paper_pair_under_ddpm_is_one_pitchfork():
    """The pair of points at +-1 under DDPM: the children are born at the centre's crossing, the closed form's t_c,
    not as two saddle-nodes 1e-6 below it (their continuation up stops where it moves faster than its step bound)."""
    problem, schedule = PROBLEMS["deltas +-1 (paper)"], DDPM()
    tree = bifurcation_tree(problem.data, schedule, n_grid=16)
    assert [(n.kind, n.parent, n.birth_how) for n in tree.nodes] == [
        ("root", None, "root"),
        ("pitchfork", 0, "crossing"),
        ("pitchfork", 0, "crossing"),
    ]
    assert abs(tree.nodes[1].t_birth - problem.system.t_c(schedule)) < 1e-10
    assert round(tree.nodes[1].t_birth, 10) == 0.2926953899


@pytest.mark.parametrize(
    "sname, eta",
    [(s, 1.0) for s in SCHEDULES] + [pytest.param(s, e, marks=pytest.mark.slow) for s in SCHEDULES for e in (0.5, 2.0)],
)
def test_collapse_of_the_pair_is_the_closed_form_pitchfork(sname, eta):
    """Each point of the pair owns its attractor up to the pitchfork, where the two meet the shared centre; past it
    Newton lands on the centre off its symmetry plane (no tie shows), which must not extend the points' own."""
    from theory import collapse_time

    schedule, system = SCHEDULES[sname], PROBLEMS["deltas +-1 (paper)"].system
    ct = collapse_time(system.data, schedule, eta, n_grid=32)
    assert ct.how == ("crossing", "crossing")
    assert abs(ct.t - system.t_c(schedule, eta)) < 1e-9
