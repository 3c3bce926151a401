"""The link to PostgreSQL: the saver's pool, whether the database is known to be down, and healing.

After a database error the link is *failed*: callers that would wait for the pool's timeout ask
:meth:`DatabaseLink.reachable` first, which checks the server directly at most once a second and,
when it answers, gives an owned pool a fresh start (a pool whose connections died reconnects with
growing back-off; a new pool connects at once). Objects that hold the pool (the store, the
membership) are told of the new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from persistence.db import DB_ERRORS, check_connection, open_pool, scrub
from persistence.errors import DatabaseUnavailable, HybridSaverError

T = TypeVar("T")
#: seconds between two checks of a database that failed, outside backups
HEAL_EVERY = 1.0


class PoolUser(Protocol):
    pool: ConnectionPool


class DatabaseLink:
    """One saver's connection state. ``attached``: the store is set up and this member joined."""

    def __init__(self, pool: ConnectionPool, conninfo: str, users: Sequence[PoolUser], *, owns_pool: bool) -> None:
        self.pool = pool
        self.conninfo = conninfo
        self.owns_pool = owns_pool
        self.attached = False
        self.attach_error: str | None = None
        self._users = list(users)
        self._failed = False
        self._last_heal = 0.0
        self._heal_lock = threading.Lock()

    @property
    def failed(self) -> bool:
        """A query met a database error and no check has found the server back since."""
        return self._failed

    def mark_failed(self, failed: bool = True) -> None:
        self._failed = failed

    def scrub(self, text: str) -> str:
        """``text`` without the URL's password."""
        return scrub(text, self.conninfo)

    def reachable(self) -> bool:
        """False while PostgreSQL is known to be down; after an error, check again at most once a second."""
        if not self._failed:
            return True
        now = time.monotonic()
        if now - self._last_heal < HEAL_EVERY:
            return False
        self._last_heal = now
        try:
            self.heal()
        except (*DB_ERRORS, psycopg.Error, HybridSaverError):
            return False
        return True

    def heal(self) -> None:
        """After a database error: check the server directly, and give an owned pool a fresh start."""
        with self._heal_lock:
            if not self._failed:
                return
            check_connection(self.conninfo)
            if self.owns_pool:
                old = self.pool
                self.pool = open_pool(self.conninfo, max_size=old.max_size)
                for user in self._users:
                    user.pool = self.pool
                old.close(timeout=1.0)
            self._failed = False

    def ready(self, attach: Callable[[], None]) -> str | None:
        """Heal after a database error and ``attach`` when not attached; the error if that fails."""
        if not (self._failed or not self.attached):
            return None
        try:
            if self._failed:
                self.heal()
            if not self.attached:
                attach()
        except (*DB_ERRORS, psycopg.Error, HybridSaverError) as exc:
            error = self.scrub(str(exc))
            if not self.attached:
                self.attach_error = error
            return error
        return None

    def ask(self, read: Callable[[], T], unreachable: str) -> T:
        """Run ``read`` (a query a caller waits for); while PostgreSQL is down, raise
        ``DatabaseUnavailable(unreachable)`` at once instead of waiting for the pool's timeout."""
        if self.attached and self.reachable():
            try:
                return read()
            except DB_ERRORS:
                self._failed = True
        raise DatabaseUnavailable(unreachable)


__all__ = ["HEAL_EVERY", "DatabaseLink", "PoolUser"]
