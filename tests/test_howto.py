"""The how-to pages (docs/howto/*.md) run as written: their python blocks, in order, in a fresh interpreter started
in an empty folder (so they neither read nor write the checkout); each page ends with its own checks."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the pages of the three user tasks; any other how-to page with python blocks runs too
TASKS = ("critical_time_of_your_data", "breaking_time_of_your_unet", "late_start_in_your_loop")


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M))


PAGES = [p for p in sorted((ROOT / "docs" / "howto").glob("*.md")) if python_blocks(p)]


def test_the_task_pages_have_code_and_checks():
    for name in TASKS:
        code = python_blocks(ROOT / "docs" / "howto" / f"{name}.md")
        assert code and "assert " in code, name


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_howto_page_runs(page, tmp_path):
    pytest.importorskip("diffusers")
    script = tmp_path / f"{page.stem}.py"
    script.write_text(python_blocks(page))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [script.name]  # nothing written beside it
