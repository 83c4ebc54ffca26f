"""Seconds per training step of 28x28 U-Net configurations on the CPU: the timing behind docs/cpu_recipe.md.

A step is what ``empirical.training.train`` does once: draw a batch, ``Denoiser.loss``, backward, gradient clipping,
Adam and the EMA update. Every configuration keeps its own model and optimizer; each round runs one step of every
configuration in a freshly shuffled order, so the load of a shared machine falls on all of them alike. After
``--warmup`` rounds, the median (and quartiles) of ``--rounds`` rounds is reported, with the ratio to the
reference configuration (the trainer's default U-Net, ch = 32, blocks = 2, batch 64, one thread) of the same run.

    OMP_NUM_THREADS=1 python benchmarks/unet_steps.py --out benchmarks/unet_steps.json
    python benchmarks/unet_steps.py --only ref,ch32-b1 --rounds 3    # a subset, quickly
    python benchmarks/unet_steps.py --table benchmarks/unet_steps.json  # the Markdown table of a result

diffusers' ``UNet2DModel`` rows need ``pip install -e .[diffusers]``; without it they are skipped, and
``--only ch32-b1-compile`` adds a ``torch.compile`` row (skipped, saying why, where compiling fails).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from empirical.models.denoiser import Denoiser
from empirical.models.nets import build_net

IMAGE = (28, 28)


@dataclass
class Case:
    """One configuration: the backbone and how a step runs it."""

    name: str
    net: dict = field(default_factory=dict)  # UNet kwargs, or diffusers UNet2DModel kwargs if diffusers=True
    batch: int = 64
    threads: int = 1
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    diffusers: bool = False


def cases() -> list[Case]:
    b1 = {"ch": 32, "blocks": 1}
    diff = {"block_out_channels": (32, 64, 64), "norm_num_groups": 8, "down_block_types": ("DownBlock2D",) * 3,
            "up_block_types": ("UpBlock2D",) * 3}  # fmt: skip
    return [
        Case("ref", {"ch": 32, "blocks": 2}),
        Case("ref-2threads", {"ch": 32, "blocks": 2}, threads=2),
        Case("ch32-b2-noattn", {"ch": 32, "blocks": 2, "attn": False}),
        Case("ch16-b2", {"ch": 16, "blocks": 2}),
        Case("ch32-b1", b1),
        Case("ch32-b1-noattn", {**b1, "attn": False}),
        Case("ch24-b1", {"ch": 24, "blocks": 1}),
        Case("ch16-b1", {"ch": 16, "blocks": 1}),
        Case("ch32-b1-mult124", {**b1, "mult": (1, 2, 4)}),
        Case("ch32-b1-2threads", b1, threads=2),
        Case("ch32-b1-channels_last", b1, channels_last=True),
        Case("ch32-b1-bf16", b1, bf16=True),
        Case("ch32-b1-batch32", b1, batch=32),
        Case("ch32-b1-batch128", b1, batch=128),
        Case("diffusers-ref", {**diff, "layers_per_block": 2}, diffusers=True),
        Case("diffusers-b1", {**diff, "layers_per_block": 1}, diffusers=True),
    ]


# Not in the default list: on the busy 2-core machine the first compiled step had not finished after 4 minutes.
EXTRA = [Case("ch32-b1-compile", {"ch": 32, "blocks": 1}, compile=True)]


class DiffusersNet(nn.Module):
    """diffusers' UNet2DModel behind the project's backbone interface net(x (n, d), c_noise (n,))."""

    def __init__(self, image_shape, **kwargs):
        from diffusers import UNet2DModel

        super().__init__()
        self.image_shape = tuple(image_shape)
        self.unet = UNet2DModel(sample_size=self.image_shape, in_channels=1, out_channels=1, **kwargs)

    def forward(self, x, c_noise):
        return self.unet(x.reshape(x.shape[0], 1, *self.image_shape), c_noise).sample.reshape(x.shape)


class Runner:
    """The model, EMA, optimizer and data of one case; ``step()`` runs one training step."""

    def __init__(self, case: Case, seed: int = 0):
        torch.manual_seed(seed)
        self.case = case
        net = DiffusersNet(IMAGE, **case.net) if case.diffusers else build_net("unet", IMAGE, **case.net)
        if case.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in net.parameters())
        self.net, self.ema = net, copy.deepcopy(net).requires_grad_(False)
        self.den = Denoiser(torch.compile(net) if case.compile else net)
        self.opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        self.x = torch.rand(4096, IMAGE[0] * IMAGE[1]) * 2 - 1  # timing does not depend on the pixels
        self.gen = torch.Generator().manual_seed(seed)

    def step(self) -> float:
        torch.set_num_threads(self.case.threads)
        t0 = time.perf_counter()
        idx = torch.randint(len(self.x), (self.case.batch,), generator=self.gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.case.bf16):
            loss = self.den.loss(self.x[idx], self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
                e.lerp_(p, 1e-3)
        return time.perf_counter() - t0


def _runners(selected: list[Case]) -> tuple[dict, dict]:
    runners, skipped = {}, {}
    for case in selected:
        try:
            runner = Runner(case)
            t = runner.step()  # the first step: compiles under torch.compile, allocates otherwise
            runners[case.name] = runner
            print(f"{case.name:24s} built, first step {t:6.2f} s", file=sys.stderr, flush=True)
        except Exception as err:  # noqa: BLE001 (a missing optional package or a failed compile skips the row)
            skipped[case.name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            print(f"{case.name:24s} skipped: {skipped[case.name]}", file=sys.stderr, flush=True)
    return runners, skipped


def run(selected: list[Case], rounds: int, warmup: int, seed: int = 0) -> dict:
    runners, skipped = _runners(selected)
    times = {name: [] for name in runners}
    order = list(runners)
    rng = random.Random(seed)
    for r in range(warmup + rounds):
        rng.shuffle(order)
        for name in order:
            dt = runners[name].step()
            if r >= warmup:
                times[name].append(dt)
        print(f"round {r + 1}/{warmup + rounds}", file=sys.stderr, flush=True)
    rows = []
    ref = statistics.median(times["ref"]) if "ref" in times else None
    for case in selected:
        if case.name not in times:
            continue
        ts = sorted(times[case.name])
        med = statistics.median(ts)
        q1, _, q3 = statistics.quantiles(ts, n=4) if len(ts) > 1 else (med, med, med)
        row = {**asdict(case), "params": runners[case.name].params, "s_per_step": med, "q1": q1, "q3": q3,
               "ms_per_image": 1e3 * med / case.batch, "vs_ref": med / ref if ref else None}  # fmt: skip
        rows.append(row)
    return {"rows": rows, "skipped": skipped}


def markdown(result: dict) -> str:
    """The rows of a result as a Markdown table (for docs/cpu_recipe.md)."""
    lines = ["| case | params | batch | threads | s/step (median) | quartiles | ms/image | vs ref |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['batch']} | {r['threads']} | {r['s_per_step']:.2f} | "
            f"{r['q1']:.2f}-{r['q3']:.2f} | {r['ms_per_image']:.1f} | "
            + (f"{r['vs_ref']:.2f} |" if r["vs_ref"] is not None else "- |")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (each runs every case once)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--only", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--table", default=None, help="print the Markdown table of this JSON result and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return 0
    if args.rounds < 1 or args.warmup < 0:
        parser.error(f"--rounds must be >= 1 and --warmup >= 0; got {args.rounds}, {args.warmup}")
    selected = cases()
    if args.only:
        names, known = args.only.split(","), selected + EXTRA
        unknown = sorted(set(names) - {c.name for c in known})
        if unknown:
            parser.error(f"--only: unknown cases {unknown}; known: {[c.name for c in known]}")
        selected = [c for c in known if c.name in names]
    t0 = time.time()
    result = run(selected, args.rounds, args.warmup)
    result = {
        "command": "python benchmarks/unet_steps.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "what": "seconds per training step (Denoiser.loss, backward, clip, Adam, EMA), median of rounds",
        "rounds": args.rounds,
        "warmup": args.warmup,
        "torch": str(torch.__version__),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs while it ran",
        "wall_s": round(time.time() - t0, 1),
        **result,
    }
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    for row in result["rows"]:  # vs_ref is None when the run has no "ref" case
        ratio = f"x{row['vs_ref']:.2f}" if row["vs_ref"] is not None else ""
        print(f"{row['name']:24s} {row['params']:9d} params  {row['s_per_step']:7.3f} s/step  "
              f"{row['ms_per_image']:6.2f} ms/img  {ratio}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
