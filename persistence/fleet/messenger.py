"""One member's side of the command channel: asking other members, and listening for their requests."""

from __future__ import annotations

from typing import Any

from persistence.fleet import remote
from persistence.fleet.membership import Membership
from persistence.store.link import DatabaseLink


class Messenger:
    """Sends commands as this member and, once :meth:`listen` started it, runs the ones sent to it."""

    def __init__(self, link: DatabaseLink, membership: Membership) -> None:
        self._link = link
        self._membership = membership
        self.listener: remote.CommandListener | None = None

    def ask(self, member: int, op: str, *, timeout: float = 60.0, **args: Any) -> remote.Answer:
        """Send a command to another member and wait for its answer.

        Raises:
            CommandTimeout: no answer within ``timeout`` seconds.
        """
        return remote.ask(
            self._link.pool,
            self._membership.schema,
            member,
            op,
            timeout,
            sender=self._membership.instance_id,
            listener=self.listener,
            **args,
        )

    def listen(self, store: Any, handler: remote.Handler) -> None:
        """Start running the commands sent to this member (once; after it joined)."""
        instance_id = self._membership.instance_id
        if self.listener is not None or instance_id is None:
            return
        self.listener = remote.CommandListener(store, self._link.conninfo, instance_id, handler)
        self.listener.start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()


__all__ = ["Messenger"]
