"""What every public search of the fixed-point engine does first: one BLAS thread, the checked field, the grid span,
a progress bar.

``critical_time``, ``bifurcation_tree``, ``collapse_time`` and the frozen-time functions of
``theory.bifurcations`` build their field here, so the checks and their messages are written once.
"""

from __future__ import annotations

import functools
import sys

from threadpoolctl import threadpool_limits

from theory._checks import check_data, check_eta, check_in_range, check_int, check_tolerance
from theory._field import MixtureField
from theory.schedules import Schedule


def one_blas_thread(fn):
    """Run ``fn`` with one BLAS thread: the engine's dense algebra is many small eigh/solve calls, which a
    multi-threaded BLAS slows ~20x on a busy machine (measured: 64 x 64 eigh 30 ms against 1.5 ms)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


def exact_field(data, schedule, eta, t=None, name="t", devices=None) -> MixtureField:
    """The exact field, after checking the arguments (t, if given, must lie in (0, T])."""
    check_data(data)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a theory Schedule; got {type(schedule).__name__}")
    if t is not None:
        check_in_range(
            f"{name} (0 is the data itself, where the score of a finite set is singular)",
            t,
            0.0,
            schedule.T,
            open_lo=True,
        )
    return MixtureField(data, schedule, eta, devices=devices)


def grid_search_setup(data, schedule, eta, t_low, t_low_default, n_grid, tol_t, low_name="t_min", devices=None):
    """(field, eta, t_low, n_grid, tol_t) of a search on a log-SNR grid from T down to ``t_low`` (default
    ``t_low_default`` T), each argument checked: eta in the family's range, t_low in (0, T), n_grid >= 3,
    tol_t > 0."""
    eta = check_eta(eta)
    f = exact_field(data, schedule, eta, devices=devices)
    T = float(schedule.T)
    t_low = t_low_default * T if t_low is None else float(t_low)
    check_in_range(low_name, t_low, 0.0, T, open_lo=True, open_hi=True)
    return f, eta, t_low, check_int("n_grid", n_grid, 3), check_tolerance("tol_t", tol_t)


class _Silent:
    """The progress bar's stand-in where none is shown."""

    def update(self, n=1):
        pass

    def set_postfix_str(self, s, refresh=True):
        pass

    def close(self):
        pass


def progress_bar(total, desc, progress):
    """A tqdm bar of ``total`` steps (the grid times of a scan), or a silent stand-in: ``progress`` None shows it
    when stderr is a terminal. tqdm is optional (the ``empirical`` extra installs it)."""
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Silent()
    return tqdm(total=total, desc=desc, unit="time", dynamic_ncols=True) if progress else _Silent()
