"""The store's thread directory: every thread with a live summary (as of its last backup) or an
owner (claimed by a member, perhaps not backed up yet), searched, sorted, counted and paged by
PostgreSQL. A part of the :class:`~persistence.store.Store`: ``store.directory``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.rows import dict_row

from persistence.db import pool_connection
from persistence.store.rows import live_at
from persistence.store.schema import dec, enc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from persistence.store.place import Place


class ThreadDirectory:
    """Queries over the summaries and owners tables of the store at ``place``."""

    #: columns :meth:`thread_page` sorts by
    SORTS = ("updated_at", "checkpoints", "bytes", "title", "thread_id")

    def __init__(self, place: Place) -> None:
        self._place = place
        self._s = place.ident
        self._q = place.q

    def thread_page(
        self,
        *,
        query: str = "",
        sort: str = "updated_at",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        thread_ids: Sequence[str] | None = None,
        hide_claims_of: int | None = None,
        unless: Sequence[str] = (),
        unsaved: Sequence[str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the store's threads, searched, sorted and counted by PostgreSQL.

        Every thread with a live summary (as of its last backup) or an owner (claimed, perhaps not
        backed up yet) is listed. ``query`` matches the title and the message text (any case) and
        the thread id. Returns (rows, total matching); each row has ``thread_id``, ``title``,
        ``checkpoints``, ``bytes``, ``updated_at``, ``newest_checkpoint``, ``snippet`` (where the
        query matched in the text), ``owner`` (member id or None) and ``backed_up`` (has a summary).

        With ``unsaved`` (the threads some member holds changes of that were never backed up), a
        thread without a summary is listed only when it is one of them: an owner row alone is a
        claim (a read of an unknown thread), not a thread.
        """
        if sort not in self.SORTS:
            raise ValueError(f"sort must be one of {', '.join(self.SORTS)}, got {sort!r}")
        where = [sql.SQL("true")]
        params: list[Any] = []
        text = query.strip()
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            if "\x00" in text:  # no title or text holds a NUL (PostgreSQL text cannot): ids only
                where.append(sql.SQL("position(%s IN t.thread_id) > 0"))
                params.append(enc(text))
            else:
                where.append(sql.SQL("(s.title ILIKE %s OR s.content ILIKE %s OR position(%s IN t.thread_id) > 0)"))
                params += [pattern, pattern, enc(text)]
        if thread_ids is not None:
            where.append(sql.SQL("t.thread_id = ANY(%s)"))
            params.append([enc(t) for t in thread_ids])
        if hide_claims_of is not None:
            where.append(sql.SQL("(s.thread_id IS NOT NULL OR o.owner IS DISTINCT FROM %s OR t.thread_id = ANY(%s))"))
            params += [hide_claims_of, [enc(t) for t in unless]]
        if unsaved is not None:
            where.append(sql.SQL("(s.thread_id IS NOT NULL OR t.thread_id = ANY(%s))"))
            params.append([enc(t) for t in unsaved])
        order = sql.SQL("{} {} NULLS LAST, t.thread_id").format(
            sql.SQL("t.thread_id") if sort == "thread_id" else sql.Identifier("s", sort),
            sql.SQL("DESC" if descending else "ASC"),
        )
        base = sql.SQL(
            "FROM (SELECT thread_id FROM {s}.summaries WHERE deleted_gen IS NULL "
            "UNION SELECT thread_id FROM {s}.owners) t "
            "LEFT JOIN {s}.summaries s ON s.thread_id = t.thread_id AND s.deleted_gen IS NULL "
            "LEFT JOIN {s}.owners o ON o.thread_id = t.thread_id WHERE {w}"
        ).format(s=self._s, w=sql.SQL(" AND ").join(where))
        snippet = sql.SQL("NULL")
        snippet_params: list[Any] = []
        if text and "\x00" not in text:
            snippet = sql.SQL(
                "CASE WHEN strpos(lower(s.content), lower(%s)) > 0 THEN "
                "substr(s.content, greatest(strpos(lower(s.content), lower(%s)) - 40, 1), 120) END"
            )
            snippet_params = [text, text]
        with pool_connection(self._place.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT count(*) AS n ") + base, params)
            counted = cur.fetchone()
            total = int(counted["n"]) if counted else 0
            cur.execute(
                sql.SQL(
                    "SELECT t.thread_id, s.title, s.checkpoints, s.bytes, s.updated_at, s.newest_checkpoint, "
                    "{snippet} AS snippet, o.owner, s.thread_id IS NOT NULL AS backed_up "
                ).format(snippet=snippet)
                + base
                + sql.SQL(" ORDER BY {} OFFSET %s LIMIT %s").format(order),
                [*snippet_params, *params, max(0, int(offset)), max(0, int(limit))],
            )
            rows = cur.fetchall()
        for row in rows:
            row["thread_id"] = dec(row["thread_id"])
            if row["newest_checkpoint"] is not None:
                row["newest_checkpoint"] = dec(row["newest_checkpoint"])
        return rows, total

    def generation_threads(
        self, generation: int, *, query: str = "", offset: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the threads of ``generation`` (its summaries), searched, sorted (most recently
        updated first) and counted by PostgreSQL: a thread picker that reads no thread's checkpoints.

        ``query`` matches the title and the message text (any case) and the thread id. Returns (rows,
        total matching); each row has ``thread_id``, ``title``, ``checkpoints`` and ``updated_at`` as of
        that generation.
        """
        where, params = live_at(generation)
        text = query.strip()
        if text:
            if "\x00" in text:  # no title or text holds a NUL (PostgreSQL text cannot): ids only
                where = sql.SQL("{} AND position(%s IN thread_id) > 0").format(where)
                params = [*params, enc(text)]
            else:
                pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where = sql.SQL("{} AND (title ILIKE %s OR content ILIKE %s OR position(%s IN thread_id) > 0)").format(
                    where
                )
                params = [*params, pattern, pattern, enc(text)]
        base = sql.SQL("FROM {s}.summaries WHERE {w}").format(s=self._s, w=where)
        with pool_connection(self._place.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT count(*) AS n ") + base, params)
            counted = cur.fetchone()
            total = int(counted["n"]) if counted else 0
            cur.execute(
                sql.SQL("SELECT thread_id, title, checkpoints, updated_at ")
                + base
                + sql.SQL(" ORDER BY updated_at DESC NULLS LAST, thread_id OFFSET %s LIMIT %s"),
                [*params, max(0, int(offset)), max(0, int(limit))],
            )
            rows = cur.fetchall()
        for row in rows:
            row["thread_id"] = dec(row["thread_id"])
        return rows, total

    def backed_up(self, thread_id: str) -> tuple[int, datetime] | None:
        """(generation, time) of the backup that wrote ``thread_id``'s live summary, or None when its
        newest state was never backed up (or it was deleted)."""
        with pool_connection(self._place.pool) as conn:
            row = conn.execute(
                self._q(
                    "SELECT s.added_gen, g.taken_at FROM {s}.summaries s JOIN {s}.generations g "
                    "ON g.generation = s.added_gen WHERE s.thread_id = %s AND s.deleted_gen IS NULL"
                ),
                (enc(thread_id),),
            ).fetchone()
        return (int(row[0]), row[1]) if row else None

    def store_figures(self) -> dict[str, int]:
        """Threads, checkpoints and bytes of the newest state (from the summaries)."""
        with pool_connection(self._place.pool) as conn:
            row = conn.execute(
                self._q(
                    "SELECT count(*), coalesce(sum(checkpoints), 0), coalesce(sum(bytes), 0) "
                    "FROM {s}.summaries WHERE deleted_gen IS NULL"
                )
            ).fetchone()
        return {"threads": int(row[0]), "checkpoints": int(row[1]), "bytes": int(row[2])} if row else {}

    # -- encryption ---------------------------------------------------------------------------

    def encrypted_type(self) -> str | None:
        """The type tag of an encrypted checkpoint in the store (``msgpack+aes``), or None when the
        newest checkpoints of its threads are in clear (one is enough: a store is written by one serde)."""
        with pool_connection(self._place.pool) as conn:
            row = conn.execute(
                self._q(
                    "SELECT checkpoint_type FROM (SELECT checkpoint_type FROM {s}.checkpoints "
                    "WHERE deleted_gen IS NULL ORDER BY added_gen DESC LIMIT 100) newest "
                    "WHERE position('+' IN checkpoint_type) > 0 LIMIT 1"
                )
            ).fetchone()
        return str(row[0]) if row else None

    def forget_text(self) -> int:
        """Clear the title and message text of every summary, kept ones included (a store whose savers
        encrypt keeps nothing of a conversation in clear). Returns the summaries cleared."""
        with pool_connection(self._place.pool) as conn:
            cur = conn.execute(
                self._q(
                    "UPDATE {s}.summaries SET title = NULL, content = NULL "
                    "WHERE title IS NOT NULL OR content IS NOT NULL"
                )
            )
            return max(cur.rowcount, 0)


__all__ = ["ThreadDirectory"]
