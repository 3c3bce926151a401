"""Row-level helpers shared by the store's parts: which rows are live at a generation, the next
generation number, COPY of rows in and out, the text of a summary column, and a
:class:`~persistence.store.records.Snapshot` built from the rows of the three checkpoint tables."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import LibpqWriter
from psycopg.types.string import ByteaBinaryLoader, BytesBinaryDumper
from psycopg.waiting import Wait

from persistence.packed import PACKED, Packed
from persistence.store.records import Row, Snapshot, Summary
from persistence.store.schema import CONTENT_LIMIT, TABLES, dec, dec_version, describe_row, enc, row_crc


def live_at(generation: int | None) -> tuple[sql.Composable, list[Any]]:
    """The WHERE condition (and its parameters) of the rows live at ``generation`` (None: now)."""
    if generation is None:
        return sql.SQL("deleted_gen IS NULL"), []
    return sql.SQL("added_gen <= %s AND (deleted_gen IS NULL OR deleted_gen > %s)"), [generation, generation]


def next_generation(
    conn: psycopg.Connection, s: sql.Identifier, /, trigger: str, kind: str, **extra: Any
) -> tuple[int, int, int]:
    """Take the next generation number (the counter row stays locked until commit, so numbers
    follow commit order across members) and insert its row; return (generation, threads and
    checkpoints of the previous generation)."""
    row = conn.execute(
        sql.SQL("UPDATE {s}.counter SET generation = generation + 1 RETURNING generation").format(s=s)
    ).fetchone()
    gen = int(row[0]) if row else 1
    prev = conn.execute(
        sql.SQL("SELECT threads, checkpoints FROM {s}.generations ORDER BY generation DESC LIMIT 1").format(s=s)
    ).fetchone()
    cols = ["generation", "trigger", "kind", *extra]
    conn.execute(
        sql.SQL("INSERT INTO {s}.generations ({c}) VALUES ({v})").format(
            s=s,
            c=sql.SQL(", ").join(map(sql.Identifier, cols)),
            v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        ),
        [gen, trigger, kind, *extra.values()],
    )
    return gen, int(prev[0]) if prev else 0, int(prev[1]) if prev else 0


def copy_in(
    cur: psycopg.Cursor,
    s: sql.Identifier,
    table: str,
    rows: list[Row],
    gen: int,
    idle: Callable[[], bool] | None = None,
) -> int:
    """COPY ``rows`` into ``table`` as added by ``gen``, each with its checksum; return the bytes of
    their bytea columns.

    ``idle`` is called, again and again, while the server has not taken in what was sent yet (each
    call one small step of other work; it returns False when there is none left): the Python side of
    a backup runs while the server ingests, instead of before or after it.
    """
    keys, payload, types = TABLES[table]
    cols = sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload, "crc", "added_gen")))
    nkeys = len(keys)
    stmt = sql.SQL("COPY {s}.{t} ({c}) FROM STDIN (FORMAT BINARY)").format(s=s, t=sql.Identifier(table), c=cols)
    # set_types("bytea") would pick psycopg.dbapi20's pure-Python Binary dumper (registered
    # last for that oid); the C-accelerated bytes dumper formats the rows much faster
    cur.adapters.register_dumper(None, BytesBinaryDumper)
    crc = _CRC.get(table, _payload_crc)
    with cur.copy(stmt, writer=_PumpWriter(cur, idle)) as copy:
        copy.set_types([*types, "int8", "int8"])
        write = copy.write_row
        for row in rows:
            write(row + (crc(row[nkeys:]), gen))
        # counted while the server takes in the last rows: the bytes of the bytea columns (keys and
        # payloads), summed per column rather than per row
        nbytes = sum(sum(map(len, filter(None, map(itemgetter(i), rows)))) for i, t in enumerate(types) if t == "bytea")
    return nbytes


def copy_summaries(cur: psycopg.Cursor, s: sql.Identifier, summaries: list[Summary], gen: int) -> None:
    """COPY the summary rows (thread id, checkpoints, bytes, updated at, newest checkpoint, title,
    content; ids as str) into the summaries table as added by ``gen``."""
    stmt = sql.SQL(
        "COPY {s}.summaries (thread_id, checkpoints, bytes, updated_at, newest_checkpoint, title, content, "
        "added_gen) FROM STDIN (FORMAT BINARY)"
    ).format(s=s)
    cur.adapters.register_dumper(None, BytesBinaryDumper)
    with cur.copy(stmt) as copy:
        copy.set_types(["bytea", "int4", "int8", "timestamptz", "bytea", "text", "text", "int8"])
        write = copy.write_row
        for tid, count, size, updated, newest, title, content in summaries:
            write(
                (
                    enc(tid),
                    count,
                    size,
                    updated,
                    enc(newest) if newest is not None else None,
                    summary_text(title),
                    summary_text(content, CONTENT_LIMIT),
                    gen,
                )
            )


_NULL = b"\xff\xff\xff\xff"
_length = struct.Struct("<I").pack
#: type names and other short strings of payloads, length-prefixed and encoded once
_prefixed: dict[str, bytes] = {}


def _payload_crc(payload: Row) -> int:
    """:func:`~persistence.store.schema.row_crc`, the same value computed with fewer steps (one
    ``crc32`` per value; the few distinct strings of payloads are encoded once)."""
    crc = 0
    crc32 = zlib.crc32
    for value in payload:
        if value is None:
            crc = crc32(_NULL, crc)
        elif value.__class__ is str:
            prefixed = _prefixed.get(value)
            if prefixed is None:
                data = value.encode("utf-8", "surrogatepass")
                prefixed = _length(len(data)) + data
                if len(_prefixed) < 4096:
                    _prefixed[value] = prefixed
            crc = crc32(prefixed, crc)
        else:
            crc = crc32(value, crc32(_length(len(value)), crc))
    return crc


def _joined_crc(payload: Row) -> int:
    """:func:`_payload_crc` in one ``crc32`` call over the joined values (faster for a checkpoint row's
    five values: one copy of its bytes costs less than a call per value)."""
    parts: list[bytes] = []
    add = parts.append
    for value in payload:
        if value.__class__ is bytes:
            add(_length(len(value)))
            add(value)
        elif value is None:
            add(_NULL)
        else:
            prefixed = _prefixed.get(value) if value.__class__ is str else None
            if prefixed is None:
                return _payload_crc(payload)
            add(prefixed)
    return zlib.crc32(b"".join(parts))


#: the CRC of a payload's first value, per type name (a blob row's payload is its type and its value)
_type_crc: dict[str, int] = {}


def _blob_crc(payload: Row) -> int:
    """:func:`_payload_crc` of a blob row's (type, value), the type's part taken from a cache."""
    vtype, value = payload
    if vtype.__class__ is not str or value.__class__ is not bytes:
        return _payload_crc(payload)
    start = _type_crc.get(vtype)
    if start is None:
        start = _payload_crc((vtype,))
        if len(_type_crc) < 4096:
            _type_crc[vtype] = start
    crc32 = zlib.crc32
    return crc32(value, crc32(_length(len(value)), start))


#: the checksum function per table (all compute :func:`~persistence.store.schema.row_crc`)
_CRC: dict[str, Callable[[Row], int]] = {"checkpoints": _joined_crc, "blobs": _blob_crc}


class _PumpWriter(LibpqWriter):
    """A COPY writer that hands data to libpq without waiting for it to reach the server, and waits
    only when a megabyte is in flight; while it waits, the server being busy, it runs ``idle`` steps.

    The libpq connection is non-blocking: ``put_copy_data`` queues and sends what the socket takes,
    ``flush`` sends more of what is queued and says whether some is left.
    """

    def __init__(self, cursor: psycopg.Cursor, idle: Callable[[], bool] | None) -> None:
        super().__init__(cursor)
        self._idle = idle
        self._in_flight = 0

    def write(self, data: Any) -> None:
        pgconn = self.connection.pgconn
        for start in range(0, len(data), _CHUNK):
            chunk = data[start : start + _CHUNK] if len(data) > _CHUNK else data
            if pgconn.put_copy_data(chunk) == 0:
                self.connection.wait(_queue(pgconn, chunk))
            self._in_flight += len(chunk)
        if self._in_flight < _IN_FLIGHT:
            return
        self._in_flight = 0
        idle = self._idle
        while pgconn.flush():
            if idle is None or not idle():
                self.connection.wait(_drain(pgconn))
                return


#: the largest piece handed to libpq at once (a too large one can make libpq loop, psycopg #255)
_CHUNK = 128 * 1024
#: bytes queued in libpq before the writer waits for them to reach the server (bounds its buffer)
_IN_FLIGHT = 1024 * 1024


def _queue(pgconn: Any, data: Any) -> Generator[Wait, Any, None]:
    while pgconn.put_copy_data(data) == 0:
        while not (yield Wait.W):
            continue


def _drain(pgconn: Any) -> Generator[Wait, Any, None]:
    while pgconn.flush():
        while not (yield Wait.W):
            continue


#: rows from which a backup does part of its Python work while the server takes in its rows
#: (smaller ones do it first, outside the transaction)
LAZY_SUMMARY_ROWS = 5_000


class Background:
    """A backup's Python work done while its COPY waits for the server, one small step at a time:
    the rows of tables still to be built (each finished before its COPY), then the summary rows.

    ``tables`` maps a table to the steps that build its rows; ``summarize(threads)`` returns the
    summary rows of ``threads``, made one thread per step.
    """

    def __init__(
        self,
        tables: dict[str, Iterator[None]],
        summarize: Callable[[set[str]], list[Summary]] | None,
        threads: set[str],
    ) -> None:
        self._work: dict[str, Iterator[None]] = dict(tables)
        self.summaries: list[Summary] = []
        if summarize is not None:
            self._work["summaries"] = self._summaries(summarize, list(threads))

    def _summaries(self, summarize: Callable[[set[str]], list[Summary]], threads: list[str]) -> Iterator[None]:
        for tid in threads:
            self.summaries.extend(summarize({tid}))
            yield

    def step(self) -> bool:
        """Do one more step; False when everything is done."""
        for name, steps in self._work.items():
            if next(steps, _DONE) is not _DONE:
                return True
            del self._work[name]
            return bool(self._work)
        return False

    def complete(self, name: str) -> None:
        """Do what is left of ``name`` (a table whose rows are needed now, or "summaries")."""
        for _step in self._work.pop(name, ()):
            pass

    def finish(self) -> list[Summary]:
        """Do everything left; return the summary rows."""
        for name in list(self._work):
            self.complete(name)
        return self.summaries


_DONE = object()


class _BytesLoader(ByteaBinaryLoader):
    """bytea as ``bytes``: psycopg's pure-Python implementation hands COPY's buffers out as memoryviews."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


