"""Input validation shared by the public API: clear errors, nothing clipped silently."""

from __future__ import annotations

import os

import jax
import numpy as np


def is_traced(x) -> bool:
    """True inside jit/vmap/grad, where values cannot be inspected."""
    return isinstance(x, jax.core.Tracer)


# Magnitudes above this overflow float64 once squared and summed (1e200 N), or divided by a small sigma^2: the
# numbers downstream would be inf or NaN, so inputs beyond it are refused by name.
LARGE = 1e100


def check_finite_array(name: str, x, max_abs: float = LARGE) -> np.ndarray:
    """``x`` as a float64 array of real numbers, finite and at most ``max_abs`` in magnitude, or raise naming it.

    The one input check for arrays: complex values (whose imaginary part a cast would drop) and booleans raise
    TypeError; ragged lists, strings, NaN, inf and magnitudes above ``max_abs`` raise ValueError. Integers are
    real numbers and become float64.
    """
    a = _real_array(name, x)
    bad = ~np.isfinite(a)
    if np.any(bad):
        raise ValueError(f"{name} must be finite; it contains NaN or inf (first at index {_first(bad)})")
    big = np.abs(a) > max_abs
    if np.any(big):
        raise ValueError(
            f"{name} must have every |value| <= {max_abs:g} (larger numbers overflow float64 downstream); "
            f"got {float(a[big].ravel()[0])!r}"
        )
    return a


