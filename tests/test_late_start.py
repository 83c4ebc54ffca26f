"""empirical.pipelines.late_start.pipeline: the knee/best rule on curves with known answers, the config, and a reduced
run of the whole pipeline (a small denoiser trained here) in which the Gaussian late start beats the vanilla start at n
= 3."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import load_dataset  # noqa: E402
from empirical.pipelines.breaking_time import pipeline as breaking_time  # noqa: E402
from empirical.pipelines.late_start.pipeline import (  # noqa: E402
    RULES,
    TABLE_INITS,
    TABLE_SAMPLERS,
    Config,
    best_and_knee,
    build_parser,
    gls_ratios,
    main,
    run,
)
from theory import VPLinear  # noqa: E402
from theory import symbolic as S  # noqa: E402

ROOT = Path(__file__).parents[1]
ROW_FIELDS = (
    "dataset", "sampler", "n_steps", "init", "t_start", "t_start_rule", "fid", "kid", "fid_inception",
    "n_samples", "entropy_bits", "device", "command",
)  # fmt: skip


# --- choosing t_start from a curve -----------------------------------------------------------------------
def test_second_derivative_is_exact_for_parabolas_on_any_grid():
    t = np.array([0.05, 0.1, 0.18, 0.3, 0.31, 0.5, 0.77, 1.0])
    r = best_and_knee(t, 3.0 * t**2 - t + 2.0)
    np.testing.assert_allclose(r["second_derivative"], 6.0, rtol=1e-10)


def test_knee_at_a_kink_and_best_elsewhere():
    """f = 5 max(0.4 - t, 0) - 0.1 t: the slope jumps at t = 0.4 (the knee, the only nonzero f''), while f keeps
    falling to the end of the grid (the best)."""
    t = np.round(np.arange(1, 21) * 0.05, 2)
    r = best_and_knee(t, 5.0 * np.maximum(0.4 - t, 0.0) - 0.1 * t)
    assert r["knee_t"] == 0.4 and r["best_t"] == 1.0
    assert r["knee_fid"] == pytest.approx(-0.04) and r["best_fid"] == pytest.approx(-0.1)


def test_knee_of_a_smooth_well():
    """f = -exp(-(t - c)^2 / (2 s^2)) has f'' = (1/s^2 - (t - c)^2 / s^4) exp(...), largest at t = c."""
    t = np.linspace(0.05, 1.0, 96)
    c, s = 0.63, 0.08
    r = best_and_knee(t, -np.exp(-((t - c) ** 2) / (2 * s**2)))
    assert abs(r["knee_t"] - c) <= 0.5 * (t[1] - t[0]) + 1e-12
    assert abs(r["best_t"] - c) <= 0.5 * (t[1] - t[0]) + 1e-12
    assert max(r["second_derivative"]) == pytest.approx(1 / s**2, rel=0.02)


def test_best_and_knee_skips_missing_points_and_checks_the_grid():
    r = best_and_knee([0.1, 0.2, 0.3, 0.4], [4.0, None, 1.0, 2.0])
    assert r["best_t"] == 0.3 and len(r["second_derivative"]) == 1
    with pytest.raises(ValueError, match="increasing"):
        best_and_knee([0.3, 0.2, 0.1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=">= 3"):
        best_and_knee([0.1, 0.2, 0.3], [1.0, None, 3.0])


def test_gls_ratios():
    rows = [
        {"dataset": "d", "sampler": "ddim", "n_steps": 3, "init": "vanilla", "t_start_rule": "none", "fid": 9.0},
        {"dataset": "d", "sampler": "ddim", "n_steps": 3, "init": "gls", "t_start_rule": "theory", "fid": 3.0},
        {"dataset": "d", "sampler": "ddim", "n_steps": 3, "init": "gls", "t_start_rule": "sweep-best", "fid": 2.0},
        {"dataset": "e", "sampler": "ddim", "n_steps": 3, "init": "vanilla", "t_start_rule": "none", "fid": 1.0},
    ]
    assert gls_ratios(rows, "d") == {("ddim", 3): 3.0}
    assert gls_ratios(rows, "d", rule="sweep-best") == {("ddim", 3): 4.5}
    assert gls_ratios(rows, "e") == {}


# --- the config and the command line ----------------------------------------------------------------------
def test_shares_the_breaking_time_model():
    """Same TrainConfig, same run folder: both pipelines train one denoiser."""
    assert Config().train_config() == breaking_time.Config().train_config()
    assert Config().run_dir == breaking_time.Config().run_dir == "runs/breaking-digits"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samplers": ("ddim", "euler")}, "samplers"),
        ({"n_steps": (1, 3)}, "n_steps"),
        ({"sweep_t": (0.5, 0.4, 1.0)}, "sweep_t"),
        ({"sweep_t": (0.5, 1.0)}, "sweep_t"),
        ({"inception_n": 5}, "inception_n"),
        ({"inception_n": 3000}, "inception_n"),
        ({"inception_steps": (7,)}, "inception_steps"),
        ({"dataset": "cifar"}, "dataset"),
        ({"n_samples": 5}, "n_samples"),
    ],
)
def test_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Config(**kwargs)


def test_dry_run(capsys):
    assert main(["--dataset", "digits", "--n-steps", "3", "5", "--sweep-t", "0.2", "0.5", "1.0", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["late_start"]["n_steps"] == [3, 5] and out["late_start"]["sweep_t"] == [0.2, 0.5, 1.0]
    assert out["train"]["out"] == "runs/breaking-digits"
    assert build_parser().parse_args([]).samplers == tuple(TABLE_SAMPLERS)


# --- a reduced run of the whole pipeline -------------------------------------------------------------------
@pytest.fixture(scope="module")
def reduced(tmp_path_factory, one_torch_thread):
    """A small denoiser (MLP width 128, 2000 steps, one thread: ~20 s), then the pipeline at reduced size."""
    tmp = tmp_path_factory.mktemp("late_start")
    cfg = Config(
        width=128,
        depth=2,
        steps=2000,
        n_steps=(3,),
        n_samples=600,
        sweep_samples=300,
        sweep_t=(0.2, 0.4, 0.6, 0.8, 1.0),
        classifier_steps=400,
        kid_subsets=3,
        inception_n=0,
        converged_steps=0,
        n_grid=4,
        run_dir=str(tmp / "run"),
        results=str(tmp / "results"),
    )
    curves = run(cfg, "pytest")
    return cfg, curves, tmp / "results"


def test_gls_beats_vanilla_at_three_steps(reduced):
    """The results page's acceptance check at reduced size: FID (project features) of gls at the theory's t_start is
    below the vanilla start's at n = 3, for every sampler; the KID agrees."""
    _, curves, _ = reduced
    rows = {(r["sampler"], r["init"], r["t_start_rule"]): r for r in curves["rows"] if r["n_steps"] == 3}
    for sampler in TABLE_SAMPLERS:
        vanilla, gls = rows[sampler, "vanilla", "none"], rows[sampler, "gls", "theory"]
        assert gls["fid"] < vanilla["fid"], (sampler, gls["fid"], vanilla["fid"])
        assert gls["kid"] < vanilla["kid"], (sampler, gls["kid"], vanilla["kid"])


