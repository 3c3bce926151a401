"""The PostgreSQL side of the checkpoints: writing a generation with COPY and reading it back.
The schema and the storage model are in :mod:`persistence.schema`; restore, verify and retention
in :mod:`persistence.upkeep`, the thread directory in :mod:`persistence.directory`, the runs table
in :mod:`persistence.runlog`.

A backup writes one generation in one transaction: it takes the next number from the counter row
(the row lock orders generations by commit across every member of a fleet), checks that the
writer still owns each thread it writes (fencing), tombstones replaced keys, then COPYs the new rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import BytesBinaryDumper
from psycopg_pool import ConnectionPool

from persistence.db import pool_connection
from persistence.directory import ThreadDirectory
from persistence.errors import GenerationNotFound
from persistence.runlog import RunLog
from persistence.schema import (
    MIGRATIONS,
    TABLES,
    dec,
    dec_version,
    describe_row,
    enc,
    enc_version,
    row_crc,
)
from persistence.upkeep import GenerationUpkeep

logger = logging.getLogger(__name__)

DEFAULT_SCHEMA = "hybrid_saver"
#: the longest text of a thread kept in its summary for search
CONTENT_LIMIT = 16_000


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


@dataclass
class Changes:
    """What one backup writes: rows to add, keys to tombstone, threads deleted as a whole, and the
    summary of every thread it touches."""

    deleted_threads: list[str] = field(default_factory=list)
    # rows are (key..., payload...) tuples in the column order of TABLES, already encoded
    rows: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in TABLES})
    tombstones: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in TABLES})
    #: (thread_id, checkpoints, bytes, updated_at, newest_checkpoint, title, content) per touched
    #: thread that still has checkpoints; thread ids and checkpoint ids as str
    summaries: list[tuple] = field(default_factory=list)
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

    storage: dict[str, dict[str, dict[str, tuple]]] = field(default_factory=dict)
    writes: dict[tuple[str, str, str], dict[tuple[str, int], tuple]] = field(default_factory=dict)
    blobs: dict[tuple, tuple[str, bytes]] = field(default_factory=dict)
    bytes: int = 0
    #: keys removed by a damage check, per table, and what they were (thread id, description)
    dropped: dict[str, list[tuple]] = field(default_factory=dict)
    damaged: list[tuple[str, str]] = field(default_factory=list)

    @property
    def checkpoints(self) -> int:
        return sum(len(ns) for t in self.storage.values() for ns in t.values())


class Store(ThreadDirectory, RunLog, GenerationUpkeep):
    """Reads and writes generations in one PostgreSQL schema through a borrowed pool."""

    def __init__(self, pool: ConnectionPool, schema: str = DEFAULT_SCHEMA) -> None:
        self.pool = pool
        self.schema = schema
        self._s = sql.Identifier(schema)

    # -- schema -------------------------------------------------------------------------------

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    def setup(self) -> None:
        """Create the schema and apply pending migrations (idempotent)."""
        with pool_connection(self.pool) as conn, conn.transaction():
            # one setup at a time per database
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('hybrid_saver.setup'))")
            # CREATE ... IF NOT EXISTS needs CREATE privilege even when the object exists: look first,
            # so a role given only USAGE (and table rights) on an existing store can use it
            exists = conn.execute(
                "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL", (self.schema,)
            ).fetchone()
            if not (exists and exists[0]):
                conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
                conn.execute(self._q("CREATE TABLE IF NOT EXISTS {s}.schema_version (v integer PRIMARY KEY)"))
            row = conn.execute(self._q("SELECT coalesce(max(v), 0) FROM {s}.schema_version")).fetchone()
            current = row[0] if row else 0
            for version, migration in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                conn.execute(self._q(migration))
                conn.execute(self._q("INSERT INTO {s}.schema_version (v) VALUES (%s)"), (version,))
                logger.info("applied migration %s to schema %s", version, self.schema)

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
            Generation(*row[:9], thread_id=dec(row[9]) if row[9] is not None else None)  # type: ignore[arg-type]
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
            "List them with `python -m persistence generations`."
        )

    def _next_generation(self, conn: psycopg.Connection, trigger: str, kind: str, **extra: Any) -> tuple[int, int, int]:
        """Take the next generation number (the counter row stays locked until commit, so numbers
        follow commit order across members) and insert its row; return (generation, threads and
        checkpoints of the previous generation)."""
        row = conn.execute(
            self._q("UPDATE {s}.counter SET generation = generation + 1 RETURNING generation")
        ).fetchone()
        gen = int(row[0]) if row else 1
        prev = conn.execute(
            self._q("SELECT threads, checkpoints FROM {s}.generations ORDER BY generation DESC LIMIT 1")
        ).fetchone()
        cols = ["generation", "trigger", "kind", *extra]
        conn.execute(
            sql.SQL("INSERT INTO {s}.generations ({c}) VALUES ({v})").format(
                s=self._s,
                c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            ),
            [gen, trigger, kind, *extra.values()],
        )
        return gen, int(prev[0]) if prev else 0, int(prev[1]) if prev else 0

    def write_generation(
        self,
        changes: Changes,
        *,
        trigger: str,
        kind: str = "backup",
        owner: int | None = None,
        tokens: dict[str, int] | None = None,
    ) -> Written:
        """Write ``changes`` as a new generation in one transaction.

        With ``owner`` (a member id) only the threads that member still owns are written, with the
        token it holds in ``tokens`` when given; the others are refused and listed (fencing). A
        backup with nothing to write (or nothing left after fencing) writes no generation.
        """
        if changes.empty:
            return Written(None)
        with pool_connection(self.pool) as conn, conn.transaction():
            refused: list[str] = []
            if owner is not None:
                touched = sorted(changes.threads())
                owned = self._owned(conn, owner, touched, tokens)
                refused = [t for t in touched if t not in owned]
                changes = changes.without(set(refused))
                if changes.empty:
                    return Written(None, refused=refused)
            touched_enc = sorted({enc(t) for t in changes.threads()})
            gen, threads_before, checkpoints = self._next_generation(conn, trigger, kind)
            live_before = self._live_threads(conn, touched_enc)
            nrows, nbytes = self._write_rows(conn, changes, touched_enc, gen)
            # counts follow from the previous generation's and what this one touched: no full scan
            checkpoints += (
                len(changes.rows["checkpoints"])
                - conn.execute(
                    self._q("SELECT count(*) FROM {s}.checkpoints WHERE deleted_gen = %s"), (gen,)
                ).fetchone()[0]
            )
            threads = threads_before - live_before + self._live_threads(conn, touched_enc)
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
        self, conn: psycopg.Connection, changes: Changes, touched: list[bytes], gen: int
    ) -> tuple[int, int]:
        nrows = nbytes = 0
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
                    nbytes += self._copy_in(cur, table, rows, gen)
                    nrows += len(rows)
            # the summary of every touched thread is replaced (or dropped when it has no checkpoint)
            cur.execute(
                self._q("UPDATE {s}.summaries SET deleted_gen = %s WHERE thread_id = ANY(%s) AND deleted_gen IS NULL"),
                (gen, touched),
            )
            if changes.summaries:
                cols = list(zip(*changes.summaries, strict=True))
                cur.execute(
                    self._q(
                        "INSERT INTO {s}.summaries (thread_id, checkpoints, bytes, updated_at, newest_checkpoint, "
                        "title, content, added_gen) SELECT t.*, %s FROM unnest(%s::bytea[], %s::int[], %s::bigint[], "
                        "%s::timestamptz[], %s::bytea[], %s::text[], %s::text[]) AS t"
                    ),
                    [
                        gen,
                        [enc(t) for t in cols[0]],
                        list(cols[1]),
                        list(cols[2]),
                        list(cols[3]),
                        [enc(c) if c is not None else None for c in cols[4]],
                        [_text(t) for t in cols[5]],
                        [_text(c, CONTENT_LIMIT) for c in cols[6]],
                    ],
                )
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

    def _copy_in(self, cur: psycopg.Cursor, table: str, rows: list[tuple], gen: int) -> int:
        keys, payload, types = TABLES[table]
        cols = sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload, "crc", "added_gen")))
        nkeys = len(keys)
        stmt = sql.SQL("COPY {s}.{t} ({c}) FROM STDIN (FORMAT BINARY)").format(
            s=self._s, t=sql.Identifier(table), c=cols
        )
        # set_types("bytea") would pick psycopg.dbapi20's pure-Python Binary dumper (registered
        # last for that oid); the C-accelerated bytes dumper formats the rows much faster
        cur.adapters.register_dumper(None, BytesBinaryDumper)
        with cur.copy(stmt) as copy:
            copy.set_types([*types, "int8", "int8"])
            write = copy.write_row
            for row in rows:
                write((*row, row_crc(row[nkeys:]), gen))
        # bytes of the bytea columns (keys and payloads), summed per column rather than per row
        return sum(sum(map(len, filter(None, (row[i] for row in rows)))) for i, t in enumerate(types) if t == "bytea")

    # -- reading back -------------------------------------------------------------------------

    def _live_at(self, generation: int | None) -> tuple[sql.Composable, list[Any]]:
        if generation is None:
            return sql.SQL("deleted_gen IS NULL"), []
        return sql.SQL("added_gen <= %s AND (deleted_gen IS NULL OR deleted_gen > %s)"), [generation, generation]

    def _copy_out(
        self,
        cur: psycopg.Cursor,
        table: str,
        generation: int | None,
        thread_ids: Sequence[str] | None,
        crc: bool,
    ) -> Iterator[tuple]:
        keys, payload, types = TABLES[table]
        if crc:
            payload, types = (*payload, "crc"), (*types, "int8")
        where, params = self._live_at(generation)
        if thread_ids is not None:
            where = sql.SQL("{} AND thread_id = ANY(%s)").format(where)
            params = [*params, [enc(t) for t in thread_ids]]
        stmt = sql.SQL("COPY (SELECT {c} FROM {s}.{t} WHERE {w}) TO STDOUT (FORMAT BINARY)").format(
            c=sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload))),
            s=self._s,
            t=sql.Identifier(table),
            w=where,
        )
        with cur.copy(stmt, params) as copy:
            copy.set_types(list(types))
            yield from copy.rows()

    def iter_rows(
        self, table: str, generation: int | None = None, thread_id: str | None = None, *, crc: bool = False
    ) -> Iterator[tuple]:
        """Yield the raw rows of ``table`` live at ``generation`` (None: the newest state).

        With ``crc`` each row ends with its stored checksum (None for rows older than schema v2).
        """
        with pool_connection(self.pool) as conn, conn.cursor() as cur:
            yield from self._copy_out(cur, table, generation, [thread_id] if thread_id is not None else None, crc)

    def load(self, generation: int | None = None, thread_id: str | None = None, *, verify: bool = False) -> Snapshot:
        """Read the state at ``generation`` (or the newest), all threads or one, into
        InMemorySaver-shaped dicts, in one consistent read.

        With ``verify``, rows whose payload no longer matches its checksum are left out and listed
        in ``snapshot.damaged`` (thread id, what) and ``snapshot.dropped`` (keys per table).
        """
        return self._load(generation, [thread_id] if thread_id is not None else None, verify)

    def load_threads(self, thread_ids: Sequence[str]) -> Snapshot:
        """The live rows of ``thread_ids`` (the newest state): one statement over the three tables,
        so one consistent snapshot in one round trip."""
        stmt = self._q(
            "COPY ("
            "SELECT 0::int2, thread_id, checkpoint_ns, checkpoint_id, parent_id, NULL::int4, checkpoint_type, "
            "checkpoint, metadata_type, metadata, NULL::bytea FROM {s}.checkpoints "
            "WHERE deleted_gen IS NULL AND thread_id = ANY(%(t)s) "
            "UNION ALL SELECT 1::int2, thread_id, checkpoint_ns, checkpoint_id, task_id, idx, value_type, value, "
            "NULL::text, task_path, channel FROM {s}.writes WHERE deleted_gen IS NULL AND thread_id = ANY(%(t)s) "
            "UNION ALL SELECT 2::int2, thread_id, checkpoint_ns, channel, version, NULL::int4, value_type, value, "
            "NULL::text, NULL::bytea, NULL::bytea FROM {s}.blobs WHERE deleted_gen IS NULL AND thread_id = ANY(%(t)s)"
            ") TO STDOUT (FORMAT BINARY)"
        )
        rows: dict[str, list[tuple]] = {"checkpoints": [], "writes": [], "blobs": []}
        cps, wrs, bls = rows["checkpoints"], rows["writes"], rows["blobs"]
        with pool_connection(self.pool) as conn, conn.cursor() as cur:
            with cur.copy(stmt, {"t": [enc(t) for t in thread_ids]}) as copy:
                copy.set_types(
                    ["int2", "bytea", "bytea", "bytea", "bytea", "int4", "text", "bytea", "text", "bytea", "bytea"]
                )
                for kind, tid, ns, a, b, idx, t1, d1, t2, d2, e in copy.rows():
                    if kind == 0:
                        cps.append((tid, ns, a, b, t1, d1, t2, d2))
                    elif kind == 1:
                        wrs.append((tid, ns, a, b, idx, e, t1, d1, d2))
                    else:
                        bls.append((tid, ns, a, b, t1, d1))
        return _build_snapshot(rows.__getitem__, False)

    def _load(self, generation: int | None, thread_ids: list[str] | None, verify: bool) -> Snapshot:
        with pool_connection(self.pool) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction(), conn.cursor() as cur:
                    return _build_snapshot(
                        lambda table: self._copy_out(cur, table, generation, thread_ids, verify), verify
                    )
            finally:
                conn.isolation_level = None

    def has_thread(self, generation: int, thread_id: str) -> bool:
        where, params = self._live_at(generation)
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
        where, params = self._live_at(generation)
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


def _text(value: Any, limit: int = 1000) -> str | None:
    """Text for a summary column: no NUL (PostgreSQL text refuses it), valid UTF-8, at most ``limit``."""
    if value is None:
        return None
    text = str(value).replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def _build_snapshot(rows_of: Any, verify: bool) -> Snapshot:
    """Fill a Snapshot from the rows of the three tables (``rows_of(table)`` yields them)."""
    snap = Snapshot()
    nbytes = 0
    names: dict[bytes, str] = {}  # thread ids, namespaces and channels repeat: decode each once

    def name(data: bytes) -> str:
        text = names.get(data)
        if text is None:
            text = names[data] = dec(data)
        return text

    damaged: list[tuple[str, str]] = []
    dropped: dict[str, list[tuple]] = {t: [] for t in TABLES}

    def bad(row: tuple, width: int) -> bool:
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
        storage.setdefault(name(tid), {}).setdefault(name(ns), {})[dec(cid)] = (
            (ctype, cdata),
            (mtype, mdata),
            dec(parent) if parent is not None else None,
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
        writes.setdefault((name(tid), name(ns), dec(cid)), {})[(task_s, idx)] = (
            task_s,
            name(channel),
            (vtype, value),
            name(path),
        )
    blobs = snap.blobs
    for row in rows_of("blobs"):
        tid, ns, channel, version, vtype, value = row[:6]
        key = (name(tid), name(ns), name(channel), dec_version(version))
        if verify and bad(row, 4):
            damaged.append((key[0], describe_row("blobs", row)))
            dropped["blobs"].append(key)
            continue
        nbytes += len(value or b"")
        blobs[key] = (vtype, value)
    snap.bytes = nbytes
    snap.damaged = damaged
    snap.dropped = dropped
    return snap


__all__ = [
    "CONTENT_LIMIT",
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "TABLES",
    "Changes",
    "Generation",
    "Snapshot",
    "Store",
    "Written",
    "dec",
    "dec_version",
    "enc",
    "enc_version",
]
