"""Server-side work on whole generations: restore (all threads or one) as a new generation,
verification of a generation's checksums, and retention. A part of the
:class:`~persistence.store.Store`: ``store.upkeep``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg import sql

from persistence.db import pool_connection
from persistence.errors import ThreadNotFound
from persistence.store.records import RestoreWindow
from persistence.store.rows import copy_out, live_at, next_generation
from persistence.store.schema import GENERATIONAL, RESTORE_COLUMNS, TABLES, dec, describe_row, enc, row_crc

if TYPE_CHECKING:
    from persistence.store.place import Place
    from persistence.store.records import Generation

#: the triggers of generations written because of load, not time: retention does not count them
LOAD_TRIGGERS = ("pressure", "release")
#: runs (and commands) kept in their tables; retention deletes older ones
MAX_RUNS = 20_000
#: key columns of each checkpoint table (the payload starts after them)
_KEY_WIDTH = {table: len(keys) for table, (keys, _payload, _types) in TABLES.items()}


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
        self, generation: int, *, trigger: str, thread_id: str | None = None, undo_of: int | None = None
    ) -> int:
        """Commit the state of ``generation`` (all threads or one) as a new generation, server-side.

        Rows live now but not at ``generation`` are tombstoned; rows live then but deleted since are
        copied forward. Returns the new generation.
        """
        self._generations.get_generation(generation)
        if thread_id is not None and not self._generations.has_thread(generation, thread_id):
            raise ThreadNotFound(
                f"Thread {thread_id!r:.120} is not in generation {generation}. "
                "Pick a generation that holds it (see the Restore page or `hybrid-saver generations`)."
            )
        scope = sql.SQL("")
        scope_params: list[Any] = []
        if thread_id is not None:
            scope = sql.SQL(" AND thread_id = %s")
            scope_params = [enc(thread_id)]
        with pool_connection(self._place.pool) as conn, conn.transaction():
            new, _threads, _checkpoints = next_generation(
                conn,
                self._s,
                trigger,
                "restore",
                restored_from=generation,
                thread_id=enc(thread_id) if thread_id is not None else None,
            )
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
            counts = conn.execute(
                self._q("SELECT count(*), count(DISTINCT thread_id) FROM {s}.checkpoints WHERE deleted_gen IS NULL")
            ).fetchone()
            conn.execute(
                self._q(
                    "UPDATE {s}.generations SET threads = %s, checkpoints = %s, rows_written = %s WHERE generation = %s"
                ),
                (counts[1] if counts else 0, counts[0] if counts else 0, nrows, new),
            )
        return new

    def verify_generation(self, generation: int, thread_id: str | None = None) -> tuple[int, list[tuple[str, str]]]:
        """Check every row of ``generation`` against its checksum (nothing is kept in memory).

        PostgreSQL 18 and newer compute the checksums server-side (``crc32()``); older servers
        stream the rows here. Returns (rows checked, damaged rows as (thread id, what)).
        """
        self._generations.get_generation(generation)
        checked = 0
        damaged: list[tuple[str, str]] = []
        ids = [thread_id] if thread_id is not None else None
        with pool_connection(self._place.pool) as conn:
            server_side = conn.info.server_version >= 180000
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction(), conn.cursor() as cur:
                    for table, width in _KEY_WIDTH.items():
                        if server_side:
                            n, bad = self._verify_server_side(cur, table, generation, ids)
                            checked += n
                            damaged += bad
                            continue
                        for row in copy_out(cur, self._s, table, generation, ids, True):
                            checked += 1
                            stored = row[-1]
                            if stored is not None and stored != row_crc(row[width:-1]):
                                damaged.append((dec(row[0]), describe_row(table, row)))
            finally:
                conn.isolation_level = None
        return checked, damaged

    def _verify_server_side(
        self, cur: psycopg.Cursor, table: str, generation: int, thread_ids: list[str] | None
    ) -> tuple[int, list[tuple[str, str]]]:
        keys, payload, types = TABLES[table]
        parts = []
        for col, typ in zip(payload, types[len(keys) :], strict=True):
            value = sql.SQL("convert_to({}, 'UTF8')" if typ == "text" else "{}").format(sql.Identifier(col))
            parts.append(
                sql.SQL(
                    "CASE WHEN {v} IS NULL THEN '\\xffffffff'::bytea ELSE "
                    "set_byte(set_byte(set_byte(set_byte('\\x00000000'::bytea, 0, length({v}) & 255), "
                    "1, (length({v}) >> 8) & 255), 2, (length({v}) >> 16) & 255), 3, (length({v}) >> 24) & 255) "
                    "|| {v} END"
                ).format(v=value)
            )
        bad = sql.SQL("crc IS NOT NULL AND crc <> crc32({})").format(sql.SQL(" || ").join(parts))
        where, params = live_at(generation)
        if thread_ids is not None:
            where = sql.SQL("{} AND thread_id = ANY(%s)").format(where)
            params = [*params, [enc(t) for t in thread_ids]]
        cur.execute(
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE {b}) FROM {s}.{t} WHERE {w}").format(
                b=bad, s=self._s, t=sql.Identifier(table), w=where
            ),
            params,
        )
        row = cur.fetchone()
        total, nbad = (int(row[0]), int(row[1])) if row else (0, 0)
        if not nbad:
            return total, []
        cur.execute(
            sql.SQL("SELECT {c} FROM {s}.{t} WHERE {w} AND {b}").format(
                c=sql.SQL(", ").join(map(sql.Identifier, keys)), s=self._s, t=sql.Identifier(table), w=where, b=bad
            ),
            params,
        )
        return total, [(dec(r[0]), describe_row(table, r)) for r in cur.fetchall()]

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


__all__ = ["LOAD_TRIGGERS", "MAX_RUNS", "GenerationUpkeep", "KeptGenerations"]
