"""HybridSaver: an InMemorySaver served from memory and backed up to PostgreSQL in generations.

This module is the facade operators call (the LangGraph API is in ``checkpointer``): construction and
lifecycle, and delegation to the components that own the state: ``memory`` (the cache, residency, the change log,
writes and edits), ``store`` (PostgreSQL), ``fleet`` (membership, ownership, handoffs) and ``ops``
(backups, restores, the scheduler, commands, settings). Each component gets its collaborators here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg_pool import ConnectionPool

from persistence.checkpointer import MAX_VALUE_BYTES, CacheCheckpointer
from persistence.config import (
    ConfigError,
    SaverOptions,
    check_saver_options,
    database_url,
    parse_duration,
    saver_settings,
)
from persistence.db import open_pool, pool_conninfo
from persistence.errors import DatabaseUnavailable
from persistence.fleet import Member, Membership
from persistence.fleet.lease import DEFAULT_LEASE
from persistence.fleet.member import FleetMember
from persistence.fleet.messenger import Messenger
from persistence.fleet.ownership import Ownership
from persistence.fleet.remote import Answer
from persistence.memory import MemoryCache
from persistence.ops import lifecycle
from persistence.ops.attach import Attachment
from persistence.ops.backup import BackupWriter
from persistence.ops.commands import CommandHandler
from persistence.ops.figures import member_figures, saver_stats
from persistence.ops.health import Health, check_health
from persistence.ops.recovery import Recovery, final_backup, keep
from persistence.ops.recovery import recovery_dir as recovery_dir_of
from persistence.ops.restore import Progress, Restorer, VerifyResult
from persistence.ops.scheduler import BackupScheduler, check_interval
from persistence.ops.settings import Settings
from persistence.ops.telemetry import Telemetry, telemetry
from persistence.preflight import check_sessions
from persistence.records import BackupRun, RestoreResult, SaverStats
from persistence.serde import KEY_VARIABLE, encrypts, serde_from_env
from persistence.store import DEFAULT_SCHEMA, Generation, RestoreWindow, Store
from persistence.store.link import DatabaseLink

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_RETENTION = 50
DEFAULT_HANDOFF = 5.0
#: seconds ``close()`` retries a final backup that fails before it keeps the changes in a file
DEFAULT_CLOSE_TIMEOUT = 10.0


class HybridSaver(CacheCheckpointer):
    """A LangGraph checkpointer that serves every read and write from memory and backs the state
    up to PostgreSQL in incremental generations.

    Build it with :meth:`from_url` (owns its pool) or pass a ``psycopg_pool.ConnectionPool``
    (borrowed, not closed). ``close()`` takes a final backup; so do SIGTERM and interpreter exit.
    With a ``memory_budget`` only the recently used threads stay in memory; the others load from
    PostgreSQL when they are asked for. Several savers (processes) on one store form a fleet: each
    thread is served by one of them at a time.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        conninfo: str | None = None,
        backup_interval: float | None = DEFAULT_INTERVAL,
        retention: int = DEFAULT_RETENTION,
        retention_age: float | str | None = None,
        schema: str = DEFAULT_SCHEMA,
        serde: SerializerProtocol | None = None,
        handle_signals: bool = True,
        start: bool = True,
        listen: bool = True,
        max_value_bytes: int = MAX_VALUE_BYTES,
        memory_budget: int | None = None,
        name: str | None = None,
        handoff_timeout: float = DEFAULT_HANDOFF,
        lease_seconds: float = DEFAULT_LEASE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        recovery_dir: str | Path | None = None,
        summarize: bool = True,
        warm_start: bool = True,
    ) -> None:
        if backup_interval is not None:
            backup_interval = check_interval(backup_interval)
        check_saver_options(retention, memory_budget, handoff_timeout, name)
        try:
            age = parse_duration(retention_age)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self.conninfo = conninfo or pool_conninfo(pool)
        # an Event, not a bool: graphs compiled with LANGGRAPH_STRICT_MSGPACK hold a shallow copy
        # of the saver, and must see it closed too
        closed_event = threading.Event()
        closed = closed_event.is_set
        cache = MemoryCache(budget=memory_budget)
        store = Store(pool, schema)
        self.membership = membership = Membership(pool, self.conninfo, schema, name, lease_seconds=lease_seconds)
        link = DatabaseLink(pool, self.conninfo, [store, membership], owns_pool=False)
        self._messenger = messenger = Messenger(link, membership)
        self._ownership = ownership = Ownership(
            cache, store, membership, link, messenger, handoff_timeout=float(handoff_timeout), budget=memory_budget,
            closed=closed,
        )  # fmt: skip
        super().__init__(
            cache, store, link, serde=serde, max_value_bytes=max_value_bytes, tenure=ownership, closed=closed_event
        )
        self.retention = retention
        #: seconds: generations younger than this are kept whatever their count (None: the count alone)
        self.retention_age = age
        self.memory_budget = memory_budget
        self.name = name
        self.handoff_timeout = float(handoff_timeout)
        #: the serde encrypts: nothing of a conversation goes to the store in clear (no summary text)
        self.encrypted = encrypts(self.serde)
        self.summarize = summarize and not self.encrypted
        self._close_lock = threading.Lock()
        self.close_timeout = float(close_timeout)
        self._recovery = recovery = Recovery(cache, store, recovery_dir_of(recovery_dir))
        self._writer = writer = BackupWriter(
            cache, store, link, ownership, membership, serde=self.serde, summarize=summarize, retention=retention,
            retention_age=age,
            attach=self._attach, closed=closed, written=recovery.written,
        )  # fmt: skip
        cache.bind(ownership.load_threads, writer)
        self._member = member = FleetMember(
            cache, ownership, membership, link, writer, figures=self._figures, closed=closed
        )
        self.scheduler = scheduler = BackupScheduler(writer.scheduled, backup_interval, heartbeat=member.heartbeat)
        writer.use_scheduler(scheduler)
        self._settings = settings = Settings(scheduler, membership, link)
        self._restorer = restorer = Restorer(
            cache, store, link, ownership, membership, messenger, member, writer, budget=memory_budget
        )
        handler = CommandHandler(writer, restorer, settings, member, self._figures) if listen else None
        self._attachment = Attachment(
            cache,
            store,
            membership,
            link,
            ownership,
            messenger,
            settings,
            recovery,
            serde=self.serde,
            budget=memory_budget,
            listen=handler,
            warm=warm_start,
        )
        if start:
            self._start(handle_signals)

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        backup_interval: float | None = DEFAULT_INTERVAL,
        retention: int = DEFAULT_RETENTION,
        retention_age: float | str | None = None,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = 4,
        allow_offline: bool = False,
        serde: SerializerProtocol | None = None,
        handle_signals: bool = True,
        listen: bool = True,
        max_value_bytes: int = MAX_VALUE_BYTES,
        memory_budget: int | None = None,
        name: str | None = None,
        handoff_timeout: float = DEFAULT_HANDOFF,
        lease_seconds: float = DEFAULT_LEASE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        recovery_dir: str | Path | None = None,
        summarize: bool = True,
        warm_start: bool = True,
    ) -> HybridSaver:
        """Open a pool on ``url`` and return a ready saver: schema set up, member of the store's
        fleet, threads loaded (all of them, or the most recent in the background with a
        ``memory_budget``), backup job started. The saver owns the pool and closes it in ``close()``.

        Blocks while it connects and loads; in async code use :meth:`afrom_url`. It reads no
        environment variable for these arguments (:meth:`from_env` does), except the two every saver
        reads: ``HYBRID_SAVER_RECOVERY_DIR`` (when ``recovery_dir`` is None) and ``HYBRID_SAVER_NO_SIGNALS``.

        Args:
            url: a PostgreSQL connection string, ``postgresql://user:password@host:5432/dbname`` (several
                hosts with ``target_session_attrs=read-write`` follow a failover).
            backup_interval: seconds between scheduled backups (0.01 s to a week); None: only on demand
                and at close. A saver with a ``name`` keeps the interval set at run time in the store.
            retention: generations kept, at least 2 (so a restore can be undone).
            retention_age: generations younger than this are kept whatever their count: seconds, or a
                duration like ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``; None: the count alone.
            schema: the PostgreSQL schema of the store (one store per schema).
            pool_size: connections of the pool; the member uses 3 more (lease, LISTEN, a restore).
            allow_offline: start and serve from memory when the database cannot be reached, and attach
                (backing up what was written meanwhile) as soon as it answers.
            serde: LangGraph's serializer (e.g. an ``EncryptedSerializer``); None: LangGraph's default.
            handle_signals: take a final backup on SIGTERM (only in the main thread of a program that
                installed no SIGTERM handler of its own); False leaves SIGTERM alone.
            listen: answer other members' commands (handoffs, backups, restores, settings) over LISTEN.
            max_value_bytes: the largest serialized value a write may carry; larger ones are refused.
            memory_budget: bytes of threads kept resident (at least 64 KiB); least recently used clean
                threads are evicted and load again on demand. None: every thread stays in memory.
            name: the member's name; its interval and pause are kept under it across restarts.
            handoff_timeout: seconds to wait for another member to hand a thread over before ``ThreadBusy``.
            lease_seconds: how long the store counts this member alive after a renewal (0.5 s to an
                hour): what a ``kill -9`` costs in takeover time. Keep it under ``handoff_timeout``.
            close_timeout: seconds ``close()`` retries a failing final backup before it keeps the changes
                in a recovery file.
            recovery_dir: where ``close()`` keeps what it could not back up; None:
                ``HYBRID_SAVER_RECOVERY_DIR``, else ``.hybrid-saver/recovery`` in the working directory.
            summarize: keep each thread's title and text in the store for the console's search (never
                for an encrypting ``serde``).
            warm_start: load threads at start (all of them without a budget, the most recent with one);
                False: load each thread only when it is used (a console that must not take the fleet's
                threads, a short job).

        Raises:
            DatabaseUnavailable: ``url`` is malformed or the database cannot be reached (without
                ``allow_offline``).
            ValueError: an argument is out of range; the message names it and the fix.
        """
        if not isinstance(url, str):
            raise DatabaseUnavailable(
                f"The database URL must be a str, got {type(url).__name__}; pass a connection string like "
                "postgresql://user:password@host:5432/dbname (or set DATABASE_URL)."
            )
        offline_error: DatabaseUnavailable | None = None
        try:
            check_sessions(url, needed=pool_size + 3)
            pool = open_pool(url, max_size=pool_size)
        except DatabaseUnavailable as exc:
            if not allow_offline:
                raise
            offline_error = exc
            pool = open_pool(url, max_size=pool_size, check=False)
        try:
            saver = cls(
                pool,
                conninfo=url,
                backup_interval=backup_interval,
                retention=retention,
                retention_age=retention_age,
                schema=schema,
                serde=serde,
                handle_signals=handle_signals,
                start=False,
                listen=listen,
                max_value_bytes=max_value_bytes,
                memory_budget=memory_budget,
                name=name,
                handoff_timeout=handoff_timeout,
                lease_seconds=lease_seconds,
                close_timeout=close_timeout,
                recovery_dir=recovery_dir,
                summarize=summarize,
                warm_start=warm_start,
            )
            saver._link.owns_pool = True
            if offline_error is not None:
                saver._link.attach_error = str(offline_error)
                saver._link.mark_failed()
                logger.warning("starting offline, serving from memory: %s", offline_error)
            saver._start(handle_signals, allow_offline=allow_offline)
        except BaseException:
            pool.close()
            raise
        return saver

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Unpack[SaverOptions]) -> HybridSaver:
        """:meth:`from_url` configured from the environment (``env``, default ``os.environ``).

        Reads ``DATABASE_URL`` (required), ``BACKUP_INTERVAL`` (seconds; ``0``/``off``: none scheduled),
        ``BACKUP_RETENTION`` (generations), ``BACKUP_RETENTION_AGE`` (``7d``, ``12h``, ``30m``, ``90s`` or
        seconds), ``MEMORY_BUDGET`` (``512MB``, ``2GiB``, bytes), ``HYBRID_SAVER_NAME``,
        ``HYBRID_SAVER_SCHEMA``, ``HYBRID_SAVER_POOL_SIZE`` and ``LANGGRAPH_AES_KEY`` (when set, the
        saver encrypts with LangGraph's AES ``EncryptedSerializer``, as the dashboard and the CLI read
        it; needs the ``encryption`` extra). An unset variable leaves ``from_url``'s default. Keyword
        ``options`` (any of ``from_url``'s) win over the environment: their variables are not read.

        Raises:
            ConfigError: ``DATABASE_URL`` is missing, or a variable has a value that cannot be used.
            EncryptedStore: ``LANGGRAPH_AES_KEY`` is set but unusable (wrong length, no pycryptodome).
            DatabaseUnavailable: the database cannot be reached.
        """
        env = os.environ if env is None else env
        url = database_url(env)
        merged = saver_settings(env, skip=options.keys()).kwargs()
        if "serde" not in options and env.get(KEY_VARIABLE, ""):
            merged["serde"] = serde_from_env(env)
        merged.update(options)
        return cls.from_url(url, **merged)

    @classmethod
    async def afrom_url(cls, url: str, **options: Unpack[SaverOptions]) -> HybridSaver:
        """:meth:`from_url` in a worker thread, off the event loop: ``saver = await HybridSaver.afrom_url(url)``,
        or ``async with await HybridSaver.afrom_url(url) as saver:`` (leaving it closes the saver off the
        loop too). If the awaiting task is cancelled, the saver the thread still builds is closed."""
        return await cls._off_loop(lambda: cls.from_url(url, **options))

    @classmethod
    async def afrom_env(cls, env: Mapping[str, str] | None = None, **options: Unpack[SaverOptions]) -> HybridSaver:
        """:meth:`from_env` in a worker thread, off the event loop (see :meth:`afrom_url`)."""
        return await cls._off_loop(lambda: cls.from_env(env, **options))

    @staticmethod
    async def _off_loop(build: Callable[[], HybridSaver]) -> HybridSaver:
        building = asyncio.ensure_future(asyncio.to_thread(build))
        try:
            return await asyncio.shield(building)
        except asyncio.CancelledError:
            # nobody will get the saver: close it (final backup, leaves the fleet) once it is built
            def close_unclaimed(done: asyncio.Future[HybridSaver]) -> None:
                if not done.cancelled() and done.exception() is None:
                    threading.Thread(target=done.result().close, name="hybrid-saver-unclaimed-close").start()

            building.add_done_callback(close_unclaimed)
            raise

    def _start(self, handle_signals: bool, allow_offline: bool = False) -> None:
        if self._link.attach_error is None:
            try:
                self._attach()
            except DatabaseUnavailable as exc:
                if not allow_offline:
                    self.membership.leave()
                    raise
                self._link.attach_error = str(exc)
                logger.warning("starting offline, serving from memory: %s", exc)
        if self._attachment.recovered:
            self._writer.backup(trigger="recovered")
        self.scheduler.start()
        lifecycle.register(self, handle_signals)

    def _attach(self) -> None:
        self._attachment.attach()

    @property
    def loaded_generation(self) -> int | None:
        """The newest generation of the store when this saver attached."""
        return self._attachment.loaded_generation

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait for the warm start running in the background; True when it is done."""
        return self._ownership.wait_warm(timeout)

    def close(self) -> None:
        """Take a final backup, give the threads back to the fleet, stop the jobs and close an owned pool.

        Idempotent. A final backup that fails is retried for ``close_timeout`` seconds; if it still
        fails, the pending changes are kept in a recovery file (logged at ERROR with its path) that the
        next start on the same store writes back.
        """
        with self._close_lock:
            if self._closed.is_set():
                return
            if self.scheduler is not None:
                self.scheduler.shutdown()
            self._messenger.stop()
            # closed first: no write lands after the final backup's cut, to be lost
            self._closed.set()
            try:
                final_backup(self._writer, self.close_timeout, self._keep_pending)
            finally:
                if self._link.attached:
                    self.membership.leave()
                if self._link.owns_pool:
                    self.pool.close()
                lifecycle.unregister(self)

    def _keep_pending(self) -> Path | None:
        return keep(
            self.cache,
            self._recovery.folder,
            store_id=self._attachment.store_id or "",
            schema=self.store.schema,
            instance_id=self.instance_id,
        )

    def __enter__(self) -> HybridSaver:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    async def __aenter__(self) -> HybridSaver:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await asyncio.to_thread(self.close)

    # -- state of the link ------------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        """The pool in use (an owned pool is replaced by a fresh one after an outage)."""
        return self._link.pool

    @property
    def attached(self) -> bool:
        """The store is set up and this saver joined its fleet."""
        return self._link.attached

    @property
    def attach_error(self) -> str | None:
        """Why the saver could not attach yet (it started offline), or None."""
        return self._link.attach_error

    # -- backups and restores -----------------------------------------------------------------------

    def backup(self, trigger: str = "manual", request_id: str | None = None) -> BackupRun:
        """Write what changed since the last backup as a new generation.

        With nothing pending no generation is written (``run.generation`` is None, ``run.empty``).
        Never raises for database errors: the run is returned (and logged) with ``error`` set, and
        the changes stay pending for the next run.

        Raises:
            SaverClosed: the saver is closed.
        """
        self._check_open()
        return self._writer.backup(trigger, request_id)

    def add_listener(self, callback: Any) -> None:
        """Call ``callback(run)`` after every backup run."""
        self._writer.add_listener(callback)

    @property
    def last_run(self) -> BackupRun | None:
        return self._writer.last_run

    @property
    def last_success(self) -> BackupRun | None:
        return self._writer.last_success

    @property
    def history(self) -> Any:
        """The recent runs of this saver (a deque, oldest first)."""
        return self._writer.history

    def restore_window(self) -> RestoreWindow | None:
        """How far back a restore can go: the oldest and newest kept generations and their times
        (None before the first backup). Set by ``retention`` (a count of generations written by time or
        by hand) and ``retention_age`` (a minimum age)."""
        self._check_open()
        return self.store.upkeep.window()

    def generations(self, limit: int | None = None) -> list[Generation]:
        """Kept generations, newest first (``.generation``, ``.taken_at``, ``.checkpoints``)."""
        self._check_open()
        return self._restorer.generations(limit)

    def verify(self, generation: int, thread_id: str | None = None) -> VerifyResult:
        """Check every row of ``generation`` (all threads or one) against its checksum (see Restorer.verify)."""
        self._check_open()
        return self._restorer.verify(generation, thread_id)

    def restore(
        self,
        generation: int,
        thread_id: str | None = None,
        *,
        on_damage: str = "refuse",
        request_id: str | None = None,
        progress: Progress | None = None,
    ) -> RestoreResult:
        """Put back the state of ``generation``, for all threads or one, across the fleet.

        See :meth:`persistence.ops.restore.Restorer.restore` for the arguments and the errors.
        """
        self._check_open()
        return self._restorer.restore(
            generation, thread_id, on_damage=on_damage, request_id=request_id, progress=progress
        )

    # -- the fleet ------------------------------------------------------------------------------------

    @property
    def instance_id(self) -> int | None:
        """This saver's member id in the store (None until it attached)."""
        return self.membership.instance_id

    def members(self, *, include_stopped: bool = False) -> list[Member]:
        """The members of the store (``.instance_id``, ``.host``, ``.pid``, ``.alive``,
        ``.resident_threads``, ``.pending``, ``.lag_seconds``), figures as of their last heartbeat."""
        self._check_open()
        return self.membership.members(include_stopped=include_stopped)

    def ask(self, member: int, op: str, *, timeout: float = 60.0, **args: Any) -> Answer:
        """Send a command to another member and wait for its answer (see ``fleet/remote.py`` for the ops).

        Raises:
            CommandTimeout: no answer within ``timeout`` seconds.
        """
        return self._messenger.ask(member, op, timeout=timeout, **args)

    def release_threads(self, thread_ids: Sequence[str] | None = None, *, restore: bool = False) -> dict[str, Any]:
        """Back up, evict and give back ``thread_ids`` (None: every thread), so another member can take them."""
        return self._member.release_threads(thread_ids, restore=restore)

    def set_interval(self, seconds: float) -> None:
        """Run scheduled backups every ``seconds`` from now on (kept in the store for savers with a ``name``)."""
        self._check_open()
        self._settings.set_interval(seconds)

    def pause(self) -> None:
        """Pause scheduled backups (manual backups and the final one still run)."""
        self._check_open()
        self._settings.pause()

    def resume(self) -> None:
        """Resume scheduled backups."""
        self._check_open()
        self._settings.resume()

    # -- figures --------------------------------------------------------------------------------

    def stats(self) -> SaverStats:
        """Resident threads and checkpoints, pending changes, backup lag and the residency figures."""
        return saver_stats(self.cache, self._writer, self._link, self.instance_id)

    def health(self) -> Health:
        """``ok``, ``degraded`` or ``down``, with the reasons and the figures judged (database reachable,
        backup lag and last backup against the interval, lease, memory against the budget): see
        :mod:`persistence.ops.health`. One ``SELECT 1``; never raises for database errors."""
        return check_health(
            self.stats, self._link, self._ownership, self.membership.lease, self.scheduler, closed=self.closed
        )

    def telemetry(self) -> Telemetry:
        """Counters and histograms since the start (backup runs, loads, claims, handoffs, ThreadBusy,
        fencing refusals, lease reconnects), read by ``persistence.metrics``; no I/O."""
        return telemetry(self._writer, self.cache, self._ownership, self.membership.lease)

    def _figures(self) -> dict[str, Any]:
        """This member's figures for its heartbeat row and the ``status`` command."""
        return member_figures(self.stats(), self.scheduler, self.cache)


__all__ = ["BackupRun", "HybridSaver", "RestoreResult", "SaverStats"]
