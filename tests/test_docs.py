"""The documentation's committed numbers against closed forms (the site itself: tests/test_site_browser.py)."""

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
