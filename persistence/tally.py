"""Plain counters and histograms the components keep about themselves (loads, claims, handoffs,
backup runs), for whoever reports them: ``persistence.metrics`` turns them into Prometheus metrics at
scrape time. Nothing here knows Prometheus or OpenTelemetry; a base module any layer may import.

A :class:`Tally` is a histogram with fixed bucket bounds: ``observe`` costs a lock and a bisect, and
is called only on slow paths (a load from PostgreSQL, a handoff, a backup run), never on a hit.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persistence.records import BackupRun

#: seconds: a load from PostgreSQL, a claim, a handoff (a millisecond to the handoff timeout)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: seconds a backup run takes
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: rows a backup writes
ROW_BUCKETS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0)
#: bytes a backup writes
BYTE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)


@dataclass(frozen=True)
class TallySnapshot:
    """A histogram as of one moment: cumulative counts per upper bound (the last is +Inf), the sum."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


class Tally:
    """A histogram with fixed upper bounds (Prometheus' ``le``), safe to observe from any thread."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> TallySnapshot:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return TallySnapshot(tuple(cumulative), running, total)


def outcome(run: BackupRun) -> str:
    """``written`` (a generation), ``empty`` (nothing to write), ``refused`` (fencing refused every
    change) or ``failed``."""
    if not run.ok:
        return "failed"
    if run.generation is not None:
        return "written"
    return "refused" if run.refused else "empty"


class RunTally:
    """What every backup run of one saver adds up to since it started (restores included: their run
    has the trigger ``restore``)."""

    def __init__(self) -> None:
        #: (trigger, outcome) -> runs
        self.runs: Counter[tuple[str, str]] = Counter()
        self.duration = Tally(DURATION_BUCKETS)
        #: rows and bytes of the runs that wrote a generation
        self.rows = Tally(ROW_BUCKETS)
        self.bytes = Tally(BYTE_BUCKETS)
        #: threads whose changes the store refused because another member owns them now (fencing)
        self.refused_threads = 0
        #: failed runs in a row (0 after a successful one)
        self.failing = 0
        self.last_success_at: datetime | None = None
        self.last_run_at: datetime | None = None
        self.created = time.time()
        self._lock = threading.Lock()

    def observe(self, run: BackupRun) -> None:
        kind = outcome(run)
        with self._lock:
            self.runs[(run.trigger, kind)] += 1
            self.refused_threads += len(run.refused)
            self.failing = self.failing + 1 if kind == "failed" else 0
            self.last_run_at = run.finished_at
            if run.ok:
                self.last_success_at = run.finished_at
        if kind != "empty":
            self.duration.observe(run.duration)
        if run.generation is not None and run.trigger != "restore":
            self.rows.observe(run.rows)
            self.bytes.observe(run.bytes)

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.runs)


__all__ = [
    "BYTE_BUCKETS",
    "DURATION_BUCKETS",
    "LATENCY_BUCKETS",
    "ROW_BUCKETS",
    "RunTally",
    "Tally",
    "TallySnapshot",
    "outcome",
]
