"""The saver's jobs: an APScheduler 3.x BackgroundScheduler with the backup job (on an interval,
pausable) and the member's heartbeat. It calls plain callables and knows nothing of savers.

APScheduler logs two INFO lines per run and a WARNING whenever a run is skipped because the
previous one is still going (which is how coalescing works here). Those lines go to the logger
``persistence.ops.scheduler.apscheduler``, quiet below ERROR by default, so a host app's log stays
readable; the saver logs one line per failed run itself.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

# APScheduler 3.x ships neither annotations nor a py.typed marker (and typeshed has no stubs for it)
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)
#: where APScheduler's own per-run lines go; raise its level to see them
apscheduler_logger = logging.getLogger("persistence.ops.scheduler.apscheduler")
apscheduler_logger.setLevel(logging.ERROR)

JOB_ID = "hybrid-saver-backup"
HEARTBEAT_ID = "hybrid-saver-heartbeat"
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


class _QuietExecutor(ThreadPoolExecutor):  # type: ignore[misc]  # untyped base (see the imports)
    """APScheduler's thread pool with its per-run lines sent to :data:`apscheduler_logger`."""

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._logger = apscheduler_logger


class BackupScheduler:
    """Runs ``backup()`` every ``interval`` seconds (None: no scheduled backups, only the heartbeat)
    and ``heartbeat()`` every ``heartbeat_every`` seconds.

    One job each (``max_instances=1``, ``coalesce=True``); a manual backup and a scheduled one never
    write at the same time because both take the saver's backup lock.
    """

    def __init__(
        self,
        backup: Callable[[], Any],
        interval: float | None,
        *,
        heartbeat: Callable[[], Any] | None = None,
        heartbeat_every: float = 2.0,
        paused: bool = False,
    ) -> None:
        self._backup = backup
        self._heartbeat = heartbeat
        self.interval = check_interval(interval) if interval is not None else None
        self.heartbeat_every = heartbeat_every
        self._paused_at_start = paused
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(
            executors={"default": _QuietExecutor(max_workers=2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            logger=apscheduler_logger,
            daemon=True,
        )
        self._started = False

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            if self.interval is not None:
                self._scheduler.add_job(
                    self._backup,
                    IntervalTrigger(seconds=self.interval),
                    id=JOB_ID,
                    name="hybrid saver backup",
                    replace_existing=True,
                    next_run_time=None if self._paused_at_start else _first_run(self.interval),
                )
            if self._heartbeat is not None:
                self._scheduler.add_job(
                    self._heartbeat,
                    IntervalTrigger(seconds=self.heartbeat_every),
                    id=HEARTBEAT_ID,
                    name="hybrid saver heartbeat",
                    replace_existing=True,
                )
            self._scheduler.start()
            self._started = True

    @property
    def scheduled(self) -> bool:
        """True when backups run on an interval (False: only on demand)."""
        return self.interval is not None

    def set_interval(self, seconds: float) -> None:
        """Change the interval at run time; the next run is one new interval from now. Starts the
        backup job when there was none."""
        seconds = check_interval(seconds)
        with self._lock:
            was_scheduled = self.interval is not None
            self.interval = seconds
            if not (self._started and self._scheduler.running):
                return
            if not was_scheduled:
                self._scheduler.add_job(
                    self._backup,
                    IntervalTrigger(seconds=seconds),
                    id=JOB_ID,
                    name="hybrid saver backup",
                    replace_existing=True,
                )
                return
            paused = self._job_paused()
            self._scheduler.reschedule_job(JOB_ID, trigger=IntervalTrigger(seconds=seconds))
            if paused:
                self._scheduler.pause_job(JOB_ID)

    def pause(self) -> None:
        with self._lock:
            if self._scheduler.running and self.interval is not None:
                self._scheduler.pause_job(JOB_ID)
            else:
                self._paused_at_start = True

    def resume(self) -> None:
        with self._lock:
            self._paused_at_start = False
            if self._scheduler.running and self.interval is not None:
                self._scheduler.resume_job(JOB_ID)

    def run_soon(self) -> None:
        """Run the backup job now, ahead of its schedule (memory pressure); no-op when paused or off."""
        with self._lock:
            if not self._scheduler.running or self.interval is None or self._job_paused():
                return
            try:
                self._scheduler.modify_job(JOB_ID, next_run_time=datetime.now().astimezone())
            except JobLookupError:
                pass

    def _job_paused(self) -> bool:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler.running else None
        return job is not None and job.next_run_time is None

    @property
    def paused(self) -> bool:
        if not self._scheduler.running:
            return self._paused_at_start
        return self._job_paused()

    @property
    def next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler.running else None
        return job.next_run_time if job is not None else None

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def shutdown(self) -> None:
        """Stop the jobs and wait for a run under way to finish (idempotent)."""
        with self._lock:
            if self._scheduler.running:
                # no job is submitted from here on: without the pause, a run due while the executor shuts
                # down fails to submit ("cannot schedule new futures after shutdown") and logs a traceback
                self._scheduler.pause()
                self._scheduler.shutdown(wait=True)


def _first_run(interval: float) -> datetime:
    return datetime.now().astimezone() + timedelta(seconds=interval)


__all__ = ["HEARTBEAT_ID", "JOB_ID", "MAX_INTERVAL", "BackupScheduler", "apscheduler_logger", "check_interval"]
