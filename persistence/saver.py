"""HybridSaver: an InMemorySaver served from memory and backed up to PostgreSQL in generations.

This module is the coordinator: construction and lifecycle, and the checkpointer API (reads and
writes against memory, under the lock, tracked for the next backup). The rest lives beside it:
``residency`` (budget, load on miss, eviction), ``edits`` (deletes, copies, prunes), ``backup`` and
``restore``, ``member`` (the fleet:
claims, handoff, heartbeat, commands), ``store`` and ``fleet`` (the SQL), ``scheduler`` and
``remote`` (jobs and commands, which depend on callables, not on this class).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg_pool import ConnectionPool

from persistence import lifecycle
from persistence.backup import DB_ERRORS, BackupMixin
from persistence.changes import ChangeLog, mark
from persistence.db import _first_line, describe_url, open_pool, scrub
from persistence.edits import EditsMixin
from persistence.errors import DatabaseUnavailable, HybridSaverError, InvalidValue, SaverClosed
from persistence.fleet import Membership
from persistence.member import FleetMixin
from persistence.records import BackupRun, RestoreResult, SaverStats
from persistence.remote import CommandListener
from persistence.residency import Residency, Resident, blob_size, checkpoint_size, write_size
from persistence.restore import RestoreMixin
from persistence.scheduler import BackupScheduler, check_interval
from persistence.store import DEFAULT_SCHEMA, Snapshot, Store

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_INTERVAL = 30.0
DEFAULT_RETENTION = 50
DEFAULT_HANDOFF = 5.0
#: PostgreSQL refuses a bytea over 1 GB; refuse such values at ``put`` instead of at backup.
MAX_VALUE_BYTES = 512 * 1024 * 1024
#: cold threads loaded per query by ``list(None)``
LIST_BATCH = 100


def _unserialisable(exc: Exception, what: str) -> Exception:
    if isinstance(exc, HybridSaverError):
        return exc
    return InvalidValue(
        f"{what} cannot be serialised ({type(exc).__name__}: {str(exc)[:200]}); nothing was stored. "
        "Keep state values to types LangGraph's serializer handles (str, numbers within 64 bits, lists, "
        "dicts, messages, pydantic models, dataclasses) or pass a serde that handles yours."
    )


class HybridSaver(FleetMixin, RestoreMixin, BackupMixin, EditsMixin, InMemorySaver):
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
        super().__init__(serde=serde)
        self.pool = pool
        self.conninfo = conninfo or pool.conninfo
        self.store = Store(pool, schema)
        self.retention = retention
        self.max_value_bytes = max_value_bytes
        self.memory_budget = memory_budget
        self.name = name
        self.handoff_timeout = float(handoff_timeout)
        self.summarize = summarize
        self.lock = threading.RLock()
        self._backup_lock = threading.Lock()
        self._changes = ChangeLog()
        self._res = Residency(
            self.storage, self.writes, self.blobs, self.lock, memory_budget, self._load_threads, self._relieve
        )
        self.membership = Membership(pool, self.conninfo, schema, name)
        self._owns_pool = False
        # an Event, not a bool: graphs compiled with LANGGRAPH_STRICT_MSGPACK hold a shallow copy
        # of the saver, and must see it closed too
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._init_backups()
        self.loaded_generation: int | None = None
        self.scheduler: BackupScheduler | None = None
        self.attached = False
        self.attach_error: str | None = None
        self._commands: CommandListener | None = None
        self._db_failed = False
        self._listen = listen
        #: threads a restore of this member holds: not handed over until it is done
        self._restoring: set[str] = set()
        #: threads a restore rewrote under runs that may still be in flight (see RestoreMixin)
        self._restored: dict[str, float] = {}
        #: memory holds every thread of the store, so an unknown thread is a new one (see _load_threads)
        self._complete = True
        self._beats = 0
        self._warming: threading.Thread | None = None
        #: an early backup was asked of the scheduler (memory pressure)
        self._early = False
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
            saver._owns_pool = True
            if offline_error is not None:
                saver.attach_error = str(offline_error)
                saver._db_failed = True
                logger.warning("starting offline, serving from memory: %s", offline_error)
            saver._start(backup_interval, handle_signals, allow_offline=allow_offline)
        except BaseException:
            pool.close()
            raise
        return saver

    def _start(self, backup_interval: float | None, handle_signals: bool, allow_offline: bool = False) -> None:
        self.scheduler = BackupScheduler(self._scheduled_backup, backup_interval, heartbeat=self._heartbeat)
        if self.attach_error is None:
            try:
                self._attach()
            except DatabaseUnavailable as exc:
                if not allow_offline:
                    self.membership.leave()
                    raise
                self.attach_error = str(exc)
                logger.warning("starting offline, serving from memory: %s", exc)
        self.scheduler.start()
        lifecycle.register(self, handle_signals)

    def _attach(self) -> None:
        """Set up the store, join the fleet, load threads; start listening for commands."""
        try:
            self.store.setup()
            if self.membership.instance_id is None:
                self.membership.join()
            self._load_settings()
            self.loaded_generation = self.store.latest_generation()
            self._resolve_provisional()
            if self.memory_budget is None:
                self._warm()
                self._complete = not any(m.alive and m.instance_id != self.instance_id for m in self.members())
            else:
                self._complete = False
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot set up the backup store on {describe_url(self.conninfo)}: "
                f"{scrub(str(exc), self.conninfo)}. Check that PostgreSQL is running and DATABASE_URL is right."
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DatabaseUnavailable(
                f"No permission to create or use schema {self.store.schema!r} on {describe_url(self.conninfo)}: "
                f"{_first_line(scrub(str(exc), self.conninfo))}. Grant CREATE on the database (or USAGE and "
                "CREATE on the schema) to this user, or pass another schema."
            ) from None
        self.attached = True
        self.attach_error = None
        self._db_failed = False
        if self.memory_budget is not None:
            self._warm_in_background()
        if self._listen and self._commands is None and self.instance_id is not None:
            self._commands = CommandListener(self.store, self.conninfo, self.instance_id, self._handle_command)
            self._commands.start()
        logger.info(
            "member %s attached to %s (generation %s, %s threads in memory)",
            self.instance_id,
            describe_url(self.conninfo),
            self.loaded_generation,
            len(self._res.entries),
        )

    def _scheduled_backup(self) -> BackupRun | None:
        if self.closed:
            return None
        early, self._early = self._early, False
        return self.backup(trigger="pressure" if early else "scheduled")

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait for the warm start running in the background (with a budget); True when it is done."""
        warming = self._warming
        if warming is not None:
            warming.join(timeout)
            return not warming.is_alive()
        return True

    def close(self) -> None:
        """Take a final backup, give the threads back to the fleet, stop the jobs and close an owned pool.

        Idempotent. If the final backup fails, the error is logged and the run recorded as failed.
        """
        with self._close_lock:
            if self._closed.is_set():
                return
            self._close_locked()

    def _close_locked(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self._commands is not None:
            self._commands.stop()
        try:
            run = self.backup(trigger="close")
            if not run.ok:
                logger.error("final backup failed; %s changes were not saved: %s", run.pending, run.error)
        finally:
            self._closed.set()
            if self.attached:
                self.membership.leave()
            if self._owns_pool:
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

    def _check_size(self, typed: tuple[str, bytes], what: str) -> None:
        if len(typed[1]) > self.max_value_bytes:
            raise InvalidValue(
                f"{what} serialises to {len(typed[1]):,} bytes, more than the {self.max_value_bytes:,} "
                "bytes a backup row can hold; store large payloads elsewhere and keep a reference in the state."
            )

    # -- residency helpers ------------------------------------------------------------------------

    def _read(self, thread_id: str, read: Callable[[], Any]) -> Any:
        """Run ``read`` with ``thread_id`` resident; again if the thread was evicted meanwhile."""
        while True:
            entry, pinned = self._res.acquire(thread_id)
            try:
                result = read()
            except (KeyError, RuntimeError):
                if not entry.evicted:
                    raise
                continue
            finally:
                if pinned:
                    self._res.unpin(entry)
            if not entry.evicted:
                if self._res.over_budget():
                    with self.lock:
                        self._res.trim()
                return result

    def _write(self, thread_ids: Sequence[str], write: Callable[[list[Resident]], Any]) -> Any:
        """Run ``write(entries)`` under the lock with every thread of ``thread_ids`` resident.

        One thread needs no pin: under the lock nothing evicts it, and an eviction between the
        lookup and the lock is seen (``evicted``) and the lookup done again. Several threads are
        pinned, so loading one cannot evict another. A writer that finds memory over the budget
        makes room first (evicting, or backing up when only changed threads are left), so
        concurrent writers cannot carry memory further past the budget than one write each."""
        if self._res.over_budget():
            self._relieve()
        pin = len(thread_ids) > 1
        while True:
            acquired = [self._res.acquire(t, pin=pin) for t in thread_ids]
            try:
                with self.lock:
                    held = [entry for entry, _pinned in acquired]
                    if not any(e.evicted for e in held):
                        result = write(held)
                        break
            finally:
                for entry, pinned in acquired:
                    if pinned:
                        self._res.unpin(entry)
        if self._res.budget is not None:
            self._after_write(thread_ids)
        return result

    def _after_write(self, thread_ids: Sequence[str]) -> None:
        """Keep memory under the budget after a write: evict idle threads, and back up early when
        changes not yet in PostgreSQL press the budget."""
        res = self._res
        if res.budget is None:
            return
        if res.dirty_bytes > res.budget // 2 and self.scheduler is not None and not self._early:
            self._early = True
            self.scheduler.run_soon()
        if not res.over_budget():
            return
        with self.lock:
            res.trim(exclude=thread_ids)
        if res.over_budget():
            self._relieve()

    def _relieve(self) -> None:
        """Memory is over the budget with only threads that cannot be evicted: back up now so they
        can be (the writer waits, as a page cache throttles writers past its dirty limit). While
        PostgreSQL is unreachable nothing can be written, and memory grows past the budget instead
        of losing changes."""
        res = self._res
        if res.dirty_bytes and self.attached and not self._db_failed and not self.closed:
            self.backup(trigger="pressure")
        with self.lock:
            res.trim()

    def _touch(self, entry: Resident) -> None:
        """``entry``'s thread has a change for the next backup. Under the lock."""
        self._res.changed(entry)
        if self._changes.since is None:
            self._changes.since = time.time()

    def _view(self, thread_ids: Sequence[str]) -> InMemorySaver:
        """A plain InMemorySaver over copies of these resident threads (for lazy listing). Under the lock."""
        view = InMemorySaver(serde=self.serde)
        for tid in thread_ids:
            entry = self._res.entries.get(tid)
            namespaces = self.storage.get(tid)
            if entry is None or namespaces is None:
                continue
            view.storage[tid].update({ns: dict(cps) for ns, cps in namespaces.items()})
            for key in entry.write_keys:
                if key in self.writes:
                    view.writes[key] = dict(self.writes[key])
            for key in entry.blob_keys:
                if key in self.blobs:
                    view.blobs[key] = self.blobs[key]
        return view

    def _resident_now(self, config: RunnableConfig | None) -> bool:
        if config is None:
            return False
        return config.get("configurable", {}).get("thread_id") in self._res.entries

    def _ask_store(self, read: Callable[[], T], unreachable: str) -> T:
        """Run ``read`` (a query a caller waits for); while PostgreSQL is down, raise
        ``DatabaseUnavailable(unreachable)`` at once instead of waiting for the pool's timeout
        (the store's queries fail fast, see :func:`persistence.db.pool_connection`)."""
        if self.attached and self._reachable():
            try:
                return read()
            except DB_ERRORS:
                self._db_failed = True
        raise DatabaseUnavailable(unreachable)

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

        return self._read(thread_id, read)

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
        return self._read(
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
            return self._list_all(filter, before, limit)
        thread_id = config["configurable"]["thread_id"]
        if not isinstance(thread_id, str):
            return iter(())

        def snapshot() -> InMemorySaver:
            with self.lock:
                return self._view([thread_id])

        view = self._read(thread_id, snapshot)
        return InMemorySaver.list(view, config, filter=filter, before=before, limit=limit)

    def _list_all(
        self, filter: dict[str, Any] | None, before: RunnableConfig | None, limit: int | None
    ) -> Iterator[CheckpointTuple]:
        with self.lock:
            resident = list(self._res.entries)
            view = self._view(resident)
        left = limit
        for item in InMemorySaver.list(view, None, filter=filter, before=before, limit=left):
            yield item
            if left is not None:
                left -= 1
        if (left is not None and left <= 0) or self._complete:
            return
        stored = self._ask_store(
            self.store.live_thread_ids,
            "Listing every thread needs PostgreSQL for the threads not in memory, and it cannot be reached; "
            "list one thread instead, or retry when the database is back.",
        )
        skip = set(resident)
        cold = [t for t in stored if t not in skip]
        for start in range(0, len(cold), LIST_BATCH):
            snap = self.store.load_threads(cold[start : start + LIST_BATCH])
            batch = InMemorySaver(serde=self.serde)
            for tid, namespaces in snap.storage.items():
                batch.storage[tid].update(namespaces)
            batch.writes.update(snap.writes)
            batch.blobs.update(snap.blobs)
            for item in InMemorySaver.list(batch, None, filter=filter, before=before, limit=left):
                yield item
                if left is not None:
                    left -= 1
            if left is not None and left <= 0:
                return

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
        return self._write([thread_id], lambda e: self._put(e[0], config, checkpoint, metadata, new_versions, ns))

    def _put(
        self,
        entry: Resident,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        ns: str,
    ) -> RunnableConfig:
        thread_id, checkpoint_id = config["configurable"]["thread_id"], checkpoint["id"]
        if self._restored:
            self._check_not_restored(thread_id, ns, config["configurable"].get("checkpoint_id"))
        old_cp = self.storage.get(thread_id, {}).get(ns, {}).get(checkpoint_id)
        keys = [(thread_id, ns, k, v) for k, v in new_versions.items()]
        old_blobs = [self.blobs.get(k) for k in keys]
        try:
            result = InMemorySaver.put(self, config, checkpoint, metadata, new_versions)
            saved = self.storage[thread_id][ns][checkpoint_id]
            self._check_size(saved[0], "the checkpoint")
            for key in keys:
                self._check_size(self.blobs[key], f"channel {key[2]!r}")
        except Exception as exc:
            # InMemorySaver may have stored part of it before failing: take it back
            for key, old in zip(keys, old_blobs, strict=True):
                if old is None:
                    self.blobs.pop(key, None)
                else:
                    self.blobs[key] = old
            cps = self.storage.get(thread_id, {}).get(ns, {})
            if old_cp is None:
                cps.pop(checkpoint_id, None)
            else:
                cps[checkpoint_id] = old_cp
            raise _unserialisable(exc, "the checkpoint") from exc
        res = self._res
        res.grow(entry, checkpoint_size(saved) - (checkpoint_size(old_cp) if old_cp is not None else 0))
        log = self._changes
        mark(log.checkpoints, (thread_id, ns, checkpoint_id), old_cp is not None, saved)
        blobs = self.blobs
        for key, old in zip(keys, old_blobs, strict=True):
            value = blobs[key]
            entry.blob_keys.add(key)
            res.grow(entry, blob_size(value) - (blob_size(old) if old is not None else 0))
            mark(log.blobs, key, old is not None, value)
        self._touch(entry)
        return result

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
        self._write([thread_id], lambda e: self._put_writes(e[0], config, writes, task_id, task_path, outer))

    def _put_writes(
        self,
        entry: Resident,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
        outer: tuple[str, str, str],
    ) -> None:
        if self._restored:
            self._check_not_restored(outer[0], outer[1], outer[2])
        before = self.writes.get(outer)
        before_keys = dict(before) if before else {}

        def undo() -> None:
            if before is None:
                self.writes.pop(outer, None)
            else:
                before.clear()
                before.update(before_keys)

        try:
            InMemorySaver.put_writes(self, config, writes, task_id, task_path)
        except Exception as exc:
            undo()
            raise _unserialisable(exc, "a write") from exc
        stored = self.writes.get(outer, {})
        try:
            for idx, (channel, _value) in enumerate(writes):
                inner = (task_id, WRITES_IDX_MAP.get(channel, idx))
                if inner in stored and stored[inner] is not before_keys.get(inner):
                    self._check_size(stored[inner][2], f"the write to channel {channel!r}")
        except InvalidValue:
            undo()
            raise
        log = self._changes
        changed = False
        res = self._res
        for idx, (channel, _value) in enumerate(writes):
            inner = (task_id, WRITES_IDX_MAP.get(channel, idx))
            existed = inner in before_keys
            if inner[1] >= 0 and existed:
                continue  # InMemorySaver keeps the first write of a regular index
            if inner in stored:
                old = before_keys.get(inner)
                res.grow(entry, write_size(stored[inner]) - (write_size(old) if old is not None else 0))
                mark(log.writes, (*outer, *inner), existed, stored[inner])
                changed = True
        if outer in self.writes:
            entry.write_keys.add(outer)
        if changed:
            self._touch(entry)

    def thread_rows(self, thread_id: str) -> Snapshot:
        """A copy of one thread's rows as served now (loaded first when it is cold): its
        checkpoints, writes and channel values in InMemorySaver's shapes."""
        self._check_open()

        def copy() -> Snapshot:
            with self.lock:
                view = self._view([thread_id])
            return Snapshot(
                storage={
                    t: {ns: dict(c) for ns, c in n.items() if c} for t, n in view.storage.items() if any(n.values())
                },
                writes={k: v for k, v in view.writes.items() if v},
                blobs=dict(view.blobs),
            )

        return self._read(thread_id, copy)

    # -- figures --------------------------------------------------------------------------------

    def thread_ids(self) -> list[str]:
        """Ids of the resident threads that hold at least one checkpoint."""
        with self.lock:
            return [t for t, namespaces in self.storage.items() if any(namespaces.values())]

    def pending_threads(self) -> set[str]:
        """Threads with changes not yet in PostgreSQL."""
        with self.lock:
            return self._changes.threads()

    def stats(self) -> SaverStats:
        """Resident threads and checkpoints, pending changes, backup lag and the residency figures."""
        # counted without the lock (each list() copy is one atomic operation): writers never wait for it
        threads = 0
        checkpoints = 0
        for namespaces in list(self.storage.values()):
            n = sum(len(cps) for cps in list(namespaces.values()))
            if n:
                threads += 1
                checkpoints += n
        with self.lock:
            pending = len(self._changes)
            since = self._changes.since
        res = self._res.stats()
        last = self.last_run
        return SaverStats(
            threads=threads,
            checkpoints=checkpoints,
            pending=pending,
            lag_seconds=time.time() - since if since is not None else 0.0,
            last_backup=last,
            last_success=self.last_success,
            database_ok=(last is None or last.ok) and not self._db_failed,
            resident_threads=res.resident_threads,
            resident_bytes=res.resident_bytes,
            dirty_bytes=res.dirty_bytes,
            memory_budget=res.memory_budget,
            hits=res.hits,
            loads=res.loads,
            evictions=res.evictions,
            instance_id=self.instance_id,
        )


__all__ = ["BackupRun", "HybridSaver", "RestoreResult", "SaverStats"]
