"""HybridSaver: an InMemorySaver served from memory and backed up to PostgreSQL in generations.

This module is the facade LangGraph and operators call: validation, construction and lifecycle, and
delegation to the components that own the state. ``memory`` (the cache, residency, the change log,
writes and edits), ``store`` (PostgreSQL), ``fleet`` (membership, ownership, handoffs) and ``ops``
(backups, restores, the scheduler, commands, settings). Each component gets its collaborators here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg_pool import ConnectionPool

from persistence.db import DB_ERRORS, _first_line, describe_url, open_pool
from persistence.errors import DatabaseUnavailable, InvalidValue, SaverClosed
from persistence.fleet import Member, Membership
from persistence.fleet.member import FleetMember
from persistence.fleet.messenger import Messenger
from persistence.fleet.ownership import Ownership
from persistence.fleet.remote import Answer
from persistence.memory import MemoryCache
from persistence.memory.edits import Edits
from persistence.memory.listing import list_all
from persistence.memory.writes import put_checkpoint, put_task_writes
from persistence.ops import lifecycle
from persistence.ops.backup import BackupWriter
from persistence.ops.commands import CommandHandler
from persistence.ops.restore import Progress, Restorer, VerifyResult
from persistence.ops.scheduler import BackupScheduler, check_interval
from persistence.ops.settings import Settings
from persistence.records import BackupRun, RestoreResult, SaverStats
from persistence.store import DEFAULT_SCHEMA, Generation, Snapshot, Store
from persistence.store.link import DatabaseLink

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_RETENTION = 50
DEFAULT_HANDOFF = 5.0
#: PostgreSQL refuses a bytea over 1 GB; refuse such values at ``put`` instead of at backup.
MAX_VALUE_BYTES = 512 * 1024 * 1024


def _check_options(retention: Any, memory_budget: Any, handoff_timeout: Any, name: Any) -> None:
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 2:
        raise ValueError(f"retention={retention!r}: keep at least 2 generations so a restore can always be undone.")
    if memory_budget is not None and (
        isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1
    ):
        raise ValueError(
            f"memory_budget={memory_budget!r}: give a number of bytes (an int, e.g. 512 * 1024**2), "
            "or None to keep every thread in memory."
        )
    if isinstance(handoff_timeout, bool) or not isinstance(handoff_timeout, (int, float)) or handoff_timeout <= 0:
        raise ValueError(f"handoff_timeout={handoff_timeout!r}: give a number of seconds greater than 0.")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name={name!r}: give a non-empty str (it keys the operator's settings), or None.")


class HybridSaver(InMemorySaver):
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
        schema: str = DEFAULT_SCHEMA,
        serde: SerializerProtocol | None = None,
        handle_signals: bool = True,
        start: bool = True,
        listen: bool = True,
        max_value_bytes: int = MAX_VALUE_BYTES,
        memory_budget: int | None = None,
        name: str | None = None,
        handoff_timeout: float = DEFAULT_HANDOFF,
        summarize: bool = True,
    ) -> None:
        if backup_interval is not None:
            backup_interval = check_interval(backup_interval)
        _check_options(retention, memory_budget, handoff_timeout, name)
        super().__init__(serde=serde)
        self.conninfo = conninfo or pool.conninfo
        self.retention = retention
        self.max_value_bytes = max_value_bytes
        self.memory_budget = memory_budget
        self.name = name
        self.handoff_timeout = float(handoff_timeout)
        self.summarize = summarize
        # an Event, not a bool: graphs compiled with LANGGRAPH_STRICT_MSGPACK hold a shallow copy
        # of the saver, and must see it closed too
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._listen = listen
        closed = self._closed.is_set

        self.cache = cache = MemoryCache(budget=memory_budget)
        # InMemorySaver's code serves LangGraph from the cache's dicts, under the cache's lock
        self.storage, self.writes, self.blobs, self.lock = cache.storage, cache.writes, cache.blobs, cache.lock
        self.store = store = Store(pool, schema)
        self.membership = membership = Membership(pool, self.conninfo, schema, name)
        self._link = link = DatabaseLink(pool, self.conninfo, [store, membership], owns_pool=False)
        self._messenger = messenger = Messenger(link, membership)
        self._ownership = ownership = Ownership(
            cache, store, membership, link, messenger, handoff_timeout=self.handoff_timeout, budget=memory_budget,
            closed=closed,
        )  # fmt: skip
        self._writer = writer = BackupWriter(
            cache, store, link, ownership, membership, serde=self.serde, summarize=summarize, retention=retention,
            attach=self._attach, closed=closed,
        )  # fmt: skip
        cache.bind(ownership.load_threads, writer)
        self._member = member = FleetMember(
            cache, ownership, membership, link, writer, figures=self._figures, closed=closed
        )
        self._restorer = Restorer(
            cache, store, link, ownership, membership, messenger, member, writer, budget=memory_budget
        )
        self._edits = Edits(cache, self._stored_runs)
        self.loaded_generation: int | None = None
        self.scheduler: BackupScheduler | None = None
        self._settings: Settings | None = None
        if start:
            self._start(backup_interval, handle_signals)

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        backup_interval: float | None = DEFAULT_INTERVAL,
        retention: int = DEFAULT_RETENTION,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = 4,
        allow_offline: bool = False,
        **kwargs: Any,
    ) -> HybridSaver:
        """Open a pool on ``url`` and return a ready saver: schema set up, member of the store's
        fleet, threads loaded (all of them, or the most recent in the background with a
        ``memory_budget``), backup job started. The saver owns the pool and closes it in ``close()``.

        With ``allow_offline`` a saver whose database is unreachable still starts and serves from
        memory; it attaches (and backs up what it was told) as soon as the database answers.

        Raises:
            DatabaseUnavailable: ``url`` is malformed or the database cannot be reached.
        """
        if not isinstance(url, str):
            raise DatabaseUnavailable(
                f"The database URL must be a str, got {type(url).__name__}; pass a connection string like "
                "postgresql://user:password@host:5432/dbname (or set DATABASE_URL)."
            )
        handle_signals = kwargs.pop("handle_signals", True)
        kwargs.pop("start", None)
        offline_error: DatabaseUnavailable | None = None
        try:
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
                schema=schema,
                start=False,
                handle_signals=handle_signals,
                **kwargs,
            )
            saver._link.owns_pool = True
            if offline_error is not None:
                saver._link.attach_error = str(offline_error)
                saver._link.mark_failed()
                logger.warning("starting offline, serving from memory: %s", offline_error)
            saver._start(backup_interval, handle_signals, allow_offline=allow_offline)
        except BaseException:
            pool.close()
            raise
        return saver

    def _start(self, backup_interval: float | None, handle_signals: bool, allow_offline: bool = False) -> None:
        self.scheduler = BackupScheduler(self._writer.scheduled, backup_interval, heartbeat=self._member.heartbeat)
        self._writer.use_scheduler(self.scheduler)
        self._settings = Settings(self.scheduler, self.membership, self._link)
        if self._link.attach_error is None:
            try:
                self._attach()
            except DatabaseUnavailable as exc:
                if not allow_offline:
                    self.membership.leave()
                    raise
                self._link.attach_error = str(exc)
                logger.warning("starting offline, serving from memory: %s", exc)
        self.scheduler.start()
        lifecycle.register(self, handle_signals)

    def _attach(self) -> None:
        """Set up the store, join the fleet, load threads; start listening for commands."""
        link, store, ownership = self._link, self.store, self._ownership
        try:
            store.setup()
            if self.membership.instance_id is None:
                self.membership.join()
            if self._settings is not None:
                self._settings.load()
            self.loaded_generation = store.latest_generation()
            ownership.resolve_provisional()
            if self.memory_budget is None:
                ownership.warm()
                ownership.refresh_complete()
            else:
                self.cache.complete = False
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot set up the backup store on {describe_url(self.conninfo)}: "
                f"{link.scrub(str(exc))}. Check that PostgreSQL is running and DATABASE_URL is right."
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DatabaseUnavailable(
                f"No permission to create or use schema {store.schema!r} on {describe_url(self.conninfo)}: "
                f"{_first_line(link.scrub(str(exc)))}. Grant CREATE on the database (or USAGE and "
                "CREATE on the schema) to this user, or pass another schema."
            ) from None
        link.attached = True
        link.attach_error = None
        link.mark_failed(False)
        if self.memory_budget is not None:
            ownership.warm_in_background()
        if self._listen and self._settings is not None:
            self._messenger.listen(
                store, CommandHandler(self._writer, self._restorer, self._settings, self._member, self._figures)
            )
        logger.info(
            "member %s attached to %s (generation %s, %s threads in memory)",
            self.instance_id,
            describe_url(self.conninfo),
            self.loaded_generation,
            len(self.cache.entries),
        )

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait for the warm start running in the background (with a budget); True when it is done."""
        return self._ownership.wait_warm(timeout)

    def close(self) -> None:
        """Take a final backup, give the threads back to the fleet, stop the jobs and close an owned pool.

        Idempotent. If the final backup fails, the error is logged and the run recorded as failed.
        """
        with self._close_lock:
            if self._closed.is_set():
                return
            if self.scheduler is not None:
                self.scheduler.shutdown()
            self._messenger.stop()
            try:
                run = self.backup(trigger="close")
                if not run.ok:
                    logger.error("final backup failed; %s changes were not saved: %s", run.pending, run.error)
            finally:
                self._closed.set()
                if self._link.attached:
                    self.membership.leave()
                if self._link.owns_pool:
                    self.pool.close()
                lifecycle.unregister(self)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> HybridSaver:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    async def __aenter__(self) -> HybridSaver:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await asyncio.to_thread(self.close)

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise SaverClosed("This HybridSaver is closed. Create a new one with HybridSaver.from_url(...).")

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

    def _stored_runs(self, wanted: set[str]) -> list[str]:
        return self._link.ask(
            lambda: self.store.threads_with_runs(sorted(wanted)),
            "delete_for_runs needs PostgreSQL to find the threads not in memory, and it cannot be reached; "
            "nothing was deleted. Retry when the database is back.",
        )

    # -- validation -----------------------------------------------------------------------------

    def _key(self, config: RunnableConfig, name: str, default: str | None = None) -> str:
        try:
            value = config["configurable"][name] if default is None else config["configurable"].get(name, default)
        except (KeyError, TypeError):
            raise InvalidValue(
                f"config['configurable'][{name!r}] is missing; pass it in the config, "
                "e.g. {'configurable': {'thread_id': 'chat-1'}}."
            ) from None
        if not isinstance(value, str):
            raise InvalidValue(
                f"{name} must be a str, got {type(value).__name__} {value!r:.80}; convert it with str(...) "
                "so it can be backed up and restored exactly."
            )
        return value

    def _resident_now(self, config: RunnableConfig | None) -> bool:
        if config is None:
            return False
        return config.get("configurable", {}).get("thread_id") in self.cache.entries

    # -- reads ------------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._closed.is_set():
            self._check_open()
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        if not isinstance(thread_id, str):
            return None

        def read() -> CheckpointTuple | None:
            namespaces = self.storage.get(thread_id)
            if namespaces is None or ns not in namespaces:
                return None
            return InMemorySaver.get_tuple(self, config)

        return self.cache.read(thread_id, read)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._resident_now(config):
            return self.get_tuple(config)
        return await asyncio.to_thread(self.get_tuple, config)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        self._check_open()
        thread_id = config["configurable"]["thread_id"]
        if not isinstance(thread_id, str):
            return InMemorySaver.get_delta_channel_history(self, config=config, channels=channels)
        return self.cache.read(
            thread_id, lambda: InMemorySaver.get_delta_channel_history(self, config=config, channels=channels)
        )

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(self.get_delta_channel_history, config=config, channels=channels)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, of one thread or (``config=None``) of every thread of the store:
        resident threads from memory, then cold ones read from PostgreSQL without making them resident."""
        self._check_open()
        if config is None:
            return list_all(self.cache, self.store, self._link, self.serde, filter, before, limit)
        thread_id = config["configurable"]["thread_id"]
        if not isinstance(thread_id, str):
            return iter(())

        def snapshot() -> InMemorySaver:
            with self.lock:
                return self.cache.view([thread_id], self.serde)

        view = self.cache.read(thread_id, snapshot)
        return InMemorySaver.list(view, config, filter=filter, before=before, limit=limit)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if config is not None and self._resident_now(config):
            items = self.list(config, filter=filter, before=before, limit=limit)
        else:
            items = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    # -- writes (under the lock, tracked) -------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._check_open()
        thread_id = self._key(config, "thread_id")
        ns = self._key(config, "checkpoint_ns", "")
        if not isinstance(checkpoint.get("id"), str):
            raise InvalidValue(f"checkpoint['id'] must be a str, got {checkpoint.get('id')!r:.80}.")
        for v in new_versions.values():
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise InvalidValue(f"channel version {v!r:.80} must be a str, int or float.")
        limit = self.max_value_bytes
        return self.cache.write(
            [thread_id],
            lambda e: put_checkpoint(self.cache, self, e[0], config, checkpoint, metadata, new_versions, ns, limit),
        )

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._check_open()
        thread_id = self._key(config, "thread_id")
        ns = self._key(config, "checkpoint_ns", "")
        checkpoint_id = self._key(config, "checkpoint_id")
        if not isinstance(task_id, str) or not isinstance(task_path, str):
            raise InvalidValue(f"task_id and task_path must be str, got {task_id!r:.80} and {task_path!r:.80}.")
        outer = (thread_id, ns, checkpoint_id)
        limit = self.max_value_bytes
        self.cache.write(
            [thread_id],
            lambda e: put_task_writes(self.cache, self, e[0], config, writes, task_id, task_path, outer, limit),
        )

    # -- edits --------------------------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        self._check_open()
        self._edits.delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of one thread to another (replacing nothing else)."""
        self._check_open()
        self._edits.copy_thread(source_thread_id, target_thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep_last: int | None = None) -> None:
        """Prune checkpoints of ``thread_ids``.

        Args:
            strategy: ``"keep_latest"`` keeps the newest checkpoint of each namespace,
                ``"keep_last"`` keeps the newest ``keep_last``, ``"delete"`` removes the threads.
            keep_last: how many checkpoints ``"keep_last"`` keeps per namespace (>= 1).
        """
        self._check_open()
        self._edits.prune(thread_ids, self.serde, strategy=strategy, keep_last=keep_last)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep_last: int | None = None
    ) -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy, keep_last=keep_last))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete every checkpoint (with its writes) whose metadata ``run_id`` is in ``run_ids``,
        in every thread of the store (cold threads that may hold one are loaded first)."""
        self._check_open()
        self._edits.delete_for_runs(run_ids, self.serde)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

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
        assert self._settings is not None
        self._settings.set_interval(seconds)

    def pause(self) -> None:
        """Pause scheduled backups (manual backups and the final one still run)."""
        self._check_open()
        assert self._settings is not None
        self._settings.pause()

    def resume(self) -> None:
        """Resume scheduled backups."""
        self._check_open()
        assert self._settings is not None
        self._settings.resume()

    # -- figures --------------------------------------------------------------------------------

    def thread_rows(self, thread_id: str) -> Snapshot:
        """A copy of one thread's rows as served now (loaded first when it is cold): its
        checkpoints, writes and channel values in InMemorySaver's shapes."""
        self._check_open()
        return self.cache.copy_thread_rows(thread_id, self.serde)

    def thread_ids(self) -> list[str]:
        """Ids of the resident threads that hold at least one checkpoint."""
        return self.cache.thread_ids()

    def pending_threads(self) -> set[str]:
        """Threads with changes not yet in PostgreSQL."""
        return self.cache.pending_threads()

    def stats(self) -> SaverStats:
        """Resident threads and checkpoints, pending changes, backup lag and the residency figures."""
        threads, checkpoints = self.cache.counts()
        pending, since = self.cache.pending()
        res = self.cache.residency.stats()
        last = self.last_run
        return SaverStats(
            threads=threads,
            checkpoints=checkpoints,
            pending=pending,
            lag_seconds=time.time() - since if since is not None else 0.0,
            last_backup=last,
            last_success=self.last_success,
            database_ok=(last is None or last.ok) and not self._link.failed,
            resident_threads=res.resident_threads,
            resident_bytes=res.resident_bytes,
            dirty_bytes=res.dirty_bytes,
            memory_budget=res.memory_budget,
            hits=res.hits,
            loads=res.loads,
            evictions=res.evictions,
            instance_id=self.instance_id,
        )

    def _figures(self) -> dict[str, Any]:
        """This member's figures for its heartbeat row and the ``status`` command."""
        stats = self.stats()
        last = stats.last_backup
        sched = self.scheduler
        return {
            "resident_threads": stats.resident_threads,
            "resident_bytes": stats.resident_bytes,
            "memory_budget": stats.memory_budget,
            "checkpoints": stats.checkpoints,
            "pending": stats.pending,
            "lag_seconds": round(stats.lag_seconds, 3),
            "hits": stats.hits,
            "loads": stats.loads,
            "evictions": stats.evictions,
            "last_run_at": last.finished_at.isoformat() if last else None,
            "last_run_ok": last.ok if last else None,
            "last_generation": stats.last_success.generation if stats.last_success else None,
            "last_error": last.error if last else None,
            "interval": sched.interval if sched is not None else None,
            "paused": bool(sched.paused) if sched is not None else False,
        }


__all__ = ["BackupRun", "HybridSaver", "RestoreResult", "SaverStats"]
