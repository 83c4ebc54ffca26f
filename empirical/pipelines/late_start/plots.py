"""Figures and tables of the Gaussian late start, drawn from ``late_start_<dataset>.json`` (the pipeline
``empirical.pipelines.late_start.pipeline`` writes it; the notebook and the docs read it), so every view shows the same
numbers.

    from empirical.pipelines.late_start.plots import late_start_figures, markdown_table
    from theory.paths import results_dir
    curves = json.loads((results_dir() / "late_start_digits.json").read_text())
    figs = late_start_figures(curves)   # {"fid_vs_start", "diversity", "samples", "ratios"}: Figures
    print(markdown_table(curves))       # the table of docs/late_start.md
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from empirical.pipelines.plots import save_figures

__all__ = [
    "late_start_figures",
    "plot_late_start",
    "markdown_table",
    "entropy_table",
    "ratio_table",
    "first_grid",
    "first_grid_rows",
    "best_grid_table",
]

WITHIN = 1.1  # "within 10% of the sweep's best": FID <= 1.1 x the sweep-best row's FID
_INIT_STYLE = {"late": ("C0", "late start, N(0, I)"), "gls": ("C1", "Gaussian late start")}


def first_grid(curves: dict, key: str) -> list[dict]:
    """The items of curves[key] (rows, sweep curves, sample grids) on each sampler's first grid, the one the
    figures and tables show (items from before the grid field ran on the uniform grid)."""
    first = {}
    for r in curves["rows"]:
        first.setdefault(r["sampler"], r.get("grid", "uniform"))
    return [c for c in curves[key] if c.get("grid", "uniform") == first.get(c["sampler"], "uniform")]


def first_grid_rows(curves: dict) -> dict:
    """{(sampler, n_steps, init, t_start_rule): row} on each sampler's first grid."""
    return {(r["sampler"], r["n_steps"], r["init"], r["t_start_rule"]): r for r in first_grid(curves, "rows")}


def _order(curves: dict) -> tuple[list, list]:
    cfg = curves["config"]
    return list(cfg["samplers"]), list(cfg["n_steps"])


def _paper(ratios: dict, n: int):
    """The paper's ratio at n steps (JSON turns the int keys into strings), or None."""
    return ratios.get(str(n), ratios.get(n))


