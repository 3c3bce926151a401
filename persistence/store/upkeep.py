"""Server-side work on whole generations: restore (all threads or one) as a new generation,
verification of a generation's checksums, and retention. A part of the
:class:`~persistence.store.Store`: ``store.upkeep``.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import PoolTimeout

from persistence.db import ended_by_server, pool_connection
from persistence.errors import ThreadNotFound
from persistence.store.records import RestoreWindow, Row
from persistence.store.rows import bytes_loader, live_at, next_generation
from persistence.store.schema import GENERATIONAL, RESTORE_COLUMNS, TABLES, dec, describe_row, enc

if TYPE_CHECKING:
    from persistence.store.place import Place
    from persistence.store.records import Generation

#: the triggers of generations written because of load, not time: retention does not count them
LOAD_TRIGGERS = ("pressure", "release")
#: runs (and commands) kept in their tables; retention deletes older ones
MAX_RUNS = 20_000
#: connections a verification of every thread checks rows on at once (one when the pool is smaller)
VERIFY_WORKERS = 2
#: heap blocks (8 KiB) per range a verification checks at a time: ~32 MiB of rows, their TOASTed values besides
VERIFY_BLOCKS = 4096


class KeptGenerations(Protocol):
    """What upkeep asks of the store's generations (the :class:`~persistence.store.Store` answers)."""

    def get_generation(self, generation: int) -> Generation: ...

    def has_thread(self, generation: int, thread_id: str) -> bool: ...


