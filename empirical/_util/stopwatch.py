"""Wall time per named stage of a pipeline, one ``with`` line each instead of hand-written timing lines.

>>> clock = Stopwatch()
>>> with clock("predict"):
...     pass
>>> sorted(clock.seconds(digits=1))
['predict_s', 'total_s']
"""

from __future__ import annotations

import contextlib
import time

__all__ = ["Stopwatch"]


class Stopwatch:
    """Accumulates the wall time of each named stage (a stage timed twice adds up); ``total`` runs from creation."""

    def __init__(self):
        self._start = time.perf_counter()
        self._stages: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._stages[name] = self._stages.get(name, 0.0) + time.perf_counter() - t0

    def __getitem__(self, name: str) -> float:
        return self._stages[name]

    def total(self) -> float:
        return time.perf_counter() - self._start

    def seconds(self, digits: int | None = None) -> dict[str, float]:
        """{"<stage>_s": seconds, ..., "total_s": seconds}, rounded to ``digits`` if given (the results' form)."""
        out = {f"{k}_s": v for k, v in self._stages.items()} | {"total_s": self.total()}
        return out if digits is None else {k: round(v, digits) for k, v in out.items()}
