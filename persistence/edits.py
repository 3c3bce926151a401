"""Deleting and copying inside threads: ``delete_thread``, LangGraph's extended capabilities
(``copy_thread``, ``prune``, ``delete_for_runs``) and their async twins, for :class:`~persistence.HybridSaver`.

Every edit runs through the saver's ``_write`` (the thread made resident and claimed first, the lock
held) and leaves tombstones in the change log, so the next backup carries the deletes as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from persistence.changes import mark
from persistence.errors import InvalidValue
from persistence.residency import ENTRY_OVERHEAD, Resident, blob_size, checkpoint_size, write_size

if TYPE_CHECKING:
    from persistence.saver import HybridSaver


class EditsMixin:
    """Deletes, copies and prunes of :class:`~persistence.HybridSaver`, tracked for the next backup."""

    def delete_thread(self: HybridSaver, thread_id: str) -> None:
        self._check_open()
        if not isinstance(thread_id, str):
            raise InvalidValue(f"thread_id must be a str, got {type(thread_id).__name__} {thread_id!r:.80}.")
        self._write([thread_id], lambda e: self._delete_thread(thread_id, e[0]))

    def _delete_thread(self: HybridSaver, thread_id: str, entry: Resident) -> None:
        log = self._changes
        log.forget([thread_id])
        log.deleted_threads.add(thread_id)
        self.storage.pop(thread_id, None)
        for key in entry.write_keys:
            self.writes.pop(key, None)
        for key in entry.blob_keys:
            self.blobs.pop(key, None)
        entry.write_keys.clear()
        entry.blob_keys.clear()
        self._res.grow(entry, ENTRY_OVERHEAD - entry.bytes)
        self._touch(entry)

    async def adelete_thread(self: HybridSaver, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    def _delete_keys(
        self, entry: Resident, checkpoints: Sequence[tuple[str, str, str]], blobs: Sequence[tuple] = ()
    ) -> None:
        """Delete checkpoints (with their writes) and blobs of one thread as tracked tombstones. Under the lock."""
        log = self._changes
        res = self._res
        touched = False
        for tid, ns, cid in checkpoints:
            cps = self.storage.get(tid, {}).get(ns)
            if cps is not None and cid in cps:
                res.grow(entry, -checkpoint_size(cps.pop(cid)))
                mark(log.checkpoints, (tid, ns, cid), True)
                touched = True
            outer = (tid, ns, cid)
            for inner, value in self.writes.pop(outer, {}).items():
                res.grow(entry, -write_size(value))
                mark(log.writes, (*outer, *inner), True)
                touched = True
            entry.write_keys.discard(outer)
        for key in blobs:
            value = self.blobs.pop(key, None)
            if value is not None:
                res.grow(entry, -blob_size(value))
                entry.blob_keys.discard(key)
                mark(log.blobs, key, True)
                touched = True
        if touched:
            self._touch(entry)

    def _unreferenced_blobs(self: HybridSaver, thread_id: str, entry: Resident) -> list[tuple]:
        """Blobs of the thread that no remaining checkpoint references. Under the lock."""
        referenced: set[tuple] = set()
        for ns, cps in self.storage.get(thread_id, {}).items():
            for (ctype, cdata), _md, _parent in cps.values():
                versions = self.serde.loads_typed((ctype, cdata)).get("channel_versions", {})
                referenced.update((thread_id, ns, ch, v) for ch, v in versions.items())
        return [k for k in entry.blob_keys if k not in referenced]

    # -- extended capabilities: copy_thread, prune, delete_for_runs ------------------------------

    def copy_thread(self: HybridSaver, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of one thread to another (replacing nothing else)."""
        self._check_open()
        for tid in (source_thread_id, target_thread_id):
            if not isinstance(tid, str):
                raise InvalidValue(f"thread ids must be str, got {type(tid).__name__} {tid!r:.80}.")
        if source_thread_id == target_thread_id:
            return
        self._write([source_thread_id, target_thread_id], lambda e: self._copy(source_thread_id, target_thread_id, *e))

    def _copy(self: HybridSaver, source: str, target: str, src_entry: Resident, dst_entry: Resident) -> None:
        src = self.storage.get(source)
        if not src:
            return
        log, res = self._changes, self._res
        dest = self.storage[target]
        for ns, cps in src.items():
            dst = dest.setdefault(ns, {})
            for cid, value in cps.items():
                old = dst.get(cid)
                mark(log.checkpoints, (target, ns, cid), old is not None, value)
                res.grow(dst_entry, checkpoint_size(value) - (checkpoint_size(old) if old is not None else 0))
                dst[cid] = value
        for tid, ns, cid in list(src_entry.write_keys):
            inner_src = self.writes.get((tid, ns, cid))
            if not inner_src:
                continue
            outer = (target, ns, cid)
            dst_w = self.writes.setdefault(outer, {})
            dst_entry.write_keys.add(outer)
            for key, value in inner_src.items():
                old = dst_w.get(key)
                mark(log.writes, (*outer, *key), old is not None, value)
                res.grow(dst_entry, write_size(value) - (write_size(old) if old is not None else 0))
                dst_w[key] = value
        for _tid, ns, ch, ver in list(src_entry.blob_keys):
            value = self.blobs.get((source, ns, ch, ver))
            if value is None:
                continue
            key = (target, ns, ch, ver)
            old = self.blobs.get(key)
            mark(log.blobs, key, old is not None, value)
            res.grow(dst_entry, blob_size(value) - (blob_size(old) if old is not None else 0))
            dst_entry.blob_keys.add(key)
            self.blobs[key] = value
        self._touch(dst_entry)

    async def acopy_thread(self: HybridSaver, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
    ) -> None:
        """Prune checkpoints of ``thread_ids``.

        Args:
            strategy: ``"keep_latest"`` keeps the newest checkpoint of each namespace,
                ``"keep_last"`` keeps the newest ``keep_last``, ``"delete"`` removes the threads.
            keep_last: how many checkpoints ``"keep_last"`` keeps per namespace (>= 1).
        """
        self._check_open()
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread ids, not a str")
        if strategy == "delete":
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
            raise ValueError(f"Unknown prune strategy {strategy!r}: use 'keep_latest', 'keep_last' or 'delete'.")
        for tid in dict.fromkeys(thread_ids):
            if isinstance(tid, str):
                self._write([tid], lambda e, tid=tid: self._prune(tid, e[0], keep))

    def _prune(self: HybridSaver, thread_id: str, entry: Resident, keep: int) -> None:
        doomed = [
            (thread_id, ns, cid)
            for ns, cps in self.storage.get(thread_id, {}).items()
            for cid in sorted(cps, reverse=True)[keep:]
        ]
        if doomed:
            self._delete_keys(entry, doomed)
            self._delete_keys(entry, [], self._unreferenced_blobs(thread_id, entry))

    async def aprune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
    ) -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy, keep_last=keep_last))

    def delete_for_runs(self: HybridSaver, run_ids: Sequence[str]) -> None:
        """Delete every checkpoint (with its writes) whose metadata ``run_id`` is in ``run_ids``,
        in every thread of the store (cold threads that may hold one are loaded first)."""
        self._check_open()
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run ids, not a str")
        wanted = {r for r in run_ids if isinstance(r, str)}
        if not wanted:
            return
        with self.lock:
            candidates = set(self._threads_with_runs(wanted, list(self._res.entries)))
        if not self._complete:
            candidates |= set(
                self._ask_store(
                    lambda: self.store.threads_with_runs(sorted(wanted)),
                    "delete_for_runs needs PostgreSQL to find the threads not in memory, and it cannot be reached; "
                    "nothing was deleted. Retry when the database is back.",
                )
            )
        for tid in sorted(candidates):
            self._write([tid], lambda e, tid=tid: self._delete_runs(tid, e[0], wanted))

    def _threads_with_runs(self: HybridSaver, wanted: set[str], thread_ids: Sequence[str]) -> Iterator[str]:
        for tid in thread_ids:
            for cps in self.storage.get(tid, {}).values():
                if any(self.serde.loads_typed(md).get("run_id") in wanted for _cp, md, _parent in cps.values()):
                    yield tid
                    break

    def _delete_runs(self: HybridSaver, thread_id: str, entry: Resident, wanted: set[str]) -> None:
        doomed = [
            (thread_id, ns, cid)
            for ns, cps in self.storage.get(thread_id, {}).items()
            for cid, (_cp, md, _parent) in cps.items()
            if self.serde.loads_typed(md).get("run_id") in wanted
        ]
        if doomed:
            self._delete_keys(entry, doomed)
            self._delete_keys(entry, [], self._unreferenced_blobs(thread_id, entry))

    async def adelete_for_runs(self: HybridSaver, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)
