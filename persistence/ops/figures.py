"""The figures of one saver: :class:`~persistence.records.SaverStats` for callers, and the dict a
member publishes in its heartbeat row and answers the ``status`` command with."""

from __future__ import annotations

import time
from typing import Any

from persistence.memory import MemoryCache
from persistence.ops.backup import BackupWriter
from persistence.ops.observer import pending_by_thread
from persistence.ops.scheduler import BackupScheduler
from persistence.records import SaverStats
from persistence.store.link import DatabaseLink


def saver_stats(cache: MemoryCache, writer: BackupWriter, link: DatabaseLink, instance_id: int | None) -> SaverStats:
    """Resident threads and checkpoints, pending changes, backup lag and the residency figures."""
    threads, checkpoints = cache.counts()
    pending, since = cache.pending()
    res = cache.residency.stats()
    last = writer.last_run
    return SaverStats(
        threads=threads,
        checkpoints=checkpoints,
        pending=pending,
        lag_seconds=time.time() - since if since is not None else 0.0,
        last_backup=last,
        last_success=writer.last_success,
        database_ok=(last is None or last.ok) and not link.failed,
        # threads with checkpoints: a claim with nothing in it yet (a read of a new thread id) is not one
        resident_threads=threads,
        resident_bytes=res.resident_bytes,
        dirty_bytes=res.dirty_bytes,
        memory_budget=res.memory_budget,
        hits=res.hits,
        loads=res.loads,
        evictions=res.evictions,
        instance_id=instance_id,
    )


def member_figures(
    stats: SaverStats, scheduler: BackupScheduler | None, cache: MemoryCache | None = None
) -> dict[str, Any]:
    """What a member tells the fleet about itself (JSON-ready). With the ``cache``, also its pending
    checkpoints per thread (``pending_threads``, the threads with the most; ``pending_thread_count``
    counts them all), so an observer can tell which threads a crash of this member would lose."""
    last = stats.last_backup
    out: dict[str, Any] = {}
    if cache is not None:
        out["pending_threads"], out["pending_thread_count"] = pending_by_thread(cache)
    return out | {
        "resident_threads": stats.resident_threads,
        "resident_bytes": stats.resident_bytes,
        "memory_budget": stats.memory_budget,
        "checkpoints": stats.checkpoints,
        "pending": stats.pending,
        "lag_seconds": round(stats.lag_seconds, 3),
        "hits": stats.hits,
        "loads": stats.loads,
        "evictions": stats.evictions,
        "last_run_at": last.finished_at.isoformat() if last else None,
        "last_run_ok": last.ok if last else None,
        "last_generation": stats.last_success.generation if stats.last_success else None,
        "last_error": last.error if last else None,
        "interval": scheduler.interval if scheduler is not None else None,
        "paused": bool(scheduler.paused) if scheduler is not None else False,
    }


__all__ = ["member_figures", "saver_stats"]
