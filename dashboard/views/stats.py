"""Samples of the saver's in-memory figures over time, for the charts of the Backups page."""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from persistence import BackupRun, HybridSaver

logger = logging.getLogger(__name__)


class StatsHistory:
    """Samples of the saver's in-memory figures over time, for the charts.

    The runs table says what each backup wrote; what memory held in between lives only in this
    process, so it is sampled here: after every backup run (register :meth:`on_run` with
    ``saver.add_listener``) and whenever a page asks (:meth:`sample`, throttled).
    """

    def __init__(self, saver: HybridSaver, maxlen: int = 10_000, min_gap: float = 1.0) -> None:
        self.saver = saver
        self.min_gap = min_gap
        self._samples: deque[tuple] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, every: float) -> None:
        """Also sample every ``every`` seconds from a daemon thread (so the lag between two backups
        is seen even when no page is open), until :meth:`stop` or the saver closes."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every) and not self.saver.closed:
                try:
                    self.sample(force=True)
                except Exception:  # noqa: BLE001 - a failed sample must not end the sampling
                    logger.exception("sampling the saver's figures failed")

        self._thread = threading.Thread(target=loop, name="hybrid-saver-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sample(self, force: bool = False) -> None:
        """Record the saver's figures now (at most once per ``min_gap`` seconds unless ``force``)."""
        now = datetime.now(UTC)
        with self._lock:
            if not force and self._samples and (now - self._samples[-1][0]).total_seconds() < self.min_gap:
                return
        if self.saver.closed:
            return
        stats = self.saver.stats()
        with self._lock:
            self._samples.append(
                (
                    now,
                    stats.threads,
                    stats.checkpoints,
                    stats.pending,
                    stats.lag_seconds,
                    stats.resident_bytes,
                    stats.memory_budget,
                )
            )

    def on_run(self, _run: BackupRun) -> None:
        """Backup listener: sample right after every run."""
        self.sample(force=True)

    def frame(self) -> pd.DataFrame:
        """Columns ``at``, ``threads``, ``checkpoints``, ``pending``, ``lag_s``, ``resident_bytes``,
        ``budget``; oldest first."""
        with self._lock:
            rows = list(self._samples)
        df = pd.DataFrame(
            rows, columns=["at", "threads", "checkpoints", "pending", "lag_s", "resident_bytes", "budget"]
        )
        df["at"] = pd.to_datetime(df["at"], utc=True)
        return df


__all__ = ["StatsHistory"]
