"""Views of backups and the fleet: the Backups page's figures, the runs, samples of memory over time,
the members, the generations and what a restore of one would change."""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from persistence.db import scrub
from persistence.errors import HybridSaverError
from persistence.views.common import DB_ERRORS, _one_line, _parse_ts, attached, database_answering

if TYPE_CHECKING:
    from persistence.saver import BackupRun, HybridSaver

logger = logging.getLogger(__name__)

RUN_COLUMNS = [
    "id",
    "trigger",
    "started_at",
    "finished_at",
    "duration_s",
    "generation",
    "rows",
    "bytes",
    "lag_s",
    "pending",
    "threads",
    "checkpoints",
    "ok",
    "error",
    "member",
    "folded",
]
GENERATION_COLUMNS = [
    "generation",
    "taken_at",
    "trigger",
    "kind",
    "threads",
    "checkpoints",
    "rows_written",
    "bytes_written",
    "restored_from",
    "thread_id",
]
PREVIEW_COLUMNS = ["thread_id", "change", "checkpoints_now", "checkpoints_then", "delta", "newest_now", "newest_then"]


def backup_figures(saver: HybridSaver) -> dict[str, Any]:
    """The figures of the Backups page.

    Keys: ``threads``, ``checkpoints``, ``pending``, ``lag_seconds``, ``last_backup``,
    ``last_success`` (BackupRun of this process or None), ``last_run_at``, ``last_run_ok``,
    ``last_run_error`` (the newest run, of this process or, after a restart, from the runs
    table), ``next_run`` (datetime or None), ``interval``
    (seconds or None when scheduled backups are off), ``paused``, ``attached``,
    ``attach_error``, ``generations_kept``, ``latest_generation``, ``retention``,
    ``database_size`` (None when the database could not answer) and ``database_error``.
    """
    stats = saver.stats()
    sched = saver.scheduler
    out: dict[str, Any] = {
        "resident_threads": stats.resident_threads,
        "resident_bytes": stats.resident_bytes,
        "dirty_bytes": stats.dirty_bytes,
        "memory_budget": stats.memory_budget,
        "hits": stats.hits,
        "loads": stats.loads,
        "evictions": stats.evictions,
        "instance_id": stats.instance_id,
        "store_threads": None,
        "store_checkpoints": None,
        "threads": stats.threads,
        "checkpoints": stats.checkpoints,
        "pending": stats.pending,
        "lag_seconds": stats.lag_seconds,
        "last_backup": stats.last_backup,
        "last_success": stats.last_success,
        "next_run": sched.next_run_time if sched is not None else None,
        "interval": sched.interval if sched is not None else None,
        "paused": bool(sched.paused) if sched is not None else False,
        "attached": attached(saver),
        "attach_error": getattr(saver, "attach_error", None),
        "retention": saver.retention,
        "generations_kept": None,
        "latest_generation": None,
        "database_size": None,
        "database_error": None,
        "last_run_at": stats.last_backup.finished_at if stats.last_backup else None,
        "last_run_ok": stats.last_backup.ok if stats.last_backup else None,
        "last_run_error": stats.last_backup.error if stats.last_backup else None,
    }
    if not out["attached"]:
        return out
    if not database_answering(saver):
        out["database_error"] = "not asked while the last backup is failing"
        return out
    try:
        if stats.last_backup is None:
            newest = saver.store.runs(1)
            if newest:
                out["last_run_at"] = newest[0]["finished_at"]
                out["last_run_ok"] = newest[0]["error"] is None
                out["last_run_error"] = newest[0]["error"]
        gens = saver.generations()
        out["generations_kept"] = len(gens)
        out["latest_generation"] = gens[0].generation if gens else None
        out["database_size"] = saver.store.database_size()
        figures = saver.store.store_figures()
        out["store_threads"] = figures.get("threads")
        out["store_checkpoints"] = figures.get("checkpoints")
    except DB_ERRORS as exc:
        out["database_error"] = scrub(_one_line(exc), saver.conninfo)
    return out


def _runs_from_memory(saver: HybridSaver) -> list[dict[str, Any]]:
    runs: list[BackupRun] = [r for r in saver.history if not r.empty]
    if saver.last_run is not None and saver.last_run not in runs:
        runs.append(saver.last_run)
    runs.sort(key=lambda r: r.started_at, reverse=True)
    return [
        {
            "id": None,
            "trigger": r.trigger,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "generation": r.generation,
            "rows_written": r.rows,
            "bytes_written": r.bytes,
            "lag_seconds": r.lag_seconds,
            "pending": r.pending,
            "threads": None,
            "checkpoints": None,
            "error": r.error,
            "folded": 0,
            "instance_id": saver.instance_id,
        }
        for r in runs
    ]


def runs_frame(saver: HybridSaver, limit: int = 500, *, empty: bool = False) -> pd.DataFrame:
    """Backup runs of every member, newest first (columns :data:`RUN_COLUMNS`); runs that had
    nothing to write are left out unless ``empty`` (they are folded: ``folded`` counts the empty
    runs a row stands for).

    Read from the runs table; while the saver is offline or its last backup failed, from the runs
    this process kept in memory (``df.attrs["source"]`` says which: ``"database"`` or ``"memory"``).
    """
    source = "database"
    try:
        if not database_answering(saver):
            raise HybridSaverError("offline or failing")
        raw = saver.store.runs(limit, empty=empty)
    except DB_ERRORS:
        raw = _runs_from_memory(saver)[:limit]
        source = "memory"
    rows = [
        (
            r.get("id"),
            r["trigger"],
            r["started_at"],
            r["finished_at"],
            (r["finished_at"] - r["started_at"]).total_seconds(),
            r.get("generation"),
            r.get("rows_written") or 0,
            r.get("bytes_written") or 0,
            float(r.get("lag_seconds") or 0.0),
            r.get("pending") or 0,
            r.get("threads"),
            r.get("checkpoints"),
            r.get("error") is None,
            r.get("error") or "",
            r.get("instance_id"),
            int(r.get("folded") or 0),
        )
        for r in raw
    ]
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in ("id", "generation", "threads", "checkpoints", "member"):
        df[col] = df[col].astype("Int64")
    df.attrs["source"] = source
    return df


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


