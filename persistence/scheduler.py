"""The backup job: an APScheduler 3.x BackgroundScheduler that calls ``saver.backup()`` on an interval."""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

if TYPE_CHECKING:
    from persistence.saver import BackupRun, HybridSaver

logger = logging.getLogger(__name__)

JOB_ID = "hybrid-saver-backup"
MIN_INTERVAL = 0.01
MAX_INTERVAL = 7 * 24 * 3600.0


def check_interval(seconds: Any) -> float:
    """Return ``seconds`` as a float or raise ``ValueError`` saying what is accepted."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise ValueError(f"backup interval must be a number of seconds, got {seconds!r}")
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(
            f"backup interval {seconds!r} s is out of range: use between {MIN_INTERVAL} s and "
            f"{MAX_INTERVAL:.0f} s (a week); pause the job instead of setting a huge interval."
        )
    return float(seconds)


class BackupScheduler:
    """Runs ``saver.backup(trigger="scheduled")`` every ``interval`` seconds.

    One job (``max_instances=1``, ``coalesce=True``); a manual backup and a scheduled one never
    write at the same time because both take the saver's backup lock. Results come back through
    APScheduler listeners and are kept in :attr:`history`.
    """

    def __init__(self, saver: HybridSaver, interval: float) -> None:
        self.saver = saver
        self.interval = check_interval(interval)
        self.history: deque[BackupRun] = deque(maxlen=1000)
        self.errors: deque[str] = deque(maxlen=100)
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            daemon=True,
        )
        self._scheduler.add_listener(self._on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        self._started = False

    def _job(self) -> BackupRun | None:
        if self.saver.closed:
            return None
        return self.saver.backup(trigger="scheduled")

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_EXECUTED and event.retval is not None:
            self.history.append(event.retval)
        elif event.code == EVENT_JOB_ERROR:
            self.errors.append(f"{type(event.exception).__name__}: {event.exception}")
            logger.error("scheduled backup raised %s", type(event.exception).__name__)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._scheduler.add_job(
                self._job,
                IntervalTrigger(seconds=self.interval),
                id=JOB_ID,
                name="hybrid saver backup",
                replace_existing=True,
            )
            self._scheduler.start()
            self._started = True

    def set_interval(self, seconds: float) -> None:
        """Change the interval at run time; the next run is one new interval from now."""
        seconds = check_interval(seconds)
        with self._lock:
            self.interval = seconds
            if self._started and self._scheduler.running:
                paused = self.paused
                self._scheduler.reschedule_job(JOB_ID, trigger=IntervalTrigger(seconds=seconds))
                if paused:
                    self._scheduler.pause_job(JOB_ID)

    def pause(self) -> None:
        with self._lock:
            if self._scheduler.running:
                self._scheduler.pause_job(JOB_ID)

    def resume(self) -> None:
        with self._lock:
            if self._scheduler.running:
                self._scheduler.resume_job(JOB_ID)

    @property
    def paused(self) -> bool:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler.running else None
        return job is not None and job.next_run_time is None

    @property
    def next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler.running else None
        return job.next_run_time if job is not None else None

    @property
    def running(self) -> bool:
        return self._scheduler.running

    def shutdown(self) -> None:
        """Stop the job and wait for a run under way to finish (idempotent)."""
        with self._lock:
            if self._scheduler.running:
                self._scheduler.shutdown(wait=True)


__all__ = ["JOB_ID", "BackupScheduler", "check_interval"]
