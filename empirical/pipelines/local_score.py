r"""The local score machine of Kamb & Ganguli against trained networks: calibrated patch size, r^2, breaking time.

    OMP_NUM_THREADS=1 python -m empirical local-score --attention-network \
        docs/results/fashion-mnist/fashion-mnist_denoiser.pt --out docs/results/local_score.json  # 8 minutes, 1 core

(a) Calibration: held-out test images, ``n_images`` distinct ones at each of ``times``, are noised (seeded) and
denoised by each network and by the LS machine of the network's training images (``empirical.models.local_score``,
float32) for every P in ``patches`` and the whole image (P = 2 max(H, W) - 1: the exact denoiser of the training set).
r^2 = 1 - |x0_machine - x0_net|^2 / |x0_net - mean(x0_net)|^2 per image; at each t the calibrated P maximises
the median r^2 over the images, per network. The convolution-only network is the fair comparison (the machine
has no attention); the attention network is reported apart. (b) At the calibrated P (the first network's) the ELS
machine on a training subset of ``n_els`` images (its cost is N d P^2 per pixel: the whole set does not fit on one
core), with the LS machine of the same subset beside it, P capped at ``els_max_patch``. (c) The breaking time of
the calibrated LS machine (P(t) from the nearest calibrated time) by the flow search the networks get
(``empirical.measure.flow.FlowSearch`` in ``measure_critical_time``), on the nested subset of ``n_flow`` training
images that ``n-sweep`` trains on (seed 0): the full set costs N d per row and the search takes some 10^4 rows.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from empirical._util.cli import is_real
from theory.checks import check_int, check_tolerance

__all__ = ["Config", "r2", "calibrate", "run", "main"]

NOTES = [
    "r2 per image = 1 - |x0_machine - x0_net|^2 / |x0_net - mean|^2 at the same noisy input; medians over images",
    "exact = the LS machine with the whole-image patch, which is the exact denoiser of the training set "
    "(equal to ExactDenoiser to 1e-10, tests/test_local_score.py)",
    "calibration: LS on the whole training set in float32; ELS (and LS beside it) on a nested subset of n_els "
    "images at the conv network's calibrated P (capped at els_max_patch): ELS costs N d P^2 per pixel",
    "breaking time: the calibrated LS machine (P(t) from the nearest calibrated time) on the n-sweep's subset of "
    "n_flow images, float64, by the networks' flow search; the whole set costs N d per row, the search 10^4-10^5 rows",
    "attention network: calibrated on its own; its ELS and LS-subset r2 use the conv network's P",
]
DEFAULT_TIMES = tuple(round(float(t), 4) for t in np.linspace(0.05, 0.95, 8))


def r2(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per row: 1 - |pred - ref|^2 / |ref - mean(ref)|^2, the share of the reference image's variance explained.

    >>> r2(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 2.0, 4.0]])).round(4).tolist()  # 1 - 1 / (42 / 9)
    [0.7857]
    """
    ref = np.asarray(ref, dtype=np.float64)
    return 1.0 - ((pred - ref) ** 2).sum(-1) / ((ref - ref.mean(-1, keepdims=True)) ** 2).sum(-1)


def calibrate(machine: np.ndarray, net: np.ndarray, patches, times) -> list[dict]:
    """Per time: the P of largest median r^2 (``machine`` (len(times), len(patches), n, d) against ``net``
    (len(times), n, d)), its r^2 per image, and the median r^2 of every P."""
    rows = []
    for k, t in enumerate(times):
        scores = r2(machine[k], net[k][None])  # (patches, n)
        medians = np.median(scores, axis=1)
        best = int(np.argmax(medians))
        by_patch = dict(zip(map(str, patches), medians.tolist(), strict=True))
        rows.append({"t": float(t), "patch": int(patches[best]), "r2_median": float(medians[best]),
                     "r2": scores[best].tolist(), "r2_median_by_patch": by_patch})  # fmt: skip
    return rows


