"""Commands between processes: a member, the CLI or the dashboard asks one member of the fleet to act.

A command is a row of the ``commands`` table (who asked whom for what, and the answer) plus a
NOTIFY on the target member's channel. The member runs it in a worker thread and writes the answer
into the row; a sender that is itself a member is woken by a NOTIFY on its own channel, which
carries the answer too (when it fits), any other sender polls the row. The rows are written with
``synchronous_commit`` off: a command lost with a crash of PostgreSQL is one its sender sees time
out and sends again, so a handoff does not wait for two WAL flushes it does not need. What a
command does is up to the handler the member gives its listener: this module knows nothing of
savers.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from persistence.db import connect_session
from persistence.errors import HybridSaverError

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


class CommandTimeout(HybridSaverError):
    """The member did not answer a command in time."""


def new_request_id() -> str:
    """A request id of the library's own (from the OS's random source, not the ``uuid`` module, which an
    application or its tests may patch)."""
    return secrets.token_hex(16)


def member_channel(schema: str, instance_id: int) -> str:
    """The LISTEN channel of one member (identifiers are cut at 63 bytes by PostgreSQL)."""
    return f"{schema[:40]}_m{instance_id}"


@dataclass(frozen=True)
class Answer:
    """A command's answer, as the target member wrote it."""

    request_id: str
    target: int
    op: str
    result: dict[str, Any]
    error: str | None
    answered_at: datetime | None

    @property
    def ok(self) -> bool:
        return self.error is None


#: the longest reply NOTIFY that carries its answer (PostgreSQL's limit is 8,000 bytes)
INLINE_ANSWER_BYTES = 7000
_ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"


class _Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        #: the answer, when the reply's NOTIFY carried it
        self.answer: Answer | None = None


def _answer_from(request_id: str, message: dict[str, Any]) -> Answer | None:
    found = message.get("answer")
    if not isinstance(found, dict):
        return None
    try:
        return Answer(
            request_id,
            int(found["target"]),
            str(found["op"]),
            dict(found.get("result") or {}),
            found.get("error"),
            datetime.fromisoformat(found["answered_at"]),
        )
    except (KeyError, TypeError, ValueError):
        return None  # the sender reads the row instead


class CommandListener:
    """A daemon thread with its own connection that LISTENs on the member's channel, runs commands in
    worker threads (so a long backup does not hold up a handoff) and wakes senders waiting for replies."""

    def __init__(self, store: Any, conninfo: str, instance_id: int, handler: Handler) -> None:
        #: anything with ``.pool`` and ``.schema`` (the saver's Store: its pool is renewed after an outage)
        self.store = store
        self.conninfo = conninfo
        self.schema = store.schema
        self.instance_id = instance_id
        self.handler = handler
        self.channel = member_channel(self.schema, instance_id)
        self.listening = threading.Event()
        self._waiters: dict[str, _Waiter] = {}
        self._waiters_lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hybrid-saver-command")
        self._thread = threading.Thread(target=self._loop, name="hybrid-saver-commands", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=3)
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with connect_session(self.conninfo, f"listen m{self.instance_id}") as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    delay = 0.5
                    self._catch_up()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            self._dispatch(note.payload)
            except psycopg.Error:
                self.listening.clear()
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _catch_up(self) -> None:
        """Run commands sent while this listener was not connected (e.g. during an outage)."""
        try:
            with self.store.pool.connection() as conn:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT request_id, sender, op, args FROM {}.commands WHERE target = %s AND answered_at IS NULL "
                        "AND sent_at > now() - interval '60 seconds' ORDER BY id"
                    ).format(sql.Identifier(self.schema)),
                    (self.instance_id,),
                ).fetchall()
        except psycopg.Error:
            return
        for request_id, sender, op, args in rows:
            self._workers.submit(self._run, {**(args or {}), "op": op, "request_id": request_id, "from": sender})

    def _dispatch(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            logger.warning("ignoring a malformed message on %s", self.channel)
            return
        if not isinstance(message, dict):
            return
        reply_to = message.get("reply_to")
        if reply_to is not None:
            with self._waiters_lock:
                waiter = self._waiters.get(str(reply_to))
            if waiter is not None:
                waiter.answer = _answer_from(str(reply_to), message)
                waiter.event.set()
            return
        if "op" not in message or "request_id" not in message:
            logger.warning("ignoring a malformed command on %s", self.channel)
            return
        try:
            self._workers.submit(self._run, message)
        except RuntimeError:  # shut down
            pass

    def _run(self, command: dict[str, Any]) -> None:
        request_id = str(command["request_id"])
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = self.handler(command)
        except (HybridSaverError, ValueError, TypeError) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the sender gets a sentence, the log the traceback
            logger.exception("command %s failed", command.get("op"))
            error = f"{type(exc).__name__}: {exc}"
        result_json = json.dumps(result or {}, default=str)
        update = sql.SQL(
            "UPDATE {}.commands SET answered_at = now(), answered_by = %s, result = %s, error = %s WHERE request_id = %s"
        ).format(sql.Identifier(self.schema))
        params: tuple[Any, ...] = (self.instance_id, result_json, error, request_id)
        sender = command.get("from")
        try:
            with self.store.pool.connection() as conn:
                if sender is None:  # a sender that is no member polls the row
                    conn.execute(sql.SQL("WITH u AS ({}) SELECT " + _ASYNC_COMMIT).format(update), params)
                    return
                answered = {
                    "target": self.instance_id,
                    "op": command.get("op"),
                    "result": json.loads(result_json),
                    "error": error,
                    "answered_at": datetime.now(UTC).isoformat(),
                }
                reply = json.dumps({"reply_to": request_id, "answer": answered}, default=str)
                if len(reply.encode()) > INLINE_ANSWER_BYTES:
                    reply = json.dumps({"reply_to": request_id})
                # one statement, one transaction: the row and the wake-up (sent at its commit)
                conn.execute(
                    sql.SQL("WITH u AS ({}) SELECT " + _ASYNC_COMMIT + ", pg_notify(%s, %s)").format(update),
                    (*params, member_channel(self.schema, int(sender)), reply),
                )
        except psycopg.Error as exc:
            logger.warning("could not answer command %s: %s", command.get("op"), type(exc).__name__)

    def expect(self, request_id: str) -> _Waiter:
        waiter = _Waiter()
        with self._waiters_lock:
            self._waiters[request_id] = waiter
        return waiter

    def forget(self, request_id: str) -> None:
        with self._waiters_lock:
            self._waiters.pop(request_id, None)


def post(
    pool: ConnectionPool,
    schema: str,
    target: int,
    op: str,
    *,
    sender: int | None = None,
    request_id: str | None = None,
    **args: Any,
) -> str:
    """Log a command for member ``target`` and notify it; return its request id (see :func:`wait`)."""
    request_id = request_id or new_request_id()
    payload = json.dumps({"op": op, "request_id": request_id, "from": sender, **args}, default=str)
    with pool.connection() as conn:
        # one statement, one transaction: the row and the notification (sent at its commit)
        conn.execute(
            sql.SQL(
                "WITH c AS (INSERT INTO {}.commands (request_id, sender, target, op, args) VALUES (%s, %s, %s, %s, %s)) "
                "SELECT " + _ASYNC_COMMIT + ", pg_notify(%s, %s)"
            ).format(sql.Identifier(schema)),
            (request_id, sender, target, op, json.dumps(args, default=str), member_channel(schema, target), payload),
        )
    return request_id


def answer(pool: ConnectionPool, schema: str, request_id: str) -> Answer | None:
    """The answer of a command, or None while it has none."""
    with pool.connection() as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT request_id, target, op, result, error, answered_at FROM {}.commands WHERE request_id = %s"
            ).format(sql.Identifier(schema)),
            (request_id,),
        ).fetchone()
    if row is None or row[5] is None:
        return None
    return Answer(row[0], int(row[1]), row[2], dict(row[3] or {}), row[4], row[5])


