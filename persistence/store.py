"""The PostgreSQL side: schema and migrations, writing a generation with COPY, reading it back.

Storage model. Every row carries ``added_gen`` (the generation that wrote it) and ``deleted_gen``
(the generation that replaced or deleted it, NULL while live). The state at generation G is every
row with ``added_gen <= G`` and ``deleted_gen`` NULL or ``> G``. A backup writes one generation
in one transaction: thread tombstones, key tombstones, then the new rows with COPY. Keys and
payloads are ``bytea`` so that any Python string (NUL bytes, lone surrogates) round-trips exactly.
"""

from __future__ import annotations

import logging
import os
import socket
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import BytesBinaryDumper
from psycopg_pool import ConnectionPool

from persistence.errors import GenerationNotFound, StoreLocked, ThreadNotFound

logger = logging.getLogger(__name__)

DEFAULT_SCHEMA = "hybrid_saver"
#: runs kept in the runs table (each backup run, failed ones too, adds one)
MAX_RUNS = 20_000

# (table, key columns, payload columns, COPY types of key + payload columns)
CHECKPOINT_COLS = ("thread_id", "checkpoint_ns", "checkpoint_id")
CHECKPOINT_PAYLOAD = ("parent_id", "checkpoint_type", "checkpoint", "metadata_type", "metadata")
WRITE_COLS = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx")
WRITE_PAYLOAD = ("channel", "value_type", "value", "task_path")
BLOB_COLS = ("thread_id", "checkpoint_ns", "channel", "version")
BLOB_PAYLOAD = ("value_type", "value")

TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "checkpoints": (
        CHECKPOINT_COLS,
        CHECKPOINT_PAYLOAD,
        ("bytea", "bytea", "bytea", "bytea", "text", "bytea", "text", "bytea"),
    ),
    "writes": (
        WRITE_COLS,
        WRITE_PAYLOAD,
        ("bytea", "bytea", "bytea", "bytea", "int4", "bytea", "text", "bytea", "bytea"),
    ),
    "blobs": (BLOB_COLS, BLOB_PAYLOAD, ("bytea", "bytea", "bytea", "bytea", "text", "bytea")),
}

MIGRATIONS: list[str] = [
    # v1: the generation model
    """
    CREATE TABLE {s}.generations (
        generation    bigint PRIMARY KEY,
        taken_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
        trigger       text NOT NULL,
        kind          text NOT NULL DEFAULT 'backup',
        threads       integer NOT NULL DEFAULT 0,
        checkpoints   bigint NOT NULL DEFAULT 0,
        rows_written  bigint NOT NULL DEFAULT 0,
        bytes_written bigint NOT NULL DEFAULT 0,
        restored_from bigint,
        thread_id     bytea
    );
    CREATE TABLE {s}.runs (
        id            bigserial PRIMARY KEY,
        trigger       text NOT NULL,
        started_at    timestamptz NOT NULL,
        finished_at   timestamptz NOT NULL,
        generation    bigint,
        rows_written  bigint NOT NULL DEFAULT 0,
        bytes_written bigint NOT NULL DEFAULT 0,
        lag_seconds   double precision NOT NULL DEFAULT 0,
        pending       bigint NOT NULL DEFAULT 0,
        threads       integer,
        checkpoints   bigint,
        error         text,
        request_id    text
    );
    CREATE INDEX runs_started_idx ON {s}.runs (started_at);
    CREATE TABLE {s}.checkpoints (
        thread_id bytea NOT NULL, checkpoint_ns bytea NOT NULL, checkpoint_id bytea NOT NULL,
        parent_id bytea, checkpoint_type text, checkpoint bytea, metadata_type text, metadata bytea,
        added_gen bigint NOT NULL, deleted_gen bigint
    );
    CREATE UNIQUE INDEX checkpoints_live ON {s}.checkpoints (thread_id, checkpoint_ns, checkpoint_id)
        WHERE deleted_gen IS NULL;
    CREATE INDEX checkpoints_dead ON {s}.checkpoints (deleted_gen) WHERE deleted_gen IS NOT NULL;
    CREATE TABLE {s}.writes (
        thread_id bytea NOT NULL, checkpoint_ns bytea NOT NULL, checkpoint_id bytea NOT NULL,
        task_id bytea NOT NULL, idx integer NOT NULL,
        channel bytea, value_type text, value bytea, task_path bytea,
        added_gen bigint NOT NULL, deleted_gen bigint
    );
    CREATE UNIQUE INDEX writes_live ON {s}.writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
        WHERE deleted_gen IS NULL;
    CREATE INDEX writes_dead ON {s}.writes (deleted_gen) WHERE deleted_gen IS NOT NULL;
    CREATE TABLE {s}.blobs (
        thread_id bytea NOT NULL, checkpoint_ns bytea NOT NULL, channel bytea NOT NULL,
        version bytea NOT NULL, value_type text, value bytea,
        added_gen bigint NOT NULL, deleted_gen bigint
    );
    CREATE UNIQUE INDEX blobs_live ON {s}.blobs (thread_id, checkpoint_ns, channel, version)
        WHERE deleted_gen IS NULL;
    CREATE INDEX blobs_dead ON {s}.blobs (deleted_gen) WHERE deleted_gen IS NOT NULL;
    CREATE TABLE {s}.instances (
        id          bigserial PRIMARY KEY,
        host        text NOT NULL,
        pid         integer NOT NULL,
        started_at  timestamptz NOT NULL DEFAULT now(),
        stopped_at  timestamptz
    );
    """,
    # v2: a CRC-32 of each row's payload, so a restore can detect damage without decoding every value
    """
    ALTER TABLE {s}.checkpoints ADD COLUMN crc bigint;
    ALTER TABLE {s}.writes ADD COLUMN crc bigint;
    ALTER TABLE {s}.blobs ADD COLUMN crc bigint;
    """,
]