class GenerationUpkeep:
    """Restore, verify and retention of the generations of the store at ``place``; ``generations``
    says which generations are kept and what they hold."""

    def __init__(self, place: Place, generations: KeptGenerations) -> None:
        self._place = place
        self._s = place.ident
        self._q = place.q
        self._generations = generations

    # -- a store that went back in time --------------------------------------------------------

    def counter_behind(self, committed: int, retention: int) -> int | None:
        """The store's generation counter when the store lost generation ``committed`` (the newest this
        member committed): the counter is below it, or the generation is gone although fewer than
        ``retention`` newer ones were written since (a failover to a lagging standby, a database
        restored from an older backup, others writing on top of it since). None when it is there."""
        with pool_connection(self._place.pool) as conn:
            row = conn.execute(
                self._q(
                    "SELECT c.generation, EXISTS (SELECT 1 FROM {s}.generations g WHERE g.generation = %s), "
                    "(SELECT count(*) FROM {s}.generations g WHERE g.generation > %s) FROM {s}.counter c"
                ),
                (committed, committed),
            ).fetchone()
        if row is None:
            return 0
        current, present, newer = int(row[0]), bool(row[1]), int(row[2])
        if current < committed or (not present and newer < retention):
            return min(current, committed - 1)
        return None

    def raise_counter(self, at_least: int) -> None:
        """Move the generation counter past ``at_least``, so no number is used twice for other content."""
        with pool_connection(self._place.pool) as conn:
            conn.execute(self._q("UPDATE {s}.counter SET generation = greatest(generation, %s)"), (at_least,))

    # -- restore ------------------------------------------------------------------------------

    def restore_generation(
        self,
        generation: int,
        *,
        trigger: str,
        thread_id: str | None = None,
        undo_of: int | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> int:
        """Commit the state of ``generation`` (all threads or one) as a new generation, server-side.

        Rows live now but not at ``generation`` are tombstoned; rows live then but deleted since are
        copied forward. The new generation's totals are the source's (every thread: its state is the
        source's) or follow from the thread's checkpoints before and after (one): no scan of the
        store. ``progress(fraction)`` is called after each statement (the fraction of the tables'
        blocks rewritten). Returns the new generation.
        """
        source = self._generations.get_generation(generation)
        if thread_id is not None and not self._generations.has_thread(generation, thread_id):
            raise ThreadNotFound(
                f"Thread {thread_id!r:.120} is not in generation {generation}. "
                "Pick a generation that holds it (see the Restore page or `hybrid-saver generations`)."
            )
        report = progress or _ignore
        scope = sql.SQL("")
        scope_params: list[Any] = []
        if thread_id is not None:
            scope = sql.SQL(" AND thread_id = %s")
            scope_params = [enc(thread_id)]
        with pool_connection(self._place.pool) as conn, conn.transaction():
            new, threads, checkpoints = next_generation(
                conn,
                self._s,
                trigger,
                "restore",
                restored_from=generation,
                thread_id=enc(thread_id) if thread_id is not None else None,
            )
            before = self._live_checkpoints(conn, thread_id) if thread_id is not None else 0
            # every statement scans its table: its share of the progress is the table's size
            sizes = self._table_blocks(conn)
            total, done = max(1, sum(sizes.values())), 0
            nrows = 0
            for table in GENERATIONAL:
                cur = conn.execute(
                    sql.SQL(
                        "UPDATE {s}.{t} SET deleted_gen = %s WHERE deleted_gen IS NULL AND added_gen > %s{scope}"
                    ).format(s=self._s, t=sql.Identifier(table), scope=scope),
                    [new, generation, *scope_params],
                )
                nrows += max(cur.rowcount, 0)
                cols = sql.SQL(", ").join(map(sql.Identifier, RESTORE_COLUMNS[table]))
                cur = conn.execute(
                    sql.SQL(
                        "INSERT INTO {s}.{t} ({c}, added_gen) SELECT {c}, %s FROM {s}.{t} "
                        "WHERE added_gen <= %s AND deleted_gen > %s AND deleted_gen <> %s{scope}"
                    ).format(s=self._s, t=sql.Identifier(table), c=cols, scope=scope),
                    [new, generation, generation, new, *scope_params],
                )
                if table != "summaries":
                    nrows += max(cur.rowcount, 0)
                done += sizes.get(table, 0)
                report(done / total)
            if thread_id is None:
                threads, checkpoints = source.threads, source.checkpoints
            else:
                after = self._live_checkpoints(conn, thread_id)
                threads += (1 if after else 0) - (1 if before else 0)
                checkpoints += after - before
            conn.execute(
                self._q(
                    "UPDATE {s}.generations SET threads = %s, checkpoints = %s, rows_written = %s WHERE generation = %s"
                ),
                (threads, checkpoints, nrows, new),
            )
        return new

    def _live_checkpoints(self, conn: psycopg.Connection, thread_id: str) -> int:
        row = conn.execute(
            self._q("SELECT count(*) FROM {s}.checkpoints WHERE thread_id = %s AND deleted_gen IS NULL"),
            (enc(thread_id),),
        ).fetchone()
        return int(row[0]) if row else 0

    def _table_blocks(self, conn: psycopg.Connection) -> dict[str, int]:
        """Blocks of each generational table (its size, without indexes and TOAST)."""
        rows = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) / current_setting('block_size')::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind = 'r'",
            (self._place.schema, list(GENERATIONAL)),
        ).fetchall()
        return {str(r[0]): max(1, int(r[1])) for r in rows}

    def verify_generation(
        self, generation: int, thread_id: str | None = None, *, progress: Callable[[float], None] | None = None
    ) -> tuple[int, list[tuple[str, str]]]:
        """Check every row of ``generation`` against its checksum (nothing is kept in memory).

        PostgreSQL 18 and newer compute the checksums server-side (``crc32()``), a table per statement
        (which the server scans in parallel); older servers send each row's checksummed bytes (put
        together server-side), checked here: each table is cut into block ranges checked on up to
        :data:`VERIFY_WORKERS` connections at once, all in one snapshot. ``progress(fraction)`` is
        called as the tables or ranges are done (the fraction of the tables' blocks checked). Returns
        (rows checked, damaged rows as (thread id, what)).
        """
        self._generations.get_generation(generation)
        report = progress or _ignore
        if thread_id is not None:
            with pool_connection(self._place.pool) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        checked, damaged = 0, []
                        for table in TABLES:
                            n, bad = self._verify_part(cur, table, generation, thread_id, None)
                            checked += n
                            damaged += bad
                finally:
                    conn.isolation_level = None
            report(1.0)
            return checked, damaged
        return _ParallelVerify(self, generation, report).run()

    def _verify_part(
        self,
        cur: psycopg.Cursor,
        table: str,
        generation: int,
        thread_id: str | None,
        blocks: tuple[int, int | None] | None,
    ) -> tuple[int, list[tuple[str, str]]]:
        """Check the rows of ``table`` live at ``generation``: of ``thread_id`` or, with ``blocks``
        (first, end or None), those stored in that range of the table's blocks."""
        keys, payload, types = TABLES[table]
        where, params = live_at(generation)
        if thread_id is not None:
            where = sql.SQL("{} AND thread_id = %s").format(where)
            params = [*params, enc(thread_id)]
        if blocks is not None:
            first, end = blocks
            where = sql.SQL("{} AND ctid >= %s::tid").format(where)
            params = [*params, f"({first},0)"]
            if end is not None:
                where = sql.SQL("{} AND ctid < %s::tid").format(where)
                params = [*params, f"({end},0)"]
        checked = _checked_bytes(payload, types[len(keys) :])
        key_cols = sql.SQL(", ").join(map(sql.Identifier, keys))
        t = sql.Identifier(table)
        if cur.connection.info.server_version >= 180000:
            bad = sql.SQL("crc IS NOT NULL AND crc <> crc32({})").format(checked)
            cur.execute(
                sql.SQL("SELECT count(*), count(*) FILTER (WHERE {b}) FROM {s}.{t} WHERE {w}").format(
                    b=bad, s=self._s, t=t, w=where
                ),
                params,
            )
            row = cur.fetchone()
            total, nbad = (int(row[0]), int(row[1])) if row else (0, 0)
            if not nbad:
                return total, []
            cur.execute(
                sql.SQL("SELECT {c} FROM {s}.{t} WHERE {w} AND {b}").format(c=key_cols, s=self._s, t=t, w=where, b=bad),
                params,
            )
            return total, [(dec(r[0]), describe_row(table, r)) for r in cur.fetchall()]
        # before 18 there is no crc32(): the server sends each row's checksummed bytes, checked here;
        # the keys only for a range that holds a damaged row (a second pass over it)
        total = nbad = 0
        crc32 = zlib.crc32
        for stored, data in _copy_rows(
            cur,
            sql.SQL("SELECT crc, {d} FROM {s}.{t} WHERE {w}").format(d=checked, s=self._s, t=t, w=where),
            params,
            ["int8", "bytea"],
        ):
            total += 1
            if stored is not None and stored != crc32(data):
                nbad += 1
        if not nbad:
            return total, []
        damaged = []
        for row in _copy_rows(
            cur,
            sql.SQL("SELECT {c}, crc, {d} FROM {s}.{t} WHERE {w}").format(
                c=key_cols, d=checked, s=self._s, t=t, w=where
            ),
            params,
            [*types[: len(keys)], "int8", "bytea"],
        ):
            if row[-2] is not None and row[-2] != crc32(row[-1]):
                damaged.append((dec(row[0]), describe_row(table, row)))
        return total, damaged

    # -- retention ----------------------------------------------------------------------------

    def window(self) -> RestoreWindow | None:
        """The oldest and newest kept generations (how far back a restore can go), None when there is none."""
        with pool_connection(self._place.pool) as conn:
            row = conn.execute(
                self._q(
                    "SELECT min(generation), max(generation), count(*), "
                    "(SELECT taken_at FROM {s}.generations ORDER BY generation LIMIT 1), max(taken_at), "
                    "count(*) FILTER (WHERE trigger = ANY(%s)) FROM {s}.generations"
                ),
                (list(LOAD_TRIGGERS),),
            ).fetchone()
        if not row or row[0] is None:
            return None
        return RestoreWindow(
            oldest=int(row[0]), newest=int(row[1]), kept=int(row[2]), oldest_at=row[3], newest_at=row[4],
            by_load=int(row[5]),
        )  # fmt: skip

    def apply_retention(self, keep: int, min_age: float | None = None) -> int:
        """Keep the newest ``keep`` generations written by time or by hand (scheduled, manual, close,
        restore...), every generation newer than the oldest of them, and every generation younger than
        ``min_age`` seconds; delete the rest and the rows no kept generation needs. Generations written
        because of load (memory pressure, handoffs) never count, so they cannot shrink the restore
        window. One member of a fleet at a time (the others skip it). Returns the generations dropped.
        """
        if keep < 1:
            raise ValueError(f"retention must keep at least 1 generation, got {keep}")
        with pool_connection(self._place.pool) as conn, conn.transaction():
            got = conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtext('hybrid_saver.retention:' || %s))", (self._place.schema,)
            ).fetchone()
            if not got or not got[0]:
                return 0
            row = conn.execute(
                self._q(
                    "SELECT generation FROM {s}.generations WHERE trigger <> ALL(%s) "
                    "ORDER BY generation DESC OFFSET %s LIMIT 1"
                ),
                (list(LOAD_TRIGGERS), keep - 1),
            ).fetchone()
            if not row:
                return 0
            oldest = int(row[0])
            if min_age is not None:
                young = conn.execute(
                    self._q(
                        "SELECT min(generation) FROM {s}.generations "
                        "WHERE taken_at >= statement_timestamp() - make_interval(secs => %s)"
                    ),
                    (float(min_age),),
                ).fetchone()
                if young and young[0] is not None:
                    oldest = min(oldest, int(young[0]))
            conn.execute(self._q("DELETE FROM {s}.runs WHERE id <= (SELECT max(id) FROM {s}.runs) - %s"), (MAX_RUNS,))
            conn.execute(
                self._q("DELETE FROM {s}.commands WHERE id <= (SELECT max(id) FROM {s}.commands) - %s"), (MAX_RUNS,)
            )
            cur = conn.execute(self._q("DELETE FROM {s}.generations WHERE generation < %s"), (oldest,))
            dropped = max(cur.rowcount, 0)
            if dropped:
                for table in GENERATIONAL:
                    conn.execute(
                        sql.SQL("DELETE FROM {s}.{t} WHERE deleted_gen IS NOT NULL AND deleted_gen <= %s").format(
                            s=self._s, t=sql.Identifier(table)
                        ),
                        (oldest,),
                    )
        return dropped


