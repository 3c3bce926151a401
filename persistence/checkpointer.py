"""LangGraph's checkpointer API, sync and async, served from a :class:`~persistence.memory.MemoryCache`.

Reads make the thread resident first (loading it when cold) and copy under the cache's lock; writes
go through the cache's write path and are tracked for the next backup; ``list(None)`` reads cold
threads from PostgreSQL without making them resident. :class:`~persistence.HybridSaver` extends it
with the lifecycle, backups, restores and the fleet; this class knows nothing of them.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.errors import InvalidValue, SaverClosed
from persistence.fleet.lease import LeaseExpired
from persistence.memory import MemoryCache, Resident
from persistence.memory.edits import Edits
from persistence.memory.listing import list_all
from persistence.memory.writes import check_checkpoint, config_key, put_checkpoint, put_task_writes
from persistence.store import Snapshot, Store
from persistence.store.link import DatabaseLink

T = TypeVar("T")


class Tenure(Protocol):
    """Whether this process may serve its threads now (the fleet's lease)."""

    #: monotonic time until which serving is certainly safe (a clock compare on the hot path)
    @property
    def lease_deadline(self) -> float: ...

    def lease_check(self, entries: Sequence[Resident] = ()) -> None:
        """Raise ``LeaseExpired`` unless serving is safe now (a clock read; called under the lock in writes,
        with the threads about to be written)."""

    def lease_recover(self) -> None:
        """Renew the lease now, dropping threads others took meanwhile; raise ``LeaseExpired`` if it cannot."""


#: PostgreSQL refuses a bytea over 1 GB; refuse such values at ``put`` instead of at backup.
MAX_VALUE_BYTES = 512 * 1024 * 1024
#: seconds of lease an async write needs left to run on the event loop (else it runs in a worker thread)
INLINE_LEASE_MARGIN = 0.5


class CacheCheckpointer(InMemorySaver):
    """InMemorySaver's API over a cache that holds only the resident threads of a larger store."""

    def __init__(
        self,
        cache: MemoryCache,
        store: Store,
        link: DatabaseLink,
        *,
        serde: SerializerProtocol | None = None,
        max_value_bytes: int = MAX_VALUE_BYTES,
        tenure: Tenure | None = None,
        closed: threading.Event | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._tenure = tenure
        self.cache = cache
        # InMemorySaver's code serves LangGraph from the cache's dicts, under the cache's lock
        self.storage, self.writes, self.blobs, self.lock = cache.storage, cache.writes, cache.blobs, cache.lock
        self.store = store
        self._link = link
        self.max_value_bytes = max_value_bytes
        # an Event, not a bool: graphs compiled with LANGGRAPH_STRICT_MSGPACK hold a shallow copy
        # of the saver, and must see it closed too
        self._closed = closed or threading.Event()
        self._edits = Edits(cache, self._stored_runs, self._write)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise SaverClosed("This HybridSaver is closed. Create a new one with HybridSaver.from_url(...).")

    def _may_serve(self) -> None:
        """Before a read: this member's lease is valid (or renewed now), so what memory holds is current."""
        tenure = self._tenure
        if tenure is not None and time.monotonic() >= tenure.lease_deadline:
            try:
                tenure.lease_check()
            except LeaseExpired:
                tenure.lease_recover()

    def _lease_gate(self, entries: list[Resident]) -> None:
        """Under the cache's lock, right before a write is acknowledged: the lease is still valid."""
        tenure = self._tenure
        if tenure is not None and time.monotonic() >= tenure.lease_deadline:
            tenure.lease_check(entries)

    def _write(self, thread_ids: Sequence[str], write: Callable[[list[Resident]], T]) -> T:
        """``cache.write`` with the lease checked under the lock (see :meth:`_lease_gate`)."""
        if self._tenure is None:
            return self.cache.write(thread_ids, write)
        try:
            return self.cache.write(thread_ids, write, check=self._lease_gate)
        except LeaseExpired:
            self._tenure.lease_recover()
        return self.cache.write(thread_ids, write, check=self._lease_gate)

    def _stored_runs(self, wanted: set[str]) -> list[str]:
        return self._link.ask(
            lambda: self.store.threads_with_runs(sorted(wanted)),
            "delete_for_runs needs PostgreSQL to find the threads not in memory, and it cannot be reached; "
            "nothing was deleted. Retry when the database is back.",
        )

    def _resident_now(self, config: RunnableConfig | None) -> bool:
        if config is None:
            return False
        return config.get("configurable", {}).get("thread_id") in self.cache.entries

    # -- reads ------------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._closed.is_set():
            self._check_open()
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        if not isinstance(thread_id, str):
            return None

        def read() -> CheckpointTuple | None:
            namespaces = self.storage.get(thread_id)
            if namespaces is None or ns not in namespaces:
                return None
            return InMemorySaver.get_tuple(self, config)

        self._may_serve()
        return self.cache.read(thread_id, read)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._resident_now(config):
            return self.get_tuple(config)
        return await asyncio.to_thread(self.get_tuple, config)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        self._check_open()
        thread_id = config["configurable"]["thread_id"]
        if not isinstance(thread_id, str):
            return InMemorySaver.get_delta_channel_history(self, config=config, channels=channels)
        self._may_serve()
        return self.cache.read(
            thread_id, lambda: InMemorySaver.get_delta_channel_history(self, config=config, channels=channels)
        )

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(self.get_delta_channel_history, config=config, channels=channels)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, of one thread or (``config=None``) of every thread of the store:
        resident threads from memory, then cold ones read from PostgreSQL without making them resident."""
        self._check_open()
        if config is None:
            self._may_serve()
            return list_all(self.cache, self.store, self._link, self.serde, filter, before, limit)
        thread_id = config["configurable"]["thread_id"]
        if not isinstance(thread_id, str):
            return iter(())

        def snapshot() -> InMemorySaver:
            with self.lock:
                return self.cache.view([thread_id], self.serde)

        self._may_serve()
        view = self.cache.read(thread_id, snapshot)
        return InMemorySaver.list(view, config, filter=filter, before=before, limit=limit)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items: Iterable[CheckpointTuple]
        if config is not None and self._resident_now(config):
            items = self.list(config, filter=filter, before=before, limit=limit)
        else:
            items = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    # -- writes (under the lock, tracked) -------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._check_open()
        thread_id = config_key(config, "thread_id")
        ns = config_key(config, "checkpoint_ns", "")
        check_checkpoint(checkpoint, new_versions)
        limit = self.max_value_bytes
        return self._write(
            [thread_id],
            lambda e: put_checkpoint(self.cache, self, e[0], config, checkpoint, metadata, new_versions, ns, limit),
        )

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._check_open()
        thread_id = config_key(config, "thread_id")
        ns = config_key(config, "checkpoint_ns", "")
        checkpoint_id = config_key(config, "checkpoint_id")
        if not isinstance(task_id, str) or not isinstance(task_path, str):
            raise InvalidValue(f"task_id and task_path must be str, got {task_id!r:.80} and {task_path!r:.80}.")
        outer = (thread_id, ns, checkpoint_id)
        limit = self.max_value_bytes
        self._write(
            [thread_id],
            lambda e: put_task_writes(self.cache, self, e[0], config, writes, task_id, task_path, outer, limit),
        )

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self._inline(config):
            return self.put(config, checkpoint, metadata, new_versions)
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self._inline(config):
            return self.put_writes(config, writes, task_id, task_path)
        return await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    def _inline(self, config: RunnableConfig) -> bool:
        """An async write may run on the event loop only when it cannot wait on PostgreSQL: its thread is
        in memory, no budget can make it back up or evict first, and the lease needs no renewal. Any
        other runs in a worker thread, so the loop is never held by a load, a pressure backup or a renewal."""
        if self.cache.residency.budget is not None or not self._resident_now(config):
            return False
        tenure = self._tenure
        return tenure is None or time.monotonic() < tenure.lease_deadline - INLINE_LEASE_MARGIN

    # -- edits --------------------------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        self._check_open()
        self._edits.delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of one thread to another (replacing nothing else)."""
        self._check_open()
        self._edits.copy_thread(source_thread_id, target_thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep_last: int | None = None) -> None:
        """Prune checkpoints of ``thread_ids``.

        Args:
            strategy: ``"keep_latest"`` keeps the newest checkpoint of each namespace,
                ``"keep_last"`` keeps the newest ``keep_last``, ``"delete"`` (or ``"delete_all"``, as
                the Agent Server's gRPC path names it) removes the threads.
            keep_last: how many checkpoints ``"keep_last"`` keeps per namespace (>= 1).
        """
        self._check_open()
        self._edits.prune(thread_ids, self.serde, strategy=strategy, keep_last=keep_last)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep_last: int | None = None
    ) -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy, keep_last=keep_last))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete every checkpoint (with its writes) whose metadata ``run_id`` is in ``run_ids``,
        in every thread of the store (cold threads that may hold one are loaded first)."""
        self._check_open()
        self._edits.delete_for_runs(run_ids, self.serde)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    # -- resident threads ---------------------------------------------------------------------------

    def thread_rows(self, thread_id: str) -> Snapshot:
        """A copy of one thread's rows as served now (loaded first when it is cold): its
        checkpoints, writes and channel values in InMemorySaver's shapes."""
        self._check_open()
        return self.cache.copy_thread_rows(thread_id, self.serde)

    def thread_ids(self) -> builtins.list[str]:  # ``list`` here is the method above
        """Ids of the resident threads that hold at least one checkpoint."""
        return self.cache.thread_ids()

    def pending_threads(self) -> set[str]:
        """Threads with changes not yet in PostgreSQL."""
        return self.cache.pending_threads()


__all__ = ["MAX_VALUE_BYTES", "CacheCheckpointer"]
