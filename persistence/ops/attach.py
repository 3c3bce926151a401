"""Attaching a saver to its store: set up the schema, join the fleet, apply the operator's settings,
load the threads, and start answering commands. Runs at start, or later for a saver that started
offline (the backup writer attaches it as soon as PostgreSQL answers)."""

from __future__ import annotations

import logging

import psycopg
from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.db import DB_ERRORS, _first_line, describe_url
from persistence.errors import DatabaseUnavailable
from persistence.fleet import remote
from persistence.fleet.membership import Membership
from persistence.fleet.messenger import Messenger
from persistence.fleet.ownership import WARM_FIRST_BYTES, Ownership
from persistence.memory import MemoryCache
from persistence.ops.recovery import Recovery
from persistence.ops.settings import Settings
from persistence.preflight import refuse_standby
from persistence.serde import check_can_read, encrypts
from persistence.store import Store
from persistence.store.link import DatabaseLink

logger = logging.getLogger(__name__)


class Attachment:
    """The attach procedure of one saver, and what it found (``loaded_generation``)."""

    def __init__(
        self,
        cache: MemoryCache,
        store: Store,
        membership: Membership,
        link: DatabaseLink,
        ownership: Ownership,
        messenger: Messenger,
        settings: Settings,
        recovery: Recovery,
        *,
        serde: SerializerProtocol,
        budget: int | None,
        listen: remote.Handler | None,
        warm: bool = True,
    ) -> None:
        self._cache = cache
        self._store = store
        self._membership = membership
        self._link = link
        self._ownership = ownership
        self._messenger = messenger
        self._settings = settings
        self._recovery = recovery
        self._budget = budget
        #: load threads at attach (False: only on demand)
        self._warm = warm
        self._serde = serde
        #: what runs the commands sent to this member (None: it answers none)
        self._handler = listen
        #: the newest generation of the store when this saver attached
        self.loaded_generation: int | None = None
        #: the store's id (see ``Store.identity``), known once attached
        self.store_id: str | None = None
        #: threads written back from recovery files at the last attach
        self.recovered = 0

    def attach(self) -> None:
        """Set up the store, join the fleet, load threads; start listening for commands.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached, or the role may not use the schema.
        """
        link, store, ownership = self._link, self._store, self._ownership
        try:
            refuse_standby(link.pool)
            store.setup()
            self._check_encryption()
            if self._membership.instance_id is None:
                self._membership.join()
            self._settings.load()
            self.loaded_generation = store.latest_generation()
            self.store_id = store.identity()
            self.recovered = self._recovery.replay(self.store_id)
            # a member that stopped without reaching PostgreSQL still holds its lease for a moment
            ownership.resolve_provisional(wait=bool(self.recovered))
            # a member joining a live fleet does not warm-load: it cannot hold the whole store (the others
            # serve part of it), and loading the free threads would take them from whoever serves them next;
            # it claims each thread when it is used. Alone and without a budget it loads its most recent
            # threads now and the rest in the background: until then a thread not in memory loads on use.
            self._cache.complete = False
            lone = self._budget is None and self._warm and not ownership.others_alive()
            if lone:
                ownership.warm(first=WARM_FIRST_BYTES)
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot set up the backup store on {describe_url(link.conninfo)}: "
                f"{link.scrub(str(exc))}. Check that PostgreSQL is running and DATABASE_URL is right."
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DatabaseUnavailable(
                f"No permission to create or use schema {store.schema!r} on {describe_url(link.conninfo)}: "
                f"{_first_line(link.scrub(str(exc)))}. Grant CREATE on the database (or USAGE and "
                "CREATE on the schema) to this user, or pass another schema."
            ) from None
        link.attached = True
        link.attach_error = None
        link.mark_failed(False)
        if self._warm and (self._budget is not None or lone):
            ownership.warm_in_background()
        if self._handler is not None:
            self._messenger.listen(store, self._handler)
        logger.info(
            "member %s attached to %s (generation %s, %s threads in memory)",
            self._membership.instance_id,
            describe_url(link.conninfo),
            self.loaded_generation,
            len(self._cache.entries),
        )

    def _check_encryption(self) -> None:
        """Refuse a store this saver cannot decrypt; behind an encrypting serde, clear the summaries'
        text (written in clear by an earlier saver without encryption)."""
        store = self._store
        check_can_read(store.directory.encrypted_type(), self._serde, f"The store in schema {store.schema!r}")
        if encrypts(self._serde):
            cleared = store.directory.forget_text()
            if cleared:
                logger.warning(
                    "cleared the title and text of %s in schema %r: this saver's serde encrypts, and the "
                    "summaries written before were in clear (search now matches thread ids)",
                    f"{cleared} thread summar{'y' if cleared == 1 else 'ies'}",
                    store.schema,
                )


__all__ = ["Attachment"]
