"""Where a store's rows live: the pool connections are borrowed from and the schema queried.

The :class:`~persistence.store.Store` and its parts share one :class:`Place`, so a pool swapped after
an outage (``store.pool = new_pool``) is the pool every part borrows from next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg import sql

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool


class Place:
    """A borrowed pool and a schema name, with the schema's identifier for composed SQL."""

    __slots__ = ("ident", "pool", "schema")

    def __init__(self, pool: ConnectionPool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self.ident = sql.Identifier(schema)

    def q(self, text: str) -> sql.Composed:
        """``text`` as SQL with ``{s}`` replaced by the quoted schema name."""
        return sql.SQL(text).format(s=self.ident)


__all__ = ["Place"]
