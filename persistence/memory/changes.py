"""The record of changes not yet in PostgreSQL, and how a cut of it becomes rows.

Every key changed since the last backup is kept with ``(existed, value)``: ``existed`` says "a
live row may exist in PostgreSQL", ``value`` is the value stored at the last change (None: deleted).
Keeping the value makes the backup's cut a swap: its rows are built from the swapped-out record
outside the saver's lock, and they are exactly the state at the moment of the swap.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from persistence.packed import stored
from persistence.store import Changes, Snapshot
from persistence.store.schema import TABLES, enc, enc_version


@dataclass
class ChangeLog:
    """Keys changed since the last backup (see the module docstring). Used under the saver's lock."""

    checkpoints: dict[tuple[Any, ...], tuple[bool, Any]] = field(default_factory=dict)
    writes: dict[tuple[Any, ...], tuple[bool, Any]] = field(default_factory=dict)
    blobs: dict[tuple[Any, ...], tuple[bool, Any]] = field(default_factory=dict)
    deleted_threads: set[str] = field(default_factory=set)
    #: wall time of the oldest change in the record (None when it is empty)
    since: float | None = None
    #: the encoded strings of :meth:`to_changes`, kept for :meth:`fill`
    _encoded: _Encoded = field(default_factory=lambda: _Encoded(), repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.checkpoints) + len(self.writes) + len(self.blobs) + len(self.deleted_threads)

    def take(self) -> ChangeLog:
        """Move the keys into a new record and leave this one empty, in O(1): the containers are
        handed over, not copied. This object stays the one graphs share."""
        out = ChangeLog(self.checkpoints, self.writes, self.blobs, self.deleted_threads, self.since)
        self.checkpoints, self.writes, self.blobs, self.deleted_threads = {}, {}, {}, set()
        self.since = None
        return out

    def threads(self) -> set[str]:
        """Every thread with a change in the record."""
        out = {k[0] for k in self.checkpoints} | {k[0] for k in self.writes} | {k[0] for k in self.blobs}
        return out | self.deleted_threads

    def forget(self, thread_ids: Iterable[str]) -> None:
        """Drop every key of ``thread_ids`` (their changes are superseded or refused)."""
        wanted = set(thread_ids)
        if not wanted:
            return
        for table in (self.checkpoints, self.writes, self.blobs):
            for key in [k for k in table if k[0] in wanted]:
                del table[key]
        self.deleted_threads -= wanted

    def merge_back(self, cut: ChangeLog, refused: Set[str] = frozenset()) -> None:
        """Put the keys of a failed cut back (a newer change of the same key wins); keys of
        ``refused`` threads are dropped instead."""
        for old, new in ((cut.checkpoints, self.checkpoints), (cut.writes, self.writes), (cut.blobs, self.blobs)):
            for key, (existed, value) in old.items():
                if key[0] in self.deleted_threads or key[0] in refused:
                    continue
                newer = new.get(key)
                # a newer change keeps its value; a live row may exist if either change says so
                new[key] = (existed or newer[0], newer[1]) if newer is not None else (existed, value)
        self.deleted_threads |= cut.deleted_threads - refused
        if cut.since is not None:
            self.since = cut.since if self.since is None else min(cut.since, self.since)

    def to_changes(self, touched: set[str] | None = None, later: Collection[str] = ()) -> Changes:
        """The rows and tombstones of this record (a cut: no lock needed, it is no longer shared).

        ``touched`` is :meth:`threads` when the caller has it already. The tables in ``later`` are
        left empty, for :meth:`fill` to add theirs while the server takes in the first table's rows.
        """
        changes = Changes(deleted_threads=sorted(self.deleted_threads))
        # thread ids, namespaces, checkpoint ids (a row's, its writes', its child's parent), channels
        # and task paths repeat from row to row: each is encoded once
        self._encoded = _Encoded()
        for table in TABLES:
            if table not in later:
                for _step in self.fill(changes, table, frozenset(), step=None):
                    pass
        changes.touched = self.threads() if touched is None else touched
        return changes

    def fill(self, changes: Changes, table: str, skip: Collection[str], step: int | None = 1000) -> Iterator[None]:
        """Add the rows and tombstones of ``table`` to ``changes``, leaving out the threads in ``skip``
        (refused by fencing); a generator that pauses after every ``step`` keys (None: never)."""
        e = self._encoded
        rows, tombs = changes.rows[table], changes.tombstones[table]
        items: Iterable[tuple[tuple[Any, ...], tuple[bool, Any]]] = {
            "checkpoints": self.checkpoints,
            "writes": self.writes,
            "blobs": self.blobs,
        }[table].items()
        if skip:
            items = [item for item in items if item[0][0] not in skip]
        chunks = [items] if step is None else _chunks(items, step)
        for chunk in chunks:
            if table == "checkpoints":
                for (tid, ns, cid), (existed, entry) in chunk:
                    t, n, c = e[tid], e[ns], e[cid]
                    if existed:
                        tombs.append((t, n, c))
                    if entry is not None:
                        checkpoint, (mtype, mdata), parent = entry
                        ctype, cdata = stored(checkpoint)  # a packed one as stored (see persistence.packed)
                        rows.append((t, n, c, e[parent] if parent is not None else None, ctype, cdata, mtype, mdata))
            elif table == "writes":
                for (tid, ns, cid, task, idx), (existed, value) in chunk:
                    t, n, c, k = e[tid], e[ns], e[cid], e[task]
                    if existed:
                        tombs.append((t, n, c, k, idx))
                    if value is not None:
                        _task, channel, (vtype, vdata), path = value
                        rows.append((t, n, c, k, idx, e[channel], vtype, vdata, e[path]))
            else:
                for (tid, ns, ch, ver), (existed, value) in chunk:
                    # enc_version, the usual str version without its two calls
                    v = b"s" + ver.encode("utf-8", "surrogatepass") if ver.__class__ is str else enc_version(ver)
                    t, n, c = e[tid], e[ns], e[ch]
                    if existed:
                        tombs.append((t, n, c, v))
                    if value is not None:
                        rows.append((t, n, c, v, value[0], value[1]))
            yield

    def split(self, threads: set[str]) -> ChangeLog:
        """Move the keys of ``threads`` out of this record into a new one."""
        out = ChangeLog()
        if not threads:
            return out
        for src, dst in ((self.checkpoints, out.checkpoints), (self.writes, out.writes), (self.blobs, out.blobs)):
            for key in [k for k in src if k[0] in threads]:
                dst[key] = src.pop(key)
        out.deleted_threads = self.deleted_threads & threads
        self.deleted_threads -= threads
        if len(out):
            out.since = self.since
        return out

    def count_by_thread(self, threads: Iterable[str]) -> dict[str, int]:
        """How many changed keys of each of ``threads`` the record holds."""
        counts = dict.fromkeys(threads, 0)
        for table in (self.checkpoints, self.writes, self.blobs):
            for key in table:
                if key[0] in counts:
                    counts[key[0]] += 1
        return counts


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class _Encoded(dict[str, bytes]):
    """str -> its :func:`~persistence.store.schema.enc` bytes, each encoded on first use."""

    def __missing__(self, text: str) -> bytes:
        data = self[text] = enc(text)
        return data


def knows_all_of(stored: Snapshot, tid: str, mine: Mapping[str, Mapping[str, Any]], log: ChangeLog) -> bool:
    """Every checkpoint ``stored`` holds of ``tid`` is in ``mine`` (namespace -> checkpoints) or deleted
    in ``log`` with the delete not yet written: nobody but the owner of ``mine`` wrote the thread."""
    if tid in log.deleted_threads:
        return True
    for ns, cps in stored.storage.get(tid, {}).items():
        known = mine.get(ns, {})
        for cid in cps:
            if cid in known:
                continue
            pending = log.checkpoints.get((tid, ns, cid))
            if pending is not None and pending[1] is None:
                continue
            return False
    return True


def mark(
    table: dict[tuple[Any, ...], tuple[bool, Any]], key: tuple[Any, ...], existed: bool, value: Any = None
) -> None:
    """Record that ``key`` now holds ``value`` (None: deleted)."""
    if not existed:
        old = table.get(key)
        existed = old is not None and old[0]
    table[key] = (existed, value)


__all__ = ["ChangeLog", "knows_all_of", "mark"]