@dataclass
class Config:
    """The options of ``python -m empirical local-score``; every field is checked on construction."""

    network: str = field(default="runs/fmnist-conv/checkpoint.pt", metadata={"help": "convolution-only network"})
    attention_network: str | None = field(default=None, metadata={"help": "a network with attention, apart"})
    dataset: str = field(
        default="fashion-mnist", metadata={"help": "the networks' data set (held-out: its test split)"}
    )
    times: tuple[float, ...] = field(default=DEFAULT_TIMES, metadata={"help": "calibration times"})
    n_images: int = field(default=6, metadata={"help": "held-out images at each time (distinct per time)"})
    patches: tuple[int, ...] = field(default=tuple(range(3, 28, 2)), metadata={"help": "patch sizes (and the whole)"})
    n_els: int = field(default=64, metadata={"help": "training images of the ELS machine (a subset)"})
    els_max_patch: int = field(default=27, metadata={"help": "largest P of the ELS machine (its memory is N d P^2)"})
    n_flow: int = field(default=64, metadata={"help": "training images of the machine the flow search measures"})
    n_starts: int = field(default=32, metadata={"help": "flow search: training images seeding it"})
    n_grid: int = field(default=8, metadata={"help": "flow search: times of the scan before bisection"})
    t_max: float = field(default=0.9, metadata={"help": "flow search: the scan's first time"})
    t_min: float = field(default=0.3, metadata={"help": "flow search: the scan's last time"})
    tol_t: float = field(default=1e-3, metadata={"help": "flow search: bisection tolerance on t"})
    seed: int = field(default=0, metadata={"help": "seed of the held-out images and their noise"})
    max_bytes: int = field(default=2**26, metadata={"help": "memory of one chunk of the machine's work arrays"})
    out: str = field(default="docs/results/local_score.json", metadata={"help": "the result file (JSON)"})
    machine_cache: str | None = field(
        default=None, metadata={"help": "npz of the calibration's machine outputs: reused when its inputs match"}
    )

    def __post_init__(self):
        self.times, self.patches = tuple(self.times), tuple(self.patches)
        if not self.times or not all(is_real(t) and 0 < t < 1 for t in self.times):
            raise ValueError(f"times must be one or more numbers in (0, 1); got {list(self.times)}")
        if not self.patches or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 or p % 2 == 0
                                   for p in self.patches):  # fmt: skip
            raise ValueError(f"patches must be odd integers >= 1; got {list(self.patches)}")
        for name in ("n_images", "n_els", "els_max_patch", "n_flow", "n_starts", "max_bytes"):
            check_int(name, getattr(self, name), lo=1)
        check_int("n_grid", self.n_grid, lo=2)
        check_int("seed", self.seed, lo=0)
        check_tolerance("tol_t", self.tol_t)
        if not (is_real(self.t_min) and is_real(self.t_max) and 0 < self.t_min < self.t_max <= 1):
            raise ValueError(f"need 0 < t_min < t_max <= 1; got t_min={self.t_min}, t_max={self.t_max}")


def held_out(cfg: Config) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(x_t (len(times), n, d), t (len(times), n), test rows): ``n_images`` distinct test images per time, noised."""
    from empirical.data.datasets import load_dataset
    from empirical.models.denoiser import schedule_coeffs
    from theory import VPLinear

    x = load_dataset(cfg.dataset, split="test").x
    need = len(cfg.times) * cfg.n_images
    if need > len(x):
        raise ValueError(f"n_images * len(times) = {need} exceeds the {len(x)} test images")
    rng = np.random.default_rng(cfg.seed)
    rows = rng.permutation(len(x))[:need].reshape(len(cfg.times), cfg.n_images)
    t = np.repeat(np.array(cfg.times)[:, None], cfg.n_images, axis=1)
    theta, sigma = (c.numpy()[..., None] for c in schedule_coeffs(VPLinear(), t, "theta", "sigma"))
    xt = theta * x[rows] + sigma * rng.standard_normal(x[rows].shape)
    return torch.tensor(xt, dtype=torch.float32), torch.tensor(t), rows


def network_x0(path: str, xt: torch.Tensor, t: torch.Tensor) -> tuple[np.ndarray, dict]:
    """The network's x0_hat at every held-out input (float32, as trained) and what identifies it."""
    from empirical._util.checkpoints import load_checkpoint
    from empirical.training.train import load_denoiser

    ckpt = load_checkpoint(path)
    den = load_denoiser(path)
    with torch.no_grad():
        x0 = np.stack([den.x0(xt[k], t[k]).numpy() for k in range(len(xt))])
    config = ckpt["config"]
    return x0, {"path": path, "step": int(ckpt.get("step", -1)), "attn": bool(config.get("attn")),
                "net": config.get("net"), "ch": config.get("ch"), "train_steps": config.get("steps")}  # fmt: skip


