"""This member's lease: how long the store counts it alive, renewed on a connection of its own.

Liveness is a lease, not a connection. A member is alive while its ``instances.lease_until`` (set by
the server's clock) is in the future; another member takes its threads only once the lease has
surely expired. The member itself acknowledges a write only while its own deadline has not passed:
``t0 + lease - margin`` on its monotonic clock, where ``t0`` was read *before* the renewal was sent,
so the member always stops before the server's view of its lease ends (Kleppmann, "How to do
distributed locking"; fencing tokens stay as the second line). A connection cut while the process
lives (``pg_terminate_backend``, an idle timeout, a proxy restart) costs nothing: the renewal thread
sees the socket close, reconnects and renews within the same lease. A ``kill -9`` costs at most one
lease of takeover time; a clean stop hands over at once.

The connection also holds the member's session advisory lock, which older members of the same store
read as its liveness.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from persistence.db import connect_session, scrub
from persistence.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

#: seconds a member's lease runs from its last renewal (``lease_seconds`` of the saver)
DEFAULT_LEASE = 4.0
#: renewals per lease: a member stops serving only after this many renewals in a row failed
RENEWALS_PER_LEASE = 4
#: seconds a caller waits for the lease connection while another renewal is under way
IO_WAIT = 1.0


class LeaseExpired(DatabaseUnavailable):
    """This member cannot prove its lease, so it may not acknowledge writes (retry: it may recover)."""


class Lease:
    """The lease of one member (``instance_id`` once it joined), renewed in a daemon thread."""

    def __init__(self, conninfo: str, schema: str, lock_key: Callable[[], int], seconds: float = DEFAULT_LEASE) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0.5 <= seconds <= 3600:
            raise ValueError(f"lease_seconds={seconds!r}: give a number of seconds between 0.5 and 3600.")
        self.conninfo = conninfo
        self.seconds = float(seconds)
        #: the member stops this long before the server's view of its lease ends (scheduling slack)
        self.margin = min(1.0, max(0.1, self.seconds * 0.1))
        self._s = sql.Identifier(schema)
        self._instances = '"' + schema.replace('"', '""') + '".instances'
        self._row: tuple[str, int, str | None] = ("", 0, None)
        self._lock_key = lock_key
        self.instance_id: int | None = None
        #: monotonic time until which the lease is certainly valid in the store (read it, never set it)
        self.deadline = 0.0
        self._conn: psycopg.Connection | None = None
        self._locked = False
        #: the lease connection was found closed (logged once it is renewed again)
        self._cut = False
        #: the lease was renewed after it lapsed, and the threads others took are not dropped yet
        self._lapsed = False
        self._io = threading.Lock()
        self._pending_deadline = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: a pipe whose write end wakes the renewal thread when the lease is released
        self._wake: tuple[int, int] | None = None
        #: called (from the renewal thread or a writer) when a renewal succeeds after the lease lapsed,
        #: or when the store no longer counts this member: it checks which threads it still owns
        self.on_regained: Callable[[], None] | None = None
        #: renewals that found the member stopped in the store (reaped) and joined it again
        self.rejoins = 0
        self.reconnects = 0

    # -- state --------------------------------------------------------------------------------

    def valid(self) -> bool:
        """The lease is certainly still valid in the store (a clock read, no round trip)."""
        return time.monotonic() < self.deadline

    def check(self) -> None:
        """Raise :class:`LeaseExpired` unless the lease is certainly valid (no round trip)."""
        if self.instance_id is not None and time.monotonic() >= self.deadline:
            raise LeaseExpired(self._expired_message())

    def _expired_message(self) -> str:
        return (
            f"Member {self.instance_id} could not renew its lease for {self.seconds:g} s (PostgreSQL did not "
            "answer), so another member may have taken its threads; nothing was written. Retry: the request "
            "goes through as soon as the lease is renewed, on the thread's current state."
        )

    # -- joining and leaving --------------------------------------------------------------------

    def acquire(self, instance_id: int, row: tuple[str, int, str | None]) -> None:
        """Open the lease connection and take the member's advisory lock (before the instance row exists);
        ``row`` is (host, pid, name), to write the row again should the store lose it."""
        self.instance_id = instance_id
        self._row = row
        with self._io:
            self._connect()

    def started(self) -> None:
        """The instance row exists with a fresh lease (see :meth:`before_insert`): count it, start renewing."""
        self.deadline = self._t_insert + self.seconds - self.margin
        self._stop.clear()
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="hybrid-saver-lease", daemon=True)
        self._thread.start()

    def before_insert(self) -> float:
        """Note the time before the statement that sets the first lease is sent; returns the lease."""
        self._t_insert = time.monotonic()
        return self.seconds

    def release(self) -> None:
        """Stop renewing and close the connection (the lease itself is ended by the caller's row update)."""
        self._stop.set()
        wake = self._wake
        if wake is not None:
            os.write(wake[1], b"x")  # out of the renewal thread's wait at once
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if wake is not None:
            self._wake = None
            for fd in wake:
                os.close(fd)
        self.deadline = 0.0
        if self._io.acquire(timeout=IO_WAIT):
            try:
                self._close()
            finally:
                self._io.release()

    # -- renewal --------------------------------------------------------------------------------

    def renew(self) -> bool:
        """Renew once (reconnecting if the connection was lost); True when the lease is valid again.

        Calls :attr:`on_regained` when the lease had lapsed or the store had counted this member out.
        """
        if self.instance_id is None:
            return True
        if not self._io.acquire(timeout=IO_WAIT):
            return False  # another renewal is stuck on the network: this one cannot do better
        try:
            outcome = self._renew_locked()
        finally:
            self._io.release()
        if outcome is None:
            return False
        rejoined, deadline = outcome
        if deadline is not None:
            return True
        if rejoined:
            logger.error(
                "member %s was counted out of the fleet while it could not renew its lease; it joined again, "
                "and drops the threads other members took meanwhile",
                self.instance_id,
            )
        else:
            logger.warning(
                "member %s renewed its lease after it had lapsed; it keeps the threads no other member took",
                self.instance_id,
            )
        if self.on_regained is not None:
            self.on_regained()
        if not self._io.acquire(timeout=IO_WAIT):
            return False
        try:
            self._lapsed = False
            self.deadline = max(self.deadline, self._pending_deadline)
        finally:
            self._io.release()
        return True

    def _renew_locked(self) -> tuple[bool, float | None] | None:
        """One renewal with ``_io`` held. None: it failed. ``(rejoined, deadline)``: the deadline is set
        (valid again), or None when the lease had lapsed and :attr:`on_regained` must run first."""
        old_deadline = self.deadline
        lapsed = self._lapsed or not self.valid()
        t0 = time.monotonic()
        try:
            try:
                row = self._renew_statement()
            except psycopg.OperationalError:
                # the connection died since it was last used (the server ended it): once more, anew
                self._close()
                t0 = time.monotonic()
                row = self._renew_statement()
            rejoined = row is None
            if rejoined:
                # counted out (reaped) while cut off, or the store lost the row (a failover to a lagging
                # standby): join again under the same id, and keep the id sequence past it
                host, pid, name = self._row
                self._conn.execute(  # type: ignore[union-attr]
                    sql.SQL(
                        "INSERT INTO {s}.instances (id, host, pid, name, heartbeat_at, lease_until) "
                        "VALUES (%s, %s, %s, %s, now(), clock_timestamp() + make_interval(secs => %s)) "
                        "ON CONFLICT (id) DO UPDATE SET stopped_at = NULL, lease_until = excluded.lease_until"
                    ).format(s=self._s),
                    (self.instance_id, host, pid, name, self.seconds),
                )
                self._conn.execute(  # type: ignore[union-attr]
                    sql.SQL(
                        "SELECT setval(q::regclass, greatest((SELECT max(id) FROM {s}.instances), "
                        "coalesce(pg_sequence_last_value(q::regclass), 0))) FROM pg_get_serial_sequence(%s, 'id') q"
                    ).format(s=self._s),
                    (self._instances,),
                )
                self.rejoins += 1
        except psycopg.Error as exc:
            logger.debug("lease renewal failed: %s", scrub(f"{type(exc).__name__}: {exc}", self.conninfo))
            self._close()
            return None
        # the renewal ran somewhere between t0 and now: if now is past the old deadline, the old lease
        # may have run out on the server before it, and another member may have claimed meanwhile
        lapsed = lapsed or time.monotonic() >= old_deadline
        deadline = t0 + self.seconds - self.margin
        if self._cut and not (lapsed or rejoined):
            logger.info(
                "member %s: its lease connection was cut; it reconnected and renewed the lease in time, so "
                "no thread moved",
                self.instance_id,
            )
        self._cut = False
        if not (lapsed or rejoined):
            self.deadline = deadline
            return rejoined, deadline
        # not valid again until the threads others took meanwhile are dropped
        self._lapsed = True
        self._pending_deadline = deadline
        return rejoined, None

    def _renew_statement(self) -> tuple[Any, ...] | None:
        """Connect when needed and move ``lease_until``; the row, or None when the row is missing or stopped."""
        if self._conn is None or self._conn.closed:
            self._connect()
            self.reconnects += 1
        elif not self._locked:
            self._take_lock()
        return self._conn.execute(  # type: ignore[union-attr]
            sql.SQL(
                "UPDATE {s}.instances SET lease_until = clock_timestamp() + make_interval(secs => %s) "
                "WHERE id = %s AND stopped_at IS NULL RETURNING 1"
            ).format(s=self._s),
            (self.seconds, self.instance_id),
        ).fetchone()

    def _loop(self) -> None:
        every = self.seconds / RENEWALS_PER_LEASE
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ok = self.renew()
            except Exception as exc:  # noqa: BLE001 - the renewal thread must go on; the next try repeats it
                logger.warning("lease renewal of member %s failed: %s", self.instance_id, type(exc).__name__)
                ok = False
            wait = every if ok else min(every, 0.25)
            # between renewals, watch the socket: a server that ends the session says so at once
            self._watch(max(0.0, wait - (time.monotonic() - started)))

    def _watch(self, timeout: float) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            self._stop.wait(timeout)
            return
        wake = self._wake
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(conn.fileno(), selectors.EVENT_READ)
                if wake is not None:
                    sel.register(wake[0], selectors.EVENT_READ)
                if not sel.select(timeout):
                    return
        except (OSError, ValueError, psycopg.Error):
            return
        if self._stop.is_set():
            return
        # readable while idle: the server is ending the session (or sent a notice): find out now
        if not self._io.acquire(timeout=IO_WAIT):
            return
        with contextlib.ExitStack() as held:
            held.callback(self._io.release)
            if self._conn is not conn:
                return  # a renewal replaced the connection meanwhile
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                logger.debug("member %s: the lease connection closed (%s)", self.instance_id, type(exc).__name__)
                self._close()
                self._cut = True

    def _connect(self) -> None:
        # a renewal that takes longer than the lease is worth nothing: bound it, over TCP too
        limit_ms = int(self.seconds * 1000)
        conn = connect_session(
            self.conninfo,
            f"lease m{self.instance_id}",
            timeout=max(1, min(5, int(self.seconds))),
            keepalives=1,
            keepalives_idle=max(1, int(self.seconds / 2)),
            keepalives_interval=1,
            keepalives_count=2,
            tcp_user_timeout=limit_ms,
        )
        conn.execute(f"SET statement_timeout = {limit_ms}")
        self._conn = conn
        self._locked = False
        try:
            self._take_lock()
        except BaseException:
            self._close()
            raise

    def _take_lock(self) -> None:
        """The advisory lock older members read as liveness; not waited for (a cut session may still
        hold it for a moment), taken at a later renewal then."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT pg_try_advisory_lock(%s::int, %s::int)", (self._lock_key(), self.instance_id)
        ).fetchone()
        self._locked = bool(row and row[0])

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None


__all__ = ["DEFAULT_LEASE", "RENEWALS_PER_LEASE", "Lease", "LeaseExpired"]