def test_rows_written_and_consistent(reduced):
    cfg, curves, results = reduced
    s = curves["summary"]
    table = json.loads((results / "late_start.json").read_text())
    assert len(table) == len(TABLE_SAMPLERS) * len(cfg.n_steps) * 5
    keys = {(r["dataset"], r["sampler"], r["n_steps"], r["init"], r["t_start_rule"], r["device"]) for r in table}
    assert len(keys) == len(table)  # one row per key
    sweep = {(c["sampler"], c["n_steps"], c["init"]): c for c in curves["sweep"]}
    for r in table:
        assert all(f in r for f in ROW_FIELDS), set(ROW_FIELDS) - set(r)
        assert r["sampler"] in TABLE_SAMPLERS and r["init"] in TABLE_INITS and r["t_start_rule"] in RULES
        assert r["n_samples"] == cfg.n_samples and r["fid_inception"] is None and r["command"] == "pytest"
        assert 0 <= r["entropy_bits"] <= math.log2(10) + 1e-12 and abs(sum(r["composition"]) - 1) < 1e-3
        c = sweep.get((r["sampler"], r["n_steps"], r["init"]))
        if r["t_start_rule"] == "theory":
            assert r["t_start"] == s["t_c_predicted"] == s["t_start_theory"]
        elif r["t_start_rule"] == "sweep-best":  # the argmin of the stored curve, recomputed here
            assert r["t_start"] == c["t"][int(np.argmin(c["fid"]))]
        elif r["t_start_rule"] == "sweep-knee":
            f, t = np.array(c["fid"]), np.array(c["t"])
            d2 = [(f[i + 1] - 2 * f[i] + f[i - 1]) / 0.2**2 for i in (1, 2, 3)]  # a uniform grid, step 0.2
            assert r["t_start"] == t[1 + int(np.argmax(d2))]
        else:
            assert r["init"] == "vanilla" and r["t_start"] == 1.0
    # the vanilla start is the late start from t = T: the sweep's last point, drawn at the sweep's seed
    late = sweep["ddim", 3, "late"]
    assert late["t"][-1] == 1.0 and late["n_samples"] == cfg.sweep_samples
    # the training set's entropy: 10 nearly equal classes
    labels = np.bincount(load_dataset("digits").labels, minlength=10) / 1797
    assert s["entropy_bits_train"] == pytest.approx(-(labels * np.log2(labels)).sum(), abs=1e-12)
    assert s["classifier_accuracy"] > 0.85
    # the sample grids: hex strings of 8-bit levels, the first training images among them
    first = np.frombuffer(bytes.fromhex(curves["train_samples"][0]), dtype=np.uint8)
    np.testing.assert_array_equal(first, np.round((load_dataset("digits").x[0] + 1) * 127.5))
    assert {len(g["hex"]) for g in curves["samples"]} == {cfg.n_grid}
    assert s["fid_floor"]["fid"] > 0
    figures = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert figures == [f"late_start_digits_{k}.png" for k in ("diversity", "fid_vs_start", "ratios", "samples")]
    assert json.loads((Path(cfg.run_dir) / "late_start_config.json").read_text())["late_start"]["width"] == 128


