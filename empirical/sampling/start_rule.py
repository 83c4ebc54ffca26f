r"""An n-dependent Gaussian-late-start time, calibrated once on the digits' FID-vs-t_start curves and applied unchanged
to other data sets through their critical time t_c.

Why it depends on n. A few-step sampler started from the Gaussian at t_start pays two errors: the step error of n
steps over [t_end, t_start], which grows with the span and shrinks with n, and the start error of the Gaussian,
zero (for the Gaussian part of the law) above t_c, where the generative potential has one stable fixed point, and
growing below it. With many steps only the start error is left and any t_start >= t_c will do; with few steps it
pays to start below t_c and spend the steps on a shorter span. So the best t_start falls below t_c as n falls.

Why log-SNR. Both errors are functions of the signal-to-noise ratio, not of the schedule's clock: the Gaussian's
error at t depends on theta_t^2 lam_k / sigma_t^2 (SNR times the data's covariance eigenvalues, which also set t_c),
and the step error of DDIM-type solvers on the step in lambda = log SNR / 2 (Lu et al. 2022). A rule written as an
offset in log-SNR from t_c is invariant under a change of time variable; a ratio t_start / t_c is not. So:

    t_start(n) = t at which  log SNR(t) = log SNR(t_c) + delta(n),      (t_start(n) = T when the digits' best is T)

delta(n) = log SNR(t*_n) - log SNR(t_c^digits), where t*_n is the sweep time that minimises the median over the
digits' gls curves at n (every sampler and grid of the sweep, each curve divided by its own minimum) of the
relative FID: the quantity that "within 10% of the sweep's best" measures, pooled over samplers so that
one noisy argmin does not set the rule. When t*_n is the schedule's T (starting from the Gaussian at T, i.e. the
vanilla start, is best), the rule is "start at T", not an offset.

    >>> from theory import VPLinear
    >>> curves = [{"init": "gls", "n_steps": 3, "t": [0.2, 0.3, 0.4, 0.5], "fid": [4.0, 2.0, 3.0, 5.0]}]
    >>> cal = calibrate(curves, t_c=0.4, schedule=VPLinear())
    >>> cal["3"]["t_best"], round(rule_t_start(3, 0.4, VPLinear(), cal), 12)
    (0.3, 0.3)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from empirical._util.cli import is_int, is_real

__all__ = ["DIGITS_CURVES", "PACKAGED", "calibrate", "load_calibration", "packaged_calibration", "rule_t_start"]

DIGITS_CURVES = "docs/results/late_start_digits.json"  # the calibration's source (relative to the repository)
# The calibration on DIGITS_CURVES, shipped with the package (``load_calibration`` of that file on VPLinear; a test
# recomputes it from the committed curves), so the rule needs no checkout.
PACKAGED = Path(__file__).with_name("start_rule_digits.json")


def calibrate(curves: list[dict], t_c: float, schedule, init: str = "gls") -> dict:
    """{str(n): {t_best, at_T, delta_log_snr, ratio_t_c, n_curves, median_relative_fid}} from sweep curves
    ({init, n_steps, t (m,), fid (m,)}, all of one n on the same t grid) of the data whose critical time is t_c."""
    if not (is_real(t_c) and 0 < t_c <= schedule.T):
        raise ValueError(f"t_c must be a number in (0, T={schedule.T}]; got {t_c!r}")
    out = {}
    for n in sorted({c["n_steps"] for c in curves if c["init"] == init}):
        group = [c for c in curves if c["init"] == init and c["n_steps"] == n]
        t = np.asarray(group[0]["t"], dtype=float)
        if any(list(c["t"]) != list(group[0]["t"]) for c in group):
            raise ValueError(f"the {init} curves at n = {n} must share one t grid")
        fid = np.array([[np.nan if v is None else v for v in c["fid"]] for c in group], dtype=float)
        median = np.nanmedian(fid / np.nanmin(fid, axis=1, keepdims=True), axis=0)
        t_best = float(t[int(np.nanargmin(median))])
        out[str(n)] = {
            "t_best": t_best,
            "at_T": t_best >= schedule.T,
            "delta_log_snr": float(schedule.log_snr(t_best) - schedule.log_snr(t_c)),
            "ratio_t_c": t_best / t_c,
            "n_curves": len(group),
            "median_relative_fid": [round(float(v), 4) for v in median],
        }
    if not out:
        raise ValueError(f"no curves with init {init!r} to calibrate on")
    return out


def rule_t_start(n_steps: int, t_c: float, schedule, calibration: dict) -> float:
    """The rule's t_start for ``n_steps`` on data of critical time t_c: the t whose log SNR is log SNR(t_c) +
    delta(n), or T where the calibration's best was T or the target SNR lies below SNR(T)."""
    if not is_int(n_steps) or str(n_steps) not in calibration:
        raise ValueError(
            f"n_steps must be one the rule was calibrated at, {sorted(map(int, calibration))}; got {n_steps!r}"
        )
    if not (is_real(t_c) and 0 < t_c <= schedule.T):
        raise ValueError(f"t_c must be a number in (0, T={schedule.T}]; got {t_c!r}")
    cal = calibration[str(n_steps)]
    log_snr = float(schedule.log_snr(t_c)) + cal["delta_log_snr"]
    if cal["at_T"] or log_snr <= float(schedule.log_snr(schedule.T)):
        return float(schedule.T)
    return float(schedule.t_from_snr(math.exp(log_snr)))


def _shown(path: Path) -> str:
    """A path inside the repository relative to it (results files do not carry this machine's folders)."""
    from theory.paths import repo_root

    try:
        return str(path.resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


def packaged_calibration() -> dict:
    """The digits' calibration that ships with the package (``PACKAGED``)."""
    return json.loads(PACKAGED.read_text())


def load_calibration(path, schedule, init: str = "gls") -> dict:
    """The calibration of a late_start curves file (its "sweep" and summary's t_start_theory = t_c), with its
    source: {source, t_c, schedule, init, objective, by_n: calibrate(...)}."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"calibration must be a late_start curves file (late_start_<dataset>.json); {path} is not a file"
        )
    curves = json.loads(path.read_text())
    if not isinstance(curves, dict) or "sweep" not in curves or "t_start_theory" not in curves.get("summary", {}):
        raise ValueError(f"calibration {path} has no 'sweep' curves and summary t_start_theory")
    t_c = float(curves["summary"]["t_start_theory"])
    return {
        "source": _shown(path),
        "dataset": curves["summary"].get("dataset"),
        "t_c": t_c,
        "schedule": repr(schedule),
        "init": init,
        "objective": "argmin over the sweep's t of the median over curves of FID / the curve's min FID",
        "rule": "log SNR(t_start) = log SNR(t_c) + delta_log_snr(n); t_start = T where at_T",
        "by_n": calibrate(curves["sweep"], t_c, schedule, init),
    }
