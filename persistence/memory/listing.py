"""``list(None)``: every checkpoint of the store, resident threads from memory first, then cold ones
read from PostgreSQL in batches without making them resident."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.memory.cache import MemoryCache
from persistence.store import Store
from persistence.store.link import DatabaseLink

#: cold threads loaded per query
LIST_BATCH = 100


def list_all(
    cache: MemoryCache,
    store: Store,
    link: DatabaseLink,
    serde: SerializerProtocol | None,
    filter: dict[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> Iterator[CheckpointTuple]:
    with cache.lock:
        resident = list(cache.entries)
        view = cache.view(resident, serde)
    left = limit
    for item in InMemorySaver.list(view, None, filter=filter, before=before, limit=left):
        yield item
        if left is not None:
            left -= 1
    if (left is not None and left <= 0) or cache.complete:
        return
    stored = link.ask(
        store.live_thread_ids,
        "Listing every thread needs PostgreSQL for the threads not in memory, and it cannot be reached; "
        "list one thread instead, or retry when the database is back.",
    )
    skip = set(resident)
    cold = [t for t in stored if t not in skip]
    for start in range(0, len(cold), LIST_BATCH):
        snap = store.load_threads(cold[start : start + LIST_BATCH])
        batch = InMemorySaver(serde=serde)
        for tid, namespaces in snap.storage.items():
            batch.storage[tid].update(namespaces)
        batch.writes.update(snap.writes)
        batch.blobs = snap.blobs
        for item in InMemorySaver.list(batch, None, filter=filter, before=before, limit=left):
            yield item
            if left is not None:
                left -= 1
        if left is not None and left <= 0:
            return


__all__ = ["LIST_BATCH", "list_all"]
