"""The runs table: every backup run of every member (failed ones too), with empty scheduled runs
folded into one row. A part of the :class:`~persistence.store.Store`: ``store.runs``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.rows import dict_row

from persistence.db import pool_connection

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from persistence.store.place import Place


class RunLog:
    """Writing and reading the runs table of the store at ``place``."""

    RUN_COLUMNS = (
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
        "instance_id",
        "folded",
        "notes",
    )

    def __init__(self, place: Place) -> None:
        self._place = place
        self._s = place.ident
        self._q = place.q

    def log_runs(self, runs: Iterable[dict[str, Any]]) -> None:
        """Insert run records (dicts with the runs table's columns)."""
        runs = list(runs)
        if not runs:
            return
        cols = self.RUN_COLUMNS
        with pool_connection(self._place.pool) as conn, conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {s}.runs ({c}) VALUES ({v})").format(
                    s=self._s,
                    c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                ),
                [tuple(r.get(c) for c in cols) for r in runs],
            )

    def log_run(self, run: dict[str, Any]) -> int:
        """Insert one run record and return its id."""
        cols = self.RUN_COLUMNS
        with pool_connection(self._place.pool) as conn:
            row = conn.execute(
                sql.SQL("INSERT INTO {s}.runs ({c}) VALUES ({v}) RETURNING id").format(
                    s=self._s,
                    c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                ),
                [run.get(c) for c in cols],
            ).fetchone()
        return int(row[0]) if row else 0

    def fold_run(self, run_id: int, finished_at: datetime) -> bool:
        """Count one more run with nothing to write into the row ``run_id``; False if it is gone."""
        with pool_connection(self._place.pool) as conn:
            cur = conn.execute(
                self._q("UPDATE {s}.runs SET folded = folded + 1, finished_at = %s WHERE id = %s"),
                (finished_at, run_id),
            )
            return cur.rowcount > 0

    def runs(self, limit: int = 500, *, instance_id: int | None = None, empty: bool = True) -> list[dict[str, Any]]:
        """The newest ``limit`` runs, newest first (of one member when ``instance_id`` is given;
        without runs that had nothing to write unless ``empty``)."""
        where = [sql.SQL("true")]
        params: list[Any] = []
        if instance_id is not None:
            where.append(sql.SQL("instance_id = %s"))
            params.append(instance_id)
        if not empty:
            where.append(sql.SQL("(generation IS NOT NULL OR error IS NOT NULL)"))
        with pool_connection(self._place.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {s}.runs WHERE {w} ORDER BY id DESC LIMIT %s").format(
                    s=self._s, w=sql.SQL(" AND ").join(where)
                ),
                [*params, limit],
            )
            return list(cur.fetchall())

    def database_size(self) -> int:
        """Bytes used by this store's tables and indexes."""
        with pool_connection(self._place.pool) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self._place.schema,),
            ).fetchone()
        return int(row[0]) if row else 0


__all__ = ["RunLog"]
