"""The fleet: every live saver on a store is a member, and each thread is owned by one member at a time.

PostgreSQL is the directory, the lock manager and the storage. A member is an ``instances`` row
whose ``lease_until`` its :class:`~persistence.fleet.lease.Lease` keeps in the future (see
``lease.py``): a member is alive while its lease runs, however its connections fare. A member writes
a thread only while an ``owners`` row names it with the token it got when it claimed the thread; the
backup checks both in its own transaction (fencing). A claim takes a free thread, or one owned by a
member whose lease has expired, at once; a thread owned by a live member is handed over on request
(see ``remote.py``). Members of older versions (no lease) count as alive while they hold their
session advisory lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from persistence.db import DB_ERRORS, pool_connection
from persistence.fleet.lease import DEFAULT_LEASE, Lease
from persistence.store.schema import dec, enc

logger = logging.getLogger(__name__)

#: how long a claim waits while a restore of every thread holds the store (seconds)
RESTORE_WAIT = 120


def restore_lock_key(schema: str) -> str:
    """The advisory lock a restore of every thread holds (exclusive) and claims take (shared)."""
    return f"hybrid_saver.restore:{schema}"


@dataclass(frozen=True)
class Member:
    """A saver on the store, as its row and its lease say (figures as of its last heartbeat)."""

    instance_id: int
    name: str | None
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime | None
    stopped_at: datetime | None
    alive: bool
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def resident_threads(self) -> int:
        return int(self.figures.get("resident_threads") or 0)

    @property
    def pending(self) -> int:
        return int(self.figures.get("pending") or 0)

    @property
    def lag_seconds(self) -> float:
        return float(self.figures.get("lag_seconds") or 0.0)

    def describe(self) -> str:
        label = f"member {self.instance_id} ({self.name + ', ' if self.name else ''}host {self.host}, pid {self.pid})"
        return label


class Membership:
    """This saver's membership of the store: its instance row, its liveness lock, its claims."""

    def __init__(
        self,
        pool: ConnectionPool,
        conninfo: str,
        schema: str,
        name: str | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE,
    ) -> None:
        self.pool = pool
        self.conninfo = conninfo
        self.schema = schema
        self.name = name
        self.instance_id: int | None = None
        self.key: int | None = None
        self._s = sql.Identifier(schema)
        self.lease = Lease(conninfo, schema, self.store_key, lease_seconds)

    def store_key(self) -> int:
        """The advisory-lock class of this store's members: a CRC-32 of the schema name, so every
        process computes the same key without asking the server."""
        if self.key is None:
            self.key = zlib.crc32(f"hybrid_saver.member:{self.schema}".encode()) & 0x7FFFFFFF
        return self.key

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s, alive=self._alive_sql("o.owner"))

    def _alive_sql(self, column: str = "owner") -> sql.Composable:
        """True when the member ``column`` names is alive: its lease runs (or, for a member of an older
        version without a lease, it holds its advisory lock).

        Compared with ``statement_timestamp()``, the time the statement's snapshot was taken, not with
        the clock when the row is finally looked at: a claim that waited for a row lock must not take
        a lease as expired that was renewed meanwhile (its snapshot would still show the old one)."""
        return sql.SQL("EXISTS (SELECT 1 FROM {s}.instances i WHERE i.id = ({c}) AND {row})").format(
            s=self._s, c=sql.SQL(column), row=self._row_alive_sql("i")
        )

    def _row_alive_sql(self, alias: str) -> sql.Composable:
        """The same test on an ``instances`` row itself (``alias``): an UPDATE re-checks it on the row's
        newest version, so a renewal committed meanwhile counts."""
        a = sql.Identifier(alias)
        return sql.SQL(
            "({a}.stopped_at IS NULL AND ({a}.lease_until > statement_timestamp() OR ({a}.lease_until IS NULL "
            "AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.classid = {k}::oid AND l.objid = ({a}.id)::oid "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))))"
        ).format(a=a, k=sql.Literal(self.store_key()))

    # -- joining and leaving --------------------------------------------------------------------

    def join(self) -> int:
        """Take an id (and a name, for a saver given none: see :func:`default_name`), open the lease
        connection, insert the instance row with a fresh lease; return the id."""
        self.store_key()
        with pool_connection(self.pool) as conn:
            row = conn.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id'))", (_qualified(self.schema, "instances"),)
            ).fetchone()
            instance_id = int(row[0]) if row else 0
        try:
            # one transaction from the choice of the name to the insert: two members starting at once
            # (the workers of one server) never take the same slot
            with pool_connection(self.pool) as conn:
                if self.name is None:
                    self.name = self._free_name(conn, default_name())
                self.lease.acquire(instance_id, (socket.gethostname(), os.getpid(), self.name))
                seconds = self.lease.before_insert()
                conn.execute(
                    self._q(
                        "INSERT INTO {s}.instances (id, host, pid, name, heartbeat_at, lease_until) "
                        "VALUES (%s, %s, %s, %s, now(), clock_timestamp() + make_interval(secs => %s))"
                    ),
                    (instance_id, socket.gethostname(), os.getpid(), self.name, seconds),
                )
        except BaseException:
            self.lease.release()
            raise
        self.instance_id = instance_id
        self.lease.started()
        return instance_id

    def _free_name(self, conn: psycopg.Connection, base: str) -> str:
        """``base#N`` with the smallest N no live member goes by (a member killed keeps its slot until its
        lease runs out), under a lock held until the caller's transaction ends (and its insert with it)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"hybrid_saver.names:{self.schema}",))
        rows = conn.execute(
            sql.SQL("SELECT m.name FROM {s}.instances m WHERE m.name LIKE %s AND {a}").format(
                s=self._s, a=self._row_alive_sql("m")
            ),
            (base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "#%",),
        ).fetchall()
        taken = {r[0] for r in rows}
        slot = 1
        while f"{base}#{slot}" in taken:
            slot += 1
        return f"{base}#{slot}"

    def leave(self) -> None:
        """Give back every thread, end the lease (others may take its threads at once) and stop renewing."""
        if self.instance_id is None:
            return
        self.lease.release()
        try:
            with pool_connection(self.pool) as conn:
                conn.execute(self._q("DELETE FROM {s}.owners WHERE owner = %s"), (self.instance_id,))
                conn.execute(
                    self._q("UPDATE {s}.instances SET stopped_at = now(), lease_until = now() WHERE id = %s"),
                    (self.instance_id,),
                )
        except (psycopg.Error, *DB_ERRORS) as exc:
            # its lease runs out on its own: the others take its threads then
            logger.warning("member %s could not leave cleanly: %s", self.instance_id, type(exc).__name__)

    def heartbeat(self, figures: dict[str, Any]) -> None:
        with pool_connection(self.pool) as conn:
            conn.execute(
                self._q("UPDATE {s}.instances SET heartbeat_at = now(), figures = %s WHERE id = %s"),
                (json.dumps(figures, default=str), self.instance_id),
            )

    def reap(self) -> list[int]:
        """Mark members whose lease expired as stopped and free their threads; return their ids."""
        with pool_connection(self.pool) as conn, conn.transaction():
            rows = conn.execute(
                sql.SQL(
                    "UPDATE {s}.instances AS u SET stopped_at = now() WHERE u.stopped_at IS NULL AND NOT {a} "
                    "RETURNING u.id"
                ).format(s=self._s, a=self._row_alive_sql("u"))
            ).fetchall()
            dead = [int(r[0]) for r in rows]
            if dead:
                conn.execute(self._q("DELETE FROM {s}.owners WHERE owner = ANY(%s)"), (dead,))
        if dead:
            logger.info("members %s are gone; their threads are free", dead)
        return dead

    # -- ownership ------------------------------------------------------------------------------

    def claim(self, thread_ids: Sequence[str], *, wait_restore: bool = True) -> tuple[dict[str, int], dict[str, int]]:
        """Claim ``thread_ids``: free ones, this member's own and those of dead members are taken.

        Returns ``(granted, held)``: thread -> new token, and thread -> the live member that holds it.
        A claim waits while a restore of every thread runs (up to :data:`RESTORE_WAIT` seconds).
        """
        keys = [enc(t) for t in thread_ids]
        # the gate and the claim in one transaction: the claim's snapshot is taken after a restore of
        # every thread has committed (one statement would see the store as it was before the wait)
        with pool_connection(self.pool) as conn, conn.transaction():
            if wait_restore:
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock_shared(hashtext(%s))",
                    (f"{RESTORE_WAIT}s", restore_lock_key(self.schema)),
                )
            rows = conn.execute(
                self._q(
                    "INSERT INTO {s}.owners AS o (thread_id, owner, token) "
                    "SELECT t, %s, nextval(%s::regclass) FROM unnest(%s::bytea[]) AS t ORDER BY t "
                    "ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner, token = excluded.token, since = now() "
                    "WHERE o.owner = excluded.owner OR NOT {alive} "
                    "RETURNING thread_id, token"
                ),
                (self.instance_id, _qualified(self.schema, "owner_tokens"), keys),
            ).fetchall()
            granted = {dec(r[0]): int(r[1]) for r in rows}
            rest = [k for k, t in zip(keys, thread_ids, strict=True) if t not in granted]
            held: dict[str, int] = {}
            if rest:
                for r in conn.execute(
                    self._q("SELECT thread_id, owner FROM {s}.owners WHERE thread_id = ANY(%s)"), (rest,)
                ).fetchall():
                    held[dec(r[0])] = int(r[1])
        return granted, held

    def release(self, pairs: Sequence[tuple[str, int]]) -> int:
        """Give back threads (each with the token it was held with); returns how many rows went."""
        if not pairs:
            return 0
        keys, tokens = _columns(pairs)
        with pool_connection(self.pool) as conn:
            cur = conn.execute(
                self._q(
                    "DELETE FROM {s}.owners WHERE owner = %s AND (thread_id, token) IN "
                    "(SELECT * FROM unnest(%s::bytea[], %s::bigint[]))"
                ),
                (self.instance_id, keys, tokens),
            )
            return max(cur.rowcount, 0)

    def hand_over(self, pairs: Sequence[tuple[str, int]], to: int) -> dict[str, int]:
        """Pass threads (each with the token it was held with) to member ``to``, the one that asked for
        them, instead of freeing them: another claim cannot take them in between (no ping-pong under
        contention). Returns the new tokens, the asker's claim already made, when no restore of every
        thread held the store (the gate a claim waits at, tried here without waiting: a handoff never
        waits for a restore, which may itself be waiting for this member); else ``{}`` and the asker
        claims them, waiting at the gate."""
        if not pairs:
            return {}
        keys, tokens = _columns(pairs)
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                self._q(
                    "WITH gate AS (SELECT pg_try_advisory_xact_lock_shared(hashtext(%s)) AS open) "
                    "UPDATE {s}.owners SET owner = %s, token = nextval(%s::regclass), since = now() "
                    "WHERE owner = %s AND (thread_id, token) IN (SELECT * FROM unnest(%s::bytea[], %s::bigint[])) "
                    "RETURNING thread_id, token, (SELECT open FROM gate)"
                ),
                (
                    restore_lock_key(self.schema),
                    to,
                    _qualified(self.schema, "owner_tokens"),
                    self.instance_id,
                    keys,
                    tokens,
                ),
            ).fetchall()
        if not all(r[2] for r in rows):
            return {}
        return {dec(r[0]): int(r[1]) for r in rows}

    def release_all(self) -> int:
        """Give back every thread this member owns."""
        with pool_connection(self.pool) as conn:
            cur = conn.execute(self._q("DELETE FROM {s}.owners WHERE owner = %s"), (self.instance_id,))
            return max(cur.rowcount, 0)

    def release_unheld(self, thread_ids: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        """Read the tokens of rows this member still has for ``thread_ids`` (the caller then checks
        under its lock that none of them is resident or loading, and gives back with :meth:`release`)."""
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                self._q("SELECT thread_id, token FROM {s}.owners WHERE owner = %s AND thread_id = ANY(%s)"),
                (self.instance_id, [enc(t) for t in thread_ids]),
            ).fetchall()
        tokens = {dec(r[0]): int(r[1]) for r in rows}
        return [t for t in thread_ids if t not in tokens], tokens

    def owners_of(self, thread_ids: Sequence[str]) -> dict[str, int]:
        """Who owns ``thread_ids`` now (threads without an owner are left out)."""
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                self._q("SELECT thread_id, owner FROM {s}.owners WHERE thread_id = ANY(%s)"),
                ([enc(t) for t in thread_ids],),
            ).fetchall()
        return {dec(r[0]): int(r[1]) for r in rows}

    def owned(self) -> dict[str, int]:
        """Every thread this member owns, with its token."""
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                self._q("SELECT thread_id, token FROM {s}.owners WHERE owner = %s"), (self.instance_id,)
            ).fetchall()
        return {dec(r[0]): int(r[1]) for r in rows}

    def warm_candidates(self, limit_bytes: int | None, limit_threads: int | None = 1_000_000) -> list[str]:
        """The most recently updated threads that no live member holds, until their stored sizes
        add up to ``limit_bytes`` (all of them when None), at most ``limit_threads`` (None: no limit)."""
        out: list[str] = []
        total = 0
        with pool_connection(self.pool) as conn, conn.transaction(), conn.cursor(name="hybrid_saver_warm") as cur:
            cur.itersize = 2000
            cur.execute(
                self._q(
                    "SELECT s.thread_id, s.bytes FROM {s}.summaries s LEFT JOIN {s}.owners o USING (thread_id) "
                    "WHERE s.deleted_gen IS NULL AND (o.owner IS NULL OR o.owner = %s OR NOT {alive}) "
                    "ORDER BY s.updated_at DESC NULLS LAST LIMIT %s"
                ),
                (self.instance_id, limit_threads),
            )
            for tid, size in cur:
                if limit_bytes is not None and total + int(size) > limit_bytes:
                    break
                total += int(size)
                out.append(dec(tid))
        return out

    def save_settings(self, name: str, interval: float | None, paused: bool) -> None:
        """Keep the operator's backup settings of savers called ``name`` (they outlive restarts)."""
        with pool_connection(self.pool) as conn:
            conn.execute(
                self._q(
                    "INSERT INTO {s}.saver_settings (name, backup_interval, paused) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET backup_interval = excluded.backup_interval, "
                    "paused = excluded.paused, updated_at = now()"
                ),
                (name, interval, paused),
            )

    def load_settings(self, name: str) -> tuple[float | None, bool] | None:
        """(interval, paused) kept for ``name``, or None."""
        with pool_connection(self.pool) as conn:
            row = conn.execute(
                self._q("SELECT backup_interval, paused FROM {s}.saver_settings WHERE name = %s"), (name,)
            ).fetchone()
        return (row[0], bool(row[1])) if row else None

    def members(self, *, include_stopped: bool = False) -> list[Member]:
        """Members of the store, oldest first (live ones, and stopped ones when asked)."""
        where = sql.SQL("true") if include_stopped else sql.SQL("m.stopped_at IS NULL")
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT m.id, m.name, m.host, m.pid, m.started_at, m.heartbeat_at, m.stopped_at, m.figures, {a} "
                    "FROM {s}.instances m WHERE {w} ORDER BY m.id"
                ).format(s=self._s, a=self._row_alive_sql("m"), w=where)
            ).fetchall()
        return [
            Member(
                instance_id=int(r[0]),
                name=r[1],
                host=r[2],
                pid=int(r[3]),
                started_at=r[4],
                heartbeat_at=r[5],
                stopped_at=r[6],
                alive=bool(r[8]),
                figures=dict(r[7] or {}),
            )
            for r in rows
        ]

    def member(self, instance_id: int) -> Member | None:
        for m in self.members(include_stopped=True):
            if m.instance_id == instance_id:
                return m
        return None

    def leases(self, lost_within: float = 900.0) -> tuple[dict[int, float | None], int]:
        """Seconds each member not stopped has left on its lease, on the server's clock (negative: it ran
        out; None: a member without a lease), and how many members were reaped in the last ``lost_within``
        seconds after their lease ran out: they ended without leaving (a clean leave ends the lease when it
        stops; a member reaped while cut off that joined again is not counted). For the metrics exporter."""
        with pool_connection(self.pool) as conn:
            rows = conn.execute(
                self._q(
                    "SELECT id, extract(epoch FROM lease_until - statement_timestamp())::float8 "
                    "FROM {s}.instances WHERE stopped_at IS NULL"
                )
            ).fetchall()
            lost = conn.execute(
                self._q(
                    "SELECT count(*) FROM {s}.instances WHERE stopped_at IS NOT NULL AND lease_until < stopped_at "
                    "AND stopped_at > statement_timestamp() - make_interval(secs => %s)"
                ),
                (lost_within,),
            ).fetchone()
        return {int(r[0]): r[1] for r in rows}, int(lost[0]) if lost else 0


def default_name() -> str:
    """The name of a saver given none: ``host/program`` (``web-1/uvicorn``, ``web-1/myapp``), to which
    :meth:`Membership.join` adds the smallest free slot (``#1``, ``#2``): a worker restarted takes the
    slot it left, so the operator's interval and pause for it survive the restart."""
    return f"{socket.gethostname()}/{_program()}"


def _program() -> str:
    argv: list[str] = list(getattr(sys, "orig_argv", None) or sys.argv)
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    script = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    name = os.path.basename(script)
    return name[:-3] if name.endswith(".py") else name


def _columns(pairs: Sequence[tuple[str, int]]) -> tuple[list[bytes], list[int]]:
    """(thread, token) pairs as the two arrays a statement unnests."""
    return [enc(t) for t, _ in pairs], [tok for _, tok in pairs]


def _qualified(schema: str, name: str) -> str:
    """``"schema".name`` as text, for functions that take a relation name."""
    return '"' + schema.replace('"', '""') + '".' + name


__all__ = ["RESTORE_WAIT", "Member", "Membership", "default_name", "restore_lock_key"]
