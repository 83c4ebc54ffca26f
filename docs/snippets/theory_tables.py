"""Theory snippets: the reference tables, the schedules, the closed forms, the paper's example, speciation."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from .common import ROOT, _f, _table


def _cli_rows(schedule: str) -> dict:
    """The rows of ``python -m theory --schedule SCHEDULE --json`` (the CLI itself, not a re-implementation)."""
    cmd = [sys.executable, "-m", "theory", "--schedule", schedule, "--json"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def reference_table() -> str:
    """``python -m theory`` (VP linear): the critical-time table of the reference problems."""
    res = _cli_rows("vp-linear")
    head = [
        "problem",
        "$\\eta$",
        "kind",
        "$t_c$",
        "$\\theta_c$",
        "SNR",
        "centre $\\theta$",
        "closed form",
        "\\|diff\\|",
    ]
    rows = [
        [
            f"`{r['problem']}`",
            r["eta"],
            r["kind"],
            _f(r["t_c"]),
            _f(r["theta_c"]),
            _f(r["snr_c"], 5),
            _f(r["centre_theta"]),
            _f(r["centre_theta_closed_form"]),
            "-" if r["error"] is None else f"{r['error']:.1e}",
        ]
        for r in res["rows"]
    ]
    return f"Schedule: `{res['schedule']}`; output of `python -m theory --json`.\n\n" + _table(head, rows)


def reference_table_ddpm() -> str:
    """``python -m theory --schedule ddpm``: the same problems on the discrete DDPM schedule."""
    res = _cli_rows("ddpm")
    head = ["problem", "$\\eta$", "kind", "$t_c$", "$\\theta_c$", "step", "generative step"]
    rows = []
    for r in res["rows"]:
        gen = "-" if r["step"] is None else 1000 - r["step"]
        rows.append([f"`{r['problem']}`", r["eta"], r["kind"], _f(r["t_c"]), _f(r["theta_c"]), r["step"], gen])
    return (
        f"Schedule: `{res['schedule']}`; output of `python -m theory --schedule ddpm --json` "
        "(generative step = 1000 - step).\n\n" + _table(head, rows)
    )


def schedules() -> str:
    """The default schedules at their ends, and how close DDPM's embedding is to VP linear."""
    import numpy as np

    from theory import DDPM, VE, VPCosine, VPLinear

    rows = []
    for s in (VPLinear(), VPCosine(), VE(), DDPM()):
        T = s.T
        rows.append(
            [f"`{s!r}`", _f(float(s.theta(T)), 6), f"{float(s.sigma2(T)):.6g}", f"{float(s.snr(T)):.4g}",
             f"{float(s.g2(T)):.6g}"]
        )  # fmt: skip
    ts = np.linspace(0.0, 1.0, 10001)
    dev = float(np.max(np.abs(np.asarray(DDPM().log_theta(ts)) - np.asarray(VPLinear().log_theta(ts)))))
    gap = "$|\\ln\\theta_{\\rm DDPM}(t) - \\ln\\theta_{\\rm VPLinear}(t)|$"
    return (
        _table(["schedule", "$\\theta(T)$", "$\\sigma^2(T)$", "SNR$(T)$", "$g^2(T)$"], rows)
        + f"\nmax over $t \\in [0, 1]$ of {gap}: {dev:.3g}.\n"
    )


def _math(tex: str, label: str) -> str:
    return f"{label}\n\n$$\n{tex}\n$$\n\n"


