"""Small statistics and timing helpers."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

clock = time.perf_counter


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summary(seconds: Sequence[float], unit: float = 1e6) -> dict[str, Any]:
    """Median, p95, p99 and max of ``seconds`` in microseconds (``unit=1e6``) or milliseconds (``1e3``)."""
    if not seconds:
        return {"n": 0}
    scale = unit
    return {
        "unit": {1e6: "us", 1e3: "ms", 1.0: "s"}.get(unit, f"x{unit:g}"),
        "n": len(seconds),
        "median": statistics.median(seconds) * scale,
        "p95": quantile(seconds, 0.95) * scale,
        "p99": quantile(seconds, 0.99) * scale,
        "max": max(seconds) * scale,
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once; return (seconds, result)."""
    start = clock()
    result = fn()
    return clock() - start, result


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


class CpuClock:
    """CPU seconds of this process plus the database server's (when it is the embedded one)."""

    def __init__(self, server_cpu: Callable[[], float | None]) -> None:
        self._server = server_cpu

    def now(self) -> float | None:
        server = self._server()
        return None if server is None else time.process_time() + server

    def settle(self, max_wait: float = 3.0) -> None:
        """Wait until the server's CPU reading stops moving (a backend that exited shows its CPU
        time again only once the server has reaped it), so it is not charged to the next figure."""
        if self._server() is None:
            return
        deadline = clock() + max_wait
        before = self._server() or 0.0
        while clock() < deadline:
            time.sleep(0.1)
            after = self._server() or 0.0
            if after - before < 0.02:
                return
            before = after

    def measure(self, fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
        """Run ``fn``; return (wall seconds, CPU seconds or None, result)."""
        self.settle()
        cpu0 = self.now()
        start = clock()
        result = fn()
        wall = clock() - start
        cpu1 = self.now()
        return wall, (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None), result


__all__ = ["CpuClock", "clock", "quantile", "ratio", "summary", "timed"]