MEMBER_COLUMNS = [
    "member",
    "name",
    "host",
    "pid",
    "started",
    "heartbeat",
    "resident_threads",
    "resident_bytes",
    "memory_budget",
    "pending",
    "lag_s",
    "last_backup",
    "last_ok",
    "interval",
    "paused",
    "this",
]


def members_frame(saver: HybridSaver) -> pd.DataFrame:
    """The live members of the store with their figures as of their last heartbeat (this
    process's own figures are live). Columns :data:`MEMBER_COLUMNS`."""
    rows = []
    mine = saver._figures() if saver.instance_id is not None else {}
    for m in saver.members():
        f = mine if m.instance_id == saver.instance_id else m.figures
        rows.append(
            (
                m.instance_id,
                m.name or "",
                m.host,
                m.pid,
                m.started_at,
                m.heartbeat_at,
                int(f.get("resident_threads") or 0),
                int(f.get("resident_bytes") or 0),
                f.get("memory_budget"),
                int(f.get("pending") or 0),
                float(f.get("lag_seconds") or 0.0),
                _parse_ts(f.get("last_run_at")),
                f.get("last_run_ok"),
                f.get("interval"),
                bool(f.get("paused")),
                m.instance_id == saver.instance_id,
            )
        )
    df = pd.DataFrame(rows, columns=MEMBER_COLUMNS)
    for col in ("started", "heartbeat", "last_backup"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df["memory_budget"] = df["memory_budget"].astype("Int64")
    return df


# -- generations and restore ----------------------------------------------------------------------


def generations_frame(saver: HybridSaver, limit: int | None = None) -> pd.DataFrame:
    """Kept generations, newest first (columns :data:`GENERATION_COLUMNS`)."""
    rows = [
        (
            g.generation,
            g.taken_at,
            g.trigger,
            g.kind,
            g.threads,
            g.checkpoints,
            g.rows_written,
            g.bytes_written,
            g.restored_from,
            g.thread_id,
        )
        for g in saver.generations(limit)
    ]
    df = pd.DataFrame(rows, columns=GENERATION_COLUMNS)
    df["taken_at"] = pd.to_datetime(df["taken_at"], utc=True)
    df["restored_from"] = df["restored_from"].astype("Int64")
    return df


def current_thread_counts(saver: HybridSaver, thread_id: str | None = None) -> dict[str, tuple[int, str]]:
    """thread_id -> (checkpoints, newest checkpoint id) now: the store's live rows, overlaid with
    the threads this member changed since its last backup (read from memory)."""
    now = saver.store.thread_counts(None, thread_id)
    for tid in saver.pending_threads():
        if thread_id is not None and tid != thread_id:
            continue
        namespaces = saver.thread_rows(tid).storage.get(tid, {})
        ids = [cid for cps in namespaces.values() for cid in cps]
        if ids:
            now[tid] = (len(ids), max(ids))
        else:
            now.pop(tid, None)  # deleted here, not backed up yet
    return now


def restore_preview(saver: HybridSaver, generation: int, thread_id: str | None = None) -> pd.DataFrame:
    """What restoring ``generation`` (all threads, or one) would do to the store's current state
    (as of the newest backup: a restore backs up what is pending first).

    One row per thread that differs, plus unchanged ones (columns :data:`PREVIEW_COLUMNS`):
    ``change`` is ``added`` (restore brings the thread back), ``removed`` (restore deletes it),
    ``changed`` (other checkpoints) or ``unchanged``; ``delta`` = checkpoints then - now.

    Raises:
        GenerationNotFound: the generation is not kept.
        psycopg.Error, PoolTimeout: PostgreSQL cannot answer.
    """
    saver.store.get_generation(generation)
    then = saver.store.thread_counts(generation, thread_id)
    now = current_thread_counts(saver, thread_id)
    rows = []
    for tid in sorted(set(then) | set(now)):
        n_now, newest_now = now.get(tid, (0, ""))
        n_then, newest_then = then.get(tid, (0, ""))
        if tid not in now:
            change = "added"
        elif tid not in then:
            change = "removed"
        elif (n_now, newest_now) != (n_then, newest_then):
            change = "changed"
        else:
            change = "unchanged"
        rows.append((tid, change, n_now, n_then, n_then - n_now, newest_now or None, newest_then or None))
    return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)


def preview_summary(preview_df: pd.DataFrame) -> dict[str, int]:
    """Counts of a :func:`restore_preview`: threads added/removed/changed/unchanged, checkpoints
    now and then."""
    counts = preview_df["change"].value_counts()
    return {
        "added": int(counts.get("added", 0)),
        "removed": int(counts.get("removed", 0)),
        "changed": int(counts.get("changed", 0)),
        "unchanged": int(counts.get("unchanged", 0)),
        "checkpoints_now": int(preview_df["checkpoints_now"].sum()),
        "checkpoints_then": int(preview_df["checkpoints_then"].sum()),
    }


__all__ = [
    "GENERATION_COLUMNS",
    "MEMBER_COLUMNS",
    "PREVIEW_COLUMNS",
    "RUN_COLUMNS",
    "StatsHistory",
    "backup_figures",
    "current_thread_counts",
    "generations_frame",
    "members_frame",
    "preview_summary",
    "restore_preview",
    "runs_frame",
]
