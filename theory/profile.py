"""Where ``critical_time`` spends its time: wall seconds per phase of the search (``benchmarks/critical_time.py``).

    from theory import DeltaMixture, VPLinear, critical_time
    from theory.profile import phases

    with phases() as spent:
        critical_time(DeltaMixture(X), VPLinear())
    spent  # {"scan": s, "births": s, "centre": s, "basin mass": s, "macroscopic": s, ...}

A phase's time includes what it calls; the phases do not nest (the scan's attractors at the grid times, the
births carried up, the centre branch, the basin mass, the macroscopic search), so they add up to the call's time
less its setup. Inside them, two totals that cut across: "lock-step Newton" (theory._lockstep.newton_many) and
"descents" (MixtureField.descend).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import Counter

__all__ = ["phases"]


@contextlib.contextmanager
def phases():
    """Time the phases of the ``critical_time`` calls made inside the block: yields a Counter, phase -> seconds,
    filled as they run (the wrappers are removed on exit)."""
    import theory._critical as critical
    import theory._field as field
    import theory._lockstep as lockstep

    spent, stack, undo = Counter(), [], []

    def wrap(owner, name, label, nests=False):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*a, **k):
            if not nests and label in stack:  # a phase that calls itself is counted once
                return fn(*a, **k)
            stack.append(label)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0
                stack.pop()

        setattr(owner, name, timed)
        undo.append((owner, name, fn))

    wrap(critical, "attractors_at", "scan")
    wrap(critical._Run, "births_from", "births")
    wrap(critical._Run, "extend_centre", "centre")
    wrap(critical._Run, "mass_below", "basin mass")
    wrap(critical, "macroscopic_search", "macroscopic")
    wrap(lockstep, "newton_many", "lock-step Newton")
    wrap(field.MixtureField, "descend", "descents")
    try:
        yield spent
    finally:
        for owner, name, fn in reversed(undo):
            setattr(owner, name, fn)
