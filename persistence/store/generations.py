"""The PostgreSQL side of the checkpoints: writing a generation with COPY and reading it back.

The schema and the storage model are in :mod:`persistence.store.schema`, the values in
:mod:`persistence.store.records`, the COPY helpers in :mod:`persistence.store.rows`. The store's
parts: ``store.upkeep`` (restore, verify and retention, :mod:`persistence.store.upkeep`),
``store.directory`` (the thread directory, :mod:`persistence.store.directory`) and ``store.runs``
(the runs table, :mod:`persistence.store.runs`).

A backup writes one generation in one transaction: it takes the next number from the counter row
(the row lock orders generations by commit across every member of a fleet), checks that the
writer still owns each thread it writes (fencing), tombstones replaced keys, then COPYs the new rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from persistence.db import pool_connection
from persistence.errors import GenerationNotFound, StoreNotFound, StoreTooNew
from persistence.store.directory import ThreadDirectory
from persistence.store.place import Place
from persistence.store.records import Changes, Generation, Row, Snapshot, Summary, Written
from persistence.store.rows import (
    LAZY_SUMMARY_ROWS,
    Background,
    build_snapshot,
    bytes_loader,
    copy_in,
    copy_out,
    copy_summaries,
    live_at,
    next_generation,
)
from persistence.store.runs import RunLog
from persistence.store.schema import DEFAULT_SCHEMA, MIGRATIONS, TABLES, dec, enc
from persistence.store.upkeep import GenerationUpkeep

logger = logging.getLogger(__name__)


#: loads of up to this many threads read one result instead of a COPY stream
SELECT_LOAD_MAX = 32
_LOAD_TYPES = ["int2", "bytea", "bytea", "bytea", "bytea", "int4", "text", "bytea", "text", "bytea", "bytea"]


def _copied(cur: psycopg.Cursor, stmt: sql.Composed, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    with cur.copy(stmt, params) as copy:
        copy.set_types(_LOAD_TYPES)
        yield from copy.rows()


class Store:
    """Reads and writes generations in one PostgreSQL schema through a borrowed pool.

    Its parts share the pool and the schema: ``directory`` (the thread directory), ``runs`` (the runs
    table) and ``upkeep`` (restore, verify and retention of whole generations).
    """

    def __init__(self, pool: ConnectionPool, schema: str = DEFAULT_SCHEMA) -> None:
        self._place = Place(pool, schema)
        self._s = self._place.ident
        self.directory = ThreadDirectory(self._place)
        self.runs = RunLog(self._place)
        self.upkeep = GenerationUpkeep(self._place, self)

    @property
    def pool(self) -> ConnectionPool:
        """The borrowed pool; assigning another (after an outage) moves every part to it."""
        return self._place.pool

    @pool.setter
    def pool(self, pool: ConnectionPool) -> None:
        self._place.pool = pool

    @property
    def schema(self) -> str:
        return self._place.schema

    # -- schema -------------------------------------------------------------------------------

    def _q(self, text: str) -> sql.Composed:
        return self._place.q(text)

    def setup(self) -> None:
        """Create the schema and apply pending migrations (idempotent)."""
        with pool_connection(self.pool) as conn, conn.transaction():
            # one setup at a time per database
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('hybrid_saver.setup'))")
            # CREATE ... IF NOT EXISTS needs CREATE privilege even when the object exists: look first,
            # so a role given only USAGE (and table rights) on an existing store can use it
            # (and CREATE SCHEMA IF NOT EXISTS needs CREATE on the database: a schema a DBA made and
            # granted USAGE, CREATE on is used as it is)
            found = conn.execute(
                "SELECT to_regnamespace(format('%%I', %s::text)) IS NOT NULL, "
                "to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL",
                (self.schema, self.schema),
            ).fetchone()
            schema_exists, versioned = found if found else (False, False)
            if not schema_exists:
                conn.execute(self._q("CREATE SCHEMA {s}"))
            if not versioned:
                conn.execute(self._q("CREATE TABLE {s}.schema_version (v integer PRIMARY KEY)"))
            row = conn.execute(self._q("SELECT coalesce(max(v), 0) FROM {s}.schema_version")).fetchone()
            current = row[0] if row else 0
            if current > len(MIGRATIONS):
                raise StoreTooNew(
                    f"The store in schema {self.schema!r} is at version {current}, newer than this library's "
                    f"{len(MIGRATIONS)}: upgrade hybrid-saver to use it."
                )
            for version, migration in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                conn.execute(self._q(migration))
                conn.execute(self._q("INSERT INTO {s}.schema_version (v) VALUES (%s)"), (version,))
                logger.info("applied migration %s to schema %s", version, self.schema)

    def check_readable(self) -> None:
        """Make sure the schema holds a store at this library's version, creating and migrating nothing
        (the reading commands' check).

        Raises:
            StoreNotFound: there is no store in the schema, or it is at an older version (a saver of this
                version migrates it when it starts).
            StoreTooNew: the store was migrated by a newer version of the library.
        """
        with pool_connection(self.pool) as conn:
            row = conn.execute(
                "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL", (self.schema,)
            ).fetchone()
            if not (row and row[0]):
                raise StoreNotFound(
                    f"There is no store in schema {self.schema!r} of this database (nothing was created). "
                    "Check --schema and DATABASE_URL; a saver creates the store when it first starts."
                )
            got = conn.execute(self._q("SELECT coalesce(max(v), 0) FROM {s}.schema_version")).fetchone()
        version = int(got[0]) if got else 0
        if version < len(MIGRATIONS):
            raise StoreNotFound(
                f"The store in schema {self.schema!r} is at version {version}, this library reads version "
                f"{len(MIGRATIONS)}; nothing was changed. Start a saver of this version on it once (it migrates "
                "the store), or use the library version that wrote it."
            )
        if version > len(MIGRATIONS):
            raise StoreTooNew(
                f"The store in schema {self.schema!r} is at version {version}, newer than this library's "
                f"{len(MIGRATIONS)}: upgrade hybrid-saver to read it."
            )

    def identity(self) -> str:
        """The store's id (a UUID made when its schema was created): the same store under any URL."""
        with pool_connection(self.pool) as conn:
            row = conn.execute(self._q("SELECT store_id::text FROM {s}.identity LIMIT 1")).fetchone()
        return str(row[0]) if row else ""

    # -- generations ------------------------------------------------------------------------

    def generations(self, limit: int | None = None, *, generation: int | None = None) -> list[Generation]:
        """Kept generations, newest first (only ``generation`` when it is given)."""
        query = self._q(
            "SELECT generation, taken_at, trigger, kind, threads, checkpoints, rows_written, "
            "bytes_written, restored_from, thread_id FROM {s}.generations"
        )
        params: list[Any] = []
        if generation is not None:
            query += sql.SQL(" WHERE generation = %s")
            params.append(generation)
        query += sql.SQL(" ORDER BY generation DESC")
        if limit is not None:
            query += sql.SQL(" LIMIT {}").format(sql.Literal(int(limit)))
        with pool_connection(self.pool) as conn:
            rows = conn.execute(query, params).fetchall()
        return [
            Generation(
                generation=row[0],
                taken_at=row[1],
                trigger=row[2],
                kind=row[3],
                threads=row[4],
                checkpoints=row[5],
                rows_written=row[6],
                bytes_written=row[7],
                restored_from=row[8],
                thread_id=dec(row[9]) if row[9] is not None else None,
            )
            for row in rows
        ]

    def latest_generation(self) -> int | None:
        with pool_connection(self.pool) as conn:
            row = conn.execute(self._q("SELECT max(generation) FROM {s}.generations")).fetchone()
        return row[0] if row else None

    def get_generation(self, generation: int) -> Generation:
        """Return one kept generation or raise ``GenerationNotFound``."""
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise GenerationNotFound(f"Generation must be an integer, got {generation!r}.")
        found = self.generations(generation=generation)
        if found:
            return found[0]
        kept = self.generations()
        span = f"{kept[-1].generation}..{kept[0].generation}" if kept else "none yet"
        raise GenerationNotFound(
            f"Generation {generation} does not exist in store {self.schema!r} (kept generations: {span}). "
            "List them with `hybrid-saver generations`."
        )

    def write_generation(
        self,
        changes: Changes,
        *,
        trigger: str,
        kind: str = "backup",
        owner: int | None = None,
        tokens: dict[str, int] | None = None,
        summarize: Callable[[set[str]], list[Summary]] | None = None,
        later: Callable[[Changes, set[str]], dict[str, Iterator[None]]] | None = None,
    ) -> Written:
        """Write ``changes`` as a new generation in one transaction.

        With ``owner`` (a member id) only the threads that member still owns are written, with the
        token it holds in ``tokens`` when given; the others are refused and listed (fencing). A
        backup with nothing to write (or nothing left after fencing) writes no generation.

        ``summarize(threads)`` returns the summary rows of ``threads`` (they replace
        ``changes.summaries``). ``later(changes, refused)`` returns, for tables whose rows are not in
        ``changes`` yet, the steps that add them (leaving out the ``refused`` threads). For a large
        backup the summaries and those rows are made while the server takes in the first rows,
        the summaries for the threads written only; a small one makes its summaries first, before the
        transaction locks anything (so the locks are held no longer for them).
        """
        if later is not None and changes.empty:
            # nothing to send first: no COPY to build the other rows behind
            for steps in later(changes, set()).values():
                for _step in steps:
                    pass
            later = None
        if changes.empty:
            return Written(None)
        lazy = later is not None or (
            summarize is not None and sum(map(len, changes.rows.values())) >= LAZY_SUMMARY_ROWS
        )
        if summarize is not None and not lazy:
            changes.summaries = summarize(changes.threads())
        with pool_connection(self.pool) as conn, conn.transaction():
            refused: list[str] = []
            if owner is not None:
                touched = sorted(changes.threads())
                owned = self._owned(conn, owner, touched, tokens)
                refused = [t for t in touched if t not in owned]
                changes = changes.without(set(refused))
            background = None
            if lazy:
                tables = later(changes, set(refused)) if later is not None else {}
                background = Background(tables, summarize, changes.threads())
                if changes.empty and changes.threads():
                    for table in tables:
                        background.complete(table)
            if changes.empty:
                return Written(None, refused=refused)
            touched_enc = sorted({enc(t) for t in changes.threads()})
            gen, threads_before, checkpoints = next_generation(conn, self._s, trigger, kind)
            live_before = self._live_threads(conn, touched_enc)
            nrows, nbytes = self._write_rows(conn, changes, touched_enc, gen, background)
            # counts follow from the previous generation's and what this one touched: no full scan
            tombstoned = conn.execute(
                self._q("SELECT count(*) FROM {s}.checkpoints WHERE deleted_gen = %s"), (gen,)
            ).fetchone()
            checkpoints += len(changes.rows["checkpoints"]) - (tombstoned[0] if tombstoned else 0)
            # a thread given a checkpoint row here is live (the tombstones ran before the COPY): only the
            # others are looked up
            given = {row[0] for row in changes.rows["checkpoints"]}
            live_after = len(given) + self._live_threads(conn, [t for t in touched_enc if t not in given])
            threads = threads_before - live_before + live_after
            conn.execute(
                self._q(
                    "UPDATE {s}.generations SET threads = %s, checkpoints = %s, rows_written = %s, "
                    "bytes_written = %s WHERE generation = %s"
                ),
                (threads, checkpoints, nrows, nbytes, gen),
            )
        return Written(gen, nrows, nbytes, refused, threads, checkpoints)

    def _owned(
        self, conn: psycopg.Connection, owner: int, threads: list[str], tokens: dict[str, int] | None
    ) -> set[str]:
        """Threads of ``threads`` that ``owner`` holds (with the given tokens); their owner rows stay
        share-locked until commit, so no claim can take them while this transaction writes."""
        rows = conn.execute(
            self._q(
                "SELECT thread_id, token FROM {s}.owners WHERE thread_id = ANY(%s) AND owner = %s "
                "ORDER BY thread_id FOR SHARE"
            ),
            ([enc(t) for t in threads], owner),
        ).fetchall()
        owned = {dec(r[0]): int(r[1]) for r in rows}
        if tokens is None:
            return set(owned)
        return {t for t, token in owned.items() if tokens.get(t, token) == token}

    def _write_rows(
        self,
        conn: psycopg.Connection,
        changes: Changes,
        touched: list[bytes],
        gen: int,
        background: Background | None = None,
    ) -> tuple[int, int]:
        nrows = nbytes = 0
        idle = background.step if background is not None else None
        with conn.cursor() as cur:
            if changes.deleted_threads:
                threads = [enc(t) for t in changes.deleted_threads]
                for table in TABLES:
                    cur.execute(
                        self._q(
                            f"UPDATE {{s}}.{table} SET deleted_gen = %s "
                            "WHERE thread_id = ANY(%s) AND deleted_gen IS NULL"
                        ),
                        (gen, threads),
                    )
                    nrows += max(cur.rowcount, 0)
            for table, (keys, _payload, types) in TABLES.items():
                if background is not None:
                    background.complete(table)
                tomb = changes.tombstones[table]
                if tomb:
                    cols = list(zip(*tomb, strict=True))
                    key_sql = sql.SQL(", ").join(map(sql.Identifier, keys))
                    unnest = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in types[: len(keys)])
                    cur.execute(
                        sql.SQL(
                            "UPDATE {s}.{t} SET deleted_gen = %s WHERE deleted_gen IS NULL "
                            "AND ({k}) IN (SELECT * FROM unnest({u}))"
                        ).format(s=self._s, t=sql.Identifier(table), k=key_sql, u=unnest),
                        [gen, *[list(c) for c in cols]],
                    )
                    nrows += max(cur.rowcount, 0)
                rows = changes.rows[table]
                if rows:
                    nbytes += copy_in(cur, self._s, table, rows, gen, idle)
                    nrows += len(rows)
            if background is not None:
                changes.summaries = background.finish()
            # the summary of every touched thread is replaced (or dropped when it has no checkpoint)
            cur.execute(
                self._q("UPDATE {s}.summaries SET deleted_gen = %s WHERE thread_id = ANY(%s) AND deleted_gen IS NULL"),
                (gen, touched),
            )
            if changes.summaries:
                copy_summaries(cur, self._s, changes.summaries, gen)
        return nrows, nbytes

    def _live_threads(self, conn: psycopg.Connection, thread_ids: list[bytes]) -> int:
        """How many of ``thread_ids`` have a live checkpoint (uses the live-key index)."""
        if not thread_ids:
            return 0
        row = conn.execute(
            self._q(
                "SELECT count(*) FROM unnest(%s::bytea[]) AS t(id) WHERE EXISTS "
                "(SELECT 1 FROM {s}.checkpoints c WHERE c.thread_id = t.id AND c.deleted_gen IS NULL)"
            ),
            (thread_ids,),
        ).fetchone()
        return int(row[0]) if row else 0

    # -- reading back -------------------------------------------------------------------------

    def iter_rows(
        self, table: str, generation: int | None = None, thread_id: str | None = None, *, crc: bool = False
    ) -> Iterator[Row]:
        """Yield the raw rows of ``table`` live at ``generation`` (None: the newest state).

        With ``crc`` each row ends with its stored checksum (None for rows older than schema v2).
        """
        with pool_connection(self.pool) as conn, conn.cursor() as cur:
            yield from copy_out(cur, self._s, table, generation, [thread_id] if thread_id is not None else None, crc)

    def load(self, generation: int | None = None, thread_id: str | None = None, *, verify: bool = False) -> Snapshot:
        """Read the state at ``generation`` (or the newest), all threads or one, into
        InMemorySaver-shaped dicts, in one consistent read.

        With ``verify``, rows whose payload no longer matches its checksum are left out and listed
        in ``snapshot.damaged`` (thread id, what) and ``snapshot.dropped`` (keys per table).
        """
        return self._load(generation, [thread_id] if thread_id is not None else None, verify)

    def load_threads(self, thread_ids: Sequence[str]) -> Snapshot:
        """The live rows of ``thread_ids`` (the newest state): one statement over the three tables,
        so one consistent snapshot in one round trip. A few threads (a load on demand, a handoff) are
        read as one binary result, which psycopg's C code turns into rows about three times faster
        than it parses COPY row by row; a batch (the warm start) streams through COPY, so no result
        of its whole size is held twice."""
        union = (
            "SELECT 0::int2, thread_id, checkpoint_ns, checkpoint_id, parent_id, NULL::int4, checkpoint_type, "
            "checkpoint, metadata_type, metadata, NULL::bytea FROM {s}.checkpoints "
            "WHERE deleted_gen IS NULL AND thread_id = ANY(%(t)s) "
            "UNION ALL SELECT 1::int2, thread_id, checkpoint_ns, checkpoint_id, task_id, idx, value_type, value, "
            "NULL::text, task_path, channel FROM {s}.writes WHERE deleted_gen IS NULL AND thread_id = ANY(%(t)s) "
            "UNION ALL SELECT 2::int2, thread_id, checkpoint_ns, channel, version, NULL::int4, value_type, value, "
            "NULL::text, NULL::bytea, NULL::bytea FROM {s}.blobs WHERE deleted_gen IS NULL AND thread_id = ANY(%(t)s)"
        )
        rows: dict[str, list[Row]] = {"checkpoints": [], "writes": [], "blobs": []}
        cps, wrs, bls = rows["checkpoints"], rows["writes"], rows["blobs"]
        params = {"t": [enc(t) for t in thread_ids]}
        with pool_connection(self.pool) as conn, conn.cursor(binary=True) as cur:
            bytes_loader(cur)
            found: Iterable[tuple[Any, ...]]
            if len(thread_ids) <= SELECT_LOAD_MAX:
                found = cur.execute(self._q(union), params).fetchall()
            else:
                found = _copied(cur, self._q("COPY (" + union + ") TO STDOUT (FORMAT BINARY)"), params)
            for kind, tid, ns, a, b, idx, t1, d1, t2, d2, e in found:
                if kind == 0:
                    cps.append((tid, ns, a, b, t1, d1, t2, d2))
                elif kind == 1:
                    wrs.append((tid, ns, a, b, idx, e, t1, d1, d2))
                else:
                    bls.append((tid, ns, a, b, t1, d1))
        return build_snapshot(rows.__getitem__, False)

    def _load(self, generation: int | None, thread_ids: list[str] | None, verify: bool) -> Snapshot:
        with pool_connection(self.pool) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction(), conn.cursor() as cur:
                    return build_snapshot(
                        lambda table: copy_out(cur, self._s, table, generation, thread_ids, verify), verify
                    )
            finally:
                conn.isolation_level = None

    def has_thread(self, generation: int, thread_id: str) -> bool:
        where, params = live_at(generation)
        with pool_connection(self.pool) as conn:
            row = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {s}.checkpoints WHERE {w} AND thread_id = %s)").format(
                    s=self._s, w=where
                ),
                [*params, enc(thread_id)],
            ).fetchone()
        return bool(row and row[0])

    def thread_counts(self, generation: int | None = None, thread_id: str | None = None) -> dict[str, tuple[int, str]]:
        """thread_id -> (checkpoints, newest checkpoint id) at ``generation`` (all threads or one)."""
        where, params = live_at(generation)
        if thread_id is not None:
            where = sql.SQL("{} AND thread_id = %s").format(where)
            params = [*params, enc(thread_id)]
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                # max() of bytea exists only from PostgreSQL 18: take the first of a sorted aggregate
                sql.SQL(
                    "SELECT thread_id, count(*), (array_agg(checkpoint_id ORDER BY checkpoint_id DESC))[1] "
                    "FROM {s}.checkpoints WHERE {w} GROUP BY thread_id"
                ).format(s=self._s, w=where),
                params,
            ).fetchall()
        return {dec(r[0]): (int(r[1]), dec(r[2])) for r in rows}

    def live_thread_ids(self) -> list[str]:
        """Every thread with a live checkpoint (the newest state), in id order."""
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                self._q("SELECT DISTINCT thread_id FROM {s}.checkpoints WHERE deleted_gen IS NULL ORDER BY 1")
            ).fetchall()
        return [dec(r[0]) for r in rows]

    def threads_with_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Threads that may have a live checkpoint of one of ``run_ids``: a superset (metadata stored as
        msgpack is searched for the id's bytes; any other encoding is a candidate, to be decoded)."""
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                self._q(
                    "SELECT DISTINCT thread_id FROM {s}.checkpoints WHERE deleted_gen IS NULL AND "
                    "(metadata_type IS DISTINCT FROM 'msgpack' OR EXISTS "
                    "(SELECT 1 FROM unnest(%s::bytea[]) AS r(id) WHERE position(r.id IN metadata) > 0))"
                ),
                ([enc(r) for r in run_ids],),
            ).fetchall()
        return [dec(r[0]) for r in rows]

    def ever_stored(self, thread_id: str) -> bool:
        """True when some kept generation holds a checkpoint of ``thread_id`` (a restore can bring it back)."""
        with pool_connection(self.pool) as conn:
            row = conn.execute(
                self._q("SELECT EXISTS (SELECT 1 FROM {s}.summaries WHERE thread_id = %s)"), (enc(thread_id),)
            ).fetchone()
            if row and row[0]:
                return True
            row = conn.execute(
                self._q("SELECT EXISTS (SELECT 1 FROM {s}.checkpoints WHERE thread_id = %s)"), (enc(thread_id),)
            ).fetchone()
        return bool(row and row[0])


__all__ = ["Store"]
