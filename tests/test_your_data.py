"""A pipeline on your own images: ``python -m empirical breaking-time --data my.npz`` run from a scratch folder
writes its run and results under that folder and leaves the checkout as it was; an unlabelled file is refused
before any work (cloning needs classes)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from empirical import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


def _images(tmp_path):
    d = load_dataset("digits", classes=(0, 1), n=40, seed=0)
    levels = np.rint((d.x + 1) / 2 * 255).astype(np.uint8).reshape(-1, 8, 8)
    np.savez(tmp_path / "my.npz", x=levels, labels=d.labels)
    np.save(tmp_path / "my.npy", levels)


def _run(tmp_path, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "empirical", "breaking-time", *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)


def test_an_unlabelled_file_is_refused_before_any_work(tmp_path):
    _images(tmp_path)
    out = _run(tmp_path, "--data", "my.npy")
    assert out.returncode == 2 and "data my.npy holds one class" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.npy", "my.npz"]


@pytest.mark.slow
def test_breaking_time_on_your_file_writes_only_under_the_working_folder(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    _images(tmp_path)
    before = _git_status()
    tiny = ["--steps", "50", "--width", "32", "--depth", "1", "--classifier-steps", "20", "--n-starts", "4"]
    tiny += ["--n-grid", "4", "--n-parents", "2", "--n-clones", "2", "--centre", "false"]
    out = _run(tmp_path, "--data", "my.npz", *tiny)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _git_status() == before
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert {"results/breaking_my.json", "results/breaking_time.json", "results/my_denoiser.pt"} <= written
    assert {"runs/breaking-my/checkpoint.pt", "runs/breaking-my/config.json"} <= written