def row_crc(payload: tuple) -> int:
    """CRC-32 over a row's payload columns, each length-prefixed (None and "" differ)."""
    crc = 0
    for value in payload:
        if value is None:
            crc = zlib.crc32(b"\xff\xff\xff\xff", crc)
            continue
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        crc = zlib.crc32(len(data).to_bytes(4, "little"), crc)
        crc = zlib.crc32(data, crc)
    return crc


# -- key encoding --------------------------------------------------------------------------------


def enc(text: str) -> bytes:
    """Encode a key string exactly (lone surrogates included)."""
    return text.encode("utf-8", "surrogatepass")


def dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def enc_version(version: str | int | float) -> bytes:
    """Encode a channel version with its type, so restore puts back the exact key."""
    if isinstance(version, str):
        return b"s" + enc(version)
    if isinstance(version, bool):
        raise TypeError(f"channel version {version!r} is a bool")
    if isinstance(version, int):
        return b"i" + str(version).encode()
    if isinstance(version, float):
        return b"f" + repr(version).encode()
    raise TypeError(f"channel version {version!r} has unsupported type {type(version).__name__}")


def dec_version(data: bytes) -> str | int | float:
    tag, body = data[:1], data[1:]
    if tag == b"s":
        return dec(body)
    if tag == b"i":
        return int(body)
    if tag == b"f":
        return float(body)
    raise ValueError(f"unknown version tag {tag!r}")


# -- records --------------------------------------------------------------------------------------


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
    """What one backup writes: rows to add, keys to tombstone, threads deleted as a whole."""

    deleted_threads: list[str] = field(default_factory=list)
    # rows are (key..., payload...) tuples in the column order of TABLES, already encoded
    rows: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in TABLES})
    tombstones: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in TABLES})

    @property
    def empty(self) -> bool:
        return not self.deleted_threads and not any(self.rows.values()) and not any(self.tombstones.values())


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


