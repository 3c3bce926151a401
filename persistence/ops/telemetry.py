"""The counters and histograms of one saver as of one moment: :func:`telemetry` behind
``saver.telemetry()``, read by ``persistence.metrics`` at scrape time (and by anyone else: plain values).

The components keep them (see ``persistence.tally``): the backup writer its runs, residency its loads,
ownership its claims, handoffs and ``ThreadBusy``, the lease its renewals that had to reconnect or rejoin.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from persistence.fleet.lease import Lease
from persistence.fleet.ownership import Ownership
from persistence.memory import MemoryCache
from persistence.ops.backup import BackupWriter
from persistence.tally import TallySnapshot


@dataclass(frozen=True)
class Telemetry:
    """Counters since the saver started (they only grow) and histograms of the slow paths."""

    #: (trigger, outcome) -> runs; outcome is ``written``, ``empty``, ``refused`` or ``failed``
    #: (restores are the runs with the trigger ``restore``)
    runs: dict[tuple[str, str], int]
    backup_duration: TallySnapshot
    backup_rows: TallySnapshot
    backup_bytes: TallySnapshot
    #: threads whose changes the store refused because another member owns them now (fencing)
    fencing_refusals: int
    #: failed runs in a row now
    failing_runs: int
    last_run_at: datetime | None
    last_success_at: datetime | None
    #: cold threads loaded one by one (the claim, a handoff if any, the read)
    load_seconds: TallySnapshot
    #: threads claimed; of them, threads another member held first; claims that raised ThreadBusy
    claims: int
    handoffs: int
    handoff_seconds: TallySnapshot
    thread_busy: int
    lease_reconnects: int
    lease_rejoins: int
    #: wall time the counters started from (the saver's construction)
    since: float


def telemetry(writer: BackupWriter, cache: MemoryCache, ownership: Ownership, lease: Lease) -> Telemetry:
    """Read every component's counters now (no lock held across components, no I/O)."""
    runs = writer.tally
    return Telemetry(
        runs=runs.counts(),
        backup_duration=runs.duration.snapshot(),
        backup_rows=runs.rows.snapshot(),
        backup_bytes=runs.bytes.snapshot(),
        fencing_refusals=runs.refused_threads,
        failing_runs=runs.failing,
        last_run_at=runs.last_run_at,
        last_success_at=runs.last_success_at,
        load_seconds=cache.residency.load_seconds.snapshot(),
        claims=ownership.claims,
        handoffs=ownership.handoffs,
        handoff_seconds=ownership.handoff_seconds.snapshot(),
        thread_busy=ownership.busy,
        lease_reconnects=lease.reconnects,
        lease_rejoins=lease.rejoins,
        since=runs.created,
    )


__all__ = ["Telemetry", "telemetry"]
