"""The argument checks of the public API, for code that builds on theory (a learned field, a sampler): each
raises ValueError (TypeError for a wrong kind of object) naming the parameter and its allowed range; nothing is
clipped silently.

    >>> from theory.checks import check_in_range
    >>> check_in_range("t", 1.5, 0.0, 1.0)
    Traceback (most recent call last):
    ...
    ValueError: t must lie in [0.0, 1.0]; got 1.5
"""

from theory._checks import (
    available_memory,
    check_data,
    check_eta,
    check_finite_array,
    check_in_range,
    check_int,
    check_memory,
    check_nonnegative,
    check_positive,
    check_schedule,
    check_tolerance,
    check_weights,
)

__all__ = [
    "available_memory",
    "check_data",
    "check_eta",
    "check_finite_array",
    "check_in_range",
    "check_int",
    "check_memory",
    "check_nonnegative",
    "check_positive",
    "check_schedule",
    "check_tolerance",
    "check_weights",
]
