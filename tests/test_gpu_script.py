"""scripts/gpu_breaking_time.sh (the window networks on a GPU): its stages run end to end on a CPU, tiny
(SMOKE=1), and it refuses to run without a folder for its results or with a data set it has no prediction for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_datasets import needs_fashion

from empirical.training.train import load_denoiser

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_breaking_time.sh"


def test_script_needs_an_output_folder_and_a_known_dataset(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "OUT" in done.stderr
    env |= {"OUT": str(tmp_path / "out"), "DATASETS": "digits"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "DATASETS: digits is not one of" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written


@needs_fashion  # the script trains on Fashion-MNIST
@pytest.mark.slow  # about 25 s: two python starts, 20 training steps, a two-time scan
def test_script_smoke_on_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "SMOKE": "1", "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs")}
    env["PY"] = sys.executable
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((tmp_path / "out" / "breaking_vs_steps.json").read_text())["rows"]
    assert [(r["dataset"], r["seed"], r["t_train"], r["net"]["ch"], r["step"]) for r in rows] == [
        ("fashion-mnist", 0, [0.4, 0.9], 8, 20)
    ]
    assert rows[0]["device"].startswith("cpu") and rows[0]["network_evaluations"] > 0
    den = load_denoiser(tmp_path / "out" / "fashion-mnist-ch8-window-s0.pt")  # the exported weights reload
    assert sum(p.numel() for p in den.parameters()) > 0
    assert "done" in (tmp_path / "out" / "log.txt").read_text().splitlines()[-1]
