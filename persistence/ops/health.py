"""How one saver is doing, for probes and operators: :func:`check_health` behind ``saver.health()``.

Three states, each with the sentences that led to it:

- ``down``: this member cannot serve: the saver is closed, it never reached PostgreSQL (started
  offline: it cannot tell a new thread from a stored one), or its lease lapsed while other members
  may take its threads (it refuses reads and writes until it renews).
- ``degraded``: it serves, but something needs an operator: PostgreSQL does not answer (resident
  threads are served from memory, cold ones cannot load, changes pile up), backups fail or lag
  more than :data:`LAG_INTERVALS` intervals, no backup succeeded for as long, memory is over the budget
  with changes not yet backed up.
- ``ok``: none of that.

A memory-first saver stays *ready* when degraded: the threads it holds are served from nowhere else,
and taking every member out of a load balancer because their shared database is down would turn a
partial outage (cold threads) into a whole one. Only ``down`` means "send the traffic elsewhere".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from persistence.db import DB_ERRORS, pool_connection
from persistence.fleet.lease import Lease, LeaseExpired
from persistence.fleet.ownership import Ownership
from persistence.ops.scheduler import BackupScheduler
from persistence.records import SaverStats
from persistence.store.link import DatabaseLink

OK = "ok"
DEGRADED = "degraded"
DOWN = "down"
#: backup lag (and the age of the last successful backup) past this many intervals is degraded
LAG_INTERVALS = 3.0


@dataclass(frozen=True)
class Health:
    """What ``saver.health()`` found: the status, why, and the figures it judged."""

    #: ``"ok"``, ``"degraded"`` or ``"down"``
    status: str
    #: one sentence per finding that made the status worse than ok (empty when ok)
    reasons: tuple[str, ...]
    checked_at: datetime
    #: PostgreSQL answered a query just now
    database_reachable: bool
    #: the saver reached the store once (set up, joined the fleet); False for one started offline
    attached: bool
    #: seconds since the last successful backup run (None: none yet)
    last_backup_age_seconds: float | None
    #: seconds the oldest change not yet in PostgreSQL has waited (0: nothing pending)
    lag_seconds: float
    pending: int
    #: seconds between scheduled backups (None: only on demand and at close)
    backup_interval: float | None
    backups_paused: bool
    #: this member's lease is certainly valid now (it may acknowledge reads and writes)
    lease_valid: bool
    lease_remaining_seconds: float
    resident_bytes: int
    memory_budget: int | None

    @property
    def ready(self) -> bool:
        """Worth sending requests to: not ``down`` (a degraded member still serves what it holds)."""
        return self.status != DOWN

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``checked_at`` as ISO 8601, ``reasons`` as a list), with ``ready``."""
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["checked_at"] = self.checked_at.isoformat()
        out["ready"] = self.ready
        return out


def database_reachable(link: DatabaseLink) -> bool:
    """One ``SELECT 1`` through the saver's pool (fails fast when the server is down); while the link is
    known to be failed, its own check instead (at most once a second; it heals the pool when the
    server is back). A failed query marks the link failed, as any query of the saver does."""
    if link.failed:
        return link.reachable()
    try:
        with pool_connection(link.pool) as conn:
            conn.execute("SELECT 1")
    except (*DB_ERRORS, psycopg.Error):
        link.mark_failed()
        return False
    return True


def check_health(
    stats: Callable[[], SaverStats],
    link: DatabaseLink,
    ownership: Ownership,
    lease: Lease,
    scheduler: BackupScheduler | None,
    *,
    closed: bool,
) -> Health:
    """Judge one saver now (see the module's docstring). Costs one query, or none while PostgreSQL is
    known to be down; never raises for database errors."""
    reachable = False if closed else database_reachable(link)
    figures = stats()
    now = datetime.now(UTC)
    interval = scheduler.interval if scheduler is not None else None
    paused = bool(scheduler.paused) if scheduler is not None else False
    last = figures.last_backup
    success = figures.last_success
    age = (now - success.finished_at).total_seconds() if success is not None else None
    remaining = max(0.0, lease.deadline - time.monotonic()) if lease.instance_id is not None else 0.0
    lease_valid = lease.instance_id is not None and lease.valid()
    down: list[str] = []
    degraded: list[str] = []
    if closed:
        down.append("The saver is closed: it serves nothing (a new one is opened with HybridSaver.from_url).")
    elif not link.attached:
        down.append(
            "The saver has not reached PostgreSQL since it started offline, so it serves no thread yet (it "
            f"cannot tell a new thread from a stored one): {link.attach_error or 'not attached'}."
        )
    else:
        try:
            ownership.lease_check()
        except LeaseExpired:
            down.append(
                f"Member {lease.instance_id}'s lease ({lease.seconds:g} s) lapsed and other members may take its "
                "threads, so it refuses reads and writes until it renews the lease with PostgreSQL."
            )
    if not closed:
        if not reachable:
            degraded.append(
                "PostgreSQL does not answer: threads in memory are served, cold threads cannot load and changes "
                f"stay pending ({figures.pending} now) until it is back."
            )
        if last is not None and not last.ok:
            degraded.append(f"The last backup ({last.trigger}) failed: {last.error}")
        if interval is not None and figures.lag_seconds > LAG_INTERVALS * interval:
            why = " (backups are paused)" if paused else ""
            degraded.append(
                f"Backup lag is {figures.lag_seconds:.1f} s, over {LAG_INTERVALS:g} intervals of {interval:g} s{why}: "
                f"a crash now would lose {figures.pending} change(s)."
            )
        elif interval is not None and not paused and age is not None and age > LAG_INTERVALS * interval:
            degraded.append(
                f"No backup has succeeded for {age:.1f} s, over {LAG_INTERVALS:g} intervals of {interval:g} s."
            )
        budget = figures.memory_budget
        # over the budget with clean threads only is for a moment (the next access evicts); changes not yet
        # backed up hold memory there until a backup succeeds
        if budget is not None and figures.resident_bytes > budget and figures.dirty_bytes:
            degraded.append(
                f"Memory is over the budget: {figures.resident_bytes:,} of {budget:,} bytes resident, "
                f"{figures.dirty_bytes:,} of them not yet backed up (they cannot be evicted before a backup)."
            )
    status = DOWN if down else DEGRADED if degraded else OK
    return Health(
        status=status,
        reasons=tuple(down + degraded),
        checked_at=now,
        database_reachable=reachable,
        attached=link.attached,
        last_backup_age_seconds=age,
        lag_seconds=figures.lag_seconds,
        pending=figures.pending,
        backup_interval=interval,
        backups_paused=paused,
        lease_valid=lease_valid,
        lease_remaining_seconds=remaining,
        resident_bytes=figures.resident_bytes,
        memory_budget=figures.memory_budget,
    )


__all__ = ["DEGRADED", "DOWN", "LAG_INTERVALS", "OK", "Health", "check_health", "database_reachable"]
