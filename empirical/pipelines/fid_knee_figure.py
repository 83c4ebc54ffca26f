"""The figure of ``python -m empirical fid-knee``: FID against the start time of the late start from N(0, I), with the
knees and the predicted breaking times, drawn from the results file (``empirical.pipelines.fid_knee``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_knee"]

_PRED = (
    ("t_exact", "exact first bifurcation", "C3", "--"),
    ("t_macroscopic", "exact macroscopic", "C1", "--"),
    ("t_c_equal_norm", "equal-norm", "C2", ":"),
    ("t_c_biroli", "Biroli", "C4", ":"),
)


def plot_knee(doc: dict, path) -> Path:
    """FID ± se against t_start, one panel per data set of ``doc`` (the ``out`` file), with the knees (± se, shaded)
    and the predictions as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = {k: v for k, v in doc["datasets"].items() if v.get("rows")}
    fig, axes = plt.subplots(1, len(entries), figsize=(5.5 * len(entries), 6.0), squeeze=False)
    for ax, (dataset, entry) in zip(axes[0], entries.items(), strict=True):
        rows = sorted(entry["rows"], key=lambda r: r["t_start"])
        t, f, se = (np.array([r[k] for r in rows]) for k in ("t_start", "fid", "se"))
        ax.errorbar(t, f, yerr=se, fmt="ko-", ms=3, lw=1, capsize=2, label=f"{entry['spec']['sampler']}, n = "
                    f"{entry['spec']['n_samples']} per t")  # fmt: skip
        ax.axhline(f[-1], color="grey", lw=0.8, label="FID at t_start = 1")
        ax.axhline(entry["floor"]["fid"], color="grey", lw=0.8, ls=":", label="n training images")
        for k, style in zip(entry.get("knees", []), ("-", "-."), strict=False):
            ax.plot(t, f[-1] + np.asarray(k["tol"]), color="grey", ls=style, lw=0.8, label=f"+ {k['tolerance']}")
            if k["knee"] is not None:
                ax.axvline(k["knee"], color="k", ls=style, lw=1.5, label=f"knee ({k['tolerance']}) "
                           f"{k['knee']:.3f} ± {k['se'] or 0:.3f}")  # fmt: skip
                if k["se"]:
                    ax.axvspan(k["knee"] - k["se"], k["knee"] + k["se"], color="k", alpha=0.08)
        pred = entry["predictions"]
        for key, label, colour, style in _PRED:
            if pred.get(key) is not None:
                reduced = key in ("t_exact", "t_macroscopic") and pred.get("reduced_search")
                ax.axvline(pred[key], color=colour, ls=style, lw=1.2,
                           label=f"{label}{' (reduced search)' if reduced else ''} {pred[key]:.3f}")  # fmt: skip
        ax.set(yscale="log", xlabel="t_start (forward time, VP linear)", ylabel="FID (classifier features)",
               title=f"{dataset}: late start from N(0, I)")  # fmt: skip
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