def bytes_loader(cur: psycopg.Cursor) -> None:
    """Make ``cur`` load bytea as ``bytes`` whichever psycopg implementation runs (the C one already does,
    with its faster loader, which is kept)."""
    if psycopg.pq.__impl__ == "python":
        cur.adapters.register_loader("bytea", _BytesLoader)


def copy_out(
    cur: psycopg.Cursor,
    s: sql.Identifier,
    table: str,
    generation: int | None,
    thread_ids: Sequence[str] | None,
    crc: bool,
) -> Iterator[Row]:
    """COPY out the rows of ``table`` live at ``generation`` (of ``thread_ids`` when given), key
    columns then payload, then the stored checksum when ``crc``."""
    keys, payload, types = TABLES[table]
    if crc:
        payload, types = (*payload, "crc"), (*types, "int8")
    where, params = live_at(generation)
    if thread_ids is not None:
        where = sql.SQL("{} AND thread_id = ANY(%s)").format(where)
        params = [*params, [enc(t) for t in thread_ids]]
    stmt = sql.SQL("COPY (SELECT {c} FROM {s}.{t} WHERE {w}) TO STDOUT (FORMAT BINARY)").format(
        c=sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload))),
        s=s,
        t=sql.Identifier(table),
        w=where,
    )
    bytes_loader(cur)
    with cur.copy(stmt, params) as copy:
        copy.set_types(list(types))
        yield from copy.rows()


