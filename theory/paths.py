"""The repository's folders, found from this package's location, never from the working directory.

JupyterLab starts a notebook's kernel in notebooks/, papermill wherever it is told to, a script in the
folder it is called from: paths such as ``docs/results`` written relative to the working directory
break in all but one of them. Here they are resolved from the checkout that holds this package (an
editable install, ``pip install -e .``, or a process started inside the checkout).

    >>> from theory.paths import repo_root
    >>> sorted(p.name for p in repo_root().iterdir() if p.name in ("docs", "notebooks", "theory"))
    ['docs', 'notebooks', 'theory']

``SBD_FIGURES_DIR`` (an environment variable) moves the default figure folder, so that tests and
previews can run the notebooks with their defaults without touching the committed figures.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "figures_dir", "results_dir"]

FIGURES_ENV = "SBD_FIGURES_DIR"


def _is_checkout(p: Path) -> bool:
    return (p / "docs").is_dir() and (p / "notebooks").is_dir() and (p / "theory").is_dir()


def repo_root() -> Path:
    """The checkout holding docs/ and notebooks/: the folder above this package (an editable install),
    else the first folder upwards from the working directory that holds them (a wheel install used
    from inside a checkout)."""
    here = Path(__file__).resolve().parents[1]
    if _is_checkout(here):
        return here
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        if _is_checkout(p):
            return p
    raise FileNotFoundError(
        f"no checkout of the repository (a folder with docs/, notebooks/ and theory/) above {here} or {cwd}: "
        "install it with `pip install -e .` from a clone, or pass the folders explicitly (fig_dir=..., results=...)"
    )


def figures_dir(notebook: str, fig_dir=None) -> Path:
    """The folder a notebook writes its figures to, created: ``fig_dir`` when given (relative to the working
    directory, as the caller wrote it), else ``$SBD_FIGURES_DIR/<notebook>`` when that variable is set,
    else ``docs/figures/<notebook>`` of the repository."""
    if fig_dir is None:
        base = os.environ.get(FIGURES_ENV)
        fig_dir = Path(base) / notebook if base else repo_root() / "docs" / "figures" / notebook
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    return fig_dir


def results_dir(results=None) -> Path:
    """The folder of the committed results (``docs/results`` of the repository), or ``results`` when given;
    it must exist (a FileNotFoundError names it otherwise)."""
    path = Path(results) if results is not None else repo_root() / "docs" / "results"
    if not path.is_dir():
        raise FileNotFoundError(f"results={str(path)!r} is not a folder (expected the pipelines' JSON files there)")
    return path