def closed_two_delta() -> str:
    """sympy closed forms for two deltas at +-a (VP: sigma^2 = 1 - theta^2 substituted)."""
    import sympy as sp

    from theory import symbolic as S

    mu, c3 = S.two_delta_normal_form()
    th_c = S.two_delta_theta_c()
    out = _math("\\partial_x \\log p_t = " + S.latex(S.two_delta_score()), "`two_delta_score()`:")
    out += _math("u_\\eta''(0) = " + S.latex(S.two_delta_u2_at_centre()), "`two_delta_u2_at_centre()`:")
    out += _math("\\theta_c(a, \\eta) = " + S.latex(th_c), "`two_delta_theta_c()`:")
    out += _math(
        "\\mu = " + S.latex(mu) + ", \\qquad c_3 = " + S.latex(c3),
        "`two_delta_normal_form()` (Taylor coefficients of $R(x) = \\mu x + c_3 x^3 + O(x^5)$):",
    )
    paper = sp.simplify(th_c.subs({S.a: 1, S.eta: 1}))
    half = sp.simplify(th_c.subs({S.a: 1, S.eta: sp.S.Half}))
    ode = sp.simplify(th_c.subs({S.eta: 0}))
    ode07 = sp.simplify(th_c.subs({S.a: sp.Rational(7, 10), S.eta: 0}))
    mu_c = sp.simplify(mu.subs({S.a: 1, S.eta: 1, S.theta: paper}))
    c3_c = sp.nsimplify(sp.simplify(c3.subs({S.a: 1, S.theta: paper})))
    rows = [
        ["$a = 1, \\eta = 1$ (paper)", f"${S.latex(paper)}$", _f(float(paper))],
        ["$a = 1, \\eta = 1/2$", f"${S.latex(half)}$", _f(float(half))],
        ["$a = 0.7, \\eta = 0$ (ODE)", f"${S.latex(ode07)}$", _f(float(ode07))],
        ["$\\eta = 0$, any $a$", f"${S.latex(ode)}$", "-"],
    ]
    out += "Special cases of $\\theta_c$ (`sympy.simplify`):\n\n" + _table(["case", "$\\theta_c$", "value"], rows)
    out += (
        f"\nAt the paper's $\\theta_c$: $\\mu = {S.latex(mu_c)}$ and "
        f"$c_3 = {S.latex(sp.simplify(c3_c))} \\approx {float(c3_c):.10f} < 0$.\n"
    )
    return out


def closed_equal_norm() -> str:
    from theory import symbolic as S

    out = _math("\\theta_c(\\lambda, \\eta) = " + S.latex(S.equal_norm_theta_c()), "`equal_norm_theta_c()`:")
    out += _math("\\theta_S(\\lambda) = " + S.latex(S.speciation_theta()), "`speciation_theta()`:")
    return out


def closed_two_gaussian() -> str:
    from theory import symbolic as S

    out = _math(S.latex(S.two_gaussian_critical_condition()), "`two_gaussian_critical_condition()`:")
    out += _math("\\theta_c(m, v_0, \\eta) = " + S.latex(S.two_gaussian_theta_c()), "`two_gaussian_theta_c()`:")
    v = float(S.lambdify(S.two_gaussian_theta_c(), (S.m, S.v0, S.eta))(1.0, 0.1, 1.0))
    out += "For $m = 1$, $v_0 = 0.1$, $\\eta = 1$ (reference problem `2 Gaussians +-1, var 0.1`): "
    out += f"$\\theta_c = {_f(v)}$.\n"
    return out


def paper_example() -> str:
    """The paper's example worked through: closed form, VP-linear inverse, the engine on every schedule."""
    from theory import DDPM, VE, DeltaMixture, VPCosine, VPLinear, critical_time
    from theory import symbolic as S

    s = VPLinear()
    th = float(S.lambdify(S.two_delta_theta_c(), (S.a, S.eta))(1.0, 1.0))
    L = -2.0 * math.log(th)
    k = 0.5 * (s.beta_max - s.beta_min) / s.T
    t_formula = 2.0 * L / (s.beta_min + math.sqrt(s.beta_min**2 + 4.0 * k * L))
    ct = critical_time(DeltaMixture([[-1.0], [1.0]]), s)
    rows = [
        ["$\\theta_c^2 = \\sqrt 2 - 1$", _f(th**2)],
        ["$\\theta_c$ (closed form)", _f(th)],
        ["$L = -2\\ln\\theta_c$", _f(L)],
        ["$k = (\\beta_{\\max} - \\beta_{\\min}) / 2T$", _f(k, 4)],
        ["$t_c = 2L / (\\beta_{\\min} + \\sqrt{\\beta_{\\min}^2 + 4kL})$", _f(t_formula)],
        ["$t_c$ from `critical_time`", _f(ct.t)],
        ["$\\theta_c$ from `critical_time`", _f(ct.theta)],
        ["$\\sigma_c$", _f(ct.sigma)],
        ["SNR $= \\theta_c^2/\\sigma_c^2$", _f(ct.snr)],
        ["OU time $s_c = \\tfrac12\\ln(1 + 1/{\\rm SNR})$", _f(ct.ou_time)],
        ["EDM $\\sigma_c/\\theta_c$", _f(float(s.edm_sigma(ct.t)))],
        ["generative step of 1000, $1000\\,(1 - t_c/T)$", _f(1000 * (1 - ct.t / s.T), 2)],
    ]
    out = "VP linear ($\\beta$ 0.1..20, $T = 1$), $\\eta = 1$:\n\n" + _table(["quantity", "value"], rows)
    rows = []
    data = DeltaMixture([[-1.0], [1.0]])
    for sch in (VPLinear(), VPCosine(), DDPM(), VE()):
        for eta in (1.0, 0.0):
            try:
                c = critical_time(data, sch, eta)
            except Exception as err:  # shown in the table rather than hidden: it is a result too
                rows.append([f"`{sch!r}`", eta, "error", "-", "-", "-", "-", "-", f"`{type(err).__name__}: {err}`"])
                continue
            gen = "-" if c.generative_step is None else c.generative_step
            step = "-" if c.step is None else c.step
            rows.append(
                [f"`{sch!r}`", eta, c.kind, _f(c.t), _f(c.theta), _f(c.snr, 6), step, gen, c.message or ""]
            )  # fmt: skip
    out += "\nThe same data on every schedule (`critical_time(DeltaMixture([[-1.0], [1.0]]), schedule, eta)`):\n\n"
    out += _table(["schedule", "$\\eta$", "kind", "$t_c$", "$\\theta_c$", "SNR", "step", "gen. step", "message"], rows)
    return out


