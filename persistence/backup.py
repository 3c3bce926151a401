"""The backup side of :class:`~persistence.HybridSaver`: cut the change log, write a generation,
record the run.

The cut is a swap under the saver's lock; rows, summaries and the write happen outside it. A
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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import PoolTimeout

from persistence.changes import ChangeLog
from persistence.db import check_connection, open_pool, scrub
from persistence.errors import DatabaseUnavailable, HybridSaverError
from persistence.records import BackupRun
from persistence.store import Changes
from persistence.summary import describe, newest

if TYPE_CHECKING:
    from persistence.saver import HybridSaver

logger = logging.getLogger(__name__)

DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, DatabaseUnavailable)
#: runs kept in memory for views while the database cannot be read
HISTORY = 1000
#: seconds between two checks of a database that failed, outside backups
HEAL_EVERY = 1.0
#: seconds between two retention passes (each backup would otherwise pay for one)
RETAIN_EVERY = 5.0


class BackupMixin:
    """Backups of a HybridSaver (mixed into it; uses its lock, change log, residency and store)."""

    def _init_backups(self: HybridSaver) -> None:
        self.last_run: BackupRun | None = None
        self.last_success: BackupRun | None = None
        self.history: deque[BackupRun] = deque(maxlen=HISTORY)
        self._listeners: list[Callable[[BackupRun], None]] = []
        self._unlogged: list[dict[str, Any]] = []
        self._fold_row: int | None = None
        self._last_heal = 0.0
        self._retain_after = 0.0
        self._written_since_retention = 0
        self._heal_lock = threading.Lock()

    def backup(self: HybridSaver, trigger: str = "manual", request_id: str | None = None) -> BackupRun:
        """Write what changed since the last backup as a new generation.

        With nothing pending no generation is written (``run.generation`` is None, ``run.empty``).
        Never raises for database errors: the run is returned (and logged) with ``error`` set, and
        the changes stay pending for the next run.

        Raises:
            SaverClosed: the saver is closed.
        """
        self._check_open()
        with self._backup_lock:
            return self._backup_locked(trigger, request_id)

    def _backup_locked(self: HybridSaver, trigger: str, request_id: str | None, *, retain: bool = True) -> BackupRun:
        started = datetime.now(UTC)
        failure = self._database_ready()
        if failure is None:
            try:
                self._resolve_provisional()
            except DB_ERRORS as exc:
                self._db_failed = True
                failure = scrub(f"{type(exc).__name__}: {exc}".strip(), self.conninfo)
        if failure is not None:
            with self.lock:
                pending, since = len(self._changes), self._changes.since
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
            self._record(run, request_id, (None, None))
            return run
        with self.lock:
            cut = self._changes.take()
            epoch = self._res.cut()
            entries = self._res.entries
            tokens = {t: e.token for t in cut.threads() if (e := entries.get(t)) is not None and e.token is not None}
            # threads made while offline and not claimed yet stay pending
            self._changes.merge_back(_split(cut, cut.threads() - set(tokens)))
        lag = time.time() - cut.since if cut.since is not None else 0.0
        pending = len(cut)
        changes = cut.to_changes()
        changes.summaries = self._summaries(changes.touched)
        error = None
        written = None
        try:
            written = self.store.write_generation(changes, trigger=trigger, owner=self.instance_id, tokens=tokens)
            if retain and written.generation is not None:
                self._written_since_retention += 1
                # every tenth of the retention, or every few seconds: not a pass per backup
                if (
                    self._written_since_retention >= max(1, self.retention // 10)
                    or time.monotonic() >= self._retain_after
                ):
                    self.store.apply_retention(self.retention)
                    self._retain_after = time.monotonic() + RETAIN_EVERY
                    self._written_since_retention = 0
        except (*DB_ERRORS, psycopg.Error, HybridSaverError) as exc:
            with self.lock:
                self._changes.merge_back(cut)
            self._db_failed = isinstance(exc, DB_ERRORS)
            error = scrub(f"{type(exc).__name__}: {exc}".strip(), self.conninfo)
            logger.warning("backup (%s) failed, %s changes stay pending: %s", trigger, pending, error)
        except BaseException:
            with self.lock:
                self._changes.merge_back(cut)
            raise
        refused: tuple[str, ...] = ()
        if written is not None:
            with self.lock:
                self._res.commit(epoch)
                if written.refused:
                    refused = tuple(written.refused)
                    lost = {t: 0 for t in refused}
                    for table in (cut.checkpoints, cut.writes, cut.blobs):
                        for key in table:
                            if key[0] in lost:
                                lost[key[0]] += 1
                    self._drop_lost(refused, "its backup was refused", lost)
            self._give_back()
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
        self._record(run, request_id, counts)
        return run

    def _database_ready(self: HybridSaver) -> str | None:
        """Heal the pool after a database error and attach when not attached; the error if it fails."""
        if not (self._db_failed or not self.attached):
            return None
        try:
            if self._db_failed:
                with self._heal_lock:
                    if self._db_failed:
                        self._heal_pool()
            if not self.attached:
                self._attach()
        except (*DB_ERRORS, psycopg.Error, HybridSaverError) as exc:
            error = scrub(str(exc), self.conninfo)
            if not self.attached:
                self.attach_error = error
            return error
        return None

    def _reachable(self: HybridSaver) -> bool:
        """False while PostgreSQL is known to be down; after an error, check again at most once a second."""
        if not self._db_failed:
            return True
        now = time.monotonic()
        if now - self._last_heal < HEAL_EVERY:
            return False
        self._last_heal = now
        try:
            with self._heal_lock:
                if self._db_failed:
                    self._heal_pool()
        except (*DB_ERRORS, psycopg.Error, HybridSaverError):
            return False
        return True

    def _heal_pool(self: HybridSaver) -> None:
        """After a database error: check the server directly, and give an owned pool a fresh start.

        A pool whose connections died keeps retrying with growing back-off; a new pool connects at
        once, so the first run after an outage catches up without waiting for that back-off.
        """
        check_connection(self.conninfo)
        if self._owns_pool:
            old = self.pool
            self.pool = self.store.pool = self.membership.pool = open_pool(self.conninfo, max_size=old.max_size)
            old.close(timeout=1.0)
        self._db_failed = False

    def _summaries(self: HybridSaver, threads: set[str]) -> list[tuple]:
        """The summary rows of ``threads`` as memory holds them now (outside the lock: each copy
        below is one atomic dict operation, and values never change in place)."""
        out = []
        for tid in threads:
            entry = self._res.entries.get(tid)
            namespaces = self.storage.get(tid)
            if entry is None or not namespaces:
                continue
            copied = {ns: dict(cps) for ns, cps in list(namespaces.items())}
            count = sum(len(cps) for cps in copied.values())
            head = newest(copied)
            if not count or head is None:
                continue
            title, text = describe(self.serde, tid, copied, self.blobs) if self.summarize else (None, None)
            changed = entry.changed_at or time.time()
            out.append(
                (tid, count, entry.bytes, datetime.fromtimestamp(changed, UTC), head[1], title, text),
            )
        return out

    def _record(
        self: HybridSaver, run: BackupRun, request_id: str | None, counts: tuple[int | None, int | None]
    ) -> None:
        self.last_run = run
        if run.ok:
            self.last_success = run
        self.history.append(run)
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
            "instance_id": self.instance_id,
            "folded": 1,
            "notes": notes,
        }
        try:
            if not run.ok and self._db_failed:
                raise DatabaseUnavailable("the database is down; the run is logged with the next one")
            if self._unlogged:
                self.store.log_runs(self._unlogged)
                self._unlogged.clear()
                self._fold_row = None
            foldable = run.empty and run.trigger == "scheduled" and request_id is None
            if not (foldable and self._fold_row is not None and self.store.fold_run(self._fold_row, run.finished_at)):
                row_id = self.store.log_run(row)
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

    def add_listener(self: HybridSaver, callback: Callable[[BackupRun], None]) -> None:
        """Call ``callback(run)`` after every backup run."""
        self._listeners.append(callback)


def _split(log: ChangeLog, threads: set[str]) -> ChangeLog:
    """Move the keys of ``threads`` out of ``log`` into a new record."""
    out = ChangeLog()
    if not threads:
        return out
    for src, dst in ((log.checkpoints, out.checkpoints), (log.writes, out.writes), (log.blobs, out.blobs)):
        for key in [k for k in src if k[0] in threads]:
            dst[key] = src.pop(key)
    out.deleted_threads = log.deleted_threads & threads
    log.deleted_threads -= threads
    if len(out):
        out.since = log.since
    return out


__all__ = ["DB_ERRORS", "BackupMixin", "Changes"]
