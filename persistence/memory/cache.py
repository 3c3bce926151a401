"""The memory cache: InMemorySaver's three dicts, the one lock that guards them, residency and the
change log, and the read and write paths that keep them consistent.

The cache owns the dicts (the facade serves LangGraph from the same objects). Every mutation runs
under :attr:`MemoryCache.lock`; readers copy under it. What it cannot do itself it asks of two
collaborators bound once at construction of the saver: a *loader* (claims and reads a cold thread)
and a *pressure* valve (backs up so changed threads can be evicted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.codec import CACHE_BYTES, Blobs, Key
from persistence.memory.changes import ChangeLog, knows_all_of, mark
from persistence.memory.guard import RestoreGuard
from persistence.memory.residency import Loader, Residency, Resident
from persistence.memory.sizes import KeySet, blob_size, checkpoint_size, write_size
from persistence.store import Snapshot
from persistence.store.records import CheckpointEntry, Summary, WriteEntry, WriteIdx, WriteKey
from persistence.store.summary import describe, newest

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Pressure(Protocol):
    """What the cache asks for when changed threads press the budget (the backup writer)."""

    def relieve(self) -> None:
        """Back up now, so changed threads become clean and can be evicted (the caller waits)."""

    def backup_soon(self) -> None:
        """Ask for an early backup without waiting for it."""


def decode_cache_bytes(budget: int | None) -> int:
    """Decoded versions kept for the next reads: :data:`~persistence.codec.CACHE_BYTES`, at most an
    eighth of a budget (counted in it)."""
    if budget is None:
        return CACHE_BYTES
    return min(CACHE_BYTES, budget // 8)


class MemoryCache:
    """Resident threads of one saver, their pending changes and the lock over both."""

    def __init__(self, *, budget: int | None) -> None:
        self.storage: defaultdict[str, dict[str, dict[str, CheckpointEntry]]] = defaultdict(lambda: defaultdict(dict))
        self.writes: defaultdict[WriteKey, dict[WriteIdx, WriteEntry]] = defaultdict(dict)
        #: channel values, compressed and as deltas between versions (see :mod:`persistence.codec`)
        self.blobs = Blobs(cache_bytes=decode_cache_bytes(budget))
        self.lock = threading.RLock()
        self.changes = ChangeLog()
        self.residency = Residency(
            self.storage, self.writes, self.blobs, self.lock, budget, self._load_missing, self._relieve
        )
        #: threads a restore rewrote under runs that may still be in flight
        self.guard = RestoreGuard(self.storage)
        self._complete = False
        #: bumped whenever ``complete`` turns False: a look at the store made before must not set it again
        self.complete_epoch = 0
        self._loader: Loader | None = None
        self._pressure: Pressure | None = None

    @property
    def complete(self) -> bool:
        """Memory holds every thread of the store, so an unknown thread is a new one (known only once
        attached: a saver that starts offline cannot tell a new thread from a stored one)."""
        return self._complete

    @complete.setter
    def complete(self, value: bool) -> None:
        if not value:
            self.complete_epoch += 1
        self._complete = value

    def set_complete_since(self, epoch: int) -> bool:
        """Memory holds the whole store, as found by a look that began when ``complete_epoch`` was
        ``epoch``: set ``complete`` unless something turned it False since (then the look is stale)."""
        with self.lock:
            if self.complete_epoch != epoch:
                return False
            self._complete = True
            return True

    def bind(self, loader: Loader, pressure: Pressure) -> None:
        """Give the cache what it calls on a miss (``loader``) and when memory presses (``pressure``)."""
        self._loader = loader
        self._pressure = pressure

    def _load_missing(self, thread_ids: Sequence[str]) -> tuple[Snapshot, dict[str, int | None]]:
        assert self._loader is not None, "MemoryCache.bind() was not called"
        return self._loader(thread_ids)

    def _relieve(self) -> None:
        """Memory is over the budget with only threads that cannot be evicted: back up now so they
        can be (the writer waits, as a page cache throttles writers past its dirty limit)."""
        if self._pressure is not None:
            self._pressure.relieve()
        with self.lock:
            self.residency.trim()

    @property
    def entries(self) -> dict[str, Resident]:
        return self.residency.entries

    # -- access -------------------------------------------------------------------------------

    def read(self, thread_id: str, read: Callable[[], T]) -> T:
        """Run ``read`` with ``thread_id`` resident; again if the thread was evicted meanwhile."""
        res = self.residency
        while True:
            entry, pinned = res.acquire(thread_id)
            try:
                result = read()
            except (KeyError, RuntimeError):
                if not entry.evicted:
                    raise
                continue
            finally:
                if pinned:
                    res.unpin(entry)
            if not entry.evicted:
                if res.over_budget():
                    with self.lock:
                        res.trim()
                return result

    def write(
        self,
        thread_ids: Sequence[str],
        write: Callable[[list[Resident]], T],
        check: Callable[[list[Resident]], None] | None = None,
    ) -> T:
        """Run ``write(entries)`` under the lock with every thread of ``thread_ids`` resident.

        One thread needs no pin: under the lock nothing evicts it, and an eviction between the
        lookup and the lock is seen (``evicted``) and the lookup done again. Several threads are
        pinned, so loading one cannot evict another. A writer that finds memory over the budget
        makes room first (evicting, or backing up when only changed threads are left), so
        concurrent writers cannot carry memory further past the budget than one write each. ``check(entries)``
        runs under the lock right before ``write`` (it may refuse by raising)."""
        res = self.residency
        if res.over_budget():
            self._relieve()
        if len(thread_ids) == 1:  # every put and put_writes: the same steps without the lists
            thread_id = thread_ids[0]
            while True:
                entry, pinned = res.acquire(thread_id)
                try:
                    with self.lock:
                        if not entry.evicted:
                            if check is not None:
                                check([entry])
                            result = write([entry])
                            break
                finally:
                    if pinned:
                        res.unpin(entry)
            if res.budget is not None:
                self._after_write(thread_ids)
            return result
        pin = True
        while True:
            acquired = [res.acquire(t, pin=pin) for t in thread_ids]
            try:
                with self.lock:
                    held = [entry for entry, _pinned in acquired]
                    if not any(e.evicted for e in held):
                        if check is not None:
                            check(held)
                        result = write(held)
                        break
            finally:
                for entry, pinned in acquired:
                    if pinned:
                        res.unpin(entry)
        if res.budget is not None:
            self._after_write(thread_ids)
        return result

    def _after_write(self, thread_ids: Sequence[str]) -> None:
        """Keep memory under the budget after a write: evict idle threads, and back up early when
        changes not yet in PostgreSQL press the budget."""
        res = self.residency
        if res.budget is None:
            return
        if res.dirty_bytes > res.budget // 2 and self._pressure is not None:
            self._pressure.backup_soon()
        if not res.over_budget():
            return
        with self.lock:
            res.trim(exclude=thread_ids)
        if res.over_budget():
            self._relieve()

    def touch(self, entry: Resident) -> None:
        """``entry``'s thread has a change for the next backup. Under the lock."""
        self.residency.changed(entry)
        if self.changes.since is None:
            self.changes.since = time.time()

    def view(self, thread_ids: Sequence[str], serde: SerializerProtocol | None) -> InMemorySaver:
        """A plain InMemorySaver over copies of these resident threads (for lazy listing). Under the lock."""
        view = InMemorySaver(serde=serde)
        view.blobs = Blobs()
        for tid in thread_ids:
            entry = self.entries.get(tid)
            namespaces = self.storage.get(tid)
            if entry is None or namespaces is None:
                continue
            view.storage[tid].update({ns: dict(cps) for ns, cps in namespaces.items()})
            for key in entry.write_keys:
                if key in self.writes:
                    view.writes[key] = dict(self.writes[key])
            for key in entry.blob_keys:
                if key in self.blobs:
                    view.blobs.store_raw(key, self.blobs.raw(key))
        return view

    def copy_thread_rows(self, thread_id: str, serde: SerializerProtocol | None) -> Snapshot:
        """A copy of one thread's rows as served now, in InMemorySaver's shapes (loaded first when cold)."""

        def copy() -> Snapshot:
            with self.lock:
                view = self.view([thread_id], serde)
            return Snapshot(
                storage={
                    t: {ns: dict(c) for ns, c in n.items() if c} for t, n in view.storage.items() if any(n.values())
                },
                writes={k: v for k, v in view.writes.items() if v},
                blobs=Blobs(view.blobs),
            )

        return self.read(thread_id, copy)

    # -- ownership changes (under the lock) -------------------------------------------------------

    def drop(self, threads: Sequence[str], why: str, lost: dict[str, int] | None = None) -> None:
        """Forget threads this member no longer owns, with their stale changes. Under the lock.

        ``lost`` counts the changes of each thread that never reached PostgreSQL (default: those in
        the change log)."""
        for tid in threads:
            count = lost.get(tid, 0) if lost is not None else sum(1 for k in self.changes.checkpoints if k[0] == tid)
            self.residency.evict(tid, give_back=False)
            self.changes.forget([tid])
            logger.error(
                "thread %r: %s; another member took it over, so this member dropped it from memory "
                "with %s pending change(s) that never reached PostgreSQL",
                tid,
                why,
                count,
            )

    def merge_under(self, tid: str, entry: Resident, snap: Snapshot) -> None:
        """Add the stored rows of ``tid`` under what memory holds (memory wins). Under the lock."""
        log = self.changes
        if tid in log.deleted_threads:
            return
        res = self.residency
        for ns, cps in snap.storage.get(tid, {}).items():
            mem = self.storage[tid].setdefault(ns, {})
            for cid, value in cps.items():
                if cid in mem:
                    mark(log.checkpoints, (tid, ns, cid), True, mem[cid])
                else:
                    mem[cid] = value
                    res.grow(entry, checkpoint_size(value))
        for outer, inner in snap.writes.items():
            if outer[0] != tid:
                continue
            mem_w = self.writes.setdefault(outer, {})
            entry.write_keys.add(outer)
            for key, write in inner.items():
                if key in mem_w:
                    mark(log.writes, (*outer, *key), True, mem_w[key])
                else:
                    mem_w[key] = write
                    res.grow(entry, write_size(write))
        for key, blob in snap.blobs.items():
            if key[0] != tid:
                continue
            if key in self.blobs:
                mark(log.blobs, key, True, self.blobs.raw(key))
            else:
                self.blobs.store_raw(key, blob)
                entry.blob_keys.add(key)
                res.grow(entry, blob_size(blob))

    def rename(self, tid: str, new: str) -> Resident:
        """Move resident thread ``tid``, rows and pending changes, to the id ``new`` (every row new
        there); ``tid`` is no longer resident. Under the lock."""
        res, log = self.residency, self.changes
        entry = res.entries.pop(tid)
        namespaces = self.storage.pop(tid, {})
        self.storage[new].update(namespaces)
        write_keys: KeySet[WriteKey] = KeySet()
        blob_keys: KeySet[Key] = KeySet()
        for key in entry.write_keys:
            moved = self.writes.pop(key, None)
            if moved is not None:
                outer = (new, *key[1:])
                self.writes[outer] = moved
                write_keys.add(outer)
        for key in entry.blob_keys:
            blob = self.blobs.pop(key, None)
            if blob is not None:
                moved_key = (new, *key[1:])
                self.blobs.store_raw(moved_key, blob)
                blob_keys.add(moved_key)
        entry.write_keys, entry.blob_keys = write_keys, blob_keys
        entry.token = None
        res.entries[new] = entry
        log.forget([tid])
        for ns, cps in namespaces.items():
            for cid, value in cps.items():
                mark(log.checkpoints, (new, ns, cid), False, value)
        for outer in write_keys:
            for inner, write in self.writes[outer].items():
                mark(log.writes, (*outer, *inner), False, write)
        self.blobs.forget([tid])
        for key in blob_keys:
            mark(log.blobs, key, False, self.blobs.raw(key))
        self.touch(entry)
        return entry

    def knows_all_of(self, stored: Snapshot, tid: str) -> bool:
        """Every checkpoint the store holds of ``tid`` is known here: resident, or deleted here with the
        delete still pending. False means someone else wrote the thread. Under the lock."""
        return knows_all_of(stored, tid, self.storage.get(tid, {}), self.changes)

    def mark_all_changed(self, tid: str) -> None:
        """Every row of resident ``tid`` goes into the next backup (replacing whatever the store has). Under the lock."""
        entry = self.entries[tid]
        log = self.changes
        for ns, cps in self.storage.get(tid, {}).items():
            for cid, value in cps.items():
                mark(log.checkpoints, (tid, ns, cid), True, value)
        for outer in entry.write_keys:
            for inner, write in self.writes.get(outer, {}).items():
                mark(log.writes, (*outer, *inner), True, write)
        for key in entry.blob_keys:
            if key in self.blobs:
                mark(log.blobs, key, True, self.blobs.raw(key))
        self.touch(entry)

    # -- figures ----------------------------------------------------------------------------------

    def thread_ids(self) -> list[str]:
        """Ids of the resident threads that hold at least one checkpoint."""
        with self.lock:
            return [t for t, namespaces in self.storage.items() if any(namespaces.values())]

    def pending_threads(self) -> set[str]:
        """Threads with changes not yet in PostgreSQL."""
        with self.lock:
            return self.changes.threads()

    def pending(self) -> tuple[int, float | None]:
        """(changes not yet in PostgreSQL, wall time of the oldest of them)."""
        with self.lock:
            return len(self.changes), self.changes.since

    def counts(self) -> tuple[int, int]:
        """(threads, checkpoints) resident now, counted without the lock (each list() copy is one
        atomic operation): writers never wait for it."""
        threads = 0
        checkpoints = 0
        for namespaces in list(self.storage.values()):
            n = sum(len(cps) for cps in list(namespaces.values()))
            if n:
                threads += 1
                checkpoints += n
        return threads, checkpoints

    def summaries(self, threads: set[str], serde: SerializerProtocol, summarize: bool) -> list[Summary]:
        """The summary rows of ``threads`` as memory holds them now (outside the lock: each copy
        below is one atomic dict operation, and values never change in place)."""
        out: list[Summary] = []
        for tid in threads:
            entry = self.entries.get(tid)
            namespaces = self.storage.get(tid)
            if entry is None or not namespaces:
                continue
            copied = {ns: dict(cps) for ns, cps in list(namespaces.items())}
            count = sum(len(cps) for cps in copied.values())
            head = newest(copied)
            if not count or head is None:
                continue
            title, text = describe(serde, tid, copied, self.blobs) if summarize else (None, None)
            changed = entry.changed_at or time.time()
            out.append(
                (tid, count, entry.bytes, datetime.fromtimestamp(changed, UTC), head[1], title, text),
            )
        return out


__all__ = ["MemoryCache", "Pressure"]
