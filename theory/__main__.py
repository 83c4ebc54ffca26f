"""Print the critical-time table of the reference problems: ``python -m theory``."""

from __future__ import annotations

import argparse
import json
import math
import time

from theory.bifurcations import critical_time
from theory.schedules import DDPM, VE, VPCosine, VPLinear
from theory.systems import reference_problems

SCHEDULES = {"vp-linear": VPLinear, "vp-cosine": VPCosine, "ve": VE, "ddpm": DDPM}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m theory", description=__doc__)
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="vp-linear")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = p.parse_args(argv)
    schedule = SCHEDULES[args.schedule]()
    rows = []
    for prob in reference_problems():
        t0 = time.perf_counter()
        ct = critical_time(prob.data, schedule, prob.eta)
        closed, closed_t = prob.closed_centre(schedule)
        # VP: compare theta (the closed form is a theta); VE (theta = 1 everywhere): compare the time.
        if closed is not None and closed > 0:
            error, error_of = abs(ct.centre_theta - closed), "theta"
        elif closed_t is not None and math.isfinite(closed_t) and not schedule.variance_preserving:
            error, error_of = abs(ct.centre_t - closed_t), "t"
        else:
            error, error_of = None, None
        rows.append(
            {
                "problem": prob.name,
                "eta": prob.eta,
                "kind": ct.kind,
                "t_c": ct.t,
                "theta_c": ct.theta,
                "snr_c": ct.snr,
                "step": ct.step,
                "centre_t": ct.centre_t,
                "centre_theta": ct.centre_theta,
                "centre_theta_closed_form": closed,
                "centre_t_closed_form": closed_t,
                "error": error,
                "error_of": error_of,
                "seconds": time.perf_counter() - t0,
            }
        )
    if args.json:  # nan -> null: strict JSON
        rows_json = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        print(json.dumps({"schedule": repr(schedule), "rows": rows_json}, indent=1))
        return 0
    print(f"Critical times, {schedule!r}; forward time, generation runs from T to 0.")
    vp = schedule.variance_preserving
    print("centre: where the branch continued from the centre loses stability; closed: the sympy closed form")
    print("(theory.systems) of the same, in theta on VP schedules, in t on VE (theta = 1 there); |diff| between them.")
    what = "theta" if vp else "t"
    head = f"{'problem':<28}{'eta':>4} {'kind':<12}{'t_c':>14}{'theta_c':>14}{'SNR':>10}"
    head += f"{'step':>6}{'centre ' + what:>14}{'closed ' + what:>14}{'|diff|':>9}"
    print(head)
    for r in rows:
        fmt = lambda v, w, d: f"{v:>{w}.{d}f}" if v is not None and not math.isnan(v) else f"{'-':>{w}}"  # noqa: E731
        step = f"{r['step']:>6}" if r["step"] is not None else f"{'-':>6}"
        err = f"{r['error']:>9.1e}" if r["error"] is not None else f"{'-':>9}"
        print(
            f"{r['problem']:<28}{r['eta']:>4} {r['kind']:<12}{fmt(r['t_c'], 14, 10)}{fmt(r['theta_c'], 14, 10)}"
            f"{fmt(r['snr_c'], 10, 5)}{step}{fmt(r['centre_' + what], 14, 10)}"
            f"{fmt(r['centre_' + what + '_closed_form'], 14, 10)}{err}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