class Store:
    """Reads and writes generations in one PostgreSQL schema through a borrowed pool."""

    def __init__(self, pool: ConnectionPool, schema: str = DEFAULT_SCHEMA) -> None:
        self.pool = pool
        self.schema = schema
        self._s = sql.Identifier(schema)
        self._lock_conn: psycopg.Connection | None = None
        self.instance_id: int | None = None

    # -- schema -------------------------------------------------------------------------------

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    def setup(self) -> None:
        """Create the schema and apply pending migrations (idempotent)."""
        with self.pool.connection() as conn, conn.transaction():
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

    # -- ownership: one live saver per store ------------------------------------------------

    def _lock_key(self) -> sql.Composed:
        return sql.SQL("hashtextextended({}, 0)").format(sql.Literal(f"hybrid_saver:{self.schema}"))

    def acquire(self, conninfo: str) -> None:
        """Take the store's advisory lock on a connection of its own, or raise ``StoreLocked``."""
        if self._lock_conn is not None and not self._lock_conn.closed:
            try:
                self._lock_conn.execute("SELECT 1")
                return
            except psycopg.Error:
                self._drop_lock_conn()
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        got = conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(self._lock_key())).fetchone()
        if not got or not got[0]:
            conn.close()
            holder = self.holder()
            raise StoreLocked(
                f"Another saver already owns the backup store {self.schema!r}"
                + (f" ({holder})" if holder else "")
                + ". Stop that process first, or give this saver another schema."
            )
        self._lock_conn = conn
        if self.instance_id is None:
            row = conn.execute(
                self._q("INSERT INTO {s}.instances (host, pid) VALUES (%s, %s) RETURNING id"),
                (socket.gethostname(), os.getpid()),
            ).fetchone()
            self.instance_id = row[0] if row else None

    def holder(self) -> str | None:
        """Describe the live saver that holds the store, if any."""
        try:
            with self.pool.connection() as conn:
                row = conn.execute(
                    self._q(
                        "SELECT host, pid, started_at FROM {s}.instances "
                        "WHERE stopped_at IS NULL ORDER BY id DESC LIMIT 1"
                    )
                ).fetchone()
        except psycopg.Error:
            return None
        if not row:
            return None
        return f"host {row[0]}, pid {row[1]}, started {row[2]:%Y-%m-%d %H:%M:%S %Z}"

    def is_locked_by_other(self) -> bool:
        """True when a live saver (another session) holds the store's advisory lock."""
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND ((classid::bigint << 32) | objid::bigint) = ({} & x'ffffffffffffffff'::bigint)"
                ).format(self._lock_key())
            ).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        """Mark this instance stopped and release the advisory lock."""
        conn = self._lock_conn
        if conn is None:
            return
        try:
            if self.instance_id is not None:
                conn.execute(self._q("UPDATE {s}.instances SET stopped_at = now() WHERE id = %s"), (self.instance_id,))
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(self._lock_key()))
        except psycopg.Error as exc:
            logger.warning("could not release the store lock cleanly: %s", type(exc).__name__)
        self._drop_lock_conn()

    def _drop_lock_conn(self) -> None:
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except psycopg.Error:
                pass
        self._lock_conn = None

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
        with self.pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [
            Generation(*row[:9], thread_id=dec(row[9]) if row[9] is not None else None)  # type: ignore[arg-type]
            for row in rows
        ]

    def latest_generation(self) -> int | None:
        with self.pool.connection() as conn:
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

    def write_generation(
        self,
        changes: Changes,
        *,
        trigger: str,
        kind: str = "backup",
        force: bool = False,
    ) -> tuple[int | None, int, int]:
        """Write ``changes`` as a new generation in one transaction.

        Returns:
            (generation, rows written, bytes written). The generation is the latest existing one
            (or None) when there is nothing to write and ``force`` is false.
        """
        if changes.empty and not force:
            return self.latest_generation(), 0, 0
        nbytes = 0
        nrows = 0
        touched = sorted(
            {enc(t) for t in changes.deleted_threads}
            | {r[0] for rows in changes.rows.values() for r in rows}
            | {k[0] for keys in changes.tombstones.values() for k in keys}
        )
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                self._q(
                    "SELECT generation + 1, threads, checkpoints FROM {s}.generations ORDER BY generation DESC LIMIT 1"
                )
            ).fetchone()
            gen, threads_before, checkpoints = (int(row[0]), int(row[1]), int(row[2])) if row else (1, 0, 0)
            live_before = self._live_threads(conn, touched)
            conn.execute(
                self._q("INSERT INTO {s}.generations (generation, trigger, kind) VALUES (%s, %s, %s)"),
                (gen, trigger, kind),
            )
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
            # counts follow from the previous generation's and what this one touched: no full scan
            checkpoints += (
                len(changes.rows["checkpoints"])
                - conn.execute(
                    self._q("SELECT count(*) FROM {s}.checkpoints WHERE deleted_gen = %s"), (gen,)
                ).fetchone()[0]
            )
            threads = threads_before - live_before + self._live_threads(conn, touched)
            conn.execute(
                self._q(
                    "UPDATE {s}.generations SET threads = %s, checkpoints = %s, rows_written = %s, "
                    "bytes_written = %s WHERE generation = %s"
                ),
                (threads, checkpoints, nrows, nbytes, gen),
            )
        return gen, nrows, nbytes

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

    def iter_rows(
        self, table: str, generation: int | None = None, thread_id: str | None = None, *, crc: bool = False
    ) -> Iterator[tuple]:
        """Yield the raw rows of ``table`` live at ``generation`` (None: the newest state).

        With ``crc`` each row ends with its stored checksum (None for rows older than schema v2).
        """
        keys, payload, types = TABLES[table]
        if crc:
            payload, types = (*payload, "crc"), (*types, "int8")
        where, params = self._live_at(generation)
        if thread_id is not None:
            where = sql.SQL("{} AND thread_id = %s").format(where)
            params = [*params, enc(thread_id)]
        stmt = sql.SQL("COPY (SELECT {c} FROM {s}.{t} WHERE {w}) TO STDOUT (FORMAT BINARY)").format(
            c=sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload))),
            s=self._s,
            t=sql.Identifier(table),
            w=where,
        )
        with self.pool.connection() as conn, conn.cursor() as cur:
            with cur.copy(stmt, params) as copy:
                copy.set_types(list(types))
                yield from copy.rows()

    def load(self, generation: int | None = None, thread_id: str | None = None, *, verify: bool = False) -> Snapshot:
        """Read the state at ``generation`` (or the newest) into InMemorySaver-shaped dicts.

        With ``verify``, rows whose payload no longer matches its checksum are left out and listed
        in ``snapshot.damaged`` (thread id, what) and ``snapshot.dropped`` (keys per table).
        """
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
        for row in self.iter_rows("checkpoints", generation, thread_id, crc=verify):
            tid, ns, cid, parent, ctype, cdata, mtype, mdata = row[:8]
            if verify and bad(row, 3):
                damaged.append((name(tid), f"checkpoint {dec(cid)}"))
                dropped["checkpoints"].append((name(tid), name(ns), dec(cid)))
                continue
            nbytes += len(cdata or b"") + len(mdata or b"")
            storage.setdefault(name(tid), {}).setdefault(name(ns), {})[dec(cid)] = (
                (ctype, cdata),
                (mtype, mdata),
                dec(parent) if parent is not None else None,
            )
        writes = snap.writes
        for row in self.iter_rows("writes", generation, thread_id, crc=verify):
            tid, ns, cid, task, idx, channel, vtype, value, path = row[:9]
            if verify and bad(row, 5):
                damaged.append((name(tid), f"write {dec(task)}/{idx} of checkpoint {dec(cid)}"))
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
        for row in self.iter_rows("blobs", generation, thread_id, crc=verify):
            tid, ns, channel, version, vtype, value = row[:6]
            key = (name(tid), name(ns), name(channel), dec_version(version))
            if verify and bad(row, 4):
                damaged.append((key[0], f"channel value {key[2]}@{key[3]}"))
                dropped["blobs"].append(key)
                continue
            nbytes += len(value or b"")
            blobs[key] = (vtype, value)
        snap.bytes = nbytes
        snap.damaged = damaged
        snap.dropped = dropped
        return snap

    def has_thread(self, generation: int, thread_id: str) -> bool:
        where, params = self._live_at(generation)
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {s}.checkpoints WHERE {w} AND thread_id = %s)").format(
                    s=self._s, w=where
                ),
                [*params, enc(thread_id)],
            ).fetchone()
        return bool(row and row[0])

    def thread_counts(self, generation: int | None = None) -> dict[str, tuple[int, str]]:
        """thread_id -> (checkpoints, newest checkpoint id) at ``generation``."""
        where, params = self._live_at(generation)
        with self.pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT thread_id, count(*), max(checkpoint_id) FROM {s}.checkpoints WHERE {w} GROUP BY thread_id"
                ).format(s=self._s, w=where),
                params,
            ).fetchall()
        return {dec(r[0]): (int(r[1]), dec(r[2])) for r in rows}

    def restore_generation(self, generation: int, *, trigger: str, thread_id: str | None = None) -> int:
        """Commit the state of ``generation`` (all threads or one) as a new generation, server-side.

        Rows live now but not at ``generation`` are tombstoned; rows live then but deleted since are
        copied forward. Returns the new generation.
        """
        self.get_generation(generation)
        if thread_id is not None and not self.has_thread(generation, thread_id):
            raise ThreadNotFound(
                f"Thread {thread_id!r} is not in generation {generation}. "
                "Pick a generation that holds it (see the Restore page or `python -m persistence generations`)."
            )
        scope = sql.SQL("")
        scope_params: list[Any] = []
        if thread_id is not None:
            scope = sql.SQL(" AND thread_id = %s")
            scope_params = [enc(thread_id)]
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(self._q("SELECT coalesce(max(generation), 0) + 1 FROM {s}.generations")).fetchone()
            new = int(row[0]) if row else 1
            conn.execute(
                self._q(
                    "INSERT INTO {s}.generations (generation, trigger, kind, restored_from, thread_id) "
                    "VALUES (%s, %s, 'restore', %s, %s)"
                ),
                (new, trigger, generation, enc(thread_id) if thread_id is not None else None),
            )
            nrows = 0
            for table, (keys, payload, _types) in TABLES.items():
                cur = conn.execute(
                    sql.SQL(
                        "UPDATE {s}.{t} SET deleted_gen = %s WHERE deleted_gen IS NULL AND added_gen > %s{scope}"
                    ).format(s=self._s, t=sql.Identifier(table), scope=scope),
                    [new, generation, *scope_params],
                )
                nrows += max(cur.rowcount, 0)
                cols = sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload, "crc")))
                cur = conn.execute(
                    sql.SQL(
                        "INSERT INTO {s}.{t} ({c}, added_gen) SELECT {c}, %s FROM {s}.{t} "
                        "WHERE added_gen <= %s AND deleted_gen > %s AND deleted_gen <> %s{scope}"
                    ).format(s=self._s, t=sql.Identifier(table), c=cols, scope=scope),
                    [new, generation, generation, new, *scope_params],
                )
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

    # -- retention ----------------------------------------------------------------------------

    def apply_retention(self, keep: int) -> int:
        """Keep the newest ``keep`` generations; delete rows no kept generation needs.

        Returns the number of generations dropped.
        """
        if keep < 1:
            raise ValueError(f"retention must keep at least 1 generation, got {keep}")
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                self._q("SELECT generation FROM {s}.generations ORDER BY generation DESC OFFSET %s LIMIT 1"),
                (keep - 1,),
            ).fetchone()
            if not row:
                return 0
            oldest = int(row[0])
            conn.execute(self._q("DELETE FROM {s}.runs WHERE id <= (SELECT max(id) FROM {s}.runs) - %s"), (MAX_RUNS,))
            cur = conn.execute(self._q("DELETE FROM {s}.generations WHERE generation < %s"), (oldest,))
            dropped = max(cur.rowcount, 0)
            if dropped:
                for table in TABLES:
                    conn.execute(
                        sql.SQL("DELETE FROM {s}.{t} WHERE deleted_gen IS NOT NULL AND deleted_gen <= %s").format(
                            s=self._s, t=sql.Identifier(table)
                        ),
                        (oldest,),
                    )
        return dropped

    # -- runs ---------------------------------------------------------------------------------

    def log_runs(self, runs: Iterable[dict[str, Any]]) -> None:
        """Insert run records (dicts with the runs table's columns)."""
        runs = list(runs)
        if not runs:
            return
        cols = (
            "trigger",
            "started_at",
            "finished_at",
            "generation",
            "rows_written",
            "bytes_written",
            "lag_seconds",
            "pending",
            "threads",
            "checkpoints",
            "error",
            "request_id",
        )
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {s}.runs ({c}) VALUES ({v})").format(
                    s=self._s,
                    c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                ),
                [tuple(r.get(c) for c in cols) for r in runs],
            )

    def runs(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest ``limit`` runs, newest first."""
        with self.pool.connection() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(self._q("SELECT * FROM {s}.runs ORDER BY id DESC LIMIT %s"), (limit,))
            return list(cur.fetchall())

    def database_size(self) -> int:
        """Bytes used by this store's tables and indexes."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()
        return int(row[0]) if row else 0


__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "Changes",
    "Generation",
    "Snapshot",
    "Store",
    "dec",
    "dec_version",
    "enc",
    "enc_version",
]
