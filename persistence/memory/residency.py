"""Residency: which threads are in memory, what they cost, loading cold ones and evicting idle ones.

Memory is the first level of a two-level cache; PostgreSQL is the second. A thread is *resident*
(its rows are in the saver's dicts) or *cold* (only in PostgreSQL, exactly as its live rows). Any
access to a cold thread loads it first: one load per thread however many callers want it, and
other threads never wait for it. When the resident bytes pass the budget, the least recently used
threads with no pending change are evicted; what is dropped is exactly what PostgreSQL holds.

How bytes are counted: the length of every stored payload (checkpoint, metadata, channel value,
write value; channel values as encoded, see :mod:`persistence.codec`) plus :data:`ENTRY_OVERHEAD`
per entry for its keys and containers, and the decoded versions the blob dict keeps: the hot ones
(the newest version of each chain and the bases still to be used) count with the threads, and the
LRU of other decoded versions is bounded on its own (``blobs.cache_bytes``, an eighth of a budget at
most), so the threads get the rest of the budget: the two together stay under it.

Pending changes are tracked by epoch: a change made while ``epoch == n`` is in the backup whose
cut is ``n``; once that backup committed (``committed >= n``) the thread is clean again.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from persistence.codec import Blobs, Key
from persistence.memory.sizes import ENTRY_OVERHEAD, KeySet, blob_size, checkpoint_size, snapshot_size, write_size
from persistence.store import Snapshot
from persistence.store.records import WriteKey
from persistence.tally import Tally

#: eviction goes down to this share of the budget, so a full cache does not evict on every load
LOW_WATER = 0.9

Loader = Callable[[Sequence[str]], tuple[Snapshot, dict[str, int | None]]]


class Resident:
    """One resident thread: its size, when it was last used and changed, and which keys it has."""

    __slots__ = ("blob_keys", "bytes", "changed", "changed_at", "evicted", "pins", "token", "used", "write_keys")

    def __init__(self, token: int | None) -> None:
        self.bytes = 0
        self.used = 0
        #: change epoch of the newest change (0: unchanged since it was loaded)
        self.changed = 0
        self.changed_at: float | None = None
        #: the ownership token this member holds for the thread (None: not claimed yet, offline)
        self.token = token
        self.pins = 0
        self.evicted = False
        self.blob_keys: KeySet[Key] = KeySet()
        self.write_keys: KeySet[WriteKey] = KeySet()


class _Load:
    """A load under way that other callers of the same thread wait for."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.done = threading.Event()
        self.error: BaseException | None = None


@dataclass(frozen=True)
class ResidencyStats:
    resident_threads: int
    resident_bytes: int
    dirty_bytes: int
    memory_budget: int | None
    hits: int
    loads: int
    evictions: int


