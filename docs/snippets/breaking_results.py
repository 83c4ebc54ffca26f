"""Result snippets of the breaking time: networks, N sweep, FID knee, speciation, local score, memorisation."""

from __future__ import annotations

import json
import math

from .common import ROOT, _f, _json, _maybe, _pct, _pm, _table


def breaking_time() -> str:
    """docs/results/breaking_time.json (written by ``python -m empirical breaking-time``) as a table."""
    path = ROOT / "docs" / "results" / "breaking_time.json"
    if not path.exists():
        return "Not measured yet: run `python -m empirical breaking-time --dataset digits`.\n"
    rows = json.loads(path.read_text())
    head = ["dataset", "N", "d", "predicted $t_c$ (exact)", "equal-norm", "Biroli", "measured $t_c$", "rel. error",
            "cloning midpoint", "device"]  # fmt: skip
    body = [
        [
            r["dataset"],
            r["n_train"],
            r["dim"],
            _f(r["t_c_predicted"], 4),
            _f(r["t_c_equal_norm"], 4),
            _f(r["t_c_biroli"], 4),
            _f(r["t_c_measured"], 4),
            "-" if r["relative_error"] is None else f"{100 * r['relative_error']:.1f}%",
            _f(r["cloning_midpoint"], 3),
            r["device"],
        ]  # fmt: skip
        for r in rows
    ]
    cmds = "\n".join(f"- {r['dataset']} ({r['device']}): `{r['command']}`" for r in rows)
    return _table(head, body) + "\nCommands:\n\n" + cmds + "\n"


def breaking_time_28() -> str:
    """docs/results/breaking_time_28.json: the 28x28 networks of the CPU recipe against the exact prediction."""
    rows = _json("docs/results/breaking_time_28.json")
    head = ["data", "N", "model", "measured $t_c$ [bracket]", "exact $t_c$ (kind)", "gap", "equal-norm", "Biroli",
            "network rows", "seconds"]  # fmt: skip
    body = []
    for r in rows:
        lo, hi = r["t_c_measured_bracket"]
        t = r["t_c_measured"]
        gap = {k: (t - r[k]) / r[k] for k in ("t_c_predicted", "t_c_equal_norm", "t_c_biroli")}
        body.append([
            r["dataset"], f"{r['n_train']:,}", f"U-Net, {r['train_steps']:,} steps",
            f"**{_f(r['t_c_measured'], 4)}** [{_f(lo, 4)}, {_f(hi, 4)}]",
            f"{_f(r['t_c_predicted'], 4)} ({r['kind_predicted']})", f"**{_pct(gap['t_c_predicted'])}**",
            f"{_f(r['t_c_equal_norm'], 4)} ({_pct(gap['t_c_equal_norm'])})",
            f"{_f(r['t_c_biroli'], 4)} ({_pct(gap['t_c_biroli'])})",
            f"{r['network_evaluations']:,}", f"{r['seconds']['measure_s']:.0f}",
        ])  # fmt: skip
    return (
        _table(head, body)
        + "\n`gap`: (measured - exact) / exact; in brackets the same for the other two predictions.\n"
    )


def _net(r: dict) -> str:
    data = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}[r["dataset"]]
    data += " (classes " + " ".join(map(str, r["classes"])) + ")" if r.get("classes") else ""
    window = r.get("t_train")
    return f"{data}, ch {r['net']['ch']}" + (f", $t \\in [{window[0]}, {window[1]}]$" if window else "")


def breaking_vs_steps() -> str:
    """docs/results/breaking_vs_steps.json: every network's breaking time (``python -m empirical steps-sweep``)."""
    rows = _json("docs/results/breaking_vs_steps.json")["rows"]
    rows = sorted(rows, key=lambda r: (r["dataset"], bool(r.get("classes")), r.get("t_train") is not None,
                                       r["net"]["ch"], r.get("seed") or 0, r["step"]))  # fmt: skip
    head = ["network", "seed", "step", "scan", "measured $t_c$", "bracket", "exact $t_c$", "gap", "network rows",
            "seconds"]  # fmt: skip
    body = []
    for r in rows:
        o, t = r["options"], r["t_c_measured"]
        body.append([
            _net(r), r.get("seed") or 0, f"{r['step']:,}", f"{o['t_max']} to {o['t_min']}, {o['n_grid']} times",
            "none" if t is None else f"**{_f(t, 4)}**",
            "-" if t is None else f"[{_f(r['t_lo'], 4)}, {_f(r['t_hi'], 4)}]",
            _f(r["t_c_predicted"], 4), _pct(r["relative_gap"]), f"{r['network_evaluations']:,}", f"{r['seconds']:,.0f}",
        ])  # fmt: skip
    return _table(head, body) + "\n`none`: no second stable point anywhere in the scan.\n"