def _real_array(name: str, x) -> np.ndarray:
    """``x`` as a float64 array of real numbers; complex, boolean and non-numeric inputs are refused by name."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of real numbers; got {_short(x)} ({err})") from None
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real; got complex values ({a.dtype}), whose imaginary part would be dropped")
    if kind == "b":
        raise TypeError(f"{name} must be real numbers, not booleans; got {_short(x)}")
    if kind in "USV":
        raise TypeError(f"{name} must be real numbers; got {_short(x)} ({a.dtype})")
    try:
        a = a.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:  # an object array: a ragged list, or objects that are not numbers
        raise ValueError(f"{name} must be a rectangular array of real numbers; got {_short(x)} ({err})") from None
    return a


def _first(mask: np.ndarray):
    """The index of the first True of ``mask``: an int for 1D, a tuple otherwise, () for a scalar."""
    idx = tuple(int(i[0]) for i in np.nonzero(np.atleast_1d(mask)))
    return idx[0] if len(idx) == 1 else idx


def _short(value, width: int = 60) -> str:
    """repr of a value, cut to ``width`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _as_float(name: str, value) -> float:
    """A real scalar as a float: complex numbers, booleans and strings are refused (float() would accept the
    last two, and drop the imaginary part of a numpy complex)."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a real number; got {_short(value)}")
    if np.asarray(value).dtype.kind == "c":
        raise TypeError(f"{name} must be real; got the complex {_short(value)}, whose imaginary part would be dropped")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise TypeError(f"{name} must be a real number; got {_short(value)}") from err


def _upper(name: str, v: float, hi: float, value) -> None:
    if v > hi:
        raise ValueError(f"{name} must be a finite number <= {hi:g} (larger numbers overflow float64); got {value!r}")


def check_positive(name: str, value: float, hi: float = LARGE) -> float:
    """A finite number in (0, hi]."""
    v = _as_float(name, value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    _upper(name, v, hi, value)
    return v


def check_nonnegative(name: str, value: float, hi: float = LARGE) -> float:
    """A finite number in [0, hi]."""
    v = _as_float(name, value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    _upper(name, v, hi, value)
    return v


def check_in_range(name: str, x, lo: float, hi: float, *, open_lo=False, open_hi=False):
    """Raise unless every value of ``x`` lies in the interval; skip traced values."""
    if is_traced(x):
        return x
    a = _real_array(name, x)
    bad = ~np.isfinite(a)
    bad |= (a <= lo) if open_lo else (a < lo)
    bad |= (a >= hi) if open_hi else (a > hi)
    if np.any(bad):
        left = "(" if open_lo else "["
        right = ")" if open_hi else "]"
        first = float(a[bad].ravel()[0] if a.ndim else a)
        raise ValueError(f"{name} must lie in {left}{lo}, {hi}{right}; got {first!r}")
    return x


def check_weights(weights, n: int) -> np.ndarray:
    """Mixture weights: shape (n,), non-negative, summing to 1 (to 1e-10); None means uniform."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = check_finite_array("weights", weights)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) to match the components; got {w.shape}")
    if np.any(w < 0):
        raise ValueError("weights must be >= 0")
    if abs(w.sum() - 1.0) > 1e-10:
        raise ValueError(f"weights must sum to 1 (within 1e-10); they sum to {w.sum()!r}")
    return w


ETA_MAX = 1e50  # (1 + eta^2)^2 and its products with the data's squared scale stay finite in float64


def check_eta(eta) -> float:
    """eta of the generative family: a finite number in [0, ETA_MAX]."""
    return check_nonnegative("eta", eta, ETA_MAX)


def check_data(data, name: str = "data"):
    """Return ``data`` if it is a theory mixture (DeltaMixture or GaussianMixture), else raise TypeError naming it."""
    from theory.data import _Mixture  # late import: theory.data imports this module

    if not isinstance(data, _Mixture):
        raise TypeError(
            f"{name} must be a theory DeltaMixture or GaussianMixture; got {type(data).__name__} "
            f"(wrap points as DeltaMixture(points))"
        )
    return data


def check_schedule(schedule, name: str = "schedule"):
    """Return ``schedule`` if it is a theory Schedule (VPLinear, VPCosine, VE, DDPM), else raise TypeError."""
    from theory.schedules import Schedule  # late import, as above

    if not isinstance(schedule, Schedule):
        kind = type(schedule).__name__
        raise TypeError(f"{name} must be a theory Schedule (VPLinear, VPCosine, VE, DDPM); got {kind}")
    return schedule


def check_int(name: str, value, lo: int = 1, hi: int | None = None) -> int:
    """An integer count in [lo, hi]: numpy integers are accepted; bool, floats and strings are refused by name."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {allowed}; got {v}")
    return v


def check_tolerance(name: str, value) -> float:
    """A tolerance: a finite number > 0 (0 would make an iteration that stops on it never return)."""
    return check_positive(name, value)


def available_memory() -> int:
    """Bytes a new allocation can get now: the least of MemAvailable (/proc/meminfo; total RAM where there is
    none), the room under the process's cgroup memory limit (a container's), and the room under its address-space
    limit (``ulimit -v``). Past any of them an allocation inside XLA aborts the process instead of raising."""
    room = [_read_number("/proc/meminfo", "MemAvailable:", 1024), _cgroup_room(), _address_space_room()]
    room = [r for r in room if r is not None]
    return min(room) if room else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _read_number(path, key=None, unit=1):
    """The number in a file (or on its line starting with ``key``), times ``unit``; None if absent or "max"."""
    try:
        with open(path) as f:
            for line in f:
                if key is None or line.startswith(key):
                    word = line.split()[1 if key else 0]
                    return None if word == "max" else int(word) * unit
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room():
    """limit - usage of this process's memory cgroup (v2 memory.max, v1 memory.limit_in_bytes), or None."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = [parts for parts in (line.rstrip("\n").split(":", 2) for line in f) if len(parts) == 3]
    except OSError:
        return None
    for _, ctrl, path in lines:
        v2 = ctrl == ""
        if v2 or "memory" in ctrl.split(","):
            base = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory"
            for d in (base + path, base):  # inside a container the own cgroup is mounted at the root
                limit = _read_number(f"{d}/memory.max" if v2 else f"{d}/memory.limit_in_bytes")
                used = _read_number(f"{d}/memory.current" if v2 else f"{d}/memory.usage_in_bytes")
                if limit is not None and used is not None:
                    return limit - used
    return None


def _address_space_room():
    """RLIMIT_AS minus the address space in use (VmSize), or None without a limit."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    used = _read_number("/proc/self/status", "VmSize:", 1024)
    return None if soft == resource.RLIM_INFINITY or used is None else soft - used


def check_memory(what: str, n_bytes: float, hint: str = "") -> None:
    """Raise MemoryError, with the estimate, if ``what`` needs more than the memory available now."""
    free = available_memory()
    if n_bytes > free:
        raise MemoryError(
            f"{what} would need about {n_bytes / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB available"
            + (f"; {hint}" if hint else "")
        )