class Residency:
    """Resident threads of one saver. ``storage``, ``writes`` and ``blobs`` are the saver's
    (InMemorySaver's) dicts; every method that says so runs under ``lock``."""

    def __init__(
        self,
        storage: Any,
        writes: Any,
        blobs: Blobs,
        lock: threading.RLock,
        budget: int | None,
        loader: Loader,
        relieve: Callable[[], None] | None = None,
    ) -> None:
        self.storage = storage
        self.writes = writes
        self.blobs = blobs
        self.lock = lock
        self.budget = budget
        #: what the threads may take: the budget less what the decoded versions may
        self.room = None if budget is None else budget - min(getattr(blobs, "cache_bytes", 0), budget // 8)
        self.loader = loader
        #: called (outside the lock) when evicting clean threads cannot bring memory under the budget
        self.relieve = relieve
        self.entries: dict[str, Resident] = {}
        self.loading: dict[str, _Load] = {}
        self.resident_bytes = 0
        #: bytes of resident threads with changes not yet in PostgreSQL (they cannot be evicted)
        self.dirty_bytes = 0
        self.epoch = 1
        self.committed = 0
        #: bumped by a restore or a release of everything: loads read before it are thrown away
        self.store_epoch = 0
        self.hits = 0
        self.loads = 0
        self.evictions = 0
        #: seconds each load of one cold thread took (claim, handoff and read), for the metrics
        self.load_seconds = Tally()
        #: (thread, token) of evicted threads whose ownership is still to be given back
        self.released: list[tuple[str, int]] = []
        self._clock = itertools.count(1)

    # -- access ---------------------------------------------------------------------------------

    def acquire(self, thread_id: str, *, pin: bool = False) -> tuple[Resident, bool]:
        """The resident entry of ``thread_id``, loading it when it is cold.

        Returns ``(entry, pinned)``: a loaded entry (or any entry when ``pin``) is pinned, so no
        eviction takes it until :meth:`unpin`. An unpinned entry may be evicted at any time: a
        reader checks ``entry.evicted`` after reading and tries again.

        Raises:
            whatever the loader raises (``DatabaseUnavailable``, ``ThreadBusy``), for every caller
            waiting on that load.
        """
        entry = self.entries.get(thread_id)
        if entry is not None:
            if pin:
                with self.lock:
                    if entry.evicted:
                        return self.acquire(thread_id, pin=pin)
                    entry.pins += 1
            entry.used = next(self._clock)
            self.hits += 1
            return entry, pin
        return self._load(thread_id), True

    def unpin(self, entry: Resident) -> None:
        with self.lock:
            entry.pins -= 1

    def _load(self, thread_id: str) -> Resident:
        while True:
            with self.lock:
                entry = self.entries.get(thread_id)
                if entry is not None:
                    entry.pins += 1
                    entry.used = next(self._clock)
                    return entry
                load = self.loading.get(thread_id)
                mine = load is None
                if mine:
                    load = self.loading[thread_id] = _Load(self.store_epoch)
            assert load is not None
            if not mine:
                load.done.wait()
                if load.error is not None:
                    raise load.error
                continue
            started = time.perf_counter()
            try:
                snap, tokens = self.loader([thread_id])
            except BaseException as exc:
                with self.lock:
                    self.loading.pop(thread_id, None)
                load.error = exc
                load.done.set()
                raise
            self._make_room(snapshot_size(snap, thread_id))
            installed: Resident | None = None
            with self.lock:
                self.loading.pop(thread_id, None)
                if load.epoch == self.store_epoch:
                    installed = self.install(thread_id, snap, tokens.get(thread_id))
                    installed.pins += 1
                    self.loads += 1
                    self.trim(exclude=(thread_id,))
            self.load_seconds.observe(time.perf_counter() - started)
            load.done.set()
            if installed is not None:
                return installed
            # a restore ran while this load read PostgreSQL: read again

    def load_many(self, thread_ids: Iterable[str], loader: Loader) -> int:
        """Load the cold threads among ``thread_ids`` with one call of ``loader`` (the warm start);
        threads the loader does not grant stay cold. Returns how many became resident."""
        with self.lock:
            wanted = [t for t in thread_ids if t not in self.entries and t not in self.loading]
            epoch = self.store_epoch
            loads = {t: _Load(epoch) for t in wanted}
            self.loading.update(loads)
        if not wanted:
            return 0
        error: BaseException | None = None
        snap: Snapshot = Snapshot()
        tokens: dict[str, int | None] = {}
        try:
            snap, tokens = loader(wanted)
        except BaseException as exc:  # noqa: BLE001 - waiters load for themselves; the caller gets it
            error = exc
        installed = 0
        with self.lock:
            for tid, load in loads.items():
                self.loading.pop(tid, None)
                if error is None and tid in tokens and epoch == self.store_epoch and tid not in self.entries:
                    self.install(tid, snap, tokens[tid])
                    installed += 1
                load.done.set()
            self.loads += installed
        if error is not None:
            raise error
        return installed

    def install(self, thread_id: str, snap: Snapshot, token: int | None) -> Resident:
        """Put the rows of ``thread_id`` in ``snap`` into memory as a resident thread. Under the lock."""
        entry = Resident(token)
        entry.used = next(self._clock)
        size = 0
        namespaces = snap.storage.get(thread_id)
        if namespaces:
            target = self.storage[thread_id]
            for ns, cps in namespaces.items():
                target[ns] = dict(cps)
                size += sum(map(checkpoint_size, cps.values()))
        for outer, inner in snap.writes.items():
            if outer[0] == thread_id:
                self.writes[outer] = dict(inner)
                entry.write_keys.add(outer)
                size += sum(map(write_size, inner.values()))
        for key, value in snap.blobs.items():
            if key[0] == thread_id:
                self.blobs.store_raw(key, value)
                entry.blob_keys.add(key)
                size += blob_size(value)
        self.blobs.resume(entry.blob_keys)
        entry.bytes = size + ENTRY_OVERHEAD
        self.resident_bytes += entry.bytes
        self.entries[thread_id] = entry
        return entry

    # -- accounting (under the lock) ------------------------------------------------------------

    def grow(self, entry: Resident, delta: int) -> None:
        entry.bytes += delta
        self.resident_bytes += delta
        if entry.changed > self.committed:
            self.dirty_bytes += delta

    def changed(self, entry: Resident) -> None:
        """``entry`` has a change that the next backup writes."""
        if entry.changed <= self.committed:
            self.dirty_bytes += entry.bytes
        entry.changed = self.epoch
        entry.changed_at = time.time()

    def is_clean(self, entry: Resident) -> bool:
        return entry.changed <= self.committed

    def cut(self) -> int:
        """Start a backup: changes from now on belong to the next one. Returns this cut's epoch."""
        epoch = self.epoch
        self.epoch += 1
        return epoch

    def commit(self, epoch: int) -> None:
        """The backup of cut ``epoch`` is in PostgreSQL: everything changed up to it is clean."""
        self.committed = max(self.committed, epoch)
        self.dirty_bytes = sum(e.bytes for e in self.entries.values() if e.changed > self.committed)

    def dirty_threads(self) -> list[str]:
        return [t for t, e in self.entries.items() if e.changed > self.committed]

    def stats(self) -> ResidencyStats:
        with self.lock:
            return ResidencyStats(
                resident_threads=len(self.entries),
                resident_bytes=self.resident_bytes + getattr(self.blobs, "decoded_bytes", 0),
                dirty_bytes=self.dirty_bytes,
                memory_budget=self.budget,
                hits=self.hits,
                loads=self.loads,
                evictions=self.evictions,
            )

    # -- eviction (under the lock) -------------------------------------------------------------

    def _make_room(self, size: int) -> None:
        """Before a load: evict until ``size`` more bytes fit; when only threads that cannot be
        evicted are left, let ``relieve`` back them up first (the loader waits for it)."""
        if self.room is None:
            return
        for attempt in range(2):
            with self.lock:
                if self.used() + size > self.room:
                    self.trim(target=self.room - size)
                if self.used() + size <= self.room or attempt or self.relieve is None:
                    return
            self.relieve()

    def used(self) -> int:
        """What the budget's share for threads holds: their stored bytes and their hot decoded versions."""
        return self.resident_bytes + getattr(self.blobs, "hot_bytes", 0)

    def over_budget(self) -> bool:
        return self.room is not None and self.used() > self.room

    def trim(self, exclude: Sequence[str] = (), target: float | None = None) -> int:
        """Evict clean, unpinned threads, least recently used first, until the resident bytes are
        back under the budget (down to :data:`LOW_WATER` of it, or to ``target``). Returns how many went."""
        if self.room is None:
            return 0
        if target is None:
            if not self.over_budget():
                return 0
            target = self.room * LOW_WATER
        elif self.used() <= target:
            return 0
        committed = self.committed
        candidates = sorted(
            (e.used, tid)
            for tid, e in self.entries.items()
            if e.pins == 0 and e.changed <= committed and e.token is not None and tid not in exclude
        )
        evicted = 0
        for _used, tid in candidates:
            if self.used() <= target:
                break
            self.evict(tid)
            evicted += 1
        return evicted

    def evict(self, thread_id: str, *, give_back: bool = True, forget: bool = True) -> Resident | None:
        """Drop ``thread_id`` from memory (the caller makes sure nothing pending is lost)."""
        entry = self.entries.pop(thread_id, None)
        if entry is None:
            return None
        entry.evicted = True
        self.storage.pop(thread_id, None)
        for key in entry.write_keys:
            self.writes.pop(key, None)
        for key in entry.blob_keys:
            self.blobs.pop(key, None)
        if forget:
            self.blobs.forget([thread_id])
        self.resident_bytes -= entry.bytes
        if entry.changed > self.committed:
            self.dirty_bytes -= entry.bytes
        self.evictions += 1
        if give_back and entry.token is not None:
            self.released.append((thread_id, entry.token))
        return entry

    def drop_all(self) -> list[tuple[str, int]]:
        """Evict every thread and throw away loads under way (a restore rewrote the store).
        Returns the (thread, token) pairs that were held."""
        self.store_epoch += 1
        held = [(t, e.token) for t, e in self.entries.items() if e.token is not None]
        gone = list(self.entries)
        for tid in gone:
            self.evict(tid, give_back=False, forget=False)
        self.blobs.forget(gone)  # once for all: each call reads the decoded versions kept
        return held

    def take_released(self) -> list[tuple[str, int]]:
        out, self.released = self.released, []
        return out


__all__ = ["Resident", "Residency", "ResidencyStats"]
