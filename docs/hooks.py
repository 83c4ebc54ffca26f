"""mkdocs hooks: KaTeX from npm served with the site, and the notebooks as pages (mkdocs.yml: ``hooks``).

- KaTeX (``npm ci`` installs it into node_modules/ from package.json) is copied from node_modules/katex/dist
  into the site under assets/katex/; nothing is committed and nothing is fetched at view time.
- Each notebooks/*.ipynb becomes the page notebooks/<name>/: the executed copy that ``make notebooks``
  writes to docs/notebooks/ (outputs and figures) when it exists and has the committed notebook's cells,
  else the committed notebook (code and narrative, no outputs). ``SBD_EXECUTED_NOTEBOOKS`` names another
  folder of executed copies.
- The notebook HTML of mkdocs-jupyter is made self-contained: its MathJax script (a CDN) is dropped, since
  KaTeX renders the notebook pages too, and the output an ipywidgets control drew is shown in place of the
  control (a static page has no kernel to move a slider).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
KATEX = ROOT / "node_modules" / "katex" / "dist"
KATEX_FILES = ("katex.min.js", "katex.min.css", "contrib/auto-render.min.js")
EXECUTED_ENV = "SBD_EXECUTED_NOTEBOOKS"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

_tmp: Path | None = None
log = logging.getLogger("mkdocs.hooks.notebooks")


def _katex_files(config) -> list[File]:
    missing = [f for f in KATEX_FILES if not (KATEX / f).is_file()]
    if missing:
        raise PluginError(f"KaTeX is not installed ({KATEX / missing[0]} is missing): run `npm ci` in {ROOT}")
    paths = [*KATEX_FILES, *(f"fonts/{p.name}" for p in sorted((KATEX / "fonts").glob("*.woff2")))]
    return [File.generated(config, f"assets/katex/{p}", abs_src_path=str(KATEX / p)) for p in paths]


def executed_dir() -> Path:
    """Where executed copies are looked for: $SBD_EXECUTED_NOTEBOOKS, else docs/notebooks/."""
    return Path(os.environ.get(EXECUTED_ENV) or ROOT / "docs" / "notebooks")


def _sources(nb: dict) -> list[str]:
    """The cells as written (papermill adds a cell of injected parameters to an executed copy)."""
    cells = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    return ["".join(c["source"]) for c in cells]


def _page_source(nb: Path) -> Path:
    """The executed copy of ``nb`` if there is one of this version of it, else ``nb`` itself."""
    executed = executed_dir() / nb.name
    if not executed.is_file():
        return nb
    if _sources(json.loads(executed.read_text())) != _sources(json.loads(nb.read_text())):
        log.info("%s is older than %s: the site shows the notebook without outputs (`make notebooks`)", executed, nb)
        return nb
    return executed


def _widget_outputs(output: dict, state: dict) -> list[dict]:
    """The outputs an ipywidgets view captured (its Output widgets, depth first), from the saved widget state."""
    found, stack = [], [output["data"][WIDGET_VIEW]["model_id"]]
    while stack:
        model = state.get(stack.pop(), {}).get("state", {})
        found += model.get("outputs", [])
        stack += [c.removeprefix("IPY_MODEL_") for c in reversed(model.get("children", []))]
    return found


def _static_notebook(src: Path, dest: Path) -> None:
    """A copy of the notebook without widget state: each widget view becomes the outputs it captured (e.g.
    the figure that ``interact`` drew), or its text form; the page then needs no widget manager (a CDN)."""
    nb = json.loads(src.read_text())
    state = nb.get("metadata", {}).pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb["cells"]:
        outputs = []
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in out.get("data", {}):
                captured = _widget_outputs(out, state)
                out["data"].pop(WIDGET_VIEW)
                outputs += captured or [out]
            else:
                outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs
    dest.write_text(json.dumps(nb))


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config):
    global _tmp
    for f in _katex_files(config):
        files.append(f)
    for f in [f for f in files if f.src_uri.startswith("notebooks/")]:
        files.remove(f)  # the executed copies in docs/notebooks/ are read below, not published as files
    _tmp = Path(tempfile.mkdtemp(prefix="sbd-site-"))
    (_tmp / "notebooks").mkdir()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        _static_notebook(_page_source(nb), _tmp / "notebooks" / nb.name)
        # a plain File rooted in the temporary folder: mkdocs-jupyter's wrapper reads its path from src_dir
        page = File(f"notebooks/{nb.name}", str(_tmp), config.site_dir, config.use_directory_urls)
        files.append(page)
    return files


_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
_SRC = re.compile(r"\ssrc=\"([^\"]*)\"", re.I)
_REMOTE = re.compile(r"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+/", re.I)


def _offline_script(m: re.Match) -> str:
    """The script, or "" for one that needs the network or MathJax: mkdocs-jupyter's MathJax (a CDN address,
    or src="" when none is configured), its configuration, nbconvert's mermaid loader (imports from a CDN)."""
    attrs, body = m[1], m[2]
    src = _SRC.search(attrs)
    if src is not None:
        return "" if not src[1] or _REMOTE.match(src[1]) else m[0]
    if "text/x-mathjax-config" in attrs or ("import(" in body and _REMOTE.search(body)):
        return ""
    return m[0]


def on_page_content(html, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        return _SCRIPT.sub(_offline_script, html)
    return html


def on_post_build(config):
    if _tmp is not None:
        shutil.rmtree(_tmp, ignore_errors=True)
