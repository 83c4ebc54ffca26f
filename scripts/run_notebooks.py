"""Regenerate every notebook in notebooks/ with papermill: executed copies and figures for the docs.

    python scripts/run_notebooks.py            # full parameters (the publication figures)
    python scripts/run_notebooks.py --smoke    # the notebooks' fast defaults
    python scripts/run_notebooks.py --only 01  # notebooks whose name contains "01"

Executed notebooks go to docs/notebooks/ (not committed: they hold outputs; the docs site shows them as
pages, docs/hooks.py), figures and the parameters of the run to docs/figures/<notebook>/ (committed;
docs/notebooks.md shows them). Each kernel starts in notebooks/, as JupyterLab starts it: the notebooks
resolve their folders from the repository (theory.paths), wherever they run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="run with the notebooks' fast defaults")
    p.add_argument("--only", default="", help="run only notebooks whose file name contains this")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where notebooks/ and figures/ go")
    args = p.parse_args(argv)
    import papermill as pm

    notebooks = sorted(nb for nb in (ROOT / "notebooks").glob("*.ipynb") if args.only in nb.name)
    if not notebooks:
        print(f"no notebook in notebooks/ matches {args.only!r}", file=sys.stderr)
        return 2
    (args.out / "notebooks").mkdir(parents=True, exist_ok=True)
    for i, nb in enumerate(notebooks, 1):
        fig_dir = args.out.resolve() / "figures" / nb.stem
        params = {"full": not args.smoke, "fig_dir": str(fig_dir)}
        print(f"[{i}/{len(notebooks)}] {nb.name} {params}", flush=True)
        t0 = time.perf_counter()
        out = args.out.resolve() / "notebooks" / nb.name
        pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name="python3", cwd=str(nb.parent))
        # the record names the folder relative to the repository: the same in every clone
        rel = fig_dir.relative_to(ROOT) if fig_dir.is_relative_to(ROOT) else fig_dir
        (fig_dir / "params.json").write_text(json.dumps({**params, "fig_dir": str(rel)}, indent=1) + "\n")
        print(f"    done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