def summary_text(value: Any, limit: int = 1000) -> str | None:
    """Text for a summary column: no NUL (PostgreSQL text refuses it), valid UTF-8, at most ``limit``."""
    if value is None:
        return None
    text = str(value).replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def build_snapshot(rows_of: Callable[[str], Iterable[Row]], verify: bool) -> Snapshot:
    """Fill a Snapshot from the rows of the three tables (``rows_of(table)`` yields them)."""
    snap = Snapshot()
    nbytes = 0
    # what repeats is one object in memory, as in the live layout: thread ids, namespaces, channels,
    # task paths, checkpoint ids (a checkpoint's key, its children's parent, its writes' key), type
    # tags, channel versions (shared by the channels a step wrote) and empty values
    names: dict[bytes, str] = {}
    tags: dict[str, str] = {}
    versions: dict[bytes, Any] = {}
    empties: dict[tuple[str, bytes], tuple[str, bytes]] = {}

    def name(data: bytes) -> str:
        text = names.get(data)
        if text is None:
            text = names[data] = dec(data)
        return text

    def typed(tag: str, data: bytes) -> tuple[str, bytes]:
        tag = tags.setdefault(tag, tag)
        if data:
            return (tag, data)
        value = (tag, data)
        return empties.setdefault(value, value)

    def version_of(data: bytes) -> Any:
        found = versions.get(data)
        if found is None:
            found = versions[data] = dec_version(data)
        return found

    damaged: list[tuple[str, str]] = []
    dropped: dict[str, list[Row]] = {t: [] for t in TABLES}

    def bad(row: Row, width: int) -> bool:
        stored = row[-1]
        return stored is not None and stored != row_crc(row[width:-1])

    storage = snap.storage
    for row in rows_of("checkpoints"):
        tid, ns, cid, parent, ctype, cdata, mtype, mdata = row[:8]
        if verify and bad(row, 3):
            damaged.append((name(tid), describe_row("checkpoints", row)))
            dropped["checkpoints"].append((name(tid), name(ns), dec(cid)))
            continue
        nbytes += len(cdata or b"") + len(mdata or b"")
        storage.setdefault(name(tid), {}).setdefault(name(ns), {})[name(cid)] = (
            Packed((ctype, cdata)) if ctype.startswith(PACKED) else typed(ctype, cdata),
            typed(mtype, mdata),
            name(parent) if parent is not None else None,
        )
    writes = snap.writes
    for row in rows_of("writes"):
        tid, ns, cid, task, idx, channel, vtype, value, path = row[:9]
        if verify and bad(row, 5):
            damaged.append((name(tid), describe_row("writes", row)))
            dropped["writes"].append((name(tid), name(ns), dec(cid), dec(task), idx))
            continue
        nbytes += len(value or b"")
        task_s = name(task)
        writes.setdefault((name(tid), name(ns), name(cid)), {})[(task_s, idx)] = (
            task_s,
            name(channel),
            typed(vtype, value),
            name(path),
        )
    blobs = snap.blobs
    for row in rows_of("blobs"):
        tid, ns, channel, version, vtype, value = row[:6]
        key = (name(tid), name(ns), name(channel), version_of(version))
        if verify and bad(row, 4):
            damaged.append((key[0], describe_row("blobs", row)))
            dropped["blobs"].append(key)
            continue
        nbytes += len(value or b"")
        blobs.store_raw(key, typed(vtype, value))
    snap.bytes = nbytes
    snap.damaged = damaged
    snap.dropped = dropped
    return snap


__all__ = [
    "LAZY_SUMMARY_ROWS",
    "Background",
    "build_snapshot",
    "bytes_loader",
    "copy_in",
    "copy_out",
    "copy_summaries",
    "live_at",
    "next_generation",
    "summary_text",
]
