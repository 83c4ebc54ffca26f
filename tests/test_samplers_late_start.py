"""The late-start table with the new samplers, their authors' grids and the teleport start: a tiny end-to-end run
(an MLP of width 32 trained for 60 steps, 20 samples a cell), checking the rows' grid and teleport fields, the
row count, and that rows written before the grid field are read as uniform-grid rows (no duplicates). The theory's
t_c is stubbed (0.41): its search takes minutes and is tested with the pipelines (tests/test_pipeline_stages.py)."""

import json

import pytest

from empirical.pipelines.late_start import pipeline as late_start
from empirical.pipelines.late_start.stages import grids_of
from empirical.sampling.samplers import AUTHOR_GRIDS

TINY = {"n_steps": (4,), "n_samples": 20, "sweep_samples": 20, "sweep_t": (0.4, 0.7, 1.0), "classifier_steps": 20,
        "kid_subsets": 2, "inception_n": 0, "converged_steps": 0, "n_grid": 2, "width": 32, "depth": 1, "steps": 60,
        "batch_size": 32}  # fmt: skip


def test_grids_of_expands_the_authors_grids():
    cfg = late_start.Config(samplers=("ddim", "unipc"), grids=("uniform", "authors"))
    assert grids_of(cfg, "ddim") == ("uniform", *(g for g in AUTHOR_GRIDS["ddim"] if g != "uniform"))
    assert grids_of(cfg, "unipc") == ("uniform", "logsnr", "edm")
    with pytest.raises(ValueError, match="grids must be a non-empty subset of"):
        late_start.Config(grids=("cosine",))
    with pytest.raises(ValueError, match="samplers must be a non-empty subset of"):
        late_start.Config(samplers=("euler",))


@pytest.mark.slow  # ~20 s: a training, a classifier and four figures
def test_table_with_grids_new_samplers_and_teleport(tmp_path, monkeypatch):
    monkeypatch.setattr(late_start.stages, "predict", lambda *args: {"t_c_predicted": 0.41})
    results = tmp_path / "results"
    results.mkdir()
    old = {"dataset": "digits", "sampler": "ddim", "n_steps": 4, "init": "vanilla", "t_start_rule": "none",
           "device": None, "fid": 1.0}  # fmt: skip
    cfg = late_start.Config(samplers=("ddim", "ipndm"), grids=("uniform", "edm"), teleport=True,
                            run_dir=str(tmp_path / "run"), results=str(results), **TINY)  # fmt: skip
    old["device"] = f"cpu ({__import__('os').cpu_count()} cores)"
    (results / "late_start.json").write_text(json.dumps([old]))
    curves = late_start.run(cfg, "pytest")
    rows = curves["rows"]
    n_grids = {s: 2 for s in cfg.samplers}
    assert len(rows) == sum(n_grids.values()) * 6  # 6 cells: vanilla, gls x 3, late, teleport
    assert {(r["sampler"], r["grid"]) for r in rows} == {(s, g) for s in cfg.samplers for g in grids_of(cfg, s)}
    t_c = curves["summary"]["t_start_theory"]
    assert t_c == 0.41
    tele = [r for r in rows if r["init"] == "teleport"]
    assert len(tele) == sum(n_grids.values()) and all(r["t_start"] == t_c and r["t_start_rule"] == "theory"
                                                      for r in tele)  # fmt: skip
    assert all(r["nfe"] == 4 for r in rows)  # DDIM and iPNDM: one evaluation per grid point
    assert {c["grid"] for c in curves["sweep"] if c["sampler"] == "ipndm"} == {"uniform", "edm"}
    table = json.loads((results / "late_start.json").read_text())
    # the old row (no grid field: the uniform grid) is kept once, now with grid "uniform"; ddim's uniform-grid
    # vanilla row of this run replaced it
    key = ("ddim", "uniform", "vanilla", "none")
    same = [r for r in table if (r["sampler"], r["grid"], r["init"], r["t_start_rule"]) == key]
    assert len(same) == 1 and same[0]["command"] == "pytest"
    assert len(table) == len(rows)
    assert late_start.gls_ratios(table, "digits", grid="edm").keys() == {("ddim", 4), ("ipndm", 4)}
    assert len(list((results / "figures").glob("late_start_digits_*.png"))) == 4
