"""Checks of a URL before the saver relies on it: that it gives real sessions (not a transaction-mode
pooler, and enough of them for one member), and that it reaches a primary, not a read-only standby.
Each says in a sentence what it found and the fix, within seconds, instead of a hang or a late error."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from persistence.db import CONNECT_TIMEOUT, describe_url, pool_connection, pool_conninfo
from persistence.errors import DatabaseUnavailable

#: seconds the pooler probe waits for a session before it says why it got none
PROBE_WAIT = 3.0


def _with_timeout(call: Any, seconds: float) -> tuple[bool, Any]:
    """Run ``call()`` in a thread for at most ``seconds``: (finished, result or exception)."""
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(_capture(call)), daemon=True)
    worker.start()
    worker.join(seconds)
    return (bool(box), box[0] if box else None)


def _capture(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - handed back to the caller
        return exc


def check_sessions(url: str, *, needed: int) -> None:
    """Make sure ``url`` gives real sessions: a connection keeps its server session from one statement
    to the next while another one holds a transaction open. A transaction-mode pooler (PgBouncer
    ``pool_mode=transaction``, Supabase's port 6543, Neon's ``-pooler`` host) fails this, and so would
    the saver's lease, LISTEN and restore lock; a session-mode pooler without enough server connections
    makes the second connection wait. Both are said in seconds, with the fix, instead of a hang.

    Raises:
        DatabaseUnavailable: the URL cannot carry what one member needs (``needed`` sessions).
    """
    opened: list[psycopg.Connection] = []
    guard = threading.Lock()
    finished = threading.Event()

    def connect() -> psycopg.Connection:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, prepare_threshold=None)
        with guard:
            if finished.is_set():  # a connection that came after the check gave up: not kept
                conn.close()
                raise DatabaseUnavailable("the session check ended before this connection came")
            opened.append(conn)
        return conn

    try:
        done, a = _with_timeout(lambda: _first_pid(connect()), PROBE_WAIT)
        if not done or isinstance(a, Exception):
            return  # unreachable or slow: check_connection says so in its own words
        conn_a, pid_a = a
        too_few = DatabaseUnavailable(
            f"{describe_url(url)} gave one of the saver's connections no server session within {PROBE_WAIT:g} s: "
            f"it is a connection pooler in session mode with too few server connections. One member needs {needed} "
            "sessions (its pool, the lease, LISTEN, and one more during a restore): raise the pooler's pool size "
            "(PgBouncer: default_pool_size) or lower pool_size, or connect to PostgreSQL directly."
        )
        for _ in range(2):
            # another client holds a transaction open (a pooler hands it the session A just used) ...
            done, held = _with_timeout(lambda: _hold_transaction(connect()), PROBE_WAIT)
            if not done:
                raise too_few
            if isinstance(held, Exception):
                return
            # ... and A's next statement must still run in A's session
            done, again = _with_timeout(lambda: conn_a.execute("SELECT pg_backend_pid()").fetchone(), PROBE_WAIT)
            if not done or isinstance(again, Exception) or int(again[0]) != pid_a:
                raise DatabaseUnavailable(
                    f"{describe_url(url)} is a connection pooler in transaction mode: one connection's statements "
                    "run on different server sessions (PgBouncer pool_mode=transaction, Supabase's port 6543, "
                    "Neon's '-pooler' host). The saver's lease, LISTEN/NOTIFY and restore lock need a session of "
                    "their own. Use the direct connection string (Supabase: port 5432, 'Direct connection'; Neon: "
                    "the host without '-pooler') or a pooler in session mode (PgBouncer pool_mode=session)."
                )
        # the rest of the member's sessions, at once: each must get a server session within the wait
        rest = max(0, needed - len(opened))
        done, got = _with_timeout(lambda: _all_at_once([lambda: _first_pid(connect())] * rest), PROBE_WAIT)
        if not done:
            raise too_few
    finally:
        with guard:
            finished.set()
            leftover = list(opened)
        for conn in leftover:
            _with_timeout(conn.close, 1.0)


def refuse_standby(pool: ConnectionPool) -> None:
    """Raise when ``pool`` reaches a read-only standby: the saver writes, and a standby cannot.

    Raises:
        DatabaseUnavailable: the server is in recovery (a streaming standby).
    """
    with pool_connection(pool) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if row and row[0]:
        raise DatabaseUnavailable(
            f"{describe_url(pool_conninfo(pool))} is a read-only standby (in recovery); the saver writes to the "
            "primary. Point DATABASE_URL at the primary, or list every host with target_session_attrs=read-write "
            "(postgresql://user@host1,host2/db?target_session_attrs=read-write) so a failover is followed."
        )


def _all_at_once(calls: list[Any]) -> list[Any]:
    """Run ``calls`` in threads at once; their results (or exceptions), after all of them ended."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = _capture(calls[i])

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


def _first_pid(conn: psycopg.Connection) -> tuple[psycopg.Connection, int]:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    return conn, int(row[0]) if row else 0


def _hold_transaction(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("BEGIN")
    conn.execute("SELECT pg_backend_pid()")
    return conn


__all__ = ["PROBE_WAIT", "check_sessions", "refuse_standby"]
