"""The source of an import: a LangGraph ``PostgresSaver`` database, read and never written.

Checkpoints come from PostgresSaver's own ``list()`` (exactly as LangGraph sees them); the writes' task
paths and indices from one query; a thread is read in one read-only REPEATABLE READ transaction
(:meth:`Source.snapshot`), so it is consistent even while an app still writes to the source. Before
anything is read, the source is checked: the package is installed, the database answers, the tables
are there, and it is not a HybridSaver store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from persistence.db import CONNECT_TIMEOUT, describe_url, scrub
from persistence.errors import HybridSaverError

#: the package that provides ``PostgresSaver``
PACKAGE = "langgraph-checkpoint-postgres"
#: PostgresSaver's tables and the columns this import reads
SOURCE_TABLES = {
    "checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "checkpoint", "metadata"),
    "checkpoint_blobs": ("thread_id", "checkpoint_ns", "channel", "version", "type", "blob"),
    "checkpoint_writes": ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "task_path", "idx", "channel"),
}


class SourceUnreadable(HybridSaverError):
    """The PostgresSaver source cannot be read: package missing, database unreachable, no tables, or
    the source is a HybridSaver store (this one, even)."""


def _postgres_saver() -> Any:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise SourceUnreadable(
            f"Importing from PostgresSaver needs LangGraph's PostgresSaver, which is not installed: "
            f"pip install {PACKAGE} (or the extra: pip install 'hybrid-saver[postgres-saver]')"
        ) from None
    return PostgresSaver


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class Source:
    """The PostgresSaver database: one connection, read-only snapshots, PostgresSaver's own reads."""

    def __init__(self, url: str, schema: str | None, serde: SerializerProtocol | None, own_store: str) -> None:
        saver_class = _postgres_saver()
        self.url = url
        self.own_store = own_store
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise SourceUnreadable(
                f"The source URL is not a valid PostgreSQL connection string ({_first_line(scrub(str(exc), url))}). "
                "Give the PostgresSaver's database as postgresql://user:password@host:5432/dbname."
            ) from None
        try:
            self.conn = psycopg.connect(
                url,
                autocommit=True,
                prepare_threshold=0,
                row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="hybrid-saver import",
            )
        except psycopg.Error as exc:
            reason = _first_line(scrub(str(exc), url)) or type(exc).__name__
            raise SourceUnreadable(
                f"Cannot connect to the PostgresSaver source, {describe_url(url)}: {reason}. Check that the server "
                "is reachable, the database exists and the credentials are right, then fix the source URL."
            ) from None
        try:
            self.schema = self._check(schema)
        except BaseException:
            self.conn.close()
            raise
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        self.saver = saver_class(self.conn, serde=serde)

    def _check(self, schema: str | None) -> str:
        """Point the search path at ``schema`` and find PostgresSaver's tables; return their schema."""
        where = describe_url(self.url)
        conn = self.conn
        if schema is not None:
            row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if row is None:
                raise SourceUnreadable(
                    f"The source {where} has no schema {schema!r}; give the schema PostgresSaver's tables "
                    "are in with --source-schema (or leave it out for the URL's default search_path)."
                )
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        found: dict[str, str] = {}
        for table in SOURCE_TABLES:
            row = conn.execute(
                "SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(%s)",
                (table,),
            ).fetchone()
            if row is not None:
                found[table] = row["schema"]
        current = conn.execute("SELECT array_to_string(current_schemas(false), ', ') AS p").fetchone()
        assert current is not None  # a SELECT without FROM returns one row
        path = current["p"] or "(empty)"
        store_id = self._hybrid_store(found["checkpoints"]) if "checkpoints" in found else None
        if store_id is not None:
            what = "the target store itself" if store_id == self.own_store else "a HybridSaver store"
            raise SourceUnreadable(
                f"Schema {found['checkpoints']!r} of the source {where} is {what}, not a PostgresSaver database: "
                "give the database (and --source-schema) where PostgresSaver.setup() created its tables "
                "checkpoints, checkpoint_blobs and checkpoint_writes."
            )
        missing = [t for t in SOURCE_TABLES if t not in found]
        if missing:
            raise SourceUnreadable(
                f"The source {where} has no PostgresSaver table{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} in its search_path ({path}). Give the database PostgresSaver.setup() ran on, "
                "and --source-schema if its tables are in another schema."
            )
        schemas = set(found.values())
        if len(schemas) > 1:
            raise SourceUnreadable(
                f"PostgresSaver's tables of the source {where} are spread over schemas {', '.join(sorted(schemas))}; "
                "name the one that holds all three with --source-schema."
            )
        (home,) = schemas
        for table, columns in SOURCE_TABLES.items():
            rows = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (f'"{home}"."{table}"',),
            ).fetchall()
            lacking = [c for c in columns if c not in {r["attname"] for r in rows}]
            if lacking:
                raise SourceUnreadable(
                    f"Table {home}.{table} of the source {where} lacks column(s) {', '.join(lacking)}: it was made by an "
                    f"older PostgresSaver. Run PostgresSaver.setup() of {PACKAGE} 3.x on it once (it only adds "
                    "columns and indexes), or give the right database."
                )
        return home

    def _hybrid_store(self, schema: str) -> str | None:
        """The store id of the HybridSaver store in ``schema`` ("" when unreadable), or None when it is none."""
        row = self.conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL AS hybrid",
            (f'"{schema}".generations', f'"{schema}".identity'),
        ).fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        if not row["hybrid"]:
            return None
        try:
            found = self.conn.execute(
                sql.SQL("SELECT store_id::text AS id FROM {}.identity LIMIT 1").format(sql.Identifier(schema))
            ).fetchone()
        except psycopg.Error:
            return ""
        return found["id"] if found else ""

    def close(self) -> None:
        self.conn.close()

    # -- reads ----------------------------------------------------------------------------------

    def thread_ids(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id").fetchall()
        return [r["thread_id"] for r in rows]

    def present(self, thread_ids: Sequence[str]) -> set[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id = ANY(%s)", (list(thread_ids),)
        ).fetchall()
        return {r["thread_id"] for r in rows}

    def count(self, thread_ids: Sequence[str] | None) -> int:
        if thread_ids is None:
            row = self.conn.execute("SELECT count(*) AS n FROM checkpoints").fetchone()
        else:
            row = self.conn.execute(
                "SELECT count(*) AS n FROM checkpoints WHERE thread_id = ANY(%s)", (list(thread_ids),)
            ).fetchone()
        assert row is not None  # an aggregate without GROUP BY returns one row
        return int(row["n"])

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read-only REPEATABLE READ transaction: every read inside sees the same state."""
        with self.conn.transaction():
            yield

    def checkpoint_keys(self, thread_id: str) -> list[tuple[str, str, str | None]]:
        """(ns, id, parent) of every checkpoint of the thread, oldest first (in the server's order)."""
        rows = self.conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id FROM checkpoints WHERE thread_id = %s "
            "ORDER BY checkpoint_id, checkpoint_ns",
            (thread_id,),
        ).fetchall()
        return [(r["checkpoint_ns"], r["checkpoint_id"], r["parent_checkpoint_id"]) for r in rows]

    def write_keys(self, thread_id: str) -> set[tuple[str, str, str, int]]:
        rows = self.conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, task_id, idx FROM checkpoint_writes WHERE thread_id = %s",
            (thread_id,),
        ).fetchall()
        return {(r["checkpoint_ns"], r["checkpoint_id"], r["task_id"], r["idx"]) for r in rows}

    def page(self, thread_id: str, before: str | None, limit: int) -> list[Any]:
        """The ``limit`` newest checkpoint tuples older than ``before`` (all namespaces), as PostgresSaver lists them."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        bound: RunnableConfig | None = {"configurable": {"checkpoint_id": before}} if before is not None else None
        return list(self.saver.list(config, before=bound, limit=limit))

    def writes(self, thread_id: str, checkpoint_ids: Sequence[str]) -> list[dict[str, Any]]:
        return self.conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob FROM checkpoint_writes "
            "WHERE thread_id = %s AND checkpoint_id = ANY(%s)",
            (thread_id, list(checkpoint_ids)),
        ).fetchall()

    def load(self, row: dict[str, Any]) -> Any:
        return self.saver.serde.loads_typed((row["type"], row["blob"]))


__all__ = ["PACKAGE", "SOURCE_TABLES", "Source", "SourceUnreadable"]
