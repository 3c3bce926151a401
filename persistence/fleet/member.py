"""This process as a member of the fleet: handing threads over when asked, and the heartbeat.

A handoff backs up what is pending on the threads (nothing when they are clean), evicts them and
releases their ``owners`` rows, so the asker's claim succeeds. The backup itself belongs to the
operations layer: the member gets it as a :class:`Backups` collaborator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast

import psycopg

from persistence.codec import Blobs
from persistence.db import DB_ERRORS
from persistence.errors import DatabaseUnavailable
from persistence.fleet.membership import Membership
from persistence.fleet.ownership import Ownership
from persistence.memory import MemoryCache
from persistence.records import BackupRun
from persistence.store import Snapshot
from persistence.store.link import DatabaseLink

logger = logging.getLogger(__name__)

#: every this many heartbeats, members without their lock are reaped
REAP_EVERY = 5


class Backups(Protocol):
    """What a handoff needs of the backup writer."""

    def exclusive(self) -> AbstractContextManager[Any]:
        """Hold off every other backup (and restore) of this saver."""

    def run_locked(self, trigger: str, request_id: str | None = None) -> BackupRun:
        """Back up now; the caller holds :meth:`exclusive` and the cache's lock."""


class FleetMember:
    """Handoffs and the heartbeat of one member."""

    def __init__(
        self,
        cache: MemoryCache,
        ownership: Ownership,
        membership: Membership,
        link: DatabaseLink,
        backups: Backups,
        *,
        figures: Callable[[], dict[str, Any]],
        closed: Callable[[], bool],
    ) -> None:
        self._cache = cache
        self._ownership = ownership
        self._membership = membership
        self._link = link
        self._backups = backups
        self._figures = figures
        self._closed = closed
        self._beats = 0
        #: threads a restore of this member holds: not handed over until it is done
        self.restoring: set[str] = set()

    def release_threads(
        self, thread_ids: Sequence[str] | None = None, *, restore: bool = False, to: int | None = None
    ) -> dict[str, Any]:
        """Back up, evict and give back ``thread_ids`` (None: every thread), so another member can
        take them. Threads being restored here are not given back (``busy``). With ``restore`` (a
        restore asked for them) runs in flight on the released threads may not write on top of the
        restored state (see :class:`~persistence.memory.guard.RestoreGuard`). With ``to`` the threads
        pass straight to that member (the one that asked), reserved for it."""
        cache, membership = self._cache, self._membership
        res = cache.residency
        stale: dict[str, int] = {}
        if thread_ids is not None:
            for tid in thread_ids:
                load = res.loading.get(tid)
                if load is not None:
                    load.done.wait(self._ownership.handoff_timeout)
            # tokens first: a claim by this member after this read changes the token, so the release
            # below cannot take back a claim it did not see
            _missing, stale = membership.release_unheld(thread_ids)
        with self._backups.exclusive(), cache.lock:
            # threads with nothing pending are in PostgreSQL as they are: hand them over without a backup
            if thread_ids is None or restore or not cache.changes.threads().isdisjoint(thread_ids):
                run = self._backups.run_locked("release")
                if not run.ok:
                    raise DatabaseUnavailable(f"Could not back up before handing threads over: {run.error}")
            if restore:
                cache.guard.mark(list(cache.entries) if thread_ids is None else thread_ids)
            if thread_ids is None:
                released = len(res.drop_all())
                cache.complete = False
                membership.release_all()
                return {"released": released, "busy": []}
            busy = [t for t in thread_ids if t in self.restoring]
            pairs: list[tuple[str, int]] = []
            for tid in thread_ids:
                if tid in busy:
                    continue
                entry = cache.entries.get(tid)
                if entry is not None and entry.token is not None and res.is_clean(entry):
                    res.evict(tid, give_back=False)
                    pairs.append((tid, entry.token))
                elif entry is None and tid not in res.loading and tid in stale:
                    pairs.append((tid, stale[tid]))
                elif entry is not None:
                    busy.append(tid)
            # passed to the asker: with its claim made here (when no restore holds the store) it
            # loads at once, one claim's round trips sooner
            tokens: dict[str, int] = {}
            if to is None:
                membership.release(pairs)
            else:
                tokens = membership.hand_over(pairs, to)
            if pairs:
                cache.complete = False
        return {"released": len(pairs), "busy": busy, "tokens": tokens}

    def resident_rows(self, thread_id: str) -> tuple[Snapshot, int] | None:
        """A copy of ``thread_id``'s rows as this member serves them now, and how many of its
        checkpoints wait for the next backup; None when it is not resident here. Read-only: never
        loads, claims or evicts (an observer's live read)."""
        cache = self._cache
        with cache.lock:
            if thread_id not in cache.entries:
                return None
            view = cache.view([thread_id], None)
            pending = sum(1 for k, (_e, v) in cache.changes.checkpoints.items() if k[0] == thread_id and v is not None)
        snap = Snapshot(
            storage={t: {ns: dict(c) for ns, c in n.items() if c} for t, n in view.storage.items() if any(n.values())},
            writes={k: v for k, v in view.writes.items() if v},
            # InMemorySaver declares its blobs a dict; cache.view made them a Blobs
            blobs=cast(Blobs, view.blobs),
        )
        return snap, pending

    def pending_counts(self) -> dict[str, tuple[int, str] | None]:
        """Every thread with changes not backed up yet -> (checkpoints, newest checkpoint id) as memory
        holds it now, or None when it holds none (deleted here). Read-only."""
        cache = self._cache
        out: dict[str, tuple[int, str] | None] = {}
        with cache.lock:
            for tid in cache.changes.threads():
                ids = [cid for cps in cache.storage.get(tid, {}).values() for cid in cps]
                out[tid] = (len(ids), max(ids)) if ids else None
        return out

    def held(self, thread_ids: Sequence[str] | None = None) -> list[str]:
        """Of ``thread_ids`` (None: all), the threads this member serves now (in memory)."""
        entries = self._cache.entries
        return sorted(entries) if thread_ids is None else [t for t in thread_ids if t in entries]

    def heartbeat(self) -> None:
        """Publish this member's figures, give back evicted threads, and now and then reap members whose
        lease expired (the lease itself is renewed on a connection of its own, see ``lease.py``)."""
        link = self._link
        if self._closed() or not link.attached or link.failed:
            return
        try:
            self._membership.heartbeat(self._figures())
            self._ownership.give_back()
            self._beats += 1
            if self._beats % REAP_EVERY == 1:
                self._membership.reap()
                if self._ownership.others_alive() and self._cache.complete:
                    self._cache.complete = False
        except (*DB_ERRORS, psycopg.Error) as exc:
            logger.debug("heartbeat failed: %s", type(exc).__name__)


__all__ = ["REAP_EVERY", "Backups", "FleetMember"]
