"""The scaling figure of docs/benchmarks.md from benchmarks/results.json (no computation; run after the benchmark).

python benchmarks/plot_scaling.py [--results benchmarks/results.json] [--out docs/figures/benchmarks/scaling.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def panel(ax, rows, key, label, extra=()):
    """Seconds and units of critical_time against ``key`` (N or d), log-log, with the fitted power law."""
    x = np.array([r[key] for r in rows], dtype=float)
    for field, marker in (("units", "o"), ("seconds", "s")):
        y = np.array([r[field] for r in rows], dtype=float)
        slope, icpt = np.polyfit(np.log(x), np.log(y), 1)
        ax.loglog(x, y, marker, label=f"{field}: ~ {label}^{slope:.2f}")
        ax.loglog(x, np.exp(icpt) * x**slope, "k:", lw=0.8)
    for r in extra:
        ax.loglog([r[key]], [r["units"]], "^", label=f"{r['data']} (units)")
    ax.set_xlabel(label)
    ax.legend(fontsize=7)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "figures" / "benchmarks" / "scaling.png"))
    args = p.parse_args()
    res = json.loads(Path(args.results).read_text())
    if "scaling" not in res:
        raise SystemExit(f"{args.results} has no 'scaling' results: run benchmarks/critical_time.py --only scaling")
    full = [res[k] for k in ("mnist", "fashion") if isinstance(res.get(k), dict) and res[k].get("d") == 784]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    panel(axes[0], res["scaling"]["vs_N"], "N", "N", extra=full)
    axes[0].set_title("critical_time against N (d = 784)", fontsize=9)
    panel(axes[1], res["scaling"]["vs_d"], "d", "d")
    axes[1].set_title("against d (N = 1,000)", fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".tmp.png"), dpi=120)
    out.with_suffix(".tmp.png").replace(out)
    print(out)


if __name__ == "__main__":
    main()