def _ignore(_fraction: float) -> None:
    return None


def _checked_bytes(payload: tuple[str, ...], types: tuple[str, ...]) -> sql.Composable:
    """The bytes a row's checksum covers (:func:`~persistence.store.schema.row_crc`), server-side: each
    payload column length-prefixed (4 bytes, little-endian), NULL as four 0xff bytes."""
    parts = []
    for col, typ in zip(payload, types, strict=True):
        value = sql.SQL("convert_to({}, 'UTF8')" if typ == "text" else "{}").format(sql.Identifier(col))
        parts.append(
            sql.SQL(
                "CASE WHEN {v} IS NULL THEN '\\xffffffff'::bytea ELSE "
                "set_byte(set_byte(set_byte(set_byte('\\x00000000'::bytea, 0, length({v}) & 255), "
                "1, (length({v}) >> 8) & 255), 2, (length({v}) >> 16) & 255), 3, (length({v}) >> 24) & 255) "
                "|| {v} END"
            ).format(v=value)
        )
    return sql.SQL(" || ").join(parts)


def _copy_rows(cur: psycopg.Cursor, query: sql.Composable, params: list[Any], types: list[str]) -> Iterator[Row]:
    """The rows of ``query`` through binary COPY (the least work per row on both sides)."""
    bytes_loader(cur)
    with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query), params) as copy:
        copy.set_types(types)
        yield from copy.rows()


