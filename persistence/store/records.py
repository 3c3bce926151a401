"""What the store reads and writes, as values: a kept generation, the changes a backup writes, what
a write did, and the raw rows of one state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from persistence.codec import Blobs
from persistence.store.schema import TABLES, dec, enc

#: a row (or key) of a checkpoint table as a backup writes it: key columns then payload columns in the
#: order of :data:`~persistence.store.schema.TABLES`, already encoded
Row = tuple[Any, ...]
#: a summary row: (thread_id, checkpoints, bytes, updated_at, newest_checkpoint, title, content), ids as str
Summary = tuple[str, int, int, datetime | None, str | None, str | None, str | None]
#: InMemorySaver's shapes. A checkpoint in ``storage[thread_id][ns][checkpoint_id]``: (checkpoint, metadata,
#: parent checkpoint id), each of the two as (type, bytes)
CheckpointEntry = tuple[tuple[str, bytes], tuple[str, bytes], str | None]
#: the outer key of ``writes``: (thread_id, checkpoint_ns, checkpoint_id)
WriteKey = tuple[str, str, str]
#: the inner key of ``writes[outer]``: (task_id, idx)
WriteIdx = tuple[str, int]
#: a write: (task_id, channel, (type, bytes), task_path)
WriteEntry = tuple[str, str, tuple[str, bytes], str]
#: a key of ``blobs``: (thread_id, checkpoint_ns, channel, version)
BlobKey = tuple[str, str, str, str | int | float]


@dataclass(frozen=True)
class Generation:
    """One backup generation as stored."""

    generation: int
    taken_at: datetime
    trigger: str
    kind: str
    threads: int
    checkpoints: int
    rows_written: int
    bytes_written: int
    restored_from: int | None = None
    thread_id: str | None = None


@dataclass(frozen=True)
class RestoreWindow:
    """How far back a restore can go: the kept generations, oldest and newest."""

    oldest: int
    newest: int
    #: generations kept
    kept: int
    oldest_at: datetime
    newest_at: datetime
    #: of them, written because of load (memory pressure, handoffs): never counted by retention
    by_load: int = 0


@dataclass
class Changes:
    """What one backup writes: rows to add, keys to tombstone, threads deleted as a whole, and the
    summary of every thread it touches."""

    deleted_threads: list[str] = field(default_factory=list)
    # rows are (key..., payload...) tuples in the column order of TABLES, already encoded
    rows: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in TABLES})
    tombstones: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in TABLES})
    #: (thread_id, checkpoints, bytes, updated_at, newest_checkpoint, title, content) per touched
    #: thread that still has checkpoints; thread ids and checkpoint ids as str
    summaries: list[Summary] = field(default_factory=list)
    #: every thread these changes touch (filled by whoever builds them; computed when left empty)
    touched: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.deleted_threads and not any(self.rows.values()) and not any(self.tombstones.values())

    def threads(self) -> set[str]:
        """Every thread this backup touches."""
        if not self.touched:
            self.touched = set(self.deleted_threads)
            for rows in (*self.rows.values(), *self.tombstones.values()):
                self.touched.update(dec(r[0]) for r in rows)
        return self.touched

    def without(self, threads: set[str]) -> Changes:
        """These changes minus everything of ``threads`` (fenced: no longer ours to write)."""
        if not threads:
            return self
        encoded = {enc(t) for t in threads}
        return Changes(
            deleted_threads=[t for t in self.deleted_threads if t not in threads],
            rows={t: [r for r in rows if r[0] not in encoded] for t, rows in self.rows.items()},
            tombstones={t: [k for k in keys if k[0] not in encoded] for t, keys in self.tombstones.items()},
            summaries=[s for s in self.summaries if s[0] not in threads],
            touched=self.threads() - threads,
        )


@dataclass
class Written:
    """What :meth:`Store.write_generation` did."""

    generation: int | None
    rows: int = 0
    bytes: int = 0
    #: threads whose changes were refused because the writer no longer owns them
    refused: list[str] = field(default_factory=list)
    #: threads and checkpoints of the generation written
    threads: int | None = None
    checkpoints: int | None = None


@dataclass
class Snapshot:
    """Raw rows of one state, ready to go into ``InMemorySaver``'s dicts."""

    storage: dict[str, dict[str, dict[str, CheckpointEntry]]] = field(default_factory=dict)
    writes: dict[WriteKey, dict[WriteIdx, WriteEntry]] = field(default_factory=dict)
    #: encoded as in memory (see :mod:`persistence.codec`): ``[]`` and ``get`` decode
    blobs: Blobs = field(default_factory=Blobs)
    bytes: int = 0
    #: keys removed by a damage check, per table, and what they were (thread id, description)
    dropped: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    damaged: list[tuple[str, str]] = field(default_factory=list)

    @property
    def checkpoints(self) -> int:
        return sum(len(ns) for t in self.storage.values() for ns in t.values())


__all__ = ["Changes", "Generation", "RestoreWindow", "Snapshot", "Written"]