def shell() -> str:
    """docs/results/shell.json: the fixed-point bound against the radius of the noisy images."""
    rows = _json("docs/results/shell.json")
    head = [
        "data",
        "$t$",
        "bound $\\kappa \\max_i \\lvert x_i \\rvert$",
        "noisy-image radius (mean ± std)",
        "standard deviations inside",
    ]
    body = []
    for r in rows:
        data = r["dataset"] + (" (classes " + " ".join(map(str, r["classes"])) + ")" if r.get("classes") else "")
        body.append([data, _f(r["t"], 4), f"{r['fixed_point_bound']:.2f}",
                     f"{r['radius_mean']:.2f} ± {r['radius_std']:.2f}", f"{r['z']:.1f}"])  # fmt: skip
    return _table(head, body)


def denoising_gap() -> str:
    """docs/results/denoising_gap.json: gap / spread of each network, time by time."""
    rows = _json("docs/results/denoising_gap.json")
    ts = sorted({r["t"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["t"]): r for r in rows}
    head = ["network (checkpoint)", *(f"{t:g}" for t in ts), "MSE ratio 0.3", "MSE ratio 0.666"]
    body = []
    for m in models:
        cells = [f"{by[m, t]['gap_over_spread']:.2f}" if (m, t) in by else "-" for t in ts]
        ratio = [
            f"{by[m, t]['mse_network'] / by[m, t]['mse_exact']:.2f}" if (m, t) in by else "-" for t in (0.3, 0.666)
        ]
        body.append([f"`{m}`", *cells, *ratio])
    return _table(head, body)


def memorisation() -> str:
    """docs/results/memorisation.json: the summary table, then each scan."""
    rows = _json("docs/results/memorisation.json")
    head = ["dataset", "N", "$t$ collapse, exact", "$t_C$ Biroli (entropy / Gaussian)", "$t$ measured (network)",
            "same rule, exact score", "copy fraction (network / exact)", "command"]  # fmt: skip
    body = []
    for r in rows:
        if r["t_measured"] is None or math.isnan(r["t_measured"]):
            last = r["network_scan"][0]
            measured = f"never ({last['n_owned']} of {r['n_train']} at $t = {last['t']:g}$)"
        else:
            lo, hi = r["t_measured_bracket"]
            measured = f"{r['t_measured']:g} (bracket {lo:g} to {hi:g})"
        body.append([r["dataset"], r["n_train"], _f(r["t_collapse_exact"], 5),
                     f"{r['t_C_biroli_entropy']:.4f} / {r['t_C_biroli_gaussian']:.4f}", measured,
                     f"{r['t_exact_same_rule']:g}", f"{r['copy_fraction']:.3f} / {r['copy_fraction_exact']:.3f}",
                     f"`{r['command']}`"])  # fmt: skip
    out = _table(head, body)
    for r in rows:
        ts = [s["t"] for s in r["network_scan"]]
        net = {s["t"]: s for s in r["network_scan"]}
        exact = {s["t"]: s for s in r["exact_scan"]}
        table = [
            [label, *(str(scan[t][key]) if t in scan else "-" for t in ts)]
            for label, scan, key in (
                ("network: attractors", net, "n_attractors"),
                ("network: owned images", net, "n_owned"),
                ("exact: attractors", exact, "n_attractors"),
                ("exact: owned images", exact, "n_owned"),
            )
        ]
        out += f"\nN = {r['n_train']}, attractors and owned images against $t$:\n\n" + _table(["$t$", *ts], table)
    return out


def n_sweep() -> str:
    """docs/results/n_sweep.json: the breaking time of networks trained on N images against the predictions."""
    rows = sorted(_json("docs/results/n_sweep.json"), key=lambda r: r["n_train"])
    head = ["N", "steps", "measured", "exact first bifurcation", "exact macroscopic", "equal-norm", "Biroli",
            "gap to exact", "copies", "loss change, last 1,000 steps"]  # fmt: skip
    body = []
    for r in rows:
        t, loss = r.get("t_measured"), (r.get("loss") or {}).get("last_change")
        body.append([
            f"{r['n_train']:,}", "-" if r.get("step") is None else f"{r['step']:,}",
            "no break" if t is None else f"**{_f(t, 4)}**", _f(r.get("t_exact"), 4),
            _f(r.get("t_macroscopic"), 4), _f(r.get("t_c_equal_norm"), 4), _f(r.get("t_c_biroli"), 4),
            _pct(r.get("relative_gap")), "-" if r.get("copy_share") is None else f"{r['copy_share']:.2f}", _pct(loss),
        ])  # fmt: skip
    return _table(head, body)


def fid_knee() -> str:
    """docs/results/fid_knee.json: the knee of FID against the late start from N(0, I), beside the predictions."""
    doc = _json("docs/results/fid_knee.json")
    head = ["data", "FID at $t_{start} = 1$", "knee (3 se)", "knee (+50%)", "exact first bifurcation",
            "exact macroscopic", "equal-norm", "Biroli"]  # fmt: skip
    body = []
    for name, e in doc["datasets"].items():
        k = {q["tolerance"]: q for q in e["knees"]}
        p, t1 = e["predictions"], e["rows"][-1]
        reduced = " (reduced search)" if p["reduced_search"] else ""
        body.append([
            name, _pm(t1["fid"], t1["se"], 1), f"**{_pm(k['3se']['knee'], k['3se']['se'])}**",
            _pm(k["50%"]["knee"], k["50%"]["se"]), _f(p["t_exact"], 4) + reduced, _f(p["t_macroscopic"], 4) + reduced,
            _f(p["t_c_equal_norm"], 4), _f(p["t_c_biroli"], 4),
        ])  # fmt: skip
    return _table(head, body)


def _which_rows() -> list[dict]:
    """The rows of the combined table: one per network, its measurements and the predictions for its images."""
    bench, knee = _json("benchmarks/results.json"), _json("docs/results/fid_knee.json")["datasets"]
    nets = {(r["dataset"], r["net"]["attn"]): r for r in _json("docs/results/28x28/breaking_networks.json")["rows"]}
    ls, spec = _maybe("docs/results/local_score.json"), _maybe("docs/results/speciation.json")
    rows = []
    for r in sorted(_json("docs/results/28x28/breaking_time.json"), key=lambda r: r["dataset"], reverse=True):
        key = {"mnist": "mnist", "fashion-mnist": "fashion"}[r["dataset"]]
        k = {q["tolerance"]: q for q in knee[r["dataset"]]["knees"]}["3se"]
        net = f"recipe ({r['train_steps']:,} steps)"
        rows.append({"data": r["dataset"], "N": r["n_train"], "net": net, "fixed": r["t_c_measured"],
                     "knee": (k["knee"], k["se"]), "exact": bench[key]["t_c"], "macro": bench[key].get("macroscopic_t"),
                     "reduced": bench[key]["options"]["n_seeds"] < 256, "equal_norm": r["t_c_equal_norm"],
                     "biroli": r["t_c_biroli"]})  # fmt: skip
    conv = nets.get(("fashion-mnist", False))
    if conv is not None:
        full = next(r for r in rows if r["data"] == "fashion-mnist")
        rows.append(full | {"net": f"no attention ({conv['step']:,} steps)", "fixed": conv["t_c_measured"],
                            "knee": None})  # fmt: skip
    pair = nets.get(("mnist", True))
    if spec is not None:
        e = bench.get("mnist-1-8", {})
        net = f"recipe ({spec['network']['train_step']:,} steps)"
        rows.append({"data": "mnist (1, 8)", "N": spec["data"]["n_train"], "net": net,
                     "fixed": None if pair is None else pair["t_c_measured"], "unmeasured": pair is None,
                     "cloning": (spec["network"]["t_S"], spec["network"]["t_S_se"]), "exact": e.get("t_c"),
                     "macro": e.get("macroscopic_t"), "reduced": False, "exact_cloning": spec["exact"]["t_S_posterior"],
                     "equal_norm": spec["theory"].get("t_c_equal_norm"), "biroli": spec["theory"]["t_S"]})  # fmt: skip
    for r in sorted(_json("docs/results/n_sweep.json"), key=lambda r: r["n_train"]):
        if r.get("step") is not None:
            b = (ls or {}).get("breaking_time", {})
            rows.append(
                {
                    "data": "fashion-mnist",
                    "N": r["n_train"],
                    "net": f"recipe ({r['step']:,} steps)",
                    "fixed": r.get("t_measured"),
                    "exact": r.get("t_exact"),
                    "macro": r.get("t_macroscopic"),
                    "reduced": False,
                    "equal_norm": r.get("t_c_equal_norm"),
                    "biroli": r.get("t_c_biroli"),
                    "local_score": b.get("t_measured") if b.get("n_train") == r["n_train"] else None,
                }
            )
    return rows


def which_breaking_time() -> str:
    """The combined table: three measurements on each network against the predictions for its training images."""
    head = ["data", "N", "network", "fixed points", "cloning $t_S$", "FID knee", "exact first bifurcation",
            "exact macroscopic", "local score machine", "equal-norm", "$\\tfrac12\\ln\\Lambda$"]  # fmt: skip
    body = []
    for r in _which_rows():
        red = " (reduced)" if r.get("reduced") else ""
        ls = r.get("local_score")
        body.append([
            r["data"], f"{r['N']:,}", r["net"],
            "-" if r.get("unmeasured") else "no break" if r.get("fixed") is None else f"**{_f(r['fixed'], 4)}**",
            _pm(*r["cloning"]) if r.get("cloning") else "-", _pm(*r["knee"]) if r.get("knee") else "-",
            _f(r.get("exact"), 4) + red, _f(r.get("macro"), 4) + red,
            _f(ls, 4), _f(r.get("equal_norm"), 4), _f(r.get("biroli"), 4),
        ])  # fmt: skip
    return _table(head, body)


def local_score() -> str:
    """docs/results/local_score.json: the local score machine calibrated against each network, r^2 per time."""
    doc = _json("docs/results/local_score.json")
    nets = doc["networks"]
    head = ["t"] + [f"{role}: {c}" for role in nets for c in ("P", "$r^2$ LS", "$r^2$ exact")]
    rows = zip(*(n["rows"] for n in nets.values()), strict=True)
    cells = [lambda r: r["patch"], lambda r: _f(r["r2_median"], 3), lambda r: _f(r["r2_median_of"]["exact"], 3)]
    body = [[_f(rs[0]["t"], 3)] + [c(r) for r in rs for c in cells] for rs in rows]
    body.append(
        ["median, all"]
        + [
            c
            for n in nets.values()
            for c in ("", _f(n["r2_median_overall"]["ls"], 3), _f(n["r2_median_overall"]["exact"], 3))
        ]
    )
    return _table(head, body)


def speciation_table() -> str:
    """docs/results/speciation.json: Biroli et al.'s speciation time on MNIST (1, 8), ours beside the published row."""
    d = _json("docs/results/speciation.json")
    th, net, pub, ex = d["theory"], d["network"], d["published"], d["exact"]
    head = [
        "",
        "images",
        "pixels",
        "$\\Lambda$",
        "theory $t_S$ (OU)",
        "measured $t_S$ (OU)",
        "measured / theory (OU)",
        "theory $t_S$ (our t)",
        "measured $t_S$ (our t)",
        "exact cloning $t_S$ (our t)",
    ]
    ours = ["this project", f"{d['data']['n_train']:,} (npm)", "[-1, 1]",
            f"{th['Lambda']:.2f} ({th['Lambda_paper']:.2f} in [0, 1])", _f(th["t_S_ou"], 3),
            _f(net["t_S_ou"], 3), _f(d["ratios"]["measured_over_theory_ou"], 3), _f(th["t_S"], 4),
            _pm(net["t_S"], net["t_S_se"], 4), _f(ex["t_S_posterior"], 4)]  # fmt: skip
    theirs = ["Biroli et al., Table 1", f"{pub['n_train']:,}", "[0, 1], centred", _f(pub["Lambda"], 2),
              _f(pub["t_S_ou"], 3),
              _f(pub["measured_t_S_ou"], 3), _f(pub["measured_over_theory_ou"], 3), _f(pub["t_S"], 4),
              _f(pub["measured_t_S"], 4), "-"]  # fmt: skip
    return _table(head, [ours, theirs])