def fixed_points_example() -> str:
    """Fixed points of the paper's problem at a few times, with drift-Jacobian eigenvalues."""
    from theory import DeltaMixture, VPLinear, fixed_points

    data, s = DeltaMixture([[-1.0], [1.0]]), VPLinear()
    rows = []
    for t in (0.1, 0.2, 0.28, 0.3, 0.5, 0.9):
        pts = fixed_points(data, s, t)
        xs = ", ".join(f"{float(p.x[0]) + 0.0:.4f}" for p in pts)
        ev = ", ".join(f"{float(p.eigenvalues[-1]):.4g}" for p in pts)
        st = ", ".join("S" if p.stable else "U" for p in pts)
        rows.append([t, _f(float(s.theta(t)), 4), xs, ev, st])
    return "`fixed_points(DeltaMixture([[-1.0], [1.0]]), VPLinear(), t)`, $\\eta = 1$:\n\n" + _table(
        ["$t$", "$\\theta$", "fixed points $x^*$", "drift-Jacobian eigenvalue", "stable (S) / unstable (U)"], rows
    )


def speciation() -> str:
    """Speciation vs the dynamical (eta = 1) loss of stability of the centre, for the symmetric problems."""
    from theory import VPLinear, speciation_time
    from theory import symbolic as S
    from theory.systems import reference_problems

    s = VPLinear()
    th_s = S.lambdify(S.speciation_theta(), (S.lam,))
    th_1 = S.lambdify(S.equal_norm_theta_c(), (S.lam, S.eta))
    rows = []
    for p in reference_problems():
        if p.name in ("deltas +-1, eta=0.5", "deltas +-1, weights .3/.7", "4 deltas, heavy tails"):
            continue  # duplicates, or not centred equal-norm data
        st = speciation_time(p.data, s)
        lam = st.Lambda
        equal_norm = not p.name.startswith("2 Gaussians")
        rows.append(
            [
                f"`{p.name}`",
                _f(lam, 6),
                _f(st.theta),
                _f(float(th_s(lam))) if equal_norm else "-",
                _f(float(th_1(lam, 1.0))) if equal_norm else "-",
                _f(st.t),
                _f(st.ou_time),
                _f(0.5 * math.log1p(lam)),
                _f(st.biroli_ou_time),
                _f(st.biroli_t),
            ]
        )
    head = [
        "problem",
        "$\\Lambda$",
        "$\\theta_S$ (`speciation_time`)",
        "$1/\\sqrt{1+\\Lambda}$",
        "centre $\\theta_c$, $\\eta = 1$",
        "$t_S$",
        "OU time of $t_S$",
        "$\\tfrac12\\ln(1 + \\Lambda)$",
        "Biroli $\\tfrac12\\ln\\Lambda$",
        "Biroli $t$",
    ]
    return "VP linear; `speciation_time(data, VPLinear())`:\n\n" + _table(head, rows)