def test_committed_table():
    """docs/results/late_start.json (the full run): the table's fields, and both starts for every sampler and n."""
    path = ROOT / "docs" / "results" / "late_start.json"
    if not path.exists():
        pytest.skip("no committed results yet")
    rows = [r for r in json.loads(path.read_text()) if r["dataset"] == "digits"]
    assert rows
    for r in rows:
        assert all(f in r for f in ROW_FIELDS), set(ROW_FIELDS) - set(r)
    cells = {(r["sampler"], r.get("grid", "uniform"), r["n_steps"], r["init"], r["t_start_rule"]): r for r in rows}
    for s in TABLE_SAMPLERS:
        for n in (3, 5, 10):
            assert {(s, "uniform", n, "vanilla", "none"), (s, "uniform", n, "gls", "theory")} <= cells.keys()
    assert any(r["fid_inception"] is not None for r in rows)
    # The README's claim, from the committed rows: at n = 3 on the uniform grid the Gaussian late start at t_c beats
    # the vanilla start (docs/late_start.md shows where it does not on the samplers' own grids).
    for s in TABLE_SAMPLERS:
        assert cells[s, "uniform", 3, "gls", "theory"]["fid"] < cells[s, "uniform", 3, "vanilla", "none"]["fid"], s
    # Against other sources: the theory's t_start is the critical time that the breaking-time pipeline predicted
    # (another command, another file, an earlier engine: equal to the 1e-8 the engine guarantees), and the training
    # set's class entropy is recomputed from the labels.
    (bt,) = [r for r in json.loads((ROOT / "docs/results/breaking_time.json").read_text()) if r["dataset"] == "digits"]
    starts = {r["t_start"] for r in rows if r["init"] in ("gls", "teleport") and r["t_start_rule"] == "theory"}
    assert len(starts) == 1 and starts.pop() == pytest.approx(bt["t_c_predicted"], abs=1e-8)
    # ... whose equal-norm estimate is the sympy closed form at the digits' top covariance eigenvalue, both recomputed.
    x = load_dataset("digits").x
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    assert bt["top_covariance_eigenvalue"] == pytest.approx(lam, rel=1e-10)
    theta = float(S.lambdify(S.equal_norm_theta_c(), (S.lam, S.eta))(lam, 1.0))
    assert bt["t_c_equal_norm"] == pytest.approx(float(VPLinear().t_from_theta(theta)), abs=1e-10)
    p = np.bincount(load_dataset("digits").labels, minlength=10) / 1797
    assert rows[0]["entropy_bits_train"] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-12)
    # The sweep rules, recomputed from the committed curves with best_and_knee.
    curves = json.loads((ROOT / "docs/results/late_start_digits.json").read_text())
    for c in curves["sweep"]:
        rule = best_and_knee(c["t"], c["fid"])
        assert (rule["best_t"], rule["knee_t"]) == (c["best_t"], c["knee_t"])
        assert c["t"][int(np.nanargmin(np.array(c["fid"], dtype=float)))] == c["best_t"]
        best = cells.get((c["sampler"], c.get("grid", "uniform"), c["n_steps"], c["init"], "sweep-best"))
        if best is not None:
            assert best["t_start"] == c["best_t"]


