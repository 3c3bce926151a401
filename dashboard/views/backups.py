"""Views of backups and the fleet: the Backups page's figures, the runs and the members."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.views.common import DB_ERRORS, _one_line, _parse_ts, attached, database_answering
from persistence.db import scrub
from persistence.errors import HybridSaverError

if TYPE_CHECKING:
    from persistence import BackupRun, HybridSaver
    from persistence.fleet import Member

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
            newest = saver.store.runs.runs(1)
            if newest:
                out["last_run_at"] = newest[0]["finished_at"]
                out["last_run_ok"] = newest[0]["error"] is None
                out["last_run_error"] = newest[0]["error"]
        gens = saver.generations()
        out["generations_kept"] = len(gens)
        out["latest_generation"] = gens[0].generation if gens else None
        out["database_size"] = saver.store.runs.database_size()
        figures = saver.store.directory.store_figures()
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
        raw = saver.store.runs.runs(limit, empty=empty)
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


def fleet_alerts(saver: HybridSaver, members: list[Member] | None = None) -> list[str]:
    """One sentence per member whose backups are paused, that lags behind its schedule, or whose
    lease ran out without it leaving: what a crash of it would lose, as of its last heartbeat."""
    out = []
    for m in saver.members() if members is None else members:
        f = saver._figures() if m.instance_id == saver.instance_id else m.figures
        who = (
            f"Member {m.instance_id}"
            + (f" ({m.name})" if m.name else "")
            + (" (this dashboard)" if m.instance_id == saver.instance_id else "")
        )
        pending, lag = int(f.get("pending") or 0), float(f.get("lag_seconds") or 0.0)
        interval = f.get("interval")
        held = f"{pending:,} change{'' if pending == 1 else 's'} not backed up, the oldest {_seconds(lag)} old"
        beat = f" (as of its heartbeat at {m.heartbeat_at:%H:%M:%S} UTC)" if m.heartbeat_at else ""
        if not m.alive:
            out.append(f"**{who} stopped renewing its lease**: its threads go to the other members; {held}{beat}.")
        elif f.get("paused"):
            out.append(f"**{who} has its scheduled backups paused**: {held}{beat}.")
        elif pending and lag > (max(60.0, 3 * float(interval)) if interval else 300.0):
            every = f"every {_seconds(float(interval))}" if interval else "only on demand"
            out.append(f"**{who} lags behind**: {held}, though it backs up {every}{beat}.")
    return out


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


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


__all__ = ["MEMBER_COLUMNS", "RUN_COLUMNS", "backup_figures", "fleet_alerts", "members_frame", "runs_frame"]
