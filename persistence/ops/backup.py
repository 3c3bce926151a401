"""The backup writer: cut the change log, write a generation, record the run.

The cut is a swap under the cache's lock; rows, summaries and the write happen outside it. A
backup with nothing to write writes no generation; scheduled runs with nothing to write are folded
into one row of the runs table. A run never raises for database errors: it is returned (and logged
once at WARNING) with ``error`` set, and its changes stay pending for the next run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import psycopg
from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.db import DB_ERRORS
from persistence.errors import DatabaseUnavailable, HybridSaverError
from persistence.fleet.membership import Membership
from persistence.fleet.ownership import Ownership
from persistence.memory import MemoryCache
from persistence.ops.scheduler import BackupScheduler
from persistence.records import BackupRun
from persistence.serde import encrypts
from persistence.store import Store
from persistence.store.link import DatabaseLink
from persistence.store.rows import LAZY_SUMMARY_ROWS
from persistence.tally import RunTally

logger = logging.getLogger(__name__)

#: runs kept in memory for views while the database cannot be read
HISTORY = 1000
#: seconds between two retention passes (each backup would otherwise pay for one)
RETAIN_EVERY = 5.0


class BackupWriter:
    """Backups of one saver's cache into its store, and the record of every run."""

    def __init__(
        self,
        cache: MemoryCache,
        store: Store,
        link: DatabaseLink,
        ownership: Ownership,
        membership: Membership,
        *,
        serde: SerializerProtocol,
        summarize: bool,
        retention: int,
        retention_age: float | None = None,
        attach: Callable[[], None],
        closed: Callable[[], bool],
        written: Callable[[], None] | None = None,
    ) -> None:
        self._cache = cache
        self._store = store
        self._link = link
        self._ownership = ownership
        self._membership = membership
        self._serde = serde
        # an encrypting serde: nothing of a conversation goes to the store in clear, titles and text included
        self._summarize = summarize and not encrypts(serde)
        self.retention = retention
        self.retention_age = retention_age
        self._attach = attach
        self._closed = closed
        #: called after every backup that reached PostgreSQL (recovery files are removed then)
        self._written = written
        self._lock = threading.Lock()
        self._scheduler: BackupScheduler | None = None
        #: an early backup was asked of the scheduler (memory pressure)
        self._early = False
        self.last_run: BackupRun | None = None
        self.last_success: BackupRun | None = None
        self.history: deque[BackupRun] = deque(maxlen=HISTORY)
        #: every run since the start added up (counts by trigger and outcome, durations, rows, bytes)
        self.tally = RunTally()
        self._listeners: list[Callable[[BackupRun], None]] = []
        self._unlogged: list[dict[str, Any]] = []
        self._fold_row: int | None = None
        self._retain_after = 0.0
        self._written_since_retention = 0
        #: (first failure, failed runs in a row) while backups fail
        self._failing: tuple[datetime, int] | None = None
        #: the newest generation this member committed (a store found behind it lost generations)
        self._committed: int | None = None

    def use_scheduler(self, scheduler: BackupScheduler) -> None:
        """The scheduler that runs :meth:`scheduled` (and early runs, under memory pressure)."""
        self._scheduler = scheduler

    def exclusive(self) -> AbstractContextManager[Any]:
        """Hold off every other backup and restore of this saver."""
        return self._lock

    def backup(self, trigger: str = "manual", request_id: str | None = None) -> BackupRun:
        with self._lock:
            return self.run_locked(trigger, request_id)

    def scheduled(self) -> BackupRun | None:
        """The scheduler's job."""
        if self._closed():
            return None
        early, self._early = self._early, False
        return self.backup(trigger="pressure" if early else "scheduled")

    # -- memory pressure (the cache's Pressure) ---------------------------------------------------

    def relieve(self) -> None:
        """Back up now so changed threads can be evicted. While PostgreSQL is unreachable nothing can
        be written, and memory grows past the budget instead of losing changes."""
        link = self._link
        if self._cache.residency.dirty_bytes and link.attached and not link.failed and not self._closed():
            self.backup(trigger="pressure")

    def backup_soon(self) -> None:
        if self._scheduler is not None and not self._early:
            self._early = True
            self._scheduler.run_soon()

    # -- one run ------------------------------------------------------------------------------------

    def run_locked(self, trigger: str, request_id: str | None = None, *, retain: bool = True) -> BackupRun:
        """Back up now; the caller holds :meth:`exclusive`."""
        started = datetime.now(UTC)
        cache, link = self._cache, self._link
        failure = link.ready(self._attach)
        if failure is None:
            try:
                # a lapsed lease first: the threads others took are dropped, the rest claimed again,
                # so fencing refuses nothing this member still rightly holds
                self._ownership.lease_recover()
                self._heal_lost_generations()
                self._ownership.resolve_provisional()
            except DB_ERRORS as exc:
                link.mark_failed()
                failure = link.scrub(f"{type(exc).__name__}: {exc}".strip())
        if failure is not None:
            pending, since = cache.pending()
            run = BackupRun(
                trigger=trigger,
                started_at=started,
                finished_at=datetime.now(UTC),
                generation=None,
                lag_seconds=time.time() - since if since is not None else 0.0,
                pending=pending,
                error=failure,
            )
            logger.warning("backup (%s) failed, %s changes stay pending: %s", trigger, pending, failure)
            self._note(run)
            self.record(run, request_id, (None, None))
            return run
        with cache.lock:
            cut = cache.changes.take()
            epoch = cache.residency.cut()
            entries = cache.entries
            threads = cut.threads()
            tokens = {t: e.token for t in threads if (e := entries.get(t)) is not None and e.token is not None}
            # threads made while offline and not claimed yet stay pending
            cache.changes.merge_back(cut.split(threads - tokens.keys()))
        lag = time.time() - cut.since if cut.since is not None else 0.0
        pending = len(cut)
        # what stays in the cut is the changes of the claimed threads; a large cut's writes and blobs
        # rows are built while the server takes in its checkpoints
        later = ("writes", "blobs") if cut.checkpoints and len(cut) >= LAZY_SUMMARY_ROWS else ()
        changes = cut.to_changes(touched=set(tokens), later=later)
        serde, summarize = self._serde, self._summarize
        error = None
        written = None
        try:
            # the summaries are made by the store while the server takes in a large backup's rows
            written = self._store.write_generation(
                changes,
                trigger=trigger,
                owner=self._membership.instance_id,
                tokens=tokens,
                summarize=lambda threads: cache.summaries(threads, serde, summarize),
                later=(lambda into, refused: {t: cut.fill(into, t, refused) for t in later}) if later else None,
            )
            if retain and written.generation is not None:
                self._retain_some()
        except (*DB_ERRORS, psycopg.Error, HybridSaverError) as exc:
            with cache.lock:
                cache.changes.merge_back(cut)
            link.mark_failed(isinstance(exc, DB_ERRORS))
            error = link.scrub(f"{type(exc).__name__}: {exc}".strip())
            logger.warning("backup (%s) failed, %s changes stay pending: %s", trigger, pending, error)
        except BaseException:
            with cache.lock:
                cache.changes.merge_back(cut)
            raise
        refused: tuple[str, ...] = ()
        if written is not None:
            with cache.lock:
                cache.residency.commit(epoch)
                if written.refused:
                    refused = tuple(written.refused)
                    cache.drop(refused, "its backup was refused", cut.count_by_thread(refused))
            self._ownership.give_back()
            if self._written is not None:
                self._written()
        run = BackupRun(
            trigger=trigger,
            started_at=started,
            finished_at=datetime.now(UTC),
            generation=written.generation if written else None,
            rows=written.rows if written else 0,
            bytes=written.bytes if written else 0,
            lag_seconds=lag,
            pending=pending,
            error=error,
            refused=refused,
        )
        counts = (written.threads, written.checkpoints) if written else (None, None)
        if run.ok:
            logger.debug("backup (%s): generation %s, %s rows", trigger, run.generation, run.rows)
        self._note(run)
        self.record(run, request_id, counts)
        return run

    def _note(self, run: BackupRun) -> None:
        """Count failed runs in a row; one line when a backup succeeds after them."""
        if not run.ok:
            since, failed = self._failing or (run.started_at, 0)
            self._failing = (since, failed + 1)
            return
        if self._failing is None:
            return
        since, failed = self._failing
        self._failing = None
        where = f"generation {run.generation}" if run.generation is not None else "the store"
        logger.warning(
            "backups work again: %s failed run%s since %s (%.0f s); the %s changes kept pending meanwhile are in %s",
            failed,
            "" if failed == 1 else "s",
            f"{since:%H:%M:%S} UTC",
            (run.finished_at - since).total_seconds(),
            run.pending,
            where,
        )

    def _heal_lost_generations(self) -> None:
        """The store went back in time (a failover to a standby that lagged, a database restored from an
        older backup): generations this member committed are gone. Never reuse their numbers, keep every
        thread memory holds, and write each one whole in this backup: memory holds the truth the database lost."""
        committed = self._committed
        if committed is None:
            return
        behind = self._store.upkeep.counter_behind(committed, self.retention)
        if behind is None:
            return
        self._store.upkeep.raise_counter(committed)
        threads = self._ownership.reclaim_all()
        logger.error(
            "the store has lost generations %s to %s that this member committed (a failover to a standby that "
            "lagged, or a restore of the database?); writing back the %s thread(s) it holds in memory as a new "
            "generation, numbered after them",
            behind + 1,
            committed,
            len(threads),
        )

    def _retain_some(self) -> None:
        """Apply retention every tenth of it, or every few seconds: not a pass per backup."""
        self._written_since_retention += 1
        if self._written_since_retention >= max(1, self.retention // 10) or time.monotonic() >= self._retain_after:
            self._store.upkeep.apply_retention(self.retention, self.retention_age)
            self._retain_after = time.monotonic() + RETAIN_EVERY
            self._written_since_retention = 0

    def apply_retention(self) -> None:
        """Drop generations past the retention now (after a restore)."""
        self._store.upkeep.apply_retention(self.retention, self.retention_age)

    # -- the record of runs ---------------------------------------------------------------------

    def record(self, run: BackupRun, request_id: str | None, counts: tuple[int | None, int | None]) -> None:
        self.last_run = run
        if run.ok:
            self.last_success = run
        if run.generation is not None:
            self._committed = max(self._committed or 0, run.generation)
        self.history.append(run)
        self.tally.observe(run)
        notes = f"refused {len(run.refused)} thread(s) this member no longer owns" if run.refused else None
        row = {
            "trigger": run.trigger,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "generation": run.generation,
            "rows_written": run.rows,
            "bytes_written": run.bytes,
            "lag_seconds": run.lag_seconds,
            "pending": run.pending,
            "threads": counts[0],
            "checkpoints": counts[1],
            "error": run.error,
            "request_id": request_id,
            "instance_id": self._membership.instance_id,
            "folded": 1,
            "notes": notes,
        }
        runs = self._store.runs
        try:
            if not run.ok and self._link.failed:
                raise DatabaseUnavailable("the database is down; the run is logged with the next one")
            if self._unlogged:
                runs.log_runs(self._unlogged)
                self._unlogged.clear()
                self._fold_row = None
            foldable = run.empty and run.trigger == "scheduled" and request_id is None
            if not (foldable and self._fold_row is not None and runs.fold_run(self._fold_row, run.finished_at)):
                row_id = runs.log_run(row)
                self._fold_row = row_id if foldable else None
        except (*DB_ERRORS, psycopg.Error):
            # kept and written with the next run that reaches the database
            self._unlogged.append(row)
            del self._unlogged[:-1000]
        for listener in list(self._listeners):
            try:
                listener(run)
            except Exception:  # noqa: BLE001 - a listener must not break backups
                logger.exception("backup listener failed")

    def add_listener(self, callback: Callable[[BackupRun], None]) -> None:
        """Call ``callback(run)`` after every backup run."""
        self._listeners.append(callback)


__all__ = ["HISTORY", "RETAIN_EVERY", "BackupWriter"]
