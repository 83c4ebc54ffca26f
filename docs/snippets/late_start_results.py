"""Result snippets of the late start: the digits and 28x28 tables, seeds, the start rule, diffusers, protocol."""

from __future__ import annotations

from .common import _json, _table


def _late_start(path: str):
    from empirical.pipelines.late_start import plots

    return plots, _json(path)


def late_start_digits() -> str:
    """The digits table (each sampler's first grid): ``markdown_table`` of late_start_digits.json."""
    plots, curves = _late_start("docs/results/late_start_digits.json")
    return plots.markdown_table(curves) + "\n"


def late_start_ratios() -> str:
    plots, curves = _late_start("docs/results/late_start_digits.json")
    return plots.ratio_table(curves) + "\n"


def late_start_entropy() -> str:
    plots, curves = _late_start("docs/results/late_start_digits.json")
    return plots.entropy_table(curves) + "\n"


def _best_grid(path: str) -> str:
    plots, curves = _late_start(path)
    return f"`best_grid_table` of `{path}`:\n\n" + plots.best_grid_table(curves) + "\n"


def late_start_best_grid() -> str:
    return _best_grid("docs/results/late_start_digits.json")


def late_start_28_mnist() -> str:
    return _best_grid("docs/results/late_start_mnist.json")


def late_start_28_fashion() -> str:
    return _best_grid("docs/results/late_start_fashion-mnist.json")


def samplers_28_mnist() -> str:
    return _best_grid("docs/results/28x28-samplers/late_start_mnist.json")


def samplers_28_fashion() -> str:
    return _best_grid("docs/results/28x28-samplers/late_start_fashion-mnist.json")


def paper_protocol() -> str:
    """The paper's MNIST protocol (leading grid): ``markdown_table`` of paper_protocol/late_start_mnist.json."""
    plots, curves = _late_start("docs/results/paper_protocol/late_start_mnist.json")
    return plots.markdown_table(curves) + "\n"


def paper_protocol_inception() -> str:
    """The Inception FID of DDIM on the paper's protocol against the paper's ratios."""
    curves = _json("docs/results/paper_protocol/late_start_mnist.json")
    by = {(r["n_steps"], r["init"], r["t_start_rule"]): r for r in curves["rows"] if r["sampler"] == "ddim"}
    paper, inc = curves["summary"]["paper_ddim_ratios"], curves["summary"]["inception"]
    head = ["n", "vanilla", "gls at $t_c$", "ratio", "gls at the sweep's best ($t_\\text{start}$)", "ratio", "paper"]
    body = []
    for n in sorted({k[0] for k in by}):
        v, g, b = (
            by[n, i, r]["fid_inception"] for i, r in (("vanilla", "none"), ("gls", "theory"), ("gls", "sweep-best"))
        )
        t_best = by[n, "gls", "sweep-best"]["t_start"]
        body.append([n, f"{v:.1f}", f"{g:.1f}", f"**{v / g:.2f}x**", f"{b:.1f} ({t_best:g})", f"{v / b:.2f}x",
                     f"{paper[str(n)]}x"])  # fmt: skip
    return f"Inception FID (N = {inc['n']}, floor {inc['fid_floor']:.1f}), DDIM:\n\n" + _table(head, body)


def _cells_table(path: str) -> str:
    from empirical.pipelines.late_start import cells

    res = _json(path)
    out = f"`ratio_table` of `{path}`"
    if res.get("inception"):
        out += f" (Inception FID floor at N = {res['inception']['n']:,}: **{res['inception']['fid_floor']:.2f}**)"
    return out + ":\n\n" + cells.ratio_table(res["cells"]) + "\n"


def inception_28_mnist() -> str:
    return _cells_table("docs/results/28x28-samplers/inception_mnist.json")


def inception_28_fashion() -> str:
    return _cells_table("docs/results/28x28-samplers/inception_fashion-mnist.json")


def late_start_seeds() -> str:
    """The seed noise of chosen cells: gls, gls-analytic and teleport at t_c over seeds (late_start_cells_*.json)."""
    head = ["data, cell", "gls", "gls-analytic", "teleport"]
    body = []
    for name in ("fashion-mnist", "mnist"):
        res = _json(f"docs/results/late_start_cells_{name}.json")
        cells = {}
        for c in res["cells"]:
            cells.setdefault((c["sampler"], c["grid"], c["n_steps"]), {})[c["init"]] = c
        for (sampler, grid, n), by in cells.items():
            row = [f"{name}, {sampler} {grid} $n = {n}$"]
            for init in ("gls", "gls-analytic", "teleport"):
                c = by.get(init)
                row.append("-" if c is None else ", ".join(f"{v:.2f}" for v in c["fid"]) +
                           f": **{c['mean']:.2f} ± {c['std']:.2f}**")  # fmt: skip
            body.append(row)
    return "FID per seed, then mean ± standard deviation over the seeds:\n\n" + _table(head, body)


def late_start_rule() -> str:
    """gls at the n-dependent start rule over gls at the sweep's best (late_start_rule_*.json), with t_c's ratio."""
    out, counts = [], []
    tables = {name: _json(f"docs/results/late_start_rule_{name}.json") for name in ("fashion-mnist", "mnist")}
    steps = sorted({c["n_steps"] for res in tables.values() for c in res["cells"]})
    keys = list(dict.fromkeys((c["sampler"], c["grid"]) for res in tables.values() for c in res["cells"]))
    head = ["sampler, grid", *(f"{name} $n = {n}$" for name in tables for n in steps)]
    for sampler, grid in keys:
        row = [f"{sampler} {grid}"]
        for res in tables.values():
            by = {c["n_steps"]: c for c in res["cells"] if (c["sampler"], c["grid"]) == (sampler, grid)}
            for n in steps:
                c = by[n]
                r, r_tc = (
                    c["fid_at_table_seed"] / c["table"]["gls_sweep_best"],
                    c["table"]["gls_theory"] / c["table"]["gls_sweep_best"],
                )
                row.append(("**{:.2f}**" if c["within_10pct"] else "{:.2f}").format(r) + f" ({r_tc:.2f})")
        out.append(row)
    for name, res in tables.items():
        starts = ", ".join(f"{t:.4f}" for t in sorted({c["t_start"] for c in res["cells"]}))
        cmp = res["comparison"]
        counts.append(f"{name}: $t_\\text{{start}}$ = {starts}; within 10% of the sweep's best in "
                      f"{cmp['within_10pct']} of {cmp['compared']} cells")  # fmt: skip
    return _table(head, out) + "\n" + "; ".join(counts) + ".\n"


def diffusers_fid() -> str:
    """docs/results/diffusers_fid.json: our samplers against diffusers' schedulers, two seeds."""
    rows = _json("docs/results/diffusers_fid.json")
    head = ["sampler", "diffusers scheduler", "$n$", "NFE (ours / diffusers)", "first $t$", "FID ours, seeds",
            "FID diffusers, seeds", "ours - diffusers", "seed range", "max $\\vert\\Delta x\\vert$"]  # fmt: skip

    def seeds(v, fmt):
        return " / ".join(format(x, fmt) for x in v)

    body = [
        [r["sampler"], f"`{r['scheduler']}`", r["n_steps"], f"{r['nfe_ours']} / {r['nfe_diffusers']}",
         f"{r['t_first']:.3f}", seeds(r["fid_ours"], ".3f"), seeds(r["fid_diffusers"], ".3f"),
         seeds(r["fid_diff"], ".1e"), f"{r['seed_range_ours']:.2f}", f"{r['max_abs_sample_diff']:.1e}"]
        for r in rows
    ]  # fmt: skip
    return _table(head, body)