def test_best_grid_table_takes_each_samplers_best_vanilla_grid():
    """The baseline is the vanilla start on the grid where it scores best; gls and teleport on that grid."""
    from empirical.pipelines.late_start.plots import best_grid_table

    fids = {  # (grid, init, rule) -> (FID, t_start) for ddim at n = 3
        ("uniform", "vanilla", "none"): (40.0, 1.0),
        ("edm", "vanilla", "none"): (20.0, 1.0),
        ("uniform", "gls", "theory"): (10.0, 0.6),
        ("edm", "gls", "theory"): (16.0, 0.6),
        ("edm", "teleport", "theory"): (17.5, 0.6),
        ("uniform", "gls", "sweep-best"): (9.5, 0.4),  # gls at t_c is within 10% of it on the uniform grid
        ("edm", "gls", "sweep-best"): (12.0, 0.5),  # and not on EDM
    }
    rows = [
        {"sampler": "ddim", "grid": g, "n_steps": 3, "nfe": 3, "init": i, "t_start_rule": r, "fid": f, "t_start": t}
        for (g, i, r), (f, t) in fids.items()
    ]
    table = best_grid_table({"rows": rows, "config": {"samplers": ["ddim"], "n_steps": [3]}}).splitlines()
    row = "| ddim | 3 | 3 | 20.0 (edm) | 16.0 | 1.25x | 17.5 | 10.0 (uniform) | 2.00x | 9.50 (uniform, 0.4) |"
    assert table[2] == row
    assert table[-1].endswith("1 of 2 cells")


def test_table_keeps_the_samples_inception_scores():
    """The rows Inception may score keep their samples: on the first grid, vanilla and gls at both the theory's
    t_start and the sweep's best (the paper's choice; the stage then takes DDIM's); every other row drops them."""
    from types import SimpleNamespace

    from empirical.pipelines.late_start.stages import table

    class Draw:  # a fixed array per call: the test is about which rows keep theirs
        bar = SimpleNamespace(update=lambda k: None)

        def __call__(self, sampler, n_steps, init, t_start, n, seed, grid):
            return np.full((n, 2), float(n_steps))

    scorer = SimpleNamespace(full=lambda x: {"fid": float(x[0, 0])})
    cfg = SimpleNamespace(dataset="d", samplers=("ddim", "dpm-solver++"), grids=("leading", "uniform"),
                          n_steps=(3, 5), teleport=True, n_samples=4, seed=0, n_grid=1)  # fmt: skip
    curve = {"best_t": 0.4, "knee_t": 0.5}
    picks = [{"sampler": s, "grid": g, "n_steps": n, "init": i, **curve}
             for s in cfg.samplers for g in cfg.grids for n in cfg.n_steps for i in ("gls", "late")]  # fmt: skip
    context = {"n_ref": 10, "entropy_bits_train": 1.0, "device": "cpu", "command": "pytest"}
    rows, _ = table(Draw(), scorer, picks, 0.6, cfg, context)
    assert len(rows) == 2 * 2 * 2 * 6
    kept = {(r["sampler"], r["grid"], r["n_steps"], r["init"], r["t_start_rule"]) for r in rows if "_x" in r}
    assert kept == {(s, "leading", n, i, rule) for s in cfg.samplers for n in (3, 5)
                    for i, rule in (("vanilla", "none"), ("gls", "theory"), ("gls", "sweep-best"))}  # fmt: skip