class _ParallelVerify:
    """A verification of every thread of a generation: the tables (18 and newer) or their block
    ranges, checked on the caller's pool connection and up to :data:`VERIFY_WORKERS` - 1 more that
    share its snapshot (``pg_export_snapshot``), so a row another member's backup updates meanwhile
    is checked once, as it was. Progress is reported from the caller's thread only (a page's widgets
    live there)."""

    def __init__(self, upkeep: GenerationUpkeep, generation: int, report: Callable[[float], None]) -> None:
        self._upkeep = upkeep
        self._generation = generation
        self._report = report
        self._parts: list[tuple[str, tuple[int, int | None] | None]] = []
        self._weights: list[int] = []
        self._next = 0
        self._finished = 0
        self._done_blocks = 0
        self._total_blocks = 1
        self._changed = threading.Condition()
        self._checked = 0
        self._damaged: list[tuple[str, str]] = []
        self._failure: BaseException | None = None

    def run(self) -> tuple[int, list[tuple[str, str]]]:
        pool = self._upkeep._place.pool
        with pool_connection(pool) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction(), conn.cursor() as cur:
                    row = cur.execute("SELECT pg_export_snapshot()").fetchone()
                    snapshot = str(row[0]) if row else ""
                    # 18 and newer check a whole table in one statement, which the server runs in parallel
                    # itself (a parallel sequential scan); before 18 the rows come here, range by range
                    whole = conn.info.server_version >= 180000
                    self._plan(cur, whole)
                    helpers = [
                        threading.Thread(target=self._helper, args=(snapshot,), name="verify", daemon=True)
                        for _ in range(0 if whole else min(VERIFY_WORKERS, pool.max_size - 1) - 1)
                    ]
                    for helper in helpers:
                        helper.start()
                    try:
                        self._work(cur, report=True)
                        # the helpers' last ranges (the snapshot they imported lives with this transaction)
                        with self._changed:
                            while self._finished < len(self._parts) and self._failure is None:
                                self._changed.wait(1.0)
                                self._report(self._done_blocks / self._total_blocks)
                    finally:
                        with self._changed:
                            if self._failure is None and self._finished < len(self._parts):
                                self._failure = RuntimeError("verification interrupted")
                        for helper in helpers:
                            helper.join()
            finally:
                conn.isolation_level = None
        if self._failure is not None:
            raise self._failure
        self._damaged.sort()
        return self._checked, self._damaged

    def _plan(self, cur: psycopg.Cursor, whole: bool) -> None:
        """Cut every table into ranges of :data:`VERIFY_BLOCKS` blocks (the last one open-ended: rows
        the snapshot sees are in blocks that existed when it was taken), or one part per table
        (``whole``)."""
        for table in TABLES:
            row = cur.execute(
                "SELECT pg_relation_size(format('%%I.%%I', %s::text, %s::text)::regclass) / "
                "current_setting('block_size')::bigint",
                (self._upkeep._place.schema, table),
            ).fetchone()
            blocks = int(row[0]) if row else 0
            if whole:
                self._parts.append((table, None))
                self._weights.append(max(1, blocks))
                continue
            first = 0
            while first + VERIFY_BLOCKS < blocks:
                self._parts.append((table, (first, first + VERIFY_BLOCKS)))
                self._weights.append(VERIFY_BLOCKS)
                first += VERIFY_BLOCKS
            self._parts.append((table, (first, None)))
            self._weights.append(max(1, blocks - first))
        self._total_blocks = sum(self._weights)

    def _helper(self, snapshot: str) -> None:
        pool = self._upkeep._place.pool
        try:
            conn = pool.getconn(timeout=1.0)
        except PoolTimeout:
            return  # the pool is busy: the caller's connection checks every range
        if ended_by_server(conn):  # a restart ended it: the pool drops it, the caller checks every range
            conn.close()
            pool.putconn(conn)
            return
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                self._work(cur, report=False)
        except BaseException as exc:  # noqa: BLE001 - raised by run(), in the caller's thread
            with self._changed:
                self._failure = self._failure or exc
                self._changed.notify_all()
        finally:
            conn.isolation_level = None
            pool.putconn(conn)

    def _work(self, cur: psycopg.Cursor, *, report: bool) -> None:
        while True:
            with self._changed:
                if self._failure is not None or self._next >= len(self._parts):
                    return
                index = self._next
                self._next += 1
            table, blocks = self._parts[index]
            n, bad = self._upkeep._verify_part(cur, table, self._generation, None, blocks)
            with self._changed:
                self._checked += n
                self._damaged += bad
                self._done_blocks += self._weights[index]
                self._finished += 1
                fraction = self._done_blocks / self._total_blocks
                self._changed.notify_all()
            if report:
                self._report(fraction)


__all__ = ["LOAD_TRIGGERS", "MAX_RUNS", "VERIFY_BLOCKS", "VERIFY_WORKERS", "GenerationUpkeep", "KeptGenerations"]