def machine_x0(y: np.ndarray, xt, t, patches, *, equivariant=False, max_bytes=2**26, log=print) -> np.ndarray:
    """The machine's x0_hat (len(times), K, n, d) on training images ``y`` (N, d): ``patches[k]``, the K patch sizes
    at time k (LS serves them all in one pass over the images)."""
    from empirical.models.local_score import LocalScoreDenoiser

    side = int(round(np.sqrt(y.shape[1])))
    den = LocalScoreDenoiser(y, 1, equivariant=equivariant, image_shape=(side, side), max_bytes=max_bytes).float()
    out = []
    with torch.no_grad():
        for k in range(len(xt)):
            t0 = time.perf_counter()
            out.append(den.x0_by_patch(xt[k], t[k], patches[k]).numpy())
            name, ps = "ELS" if equivariant else "LS", patches[k] if len(patches[k]) < 3 else "all"
            log(f"  {name} N={len(y)} t={float(t[k, 0]):.4f} P={ps}: {time.perf_counter() - t0:.1f} s", flush=True)
    return np.stack(out)


def breaking_time(y: np.ndarray, patch_of, cfg: Config) -> dict:
    """The calibrated LS machine's breaking time by the networks' flow search (module docstring, (c))."""
    from empirical.measure.fixed_points import measure_critical_time
    from empirical.measure.flow import FlowSearch
    from empirical.models.local_score import LocalScoreDenoiser

    side = int(round(np.sqrt(y.shape[1])))
    den = LocalScoreDenoiser(y, patch_of, image_shape=(side, side), max_bytes=cfg.max_bytes)  # float64, as networks
    flow = FlowSearch(den)
    t0 = time.perf_counter()
    m = measure_critical_time(den, y, n_starts=cfg.n_starts, n_grid=cfg.n_grid, tol_t=cfg.tol_t, search=flow,
                              t_max=cfg.t_max, t_min=cfg.t_min)  # fmt: skip
    scan = [{k: e[k] for k in ("t", "starts", "escaped", "stable", "basin")} for e in flow.log]
    for e in scan:
        e["patch"] = den.patch_at(e["t"])
    return {"t_measured": float(m.t), "t_lo": float(m.t_lo), "t_hi": float(m.t_hi),
            "machine_evaluations": flow.evaluations, "measure_s": time.perf_counter() - t0, "scan": scan}  # fmt: skip


def nearest(times, values):
    """t -> the value at the nearest of ``times``: a patch size calibrated on a few times, used at any t."""
    times = np.asarray(times, dtype=np.float64)
    return lambda t: int(values[int(np.argmin(np.abs(times - t)))])


def run(cfg: Config, command: str, log=print) -> dict:
    """The three stages (module docstring); returns the result written to ``cfg.out``."""
    from empirical._util.results import write_json_atomic
    from empirical._util.stopwatch import Stopwatch
    from empirical.pipelines.n_sweep import nested_indices
    from empirical.pipelines.stages import device_name

    clock = Stopwatch()
    with clock("data"):
        y, paths = training_set(cfg)
        xt, t, rows = held_out(cfg)
    with clock("networks"):
        nets = {role: network_x0(path, xt, t) for role, path in paths.items()}
    whole = 2 * int(round(np.sqrt(y.shape[1]))) - 1
    patches = sorted(set(cfg.patches) | {whole})
    with clock("calibration"):
        log(f"calibration: LS on all {len(y)} training images, P in {patches}", flush=True)
        key = {"xt": xt.numpy(), "patches": np.array(patches), "images": _digest(y)}
        ls, machine_s = cached(
            cfg.machine_cache, key, lambda: machine_x0(y, xt, t, [patches] * len(xt), max_bytes=cfg.max_bytes, log=log)
        )
    calibrated = {role: calibrate(ls, x0, patches, cfg.times) for role, (x0, _) in nets.items()}
    p_els = [min(r["patch"], cfg.els_max_patch) for r in calibrated["conv"]]
    sub = nested_indices(len(y), [cfg.n_els], seed=0)[cfg.n_els]
    with clock("els"):
        els = machine_x0(y[sub], xt, t, [[p] for p in p_els], equivariant=True, max_bytes=cfg.max_bytes, log=log)
    with clock("ls_subset"):
        ls_sub = machine_x0(y[sub], xt, t, [[p] for p in p_els], max_bytes=cfg.max_bytes, log=log)
    result = {
        "command": command, "options": dataclasses.asdict(cfg), "dataset": cfg.dataset, "n_train": len(y),
        "held_out": {"split": "test", "rows_by_time": rows.tolist()}, "notes": NOTES,
        "machine": {"patch_whole": whole, "padding": "zero", "calibration_dtype": "float32",
                    "calibration_machine_s": round(machine_s, 1), "machine_cache": cfg.machine_cache,
                    "els_patch_by_time": p_els, "n_els": cfg.n_els, "els_subset": "n-sweep's nested subset, seed 0"},
        "networks": {role: network_result(info, calibrated[role], ls[:, patches.index(whole)], els[:, 0],
                                          ls_sub[:, 0], nets[role][0], cfg.times) for role, (_, info) in nets.items()},
    }  # fmt: skip
    write_json_atomic(cfg.out, result | {"seconds": clock.seconds(1)})
    with clock("breaking_time"):
        sub = nested_indices(len(y), [cfg.n_flow], seed=0)[cfg.n_flow]
        log(f"flow search: LS on {cfg.n_flow} training images, P(t) = {[r['patch'] for r in calibrated['conv']]}")
        patch_of = nearest(cfg.times, [r["patch"] for r in calibrated["conv"]])
        result["breaking_time"] = {"n_train": cfg.n_flow, "subset": "n-sweep's nested subset, seed 0",
                                   **breaking_time(y[sub], patch_of, cfg), **n_sweep_reference(cfg.n_flow)}  # fmt: skip
    result |= {"seconds": clock.seconds(1), "threads": torch.get_num_threads(), "device": device_name("cpu")}
    write_json_atomic(cfg.out, result)
    return result


