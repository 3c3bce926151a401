"""What a resident thread costs, as the budget counts it: each stored payload's length plus
:data:`ENTRY_OVERHEAD` per entry (see :mod:`persistence.memory.residency`), and the key sets a
thread keeps of its entries."""

from __future__ import annotations

from typing import TypeVar

from persistence.store import Snapshot
from persistence.store.records import CheckpointEntry, WriteEntry

#: bytes counted per stored entry on top of its payload (key tuples, strings, dict slots): measured with
#: tracemalloc on the chat graph's threads loaded from the store (what repeats is one object there, as
#: in the live layout), a checkpoint, a write or a channel value takes 340-360 B besides its serialised
#: bytes on average; counted with a margin. ``tests/test_long_conversations.py`` checks the count
#: against tracemalloc
ENTRY_OVERHEAD = 400

K = TypeVar("K")


def snapshot_size(snap: Snapshot, thread_id: str) -> int:
    """Bytes ``thread_id`` of ``snap`` takes once resident (as :meth:`Residency.install` counts them)."""
    size = ENTRY_OVERHEAD
    for cps in snap.storage.get(thread_id, {}).values():
        size += sum(map(checkpoint_size, cps.values()))
    size += sum(sum(map(write_size, inner.values())) for outer, inner in snap.writes.items() if outer[0] == thread_id)
    size += sum(blob_size(v) for k, v in snap.blobs.items() if k[0] == thread_id)
    return size


def checkpoint_size(entry: CheckpointEntry) -> int:
    # the stored bytes (a packed checkpoint's frame: ``tuple.__getitem__`` reads it as stored)
    return len(tuple.__getitem__(entry[0], 1)) + len(entry[1][1]) + ENTRY_OVERHEAD


def blob_size(value: tuple[str, bytes]) -> int:
    return len(value[1]) + ENTRY_OVERHEAD


def write_size(value: WriteEntry) -> int:
    return len(value[2][1]) + ENTRY_OVERHEAD


class KeySet(dict[K, None]):
    """A set of keys kept as a dict: a thread's key sets hold thousands of keys on a long thread, and a
    dict of n keys takes about half what a set does (a set's table grows fourfold: 1,801 keys, 131 kB
    as a set, 73 kB as a dict)."""

    __slots__ = ()

    def add(self, key: K) -> None:
        self[key] = None

    def discard(self, key: K) -> None:
        self.pop(key, None)


__all__ = ["ENTRY_OVERHEAD", "KeySet", "blob_size", "checkpoint_size", "snapshot_size", "write_size"]
