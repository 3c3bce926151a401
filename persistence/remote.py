"""Commands to the live saver over LISTEN/NOTIFY: "backup now" and "restore" from another process.

The live saver listens on a channel named after its schema. A command carries a request id; the
saver executes it and logs the run with that id in the runs table, where the sender waits for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from persistence.errors import HybridSaverError

if TYPE_CHECKING:
    from persistence.saver import HybridSaver
    from persistence.store import Store

logger = logging.getLogger(__name__)


def channel_name(schema: str) -> str:
    return f"{schema}_commands"


class CommandListener:
    """A daemon thread with its own connection that LISTENs for commands and runs them."""

    def __init__(self, saver: HybridSaver) -> None:
        self.saver = saver
        self.channel = channel_name(saver.store.schema)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hybrid-saver-commands", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=3)

    def _loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.saver.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            self._handle(note.payload)
            except psycopg.Error:
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _handle(self, payload: str) -> None:
        try:
            command = json.loads(payload)
            op, request_id = command["op"], str(command["request_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed command on %s", self.channel)
            return
        if self.saver.closed:
            return
        if op == "backup":
            self.saver.backup(trigger="remote", request_id=request_id)
        elif op == "restore":
            try:
                self.saver.restore(
                    command["generation"],
                    command.get("thread_id"),
                    on_damage=command.get("on_damage", "refuse"),
                    request_id=request_id,
                )
            except (HybridSaverError, ValueError) as exc:
                self.saver.log_failed_command("restore", request_id, str(exc))
        else:
            logger.warning("ignoring unknown command %r", op)


def send_command(store: Store, op: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
    """Ask the live saver to run ``op`` and wait for its run to be logged; return the run row.

    Raises:
        HybridSaverError: no run was logged within ``timeout`` seconds.
    """
    request_id = uuid.uuid4().hex
    payload = json.dumps({"op": op, "request_id": request_id, **args})
    with store.pool.connection() as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (channel_name(store.schema), payload))
        conn.commit()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                sql.SQL("SELECT * FROM {}.runs WHERE request_id = %s ORDER BY id DESC LIMIT 1").format(
                    sql.Identifier(store.schema)
                ),
                (request_id,),
            ).fetchone()
        if row is not None:
            return row
        time.sleep(0.1)
    raise HybridSaverError(
        f"The live saver did not answer the {op!r} command within {timeout:.0f} s. "
        "Check that its process is running (python -m persistence status shows the holder)."
    )


__all__ = ["CommandListener", "channel_name", "send_command"]
