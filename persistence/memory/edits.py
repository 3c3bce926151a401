"""Deleting and copying inside threads: ``delete_thread``, LangGraph's extended capabilities
(``copy_thread``, ``prune``, ``delete_for_runs``), applied to the memory cache.

Every edit runs through the cache's ``write`` (the thread made resident and claimed first, the lock
held) and leaves tombstones in the change log, so the next backup carries the deletes as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.codec import Key
from persistence.errors import InvalidValue
from persistence.memory.cache import MemoryCache
from persistence.memory.changes import mark
from persistence.memory.residency import Resident
from persistence.memory.sizes import ENTRY_OVERHEAD, blob_size, checkpoint_size, write_size

#: the threads of the store (not in memory) that hold a checkpoint of one of these runs
StoredRuns = Callable[[set[str]], list[str]]
#: ``MemoryCache.write``'s shape: run a function under the lock with these threads resident
Write = Callable[[Sequence[str], Callable[[list[Resident]], Any]], Any]


class Edits:
    """Deletes, copies and prunes of one cache, tracked for the next backup."""

    def __init__(self, cache: MemoryCache, stored_runs: StoredRuns, write: Write | None = None) -> None:
        self._cache = cache
        self._stored_runs = stored_runs
        #: how an edit is applied: the cache's write path, or the facade's (which checks the lease too)
        self._apply = write or cache.write

    def delete_thread(self, thread_id: str) -> None:
        if not isinstance(thread_id, str):
            raise InvalidValue(f"thread_id must be a str, got {type(thread_id).__name__} {thread_id!r:.80}.")
        self._apply([thread_id], lambda e: self._delete_thread(thread_id, e[0]))

    def _delete_thread(self, thread_id: str, entry: Resident) -> None:
        log = self._cache.changes
        log.forget([thread_id])
        log.deleted_threads.add(thread_id)
        self._cache.storage.pop(thread_id, None)
        for key in entry.write_keys:
            self._cache.writes.pop(key, None)
        for key in entry.blob_keys:
            self._cache.blobs.pop(key, None)
        self._cache.blobs.forget([thread_id])
        entry.write_keys.clear()
        entry.blob_keys.clear()
        self._cache.residency.grow(entry, ENTRY_OVERHEAD - entry.bytes)
        self._cache.touch(entry)

    def _delete_keys(
        self, entry: Resident, checkpoints: Sequence[tuple[str, str, str]], blobs: Sequence[Key] = ()
    ) -> None:
        """Delete checkpoints (with their writes) and blobs of one thread as tracked tombstones. Under the lock."""
        log = self._cache.changes
        res = self._cache.residency
        touched = False
        for tid, ns, cid in checkpoints:
            cps = self._cache.storage.get(tid, {}).get(ns)
            if cps is not None and cid in cps:
                res.grow(entry, -checkpoint_size(cps.pop(cid)))
                mark(log.checkpoints, (tid, ns, cid), True)
                touched = True
            outer = (tid, ns, cid)
            for inner, write in self._cache.writes.pop(outer, {}).items():
                res.grow(entry, -write_size(write))
                mark(log.writes, (*outer, *inner), True)
                touched = True
            entry.write_keys.discard(outer)
        # versions that stay and decode through one that goes are re-encoded whole first
        gone = set(blobs)
        stays = [k for k in entry.blob_keys if k not in gone and not gone.isdisjoint(self._cache.blobs.bases(k))]
        for key, value in self._cache.blobs.materialize(stays).items():
            old = self._cache.blobs.raw(key)
            self._cache.blobs.store_raw(key, value)
            res.grow(entry, blob_size(value) - blob_size(old))
            mark(log.blobs, key, True, value)
            touched = True
        for key in blobs:
            value = self._cache.blobs.pop(key, None)
            if value is not None:
                res.grow(entry, -blob_size(value))
                entry.blob_keys.discard(key)
                mark(log.blobs, key, True)
                touched = True
        if touched:
            self._cache.touch(entry)

    def _unreferenced_blobs(self, thread_id: str, entry: Resident, serde: SerializerProtocol) -> list[Key]:
        """Blobs of the thread that no remaining checkpoint references. Under the lock."""
        referenced: set[Key] = set()
        for ns, cps in self._cache.storage.get(thread_id, {}).items():
            for (ctype, cdata), _md, _parent in cps.values():
                versions = serde.loads_typed((ctype, cdata)).get("channel_versions", {})
                referenced.update((thread_id, ns, ch, v) for ch, v in versions.items())
        return [k for k in entry.blob_keys if k not in referenced]

    # -- extended capabilities: copy_thread, prune, delete_for_runs ------------------------------

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of one thread to another (replacing nothing else)."""
        for tid in (source_thread_id, target_thread_id):
            if not isinstance(tid, str):
                raise InvalidValue(f"thread ids must be str, got {type(tid).__name__} {tid!r:.80}.")
        if source_thread_id == target_thread_id:
            return
        self._apply([source_thread_id, target_thread_id], lambda e: self._copy(source_thread_id, target_thread_id, *e))

    def _copy(self, source: str, target: str, src_entry: Resident, dst_entry: Resident) -> None:
        src = self._cache.storage.get(source)
        if not src:
            return
        log, res = self._cache.changes, self._cache.residency
        dest = self._cache.storage[target]
        for ns, cps in src.items():
            dst = dest.setdefault(ns, {})
            for cid, value in cps.items():
                old = dst.get(cid)
                mark(log.checkpoints, (target, ns, cid), old is not None, value)
                res.grow(dst_entry, checkpoint_size(value) - (checkpoint_size(old) if old is not None else 0))
                dst[cid] = value
        for tid, ns, cid in list(src_entry.write_keys):
            inner_src = self._cache.writes.get((tid, ns, cid))
            if not inner_src:
                continue
            outer = (target, ns, cid)
            dst_w = self._cache.writes.setdefault(outer, {})
            dst_entry.write_keys.add(outer)
            for idx, write in inner_src.items():
                old_write = dst_w.get(idx)
                mark(log.writes, (*outer, *idx), old_write is not None, write)
                res.grow(dst_entry, write_size(write) - (write_size(old_write) if old_write is not None else 0))
                dst_w[idx] = write
        for _tid, ns, ch, ver in list(src_entry.blob_keys):
            blob = self._cache.blobs.raw((source, ns, ch, ver))
            if blob is None:
                continue
            key = (target, ns, ch, ver)
            old_blob = self._cache.blobs.raw(key)
            mark(log.blobs, key, old_blob is not None, blob)
            res.grow(dst_entry, blob_size(blob) - (blob_size(old_blob) if old_blob is not None else 0))
            dst_entry.blob_keys.add(key)
            self._cache.blobs.store_raw(key, blob)
        self._cache.touch(dst_entry)

    def prune(
        self,
        thread_ids: Sequence[str],
        serde: SerializerProtocol,
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
    ) -> None:
        """Prune checkpoints of ``thread_ids``.

        Args:
            strategy: ``"keep_latest"`` keeps the newest checkpoint of each namespace,
                ``"keep_last"`` keeps the newest ``keep_last``, ``"delete"`` (or ``"delete_all"``, as
                the Agent Server's gRPC path names it) removes the threads.
            keep_last: how many checkpoints ``"keep_last"`` keeps per namespace (>= 1).
        """
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread ids, not a str")
        if strategy in ("delete", "delete_all"):
            for tid in thread_ids:
                self.delete_thread(tid)
            return
        if strategy == "keep_latest":
            keep = 1
        elif strategy == "keep_last":
            if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
                raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
            keep = keep_last
        else:
            raise ValueError(
                f"Unknown prune strategy {strategy!r}: use 'keep_latest', 'keep_last', 'delete' or 'delete_all'."
            )
        for tid in dict.fromkeys(thread_ids):
            if isinstance(tid, str):

                def prune(e: list[Resident], tid: str = tid) -> None:
                    self._prune(tid, e[0], keep, serde)

                self._apply([tid], prune)

    def _prune(self, thread_id: str, entry: Resident, keep: int, serde: SerializerProtocol) -> None:
        doomed = []
        for ns, cps in self._cache.storage.get(thread_id, {}).items():
            ordered = sorted(cps, reverse=True)
            needed = self._delta_ancestors(thread_id, ns, cps, ordered[:keep], serde)
            doomed += [(thread_id, ns, cid) for cid in ordered[keep:] if cid not in needed]
        if doomed:
            self._delete_keys(entry, doomed)
            self._delete_keys(entry, [], self._unreferenced_blobs(thread_id, entry, serde))

    def _delta_ancestors(
        self, thread_id: str, ns: str, cps: dict[str, Any], kept: Sequence[str], serde: SerializerProtocol
    ) -> set[str]:
        """The ancestors the kept checkpoints' DeltaChannel values are rebuilt from: for each delta
        channel (named in the metadata's ``counters_since_delta_snapshot``), every parent back to the
        nearest one whose blob of it is not empty (its snapshot). LangGraph replays their writes."""
        needed: set[str] = set()
        blobs = self._cache.blobs
        for cid in kept:
            metadata = serde.loads_typed(cps[cid][1]) or {}
            channels = set(metadata.get("counters_since_delta_snapshot") or ())
            current = cps[cid][2]
            while channels and current is not None and current in cps:
                needed.add(current)
                (ctype, cdata), _md, parent = cps[current]
                versions = serde.loads_typed((ctype, cdata)).get("channel_versions", {})
                for ch in list(channels):
                    value = blobs.raw((thread_id, ns, ch, versions.get(ch)))
                    if value is not None and value[0] != "empty":
                        channels.discard(ch)
                current = parent
        return needed

    def delete_for_runs(self, run_ids: Sequence[str], serde: SerializerProtocol) -> None:
        """Delete every checkpoint (with its writes) whose metadata ``run_id`` is in ``run_ids``,
        in every thread of the store (cold threads that may hold one are loaded first)."""
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run ids, not a str")
        wanted = {r for r in run_ids if isinstance(r, str)}
        if not wanted:
            return
        with self._cache.lock:
            candidates = set(self._threads_with_runs(wanted, list(self._cache.entries), serde))
        if not self._cache.complete:
            candidates |= set(self._stored_runs(wanted))
        for tid in sorted(candidates):

            def delete_runs(e: list[Resident], tid: str = tid) -> None:
                self._delete_runs(tid, e[0], wanted, serde)

            self._apply([tid], delete_runs)

    def _threads_with_runs(
        self, wanted: set[str], thread_ids: Sequence[str], serde: SerializerProtocol
    ) -> Iterator[str]:
        for tid in thread_ids:
            for cps in self._cache.storage.get(tid, {}).values():
                if any(serde.loads_typed(md).get("run_id") in wanted for _cp, md, _parent in cps.values()):
                    yield tid
                    break

    def _delete_runs(self, thread_id: str, entry: Resident, wanted: set[str], serde: SerializerProtocol) -> None:
        doomed = [
            (thread_id, ns, cid)
            for ns, cps in self._cache.storage.get(thread_id, {}).items()
            for cid, (_cp, md, _parent) in cps.items()
            if serde.loads_typed(md).get("run_id") in wanted
        ]
        if doomed:
            self._delete_keys(entry, doomed)
            self._delete_keys(entry, [], self._unreferenced_blobs(thread_id, entry, serde))


__all__ = ["Edits", "StoredRuns", "Write"]