def fid_vs_start_figure(curves: dict):
    """FID (project features) against t_start: one panel per (sampler, n), late and gls, with t_c, best, knee."""
    s = curves["summary"]
    samplers, steps = _order(curves)
    sweep = {(c["sampler"], c["n_steps"], c["init"]): c for c in first_grid(curves, "sweep")}
    fig, axes = plt.subplots(
        len(samplers), len(steps), figsize=(3.6 * len(steps), 2.8 * len(samplers)), squeeze=False, sharex=True
    )
    for i, sampler in enumerate(samplers):
        for j, n in enumerate(steps):
            ax = axes[i, j]
            for init, (colour, label) in _INIT_STYLE.items():
                c = sweep[sampler, n, init]
                ax.plot(c["t"], c["fid"], ".-", color=colour, label=label)
                ax.plot(c["best_t"], c["best_fid"], "*", color=colour, ms=13, mec="k", label=f"best ({init})")
                ax.plot(c["knee_t"], c["knee_fid"], "v", color=colour, ms=8, mec="k", label=f"knee ({init})")
            conv = curves.get("converged_sweep")
            if conv:
                label = f"gls, ddim-{conv['n_steps']}: the Gaussian's own cost"
                ax.plot(conv["t"], conv["fid"], "-", color="grey", lw=1.2, label=label)
            ax.axvline(
                s["t_c_predicted"], color="C3", ls="--", lw=1.2, label=f"predicted t_c = {s['t_c_predicted']:.3f}"
            )
            ax.axhline(s["fid_floor"]["fid"], color="grey", ls=":", lw=1, label="floor (train half vs half)")
            ax.set_yscale("log")
            ax.set_title(f"{sampler}, n = {n}", fontsize=10)
            if i == len(samplers) - 1:
                ax.set_xlabel("t_start (forward time)")
            if j == 0:
                ax.set_ylabel(f"FID (classifier), N = {sweep[sampler, n, 'gls']['n_samples']}")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(f"{s['dataset']}: FID against the start time (t_start = 1 for 'late' is the vanilla start)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def diversity_figure(curves: dict):
    """Entropy (bits) of the predicted class composition against n, and the composition at the smallest n."""
    s, rows = curves["summary"], first_grid_rows(curves)
    samplers, steps = _order(curves)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    for k, sampler in enumerate(samplers):
        ent_v = [rows[sampler, n, "vanilla", "none"]["entropy_bits"] for n in steps]
        ent_g = [rows[sampler, n, "gls", "theory"]["entropy_bits"] for n in steps]
        a1.plot(steps, ent_v, "o--", color=f"C{k}", label=f"{sampler}, vanilla")
        a1.plot(steps, ent_g, "s-", color=f"C{k}", label=f"{sampler}, gls (theory t_start)")
    a1.axhline(s["entropy_bits_train"], color="k", lw=1, label="training set (labels)")
    a1.set(xlabel="steps n", ylabel="class entropy (bits)", xticks=steps, title="diversity of the generated classes")
    a1.legend(fontsize=6.5)
    n0 = steps[0]
    sampler = "ddim" if "ddim" in samplers else samplers[0]
    bars = {
        "training set": s["composition_train"],
        f"{sampler}-{n0}, vanilla": rows[sampler, n0, "vanilla", "none"]["composition"],
        f"{sampler}-{n0}, gls": rows[sampler, n0, "gls", "theory"]["composition"],
    }
    width = 0.8 / len(bars)
    classes = np.arange(len(s["composition_train"]))
    for k, (label, comp) in enumerate(bars.items()):
        a2.bar(classes + (k - 1) * width, comp, width, label=label, color=("grey", "C0", "C1")[k])
    n_samples = rows[sampler, n0, "vanilla", "none"]["n_samples"]
    a2.set(xlabel="predicted class", ylabel="fraction", xticks=classes, title=f"class composition (N = {n_samples})")
    a2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _strip(images: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Images (hex strings of 8-bit levels) side by side with a 1-pixel gap."""
    h, w = shape
    imgs = [np.frombuffer(bytes.fromhex(x), dtype=np.uint8).reshape(h, w) / 255.0 for x in images]
    gap = np.ones((h, 1))
    return np.concatenate([m for img in imgs for m in (img, gap)][:-1], axis=1)


def samples_figure(curves: dict):
    """Sample grids: per n, a strip of images for each sampler, vanilla and gls (theory's t_start)."""
    s = curves["summary"]
    shape = tuple(s["image_shape"])
    samplers, steps = _order(curves)
    grids = {(g["sampler"], g["n_steps"], g["init"]): g["hex"] for g in first_grid(curves, "samples")}
    labels = ["training"] + [f"{sp}, {init}" for sp in samplers for init in ("vanilla", "gls")]
    fig, axes = plt.subplots(len(labels), len(steps), figsize=(3.6 * len(steps), 0.55 * len(labels) + 0.6))
    axes = np.atleast_2d(axes).reshape(len(labels), len(steps))
    for j, n in enumerate(steps):
        strips = [curves["train_samples"]] + [grids[sp, n, init] for sp in samplers for init in ("vanilla", "gls")]
        for i, (label, images) in enumerate(zip(labels, strips, strict=True)):
            ax = axes[i, j]
            ax.imshow(_strip(images, shape), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            if i == 0:
                ax.set_title(f"n = {n}", fontsize=10)
    fig.suptitle(f"{s['dataset']}: samples (gls starts at t_c = {s['t_c_predicted']:.3f})", fontsize=10)
    fig.tight_layout()
    return fig


def ratios_figure(curves: dict):
    """FID(vanilla) / FID(gls) per sampler and n (project features), the paper's MNIST DDIM ratios beside."""
    s, rows = curves["summary"], first_grid_rows(curves)
    samplers, steps = _order(curves)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.84 / (2 * len(samplers) + 1)
    x = np.arange(len(steps))
    k = 0
    for i, sampler in enumerate(samplers):
        for rule, hatch, alpha in (("theory", None, 1.0), ("sweep-best", "///", 0.5)):
            r = [rows[sampler, n, "vanilla", "none"]["fid"] / rows[sampler, n, "gls", rule]["fid"] for n in steps]
            label = f"{sampler}, gls at " + ("t_c" if rule == "theory" else "the sweep's best")
            ax.bar(x + k * width, r, width, color=f"C{i}", alpha=alpha, hatch=hatch, label=label)
            k += 1
    paper = [_paper(s["paper_ddim_ratios"], n) for n in steps]
    ax.bar(x + k * width, [np.nan if p is None else p for p in paper], width, color="k", label="paper, DDIM (MNIST)")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(x + k * width / 2, [f"n = {n}" for n in steps])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set(ylabel="FID vanilla / FID gls", title=f"{s['dataset']}: gain of the Gaussian late start")
    ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    return fig


def late_start_figures(curves: dict) -> dict:
    """{name: matplotlib Figure} for one data set's ``late_start_<dataset>.json``."""
    return {
        "fid_vs_start": fid_vs_start_figure(curves),
        "diversity": diversity_figure(curves),
        "samples": samples_figure(curves),
        "ratios": ratios_figure(curves),
    }


def plot_late_start(curves: dict, folder, dataset: str) -> list[Path]:
    """Write ``late_start_figures`` as ``folder/late_start_<dataset>_<name>.png``."""
    return save_figures(late_start_figures(curves), folder, f"late_start_{dataset}", dpi=100)


# --- markdown tables (the docs page and the notebook print them) -------------------------------------
def markdown_table(curves: dict) -> str:
    """The paper's table: per sampler and n, FID (project features) vanilla vs gls, the ratio, and the other starts."""
    rows = first_grid_rows(curves)
    samplers, steps = _order(curves)
    n = curves["rows"][0]["n_samples"]
    out = [
        "| sampler | n | NFE | vanilla | gls, t_c (theory) | ratio | gls, sweep best (t) | ratio "
        "| gls, knee (t) | late N(0,I), sweep best (t) | KID vanilla / gls | Inception FID vanilla / gls |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sampler in samplers:
        for k in steps:
            v, g = rows[sampler, k, "vanilla", "none"], rows[sampler, k, "gls", "theory"]
            b, kn, la = (
                rows[sampler, k, i, r]
                for i, r in (("gls", "sweep-best"), ("gls", "sweep-knee"), ("late", "sweep-best"))
            )
            inc = "-"
            if v.get("fid_inception") is not None and g.get("fid_inception") is not None:
                inc = f"{v['fid_inception']:.1f} / {g['fid_inception']:.1f} (N = {v['n_inception']})"
            out.append(
                f"| {sampler} | {k} | {v['nfe']} | {v['fid']:.2f} | {g['fid']:.2f} | {v['fid'] / g['fid']:.2f}x "
                f"| {b['fid']:.2f} ({b['t_start']:.2f}) | {v['fid'] / b['fid']:.2f}x "
                f"| {kn['fid']:.2f} ({kn['t_start']:.2f}) | {la['fid']:.2f} ({la['t_start']:.2f}) "
                f"| {v['kid']:.3g} / {g['kid']:.3g} | {inc} |"
            )
    s = curves["summary"]
    out.append("")
    out.append(
        f"FID and KID on the project classifier's features, N = {n} generated images against the {s['n_train']} "
        f"training images; floor (two training halves, N = {s['fid_floor']['n'][0]} / {s['fid_floor']['n'][1]}): "
        f"FID {s['fid_floor']['fid']:.2f}."
    )
    return "\n".join(out)


def ratio_table(curves: dict) -> str:
    """FID(vanilla) / FID(gls at t_c) per sampler and n, next to the paper's MNIST DDIM ratios."""
    rows = first_grid_rows(curves)
    samplers, steps = _order(curves)
    paper = curves["summary"]["paper_ddim_ratios"]
    head = "| gls at | " + " | ".join(f"n = {n}" for n in steps) + " |"
    out = [head, "|---" * (len(steps) + 1) + "|"]
    for rule, label in (("theory", "t_c"), ("sweep-best", "sweep best")):
        for sampler in samplers:
            r = [rows[sampler, n, "vanilla", "none"]["fid"] / rows[sampler, n, "gls", rule]["fid"] for n in steps]
            out.append(f"| {sampler}, {label} | " + " | ".join(f"{x:.2f}x" for x in r) + " |")
    out.append("| **paper, DDIM (MNIST)** | " + " | ".join(f"{_paper(paper, n)}x" for n in steps) + " |")
    return "\n".join(out)


def entropy_table(curves: dict) -> str:
    """Entropy (bits) of the predicted class composition per sampler and n, vanilla / gls at t_c."""
    rows, s = first_grid_rows(curves), curves["summary"]
    samplers, steps = _order(curves)
    out = [
        "| sampler | " + " | ".join(f"n = {n}: vanilla / gls" for n in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for sampler in samplers:
        pairs = [(rows[sampler, n, "vanilla", "none"], rows[sampler, n, "gls", "theory"]) for n in steps]
        cells = [f"{v['entropy_bits']:.3f} / {g['entropy_bits']:.3f}" for v, g in pairs]
        out.append(f"| {sampler} | " + " | ".join(cells) + " |")
    out.append(
        f"| training set | {s['entropy_bits_train']:.3f} (labels), "
        f"{s['entropy_bits_train_predicted']:.3f} (predicted) |" + " |" * (len(steps) - 1)
    )
    return "\n".join(out)


def best_grid_table(curves: dict) -> str:
    """Each sampler on the grid where its vanilla start scores best, per n: the baseline as its authors would
    run it, against gls (and the teleportation, where it ran) at the theory's t_start on that same grid, gls at
    t_c on its own best grid, and the best gls of the sweep (its grid and t_start). Ratios > 1: the late start
    helps (rows without a grid field ran on the uniform grid). The last line counts the (sampler, grid, n) cells
    whose gls at t_c scores within 10% of the sweep's best gls on that grid."""
    key = ("sampler", "grid", "n_steps", "init", "t_start_rule")
    by = {tuple(r.get(k, "uniform") for k in key): r for r in curves["rows"]}
    samplers, steps = _order(curves)
    teleport = any(k[3] == "teleport" for k in by)
    out = [
        "| sampler | n | NFE | vanilla (best grid) | gls at t_c, same grid | ratio | "
        + ("teleport at t_c | " if teleport else "")
        + "gls at t_c, best grid | ratio | gls at the sweep's best (grid, t_start) |",
        "|---|---|---|---|---|---|" + ("---|" if teleport else "") + "---|---|---|",
    ]
    within = cells = 0
    for sampler in samplers:
        grids = sorted({k[1] for k in by if k[0] == sampler})
        for n in steps:
            v = min((by[sampler, g, n, "vanilla", "none"] for g in grids), key=lambda r: r["fid"])
            at_tc = {g: by[sampler, g, n, "gls", "theory"] for g in grids}
            best = {g: by[sampler, g, n, "gls", "sweep-best"] for g in grids}
            grid = v.get("grid", "uniform")
            g_tc, g_best = min(at_tc.values(), key=lambda r: r["fid"]), min(best.values(), key=lambda r: r["fid"])
            tel = by.get((sampler, grid, n, "teleport", "theory"))
            tel = "-" if tel is None else _fid(tel["fid"])
            out.append(
                f"| {sampler} | {n} | {v['nfe']} | {_fid(v['fid'])} ({grid}) | {_fid(at_tc[grid]['fid'])} "
                f"| {v['fid'] / at_tc[grid]['fid']:.2f}x | "
                + (f"{tel} | " if teleport else "")
                + f"{_fid(g_tc['fid'])} ({g_tc.get('grid', 'uniform')}) | {v['fid'] / g_tc['fid']:.2f}x "
                f"| {_fid(g_best['fid'])} ({g_best.get('grid', 'uniform')}, {g_best['t_start']:.2g}) |"
            )
            within += sum(at_tc[g]["fid"] <= WITHIN * best[g]["fid"] for g in grids)
            cells += len(grids)
    out.append(f"\ngls at t_c within 10% of the sweep's best gls on the same grid: {within} of {cells} cells")
    return "\n".join(out)


def _fid(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"  # three significant digits from 1 to 999