def training_set(cfg: Config) -> tuple[np.ndarray, dict]:
    """(the networks' training images (N, d), {"conv": path, "attention": path}), refused unless both networks were
    trained on the same images (the machine is the Bayes-optimal local denoiser of these very images)."""
    from empirical.training.train import training_images

    y = training_images(cfg.network, cfg.dataset)
    if max(cfg.n_els, cfg.n_flow) > len(y):
        raise ValueError(f"n_els={cfg.n_els} and n_flow={cfg.n_flow} must not exceed the {len(y)} training images")
    paths = {"conv": cfg.network} | ({"attention": cfg.attention_network} if cfg.attention_network else {})
    for path in paths.values():
        if not np.array_equal(training_images(path, cfg.dataset), y):
            raise ValueError(f"{path} was trained on other images than {cfg.network}")
    return y, paths


def cached(path: str | None, key: dict, compute) -> tuple[np.ndarray, float]:
    """(``compute()``, its seconds), read from the npz at ``path`` when that holds the same ``key`` arrays (the same
    held-out inputs, patch sizes and training images: the machine's outputs do not depend on the networks), else
    computed and written there."""
    import io
    from pathlib import Path

    from empirical._util.files import atomic_write

    if path is not None and Path(path).is_file():
        with np.load(path) as f:
            if all(k in f and np.array_equal(f[k], v) for k, v in key.items()):
                return f["x0"], float(f["seconds"])
    t0 = time.perf_counter()
    x0 = compute()
    seconds = time.perf_counter() - t0
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, x0=x0, seconds=seconds, **key)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(path), lambda f: f.write(buf.getvalue()))
    return x0, seconds


def _digest(y: np.ndarray) -> np.ndarray:
    import hashlib

    return np.array(hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest())


def network_result(info: dict, rows: list[dict], exact, els, ls_sub, net, times) -> dict:
    """One network's calibration rows with the r^2 of the exact denoiser, ELS and LS on the subset, per time and
    over every (time, image)."""
    per_image = {"ls": np.array([r["r2"] for r in rows])}
    for name, x0 in (("exact", exact), ("els_subset", els), ("ls_subset", ls_sub)):
        per_image[name] = np.stack([r2(x0[k], net[k]) for k in range(len(times))])
    for k, row in enumerate(rows):
        row["r2_median_of"] = {name: float(np.median(v[k])) for name, v in per_image.items()}
    overall = {name: float(np.median(v)) for name, v in per_image.items()}
    return info | {"r2_median_overall": overall, "rows": rows}


def n_sweep_reference(n: int, path: str = "docs/results/n_sweep.json") -> dict:
    """The n-sweep's row of the same N (the network trained on these images, the exact prediction), if there is one."""
    import json
    from pathlib import Path

    if not Path(path).is_file():
        return {}
    row = next((r for r in json.loads(Path(path).read_text()) if r.get("n_train") == n), None)
    keys = ("t_exact", "kind_exact", "t_macroscopic", "t_measured", "t_hi", "model", "step")
    return {} if row is None else {"n_sweep": {"from": path} | {k: row.get(k) for k in keys}}


def main(argv: list[str] | None = None) -> int:
    from empirical._util.cli import command_line, print_config, refuse, typed_command
    from empirical._util.files import check_output_file

    try:
        cfg, args = typed_command(Config, "python -m empirical local-score", __doc__, argv)
        check_output_file(cfg.out, "out")
    except ValueError as err:
        return refuse(err)
    if args.dry_run:
        return print_config("local-score", cfg)
    result = run(cfg, command_line("local-score", argv))
    print(
        {role: r["r2_median_overall"] for role, r in result["networks"].items()}, result["breaking_time"]["t_measured"]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