def wait(
    pool: ConnectionPool,
    schema: str,
    request_id: str,
    timeout: float,
    *,
    listener: CommandListener | None = None,
    waiter: _Waiter | None = None,
) -> Answer | None:
    """Wait up to ``timeout`` seconds for the answer of ``request_id``; None when none came.

    With a ``listener`` and the ``waiter`` it returned from ``expect`` (registered before the command
    was posted), the sender sleeps until the member's reply arrives, and takes the answer it carries
    (reading the row only when it carries none, or once a second in case a reply was missed);
    otherwise it polls the row.
    """
    deadline = time.monotonic() + timeout
    first = True
    try:
        while True:
            if waiter is not None and waiter.answer is not None:
                return waiter.answer
            listening = waiter is not None and listener is not None and listener.listening.is_set()
            left = deadline - time.monotonic()
            # while listening, the reply wakes this sender: no need to read the row before the first wait
            if not (first and listening and left > 0):
                found = answer(pool, schema, request_id)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
            first = False
            if listening:
                assert waiter is not None
                waiter.event.wait(min(left, 1.0))
                waiter.event.clear()
            else:
                time.sleep(min(left, 0.05))
    finally:
        if listener is not None:
            listener.forget(request_id)


def ask(
    pool: ConnectionPool,
    schema: str,
    target: int,
    op: str,
    timeout: float,
    *,
    sender: int | None = None,
    listener: CommandListener | None = None,
    **args: Any,
) -> Answer:
    """Send ``op`` to member ``target`` and wait for its answer.

    Raises:
        CommandTimeout: no answer within ``timeout`` seconds.
    """
    request_id = new_request_id()
    waiter = listener.expect(request_id) if listener is not None else None
    post(pool, schema, target, op, sender=sender, request_id=request_id, **args)
    found = wait(pool, schema, request_id, timeout, listener=listener, waiter=waiter)
    if found is None:
        raise CommandTimeout(
            f"Member {target} did not answer the {op!r} command within {timeout:.0f} s. Check that its process "
            "is running and not stuck (`hybrid-saver members` lists the members and their heartbeats)."
        )
    return found


__all__ = [
    "Answer",
    "CommandListener",
    "CommandTimeout",
    "answer",
    "ask",
    "member_channel",
    "new_request_id",
    "post",
    "wait",
]
