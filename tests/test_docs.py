"""The docs: a generated number against closed forms, the nav as the only table of contents, the API pages against
the packages. The numbers against the result files: tests/test_docs_numbers.py; the site: tests/test_site_browser.py."""

import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_reference_table_paper_row():
    """The generated table's row for the paper's problem (deltas at +-1, VP linear 0.1..20, eta = 1) against
    the closed forms, not against the code that wrote it: theta_c = sqrt(sqrt(2) - 1), SNR = theta_c^2 /
    (1 - theta_c^2) = 1/sqrt(2), and t_c from inverting theta(t) = exp(-(beta_min t + k t^2) / 2) by hand."""
    lines = (ROOT / "docs" / "generated" / "reference_table.md").read_text().splitlines()
    head = next(line for line in lines if line.startswith("| problem"))
    rows = [line for line in lines if "deltas +-1 (paper)" in line]
    assert len(rows) == 1, lines
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", r.strip("|"))] for r in (head, rows[0])]  # \| is a |
    row = dict(zip(*cells, strict=True))
    theta_c = math.sqrt(math.sqrt(2) - 1)
    log_inv = -2 * math.log(theta_c)  # beta_min t + k t^2 = -2 ln theta, k = (beta_max - beta_min) / 2
    beta_min, k = 0.1, (20.0 - 0.1) / 2
    t_c = 2 * log_inv / (beta_min + math.sqrt(beta_min**2 + 4 * k * log_inv))
    assert row["kind"] == "pitchfork" and float(row["$\\eta$"]) == 1.0
    assert float(row["$\\theta_c$"]) == pytest.approx(theta_c, abs=1e-10)  # the table prints 10 decimals
    assert float(row["$t_c$"]) == pytest.approx(t_c, abs=1e-10)
    assert float(row["SNR"]) == pytest.approx(1 / math.sqrt(2), abs=1e-5)  # 5 decimals


def _nav_files(entries) -> list[str]:
    """The files the mkdocs nav names, depth first."""
    out = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def test_nav_is_the_table_of_contents():
    """Every page under docs/ is in the mkdocs nav, and every notebook: a page cannot be added without a place in the
    table of contents (the nav is the only list of pages). Snippets, result folders and scripts are not pages."""
    yaml = pytest.importorskip("yaml")
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # ignores the !!python tags
    nav = _nav_files(config["nav"])
    assert len(nav) == len(set(nav)), "a page is twice in the nav"
    docs = ROOT / "docs"
    pages = {str(p.relative_to(docs)) for p in docs.rglob("*.md")}
    pages = {p for p in pages if not p.startswith(("generated/", "results/", "notebooks/"))}
    notebooks = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert set(nav) == pages | notebooks, (sorted(pages | notebooks - set(nav)), sorted(set(nav) - pages - notebooks))


def _public_modules(package: str) -> set[str]:
    """The modules of a package whose names and folders have no leading underscore (the pipelines and the command
    entry points excepted: the command-line reference documents them)."""
    root = ROOT / package
    out = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith("_") for p in parts[1:]) or "pipelines" in parts or "__pycache__" in parts:
            continue
        out.add(".".join(parts))
    return out


def test_api_pages_document_every_public_module_and_no_private_one():
    """docs/api/*.md: a `::: module` block for every public module of theory and empirical, none for a private one.
    theory's modules whose names the package re-exports are documented by the block of `theory` itself;
    theory.paths (the checkout's folders, for the notebooks and pipelines) is infrastructure, not API."""
    import theory

    blocks = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        blocks |= set(re.findall(r"^::: (\S+)", page.read_text(), re.M))
    assert not [b for b in blocks if any(part.startswith("_") for part in b.split("."))], blocks
    documented = set(blocks)
    if "theory" in blocks:
        documented |= {getattr(theory, name).__module__ for name in theory.__all__}
    public = (_public_modules("theory") | _public_modules("empirical")) - {"theory.paths"}
    assert not public - documented, f"not on an API page: {sorted(public - documented)}"
