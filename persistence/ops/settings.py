"""The operator's backup settings of one member (interval, paused), kept in the store under the
member's name so they survive its restart."""

from __future__ import annotations

import logging

import psycopg

from persistence.db import DB_ERRORS
from persistence.fleet.membership import Membership
from persistence.ops.scheduler import BackupScheduler
from persistence.store.link import DatabaseLink

logger = logging.getLogger(__name__)


class Settings:
    """Changes to the schedule, and their record in the store (for savers with a ``name``)."""

    def __init__(self, scheduler: BackupScheduler, membership: Membership, link: DatabaseLink) -> None:
        self._scheduler = scheduler
        self._membership = membership
        self._link = link

    def set_interval(self, seconds: float) -> None:
        self._scheduler.set_interval(seconds)
        self._save()

    def pause(self) -> None:
        self._scheduler.pause()
        self._save()

    def resume(self) -> None:
        self._scheduler.resume()
        self._save()

    def _save(self) -> None:
        name = self._membership.name
        if name is None or not self._link.attached:
            return
        sched = self._scheduler
        try:
            self._membership.save_settings(name, sched.interval, bool(sched.paused))
        except (*DB_ERRORS, psycopg.Error) as exc:
            logger.warning("could not keep the backup settings of %r in the store: %s", name, type(exc).__name__)

    def load(self) -> None:
        """Apply the settings kept for this member's name."""
        name = self._membership.name
        if name is None:
            return
        found = self._membership.load_settings(name)
        if found is None:
            return
        interval, paused = found
        sched = self._scheduler
        if interval is not None and interval != sched.interval:
            sched.set_interval(interval)
        if paused:
            sched.pause()
        else:
            sched.resume()


__all__ = ["Settings"]
