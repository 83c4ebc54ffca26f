"""Every notebook in notebooks/ runs wherever a user runs it; its checks cell asserts.

Two working directories, as users start kernels:

- from another folder (papermill users; here an empty temporary folder): the whole notebook with its fast
  defaults. A read relative to the working directory fails there, and the folder must stay empty, so a
  notebook that passes touches no path relative to its working directory;
- in notebooks/ (JupyterLab starts each kernel in the notebook's folder): the parameters and setup cells,
  where every path is resolved, then a cell that asserts where they point. Given the first run, nothing
  else in the notebook depends on the working directory, so its computations are not run twice.

Figures go to ``$SBD_FIGURES_DIR/<notebook>`` (a temporary folder), not into the committed docs/figures.
"""

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [nb.stem for nb in NOTEBOOKS]
# The two longest whole-notebook runs (most of their time compiles searches for many data shapes) run with
# ``make test-slow``; the default run executes the other five, and every notebook's paths in its own folder.
SLOW = {"03_high_dimensional_data", "04_schedules_and_samplers"}
WHOLE = [pytest.param(nb, marks=pytest.mark.slow) if nb.stem in SLOW else nb for nb in NOTEBOOKS]
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _code(nb):
    return [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]


def _execute(src: Path, out: Path, cwd: Path) -> nbformat.NotebookNode:
    pm = pytest.importorskip("papermill")
    # A per-cell timeout turns a kernel that stops answering (seen once on a loaded machine) into a failure.
    return pm.execute_notebook(
        str(src), str(out), kernel_name="python3", cwd=str(cwd), progress_bar=False, execution_timeout=1800
    )


@pytest.fixture
def figures(tmp_path, monkeypatch):
    """The kernel inherits the environment: figures go to a temporary folder."""
    monkeypatch.setenv("SBD_FIGURES_DIR", str(tmp_path / "figures"))
    return tmp_path / "figures"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_stripped(nb):
    code = _code(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", []), "the first code cell is the parameters cell"
    assert "assert" in code[-1]["source"], "the last cell checks the results against theory"
    # Paths are parameters that default to None (resolved by theory.paths), never strings relative to the cwd.
    params = {}
    exec(code[0]["source"], {}, params)
    assert params.get("fig_dir", "absent") is None, "fig_dir defaults to None: docs/figures/<notebook>"
    assert params.get("results") is None, "results (where a notebook reads them) defaults to None: docs/results"


@pytest.mark.parametrize("nb", WHOLE, ids=IDS)
def test_notebook_executes_from_another_folder(nb, tmp_path, figures, tmp_path_factory):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # Executed copies are kept for the session: tests/test_site_browser.py builds the site from them.
    executed = tmp_path_factory.getbasetemp() / "executed-notebooks"
    executed.mkdir(exist_ok=True)
    out = _execute(nb, executed / nb.name, cwd)
    assert list((figures / nb.stem).glob("*.png")), "the notebook saves its figures in figures_dir(<its name>)"
    assert not list(cwd.iterdir()), "nothing is written relative to the working directory"
    if nb.stem.startswith("01_"):
        _check_slider(out)


def _check_slider(nb: nbformat.NotebookNode) -> None:
    """Notebook 01's ipywidgets slider: created, saved with the notebook, and its plot drawn once."""
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    views = [o for c in nb.cells for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1, "one interactive output"
    sliders = [m["state"] for m in state.values() if m["model_name"] == "FloatSliderModel"]
    assert len(sliders) == 1 and sliders[0]["min"] < sliders[0]["value"] < sliders[0]["max"]
    drawn = [o for m in state.values() if m["model_name"] == "OutputModel" for o in m["state"]["outputs"]]
    assert any("image/png" in o.get("data", {}) for o in drawn), "the slider's figure was drawn"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_notebook_paths_in_its_own_folder(nb, tmp_path, figures):
    """JupyterLab's working directory: the setup resolves the figure and results folders of the repository."""
    cells = nbformat.read(nb, as_version=4)
    setup = next(i for i, c in enumerate(cells.cells) if c.cell_type == "code" and "figures_dir(" in c.source)
    cells.cells = cells.cells[: setup + 1]
    expected = {"fig_dir": figures / nb.stem}
    if "results_dir(" in cells.cells[setup].source:
        expected["results"] = ROOT / "docs" / "results"
    check = "from pathlib import Path\n" + "".join(
        f"assert Path({k}).resolve() == Path({str(v)!r}).resolve(), {k}\n" for k, v in expected.items()
    )
    cells.cells.append(nbformat.v4.new_code_cell(check))
    nbformat.write(cells, tmp_path / "setup.ipynb")
    before = sorted(os.listdir(ROOT / "notebooks"))
    _execute(tmp_path / "setup.ipynb", tmp_path / nb.name, ROOT / "notebooks")
    assert sorted(os.listdir(ROOT / "notebooks")) == before, "nothing is written into notebooks/"
    assert (figures / nb.stem).is_dir()


def test_paths_ignore_the_working_directory(tmp_path, monkeypatch):
    """theory.paths in fresh interpreters started in three folders, and its default figure folder."""
    import subprocess
    import sys

    from theory.paths import figures_dir, results_dir

    # the module by its file (import theory would load jax in each interpreter): the same code, in a second
    code = (
        "import importlib.util as u; s = u.spec_from_file_location('p', 'THEORY/paths.py'); m = u.module_from_spec(s);"
        " s.loader.exec_module(m); print(m.repo_root(), m.results_dir())"
    ).replace("THEORY", str(ROOT / "theory"))
    out = {
        subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True).stdout
        for cwd in (ROOT, ROOT / "notebooks", tmp_path)
    }
    assert out == {f"{ROOT} {ROOT / 'docs' / 'results'}\n"}
    monkeypatch.delenv("SBD_FIGURES_DIR", raising=False)
    assert figures_dir(NOTEBOOKS[0].stem) == ROOT / "docs" / "figures" / NOTEBOOKS[0].stem  # committed: exists
    assert figures_dir("x", tmp_path / "given") == tmp_path / "given" and (tmp_path / "given").is_dir()
    monkeypatch.setenv("SBD_FIGURES_DIR", str(tmp_path / "env"))
    assert figures_dir("x") == tmp_path / "env" / "x"
    with pytest.raises(FileNotFoundError, match="results="):
        results_dir(tmp_path / "missing")
