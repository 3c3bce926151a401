"""HybridSaver: an InMemorySaver served from memory and backed up to PostgreSQL in generations."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg_pool import ConnectionPool, PoolTimeout

from persistence.db import _first_line, check_connection, describe_url, open_pool, scrub
from persistence.errors import (
    CorruptBackup,
    DatabaseUnavailable,
    HybridSaverError,
    InvalidValue,
    SaverClosed,
    ThreadNotFound,
)
from persistence.store import DEFAULT_SCHEMA, Changes, Generation, Snapshot, Store, enc, enc_version

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_RETENTION = 50
#: PostgreSQL refuses a bytea over 1 GB; refuse such values at ``put`` instead of at backup.
MAX_VALUE_BYTES = 512 * 1024 * 1024
POOL_TIMEOUT = 5.0

_DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, DatabaseUnavailable)


@dataclass(frozen=True)
class BackupRun:
    """The result of one backup run (also recorded in the runs table)."""

    trigger: str
    started_at: datetime
    finished_at: datetime
    generation: int | None
    rows: int = 0
    bytes: int = 0
    lag_seconds: float = 0.0
    pending: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class SaverStats:
    """Figures of the live saver."""

    threads: int
    checkpoints: int
    pending: int
    lag_seconds: float
    last_backup: BackupRun | None = None
    last_success: BackupRun | None = None
    database_ok: bool = True


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did, and how to undo it."""

    restored_from: int
    generation: int
    undo_generation: int | None
    thread_id: str | None
    threads: int
    checkpoints: int
    #: rows left out because they could not be decoded (``on_damage="skip"``)
    damaged: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Dirty:
    """Keys changed since the last backup, each with ``(existed, value)``: ``existed`` says 'a live
    row may exist in PostgreSQL', ``value`` is the value stored at the last change (None: deleted).

    Keeping the value here makes the backup's cut a swap: its rows are built from the swapped-out
    set outside the lock, and they are exactly the state at the moment of the swap.
    """

    checkpoints: dict[tuple, tuple[bool, Any]] = field(default_factory=dict)
    writes: dict[tuple, tuple[bool, Any]] = field(default_factory=dict)
    blobs: dict[tuple, tuple[bool, Any]] = field(default_factory=dict)
    deleted_threads: set[str] = field(default_factory=set)
    since: float | None = None

    def __len__(self) -> int:
        return len(self.checkpoints) + len(self.writes) + len(self.blobs) + len(self.deleted_threads)

    def take(self) -> _Dirty:
        """Move the keys into a new ``_Dirty`` and leave this one empty, in O(1): the containers are
        handed over, not copied. This object stays the one graphs share; its users read the
        containers through it, under the saver's lock."""
        out = _Dirty(self.checkpoints, self.writes, self.blobs, self.deleted_threads, self.since)
        self.checkpoints, self.writes, self.blobs, self.deleted_threads = {}, {}, {}, set()
        self.since = None
        return out


def _unserialisable(exc: Exception, what: str) -> Exception:
    if isinstance(exc, HybridSaverError):
        return exc
    return InvalidValue(
        f"{what} cannot be serialised ({type(exc).__name__}: {str(exc)[:200]}); nothing was stored. "
        "Keep state values to types LangGraph's serializer handles (str, numbers within 64 bits, lists, "
        "dicts, messages, pydantic models, dataclasses) or pass a serde that handles yours."
    )


def _mark(table: dict[tuple, tuple[bool, Any]], key: tuple, existed: bool, value: Any = None) -> None:
    """Record that ``key`` now holds ``value`` (None: deleted)."""
    if not existed:
        old = table.get(key)
        existed = old is not None and old[0]
    table[key] = (existed, value)


class HybridSaver(InMemorySaver):
    """A LangGraph checkpointer that serves every read and write from memory and backs the state
    up to PostgreSQL in incremental generations.

    Build it with :meth:`from_url` (owns its pool) or pass a ``psycopg_pool.ConnectionPool``
    (borrowed, not closed). ``close()`` takes a final backup; so do SIGTERM and interpreter exit.
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
    ) -> None:
        if backup_interval is not None:
            from persistence.scheduler import check_interval

            backup_interval = check_interval(backup_interval)
        if isinstance(retention, bool) or not isinstance(retention, int) or retention < 2:
            raise ValueError(f"retention={retention!r}: keep at least 2 generations so a restore can always be undone.")
        super().__init__(serde=serde)
        self.pool = pool
        self.conninfo = conninfo or pool.conninfo
        self.store = Store(pool, schema)
        self.retention = retention
        self.max_value_bytes = max_value_bytes
        self.lock = threading.RLock()
        self._backup_lock = threading.Lock()
        self._dirty = _Dirty()
        self._owns_pool = False
        # an Event, not a bool: graphs compiled with LANGGRAPH_STRICT_MSGPACK hold a shallow copy
        # of the saver, and must see it closed too
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._unlogged: list[dict[str, Any]] = []
        self.last_run: BackupRun | None = None
        self.last_success: BackupRun | None = None
        self.loaded_generation: int | None = None
        self._listeners: list[Callable[[BackupRun], None]] = []
        self.scheduler: Any = None
        self.attached = False
        self.attach_error: str | None = None
        self._commands: Any = None
        self._db_failed = False
        self._listen = listen
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
        **kwargs: Any,
    ) -> HybridSaver:
        """Open a pool on ``url`` and return a ready saver: schema set up, newest generation loaded,
        backup job started. The saver owns the pool and closes it in ``close()``.

        Raises:
            DatabaseUnavailable: ``url`` is malformed or the database cannot be reached.
            StoreLocked: another live saver owns this store.
        """
        if not isinstance(url, str):
            raise DatabaseUnavailable(
                f"The database URL must be a str, got {type(url).__name__}; pass a connection string like "
                "postgresql://user:password@host:5432/dbname (or set DATABASE_URL)."
            )
        allow_offline = bool(kwargs.pop("allow_offline", False))
        handle_signals = kwargs.get("handle_signals", True)
        offline_error: DatabaseUnavailable | None = None
        try:
            pool = open_pool(url, max_size=pool_size)
        except DatabaseUnavailable as exc:
            if not allow_offline:
                raise
            offline_error = exc
            pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                open=False,
                timeout=POOL_TIMEOUT,
                kwargs={"connect_timeout": 5},
                name="hybrid-saver",
            )
            pool.open(wait=False)
        try:
            saver = cls(
                pool,
                conninfo=url,
                backup_interval=backup_interval,
                retention=retention,
                schema=schema,
                start=False,
                **{k: v for k, v in kwargs.items() if k != "start"},
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
        if self.attach_error is None:
            try:
                self._attach()
            except DatabaseUnavailable as exc:
                if not allow_offline:
                    raise
                self.attach_error = str(exc)
                logger.warning("starting offline, serving from memory: %s", exc)
        if backup_interval is not None:
            from persistence.scheduler import BackupScheduler

            self.scheduler = BackupScheduler(self, backup_interval)
            self.scheduler.start()
        if self._listen:
            from persistence.remote import CommandListener

            self._commands = CommandListener(self)
            self._commands.start()
        _register_exit(self, handle_signals)

    def _heal_pool(self) -> None:
        """After a database error: check the server directly, and give an owned pool a fresh start.

        A pool whose connections died keeps retrying with growing back-off; a new pool connects at
        once, so the first run after an outage catches up without waiting for that back-off.
        """
        check_connection(self.conninfo)
        if self._owns_pool:
            old = self.pool
            self.pool = self.store.pool = open_pool(self.conninfo, max_size=old.max_size)
            old.close(timeout=1.0)
        self._db_failed = False

    def _attach(self) -> None:
        """Set up the store, take its lock and load the newest generation (merged under memory)."""
        try:
            self.store.setup()
            self.store.acquire(self.conninfo)
            gen = self.store.latest_generation()
            if gen is not None:
                snap = self.store.load()
                with self.lock:
                    if any(self.storage.values()) or self.writes or self.blobs or len(self._dirty):
                        self._merge_under(snap)
                    else:
                        self._replace_all(snap)
                self.loaded_generation = gen
                logger.info(
                    "loaded generation %s: %s threads, %s checkpoints", gen, len(snap.storage), snap.checkpoints
                )
        except _DB_ERRORS as exc:
            self.store.release()
            raise DatabaseUnavailable(
                f"Cannot set up the backup store on {describe_url(self.conninfo)}: "
                f"{scrub(str(exc), self.conninfo)}. Check that PostgreSQL is running and DATABASE_URL is right."
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            self.store.release()
            raise DatabaseUnavailable(
                f"No permission to create or use schema {self.store.schema!r} on {describe_url(self.conninfo)}: "
                f"{_first_line(scrub(str(exc), self.conninfo))}. Grant CREATE on the database (or USAGE and "
                "CREATE on the schema) to this user, or pass another schema."
            ) from None
        self.attached = True
        self.attach_error = None

    def _merge_under(self, snap: Snapshot) -> None:
        """Add the stored state under what memory already holds (memory wins). Caller holds the lock."""
        d = self._dirty
        for tid, namespaces in snap.storage.items():
            if tid in d.deleted_threads:
                continue
            for ns, cps in namespaces.items():
                mem = self.storage[tid].setdefault(ns, {})
                for cid, entry in cps.items():
                    if cid in mem:
                        _mark(d.checkpoints, (tid, ns, cid), True, mem[cid])
                    else:
                        mem[cid] = entry
        for outer, inner in snap.writes.items():
            if outer[0] in d.deleted_threads:
                continue
            mem_w = self.writes.setdefault(outer, {})
            for key, value in inner.items():
                if key in mem_w:
                    _mark(d.writes, (*outer, *key), True, mem_w[key])
                else:
                    mem_w[key] = value
        for key, value in snap.blobs.items():
            if key[0] in d.deleted_threads:
                continue
            if key in self.blobs:
                _mark(d.blobs, key, True, self.blobs[key])
            else:
                self.blobs[key] = value

    def close(self) -> None:
        """Take a final backup, stop the scheduler, release the store and close an owned pool.

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
            self.store.release()
            if self._owns_pool:
                self.pool.close()
            _unregister_exit(self)

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
        self.close()

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

    # -- reads (from memory, never creating entries) ---------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._closed.is_set():
            self._check_open()
        conf = config["configurable"]
        namespaces = self.storage.get(conf["thread_id"])
        if namespaces is None or conf.get("checkpoint_ns", "") not in namespaces:
            return None
        return super().get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        self._check_open()
        if config is not None and config["configurable"]["thread_id"] not in self.storage:
            return iter(())
        # snapshot the keys under the lock; the parent then reads immutable values
        with self.lock:
            view = InMemorySaver.__new__(InMemorySaver)
            view.serde = self.serde
            view.writes = self.writes
            view.blobs = self.blobs
            tids = [config["configurable"]["thread_id"]] if config is not None else list(self.storage)
            view.storage = defaultdict(
                lambda: defaultdict(dict),
                {t: {ns: dict(cps) for ns, cps in self.storage[t].items()} for t in tids if t in self.storage},
            )
        return InMemorySaver.list(view, config, filter=filter, before=before, limit=limit)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
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
        checkpoint_id = checkpoint["id"]
        with self.lock:
            existed_cp = checkpoint_id in self.storage.get(thread_id, {}).get(ns, {})
            existed_blobs = [(thread_id, ns, k, v) in self.blobs for k, v in new_versions.items()]
            try:
                result = super().put(config, checkpoint, metadata, new_versions)
                saved = self.storage[thread_id][ns][checkpoint_id]
                self._check_size(saved[0], "the checkpoint")
                for k, v in new_versions.items():
                    self._check_size(self.blobs[(thread_id, ns, k, v)], f"channel {k!r}")
            except Exception as exc:
                # InMemorySaver may have stored part of it before failing: take it back
                for (k, v), existed in zip(new_versions.items(), existed_blobs, strict=True):
                    if not existed:
                        self.blobs.pop((thread_id, ns, k, v), None)
                if not existed_cp:
                    self.storage.get(thread_id, {}).get(ns, {}).pop(checkpoint_id, None)
                raise _unserialisable(exc, "the checkpoint") from exc
            d = self._dirty
            if d.since is None:
                d.since = time.time()
            _mark(d.checkpoints, (thread_id, ns, checkpoint_id), existed_cp, saved)
            blobs = self.blobs
            for (k, v), existed in zip(new_versions.items(), existed_blobs, strict=True):
                key = (thread_id, ns, k, v)
                _mark(d.blobs, key, existed, blobs[key])
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
        with self.lock:
            before = self.writes.get(outer)
            before_keys = dict(before) if before else {}
            try:
                super().put_writes(config, writes, task_id, task_path)
            except Exception as exc:
                if before is None:
                    self.writes.pop(outer, None)
                else:
                    before.clear()
                    before.update(before_keys)
                raise _unserialisable(exc, "a write") from exc
            stored = self.writes.get(outer, {})
            try:
                for idx, (channel, _value) in enumerate(writes):
                    inner = (task_id, WRITES_IDX_MAP.get(channel, idx))
                    if inner in stored and stored[inner] is not before_keys.get(inner):
                        self._check_size(stored[inner][2], f"the write to channel {channel!r}")
            except InvalidValue:
                if before is None:
                    self.writes.pop(outer, None)
                else:
                    before.clear()
                    before.update(before_keys)
                raise
            d = self._dirty
            changed = False
            for idx, (channel, _value) in enumerate(writes):
                inner = (task_id, WRITES_IDX_MAP.get(channel, idx))
                existed = inner in before_keys
                if inner[1] >= 0 and existed:
                    continue  # InMemorySaver keeps the first write of a regular index
                if inner in stored:
                    _mark(d.writes, (*outer, *inner), existed, stored[inner])
                    changed = True
            if changed and d.since is None:
                d.since = time.time()

    def delete_thread(self, thread_id: str) -> None:
        self._check_open()
        with self.lock:
            self._forget_dirty({thread_id})
            self._dirty.deleted_threads.add(thread_id)
            if self._dirty.since is None:
                self._dirty.since = time.time()
            super().delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    def _forget_dirty(self, thread_ids: set[str]) -> None:
        d = self._dirty
        for table in (d.checkpoints, d.writes, d.blobs):
            for key in [k for k in table if k[0] in thread_ids]:
                del table[key]

    def _delete_keys(
        self,
        checkpoints: list[tuple[str, str, str]],
        blobs: list[tuple] = (),  # type: ignore[assignment]
    ) -> None:
        """Delete checkpoints (with their writes) and blobs from memory as tracked tombstones.

        Caller holds the lock.
        """
        d = self._dirty
        touched = False
        for tid, ns, cid in checkpoints:
            cps = self.storage.get(tid, {}).get(ns)
            if cps is not None and cid in cps:
                del cps[cid]
                _mark(d.checkpoints, (tid, ns, cid), True)
                touched = True
            for inner in self.writes.pop((tid, ns, cid), {}):
                _mark(d.writes, (tid, ns, cid, *inner), True)
                touched = True
        for key in blobs:
            if self.blobs.pop(key, None) is not None:
                _mark(d.blobs, key, True)
                touched = True
        if touched and d.since is None:
            d.since = time.time()

    def _unreferenced_blobs(self, thread_ids: set[str]) -> list[tuple]:
        """Blobs of ``thread_ids`` that no remaining checkpoint references. Caller holds the lock."""
        referenced: set[tuple] = set()
        for tid in thread_ids:
            for ns, cps in self.storage.get(tid, {}).items():
                for (ctype, cdata), _md, _parent in cps.values():
                    versions = self.serde.loads_typed((ctype, cdata)).get("channel_versions", {})
                    referenced.update((tid, ns, ch, v) for ch, v in versions.items())
        return [k for k in self.blobs if k[0] in thread_ids and k not in referenced]

    # -- extended capabilities: copy_thread, prune, delete_for_runs ------------------------------

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of one thread to another (replacing nothing else)."""
        self._check_open()
        if not isinstance(target_thread_id, str):
            raise InvalidValue(f"target thread id must be a str, got {target_thread_id!r:.80}.")
        with self.lock:
            src = self.storage.get(source_thread_id)
            if not src:
                return
            d = self._dirty
            if d.since is None:
                d.since = time.time()
            target = self.storage[target_thread_id]
            for ns, cps in src.items():
                dst = target.setdefault(ns, {})
                for cid, entry in cps.items():
                    _mark(d.checkpoints, (target_thread_id, ns, cid), cid in dst, entry)
                    dst[cid] = entry
            for (tid, ns, cid), inner in list(self.writes.items()):
                if tid != source_thread_id:
                    continue
                dst_w = self.writes.setdefault((target_thread_id, ns, cid), {})
                for key, value in inner.items():
                    _mark(d.writes, (target_thread_id, ns, cid, *key), key in dst_w, value)
                    dst_w[key] = value
            for (tid, ns, ch, ver), value in list(self.blobs.items()):
                if tid != source_thread_id:
                    continue
                key = (target_thread_id, ns, ch, ver)
                _mark(d.blobs, key, key in self.blobs, value)
                self.blobs[key] = value

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.copy_thread(source_thread_id, target_thread_id)

    def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
    ) -> None:
        """Prune checkpoints of ``thread_ids``.

        Args:
            strategy: ``"keep_latest"`` keeps the newest checkpoint of each namespace,
                ``"keep_last"`` keeps the newest ``keep_last``, ``"delete"`` removes the threads.
            keep_last: how many checkpoints ``"keep_last"`` keeps per namespace (>= 1).
        """
        self._check_open()
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread ids, not a str")
        if strategy == "delete":
            for tid in thread_ids:
                self.delete_thread(tid)
            return
        if strategy == "keep_latest":
            keep = 1
        elif strategy == "keep_last":
            if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
                raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
            keep = keep_last
        else:
            raise ValueError(f"Unknown prune strategy {strategy!r}: use 'keep_latest', 'keep_last' or 'delete'.")
        tids = set(thread_ids)
        with self.lock:
            doomed: list[tuple[str, str, str]] = []
            for tid in tids:
                for ns, cps in self.storage.get(tid, {}).items():
                    ordered = sorted(cps, reverse=True)
                    doomed.extend((tid, ns, cid) for cid in ordered[keep:])
            if not doomed:
                return
            self._delete_keys(doomed)
            self._delete_keys([], self._unreferenced_blobs(tids))

    async def aprune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
    ) -> None:
        self.prune(thread_ids, strategy=strategy, keep_last=keep_last)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete every checkpoint (with its writes) whose metadata ``run_id`` is in ``run_ids``."""
        self._check_open()
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run ids, not a str")
        wanted = set(run_ids)
        if not wanted:
            return
        with self.lock:
            doomed: list[tuple[str, str, str]] = []
            for tid, namespaces in self.storage.items():
                for ns, cps in namespaces.items():
                    for cid, (_cp, md, _parent) in cps.items():
                        if self.serde.loads_typed(md).get("run_id") in wanted:
                            doomed.append((tid, ns, cid))
            if not doomed:
                return
            self._delete_keys(doomed)
            self._delete_keys([], self._unreferenced_blobs({t for t, _, _ in doomed}))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.delete_for_runs(run_ids)

    # -- backup ---------------------------------------------------------------------------------

    def _cut(self) -> _Dirty:
        """Take the dirty keys (with their values), leaving an empty set. Caller holds the lock: O(1)."""
        return self._dirty.take()

    @staticmethod
    def _changes(cut: _Dirty) -> Changes:
        """The rows and tombstones of a cut. Needs no lock: the cut is no longer shared."""
        changes = Changes(deleted_threads=sorted(cut.deleted_threads))
        rows, tombs = changes.rows, changes.tombstones
        cp_rows, cp_tombs = rows["checkpoints"], tombs["checkpoints"]
        for (tid, ns, cid), (existed, entry) in cut.checkpoints.items():
            ekey = (enc(tid), enc(ns), enc(cid))
            if existed:
                cp_tombs.append(ekey)
            if entry is not None:
                (ctype, cdata), (mtype, mdata), parent = entry
                cp_rows.append((*ekey, enc(parent) if parent is not None else None, ctype, cdata, mtype, mdata))
        w_rows, w_tombs = rows["writes"], tombs["writes"]
        for (tid, ns, cid, task, idx), (existed, value) in cut.writes.items():
            ekey = (enc(tid), enc(ns), enc(cid), enc(task), idx)
            if existed:
                w_tombs.append(ekey)
            if value is not None:
                _task, channel, (vtype, vdata), path = value
                w_rows.append((*ekey, enc(channel), vtype, vdata, enc(path)))
        b_rows, b_tombs = rows["blobs"], tombs["blobs"]
        for (tid, ns, ch, ver), (existed, value) in cut.blobs.items():
            ekey = (enc(tid), enc(ns), enc(ch), enc_version(ver))
            if existed:
                b_tombs.append(ekey)
            if value is not None:
                b_rows.append((*ekey, value[0], value[1]))
        return changes

    def _merge_back(self, cut: _Dirty) -> None:
        """Put the keys of a failed cut back into the pending set. Caller holds the lock."""
        d = self._dirty
        for old, new in ((cut.checkpoints, d.checkpoints), (cut.writes, d.writes), (cut.blobs, d.blobs)):
            for key, (existed, value) in old.items():
                if key[0] in d.deleted_threads:
                    continue
                newer = new.get(key)
                # a newer change keeps its value; a live row may exist if either change says so
                new[key] = (existed or newer[0], newer[1]) if newer is not None else (existed, value)
        d.deleted_threads |= cut.deleted_threads
        if cut.since is not None:
            d.since = cut.since if d.since is None else min(cut.since, d.since)

    def backup(self, trigger: str = "manual", request_id: str | None = None, *, force: bool | None = None) -> BackupRun:
        """Write what changed since the last backup as a new generation.

        A manual backup of a clean saver returns the latest generation (writing an empty one when
        the store has none). Never raises for database errors: the run is returned (and logged)
        with ``error`` set, and the changes stay pending for the next run.

        Raises:
            SaverClosed: the saver is closed.
        """
        self._check_open()
        with self._backup_lock:
            return self._backup_locked(trigger, request_id, force)

    def _backup_locked(
        self, trigger: str, request_id: str | None, force: bool | None, *, retain: bool = True
    ) -> BackupRun:
        started = datetime.now(UTC)
        if self._db_failed or not self.attached:
            try:
                if self._db_failed:
                    self._heal_pool()
                if not self.attached:
                    self._attach()
            except (*_DB_ERRORS, psycopg.Error, HybridSaverError) as exc:
                error = scrub(str(exc), self.conninfo)
                if not self.attached:
                    self.attach_error = error
                with self.lock:
                    pending, since = len(self._dirty), self._dirty.since
                run = BackupRun(
                    trigger=trigger,
                    started_at=started,
                    finished_at=datetime.now(UTC),
                    generation=None,
                    lag_seconds=time.time() - since if since is not None else 0.0,
                    pending=pending,
                    error=error,
                )
                self._record(run, request_id, (None, None))
                return run
        with self.lock:
            cut = self._cut()
        changes = self._changes(cut)
        lag = time.time() - cut.since if cut.since is not None else 0.0
        pending = len(cut)
        generation = None
        nrows = nbytes = 0
        error = None
        counts: tuple[int | None, int | None] = (None, None)
        try:
            self.store.acquire(self.conninfo)
            if force is None:
                force = trigger not in ("scheduled",) and self.store.latest_generation() is None
            generation, nrows, nbytes = self.store.write_generation(changes, trigger=trigger, force=force)
            if retain and (nrows or force):
                self.store.apply_retention(self.retention)
        except (*_DB_ERRORS, psycopg.Error, HybridSaverError) as exc:
            with self.lock:
                self._merge_back(cut)
            self._db_failed = isinstance(exc, _DB_ERRORS)
            error = scrub(f"{type(exc).__name__}: {exc}".strip(), self.conninfo)
            logger.warning("backup (%s) failed, %s changes stay pending: %s", trigger, pending, error)
        except BaseException:
            with self.lock:
                self._merge_back(cut)
            raise
        finished = datetime.now(UTC)
        if error is None and generation is not None:
            counts = self._generation_counts(generation)
        run = BackupRun(
            trigger=trigger,
            started_at=started,
            finished_at=finished,
            generation=generation,
            rows=nrows,
            bytes=nbytes,
            lag_seconds=lag,
            pending=pending,
            error=error,
        )
        self._record(run, request_id, counts)
        return run

    def _generation_counts(self, generation: int) -> tuple[int | None, int | None]:
        """(threads, checkpoints) of a written generation, for the runs table; (None, None) if unreadable."""
        try:
            gen = self.store.get_generation(generation)
        except (*_DB_ERRORS, HybridSaverError):
            return (None, None)
        return (gen.threads, gen.checkpoints)

    def _record(self, run: BackupRun, request_id: str | None, counts: tuple[int | None, int | None]) -> None:
        self.last_run = run
        if run.ok:
            self.last_success = run
        self._unlogged.append(
            {
                "trigger": run.trigger,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "generation": run.generation,
                "rows_written": run.rows,
                "bytes_written": run.bytes,
                "lag_seconds": run.lag_seconds,
                "pending": run.pending,
                "threads": counts[0],
                "checkpoints": counts[1],
                "error": run.error,
                "request_id": request_id,
            }
        )
        try:
            if not run.ok and self._db_failed:
                raise DatabaseUnavailable("the database is down; the run is logged with the next one")
            self.store.log_runs(self._unlogged)
            self._unlogged.clear()
        except _DB_ERRORS:
            # kept and written with the next run that reaches the database
            del self._unlogged[:-1000]
        for listener in list(self._listeners):
            try:
                listener(run)
            except Exception:  # noqa: BLE001 - a listener must not break backups
                logger.exception("backup listener failed")

    def log_failed_command(self, trigger: str, request_id: str | None, error: str) -> None:
        """Record a command that failed before it could run (e.g. an unknown generation)."""
        now = datetime.now(UTC)
        self._record(
            BackupRun(trigger=trigger, started_at=now, finished_at=now, generation=None, error=error),
            request_id,
            (None, None),
        )

    def add_listener(self, callback: Callable[[BackupRun], None]) -> None:
        """Call ``callback(run)`` after every backup run."""
        self._listeners.append(callback)

    # -- restore --------------------------------------------------------------------------------

    def generations(self, limit: int | None = None) -> list[Generation]:
        """Kept generations, newest first (``.generation``, ``.taken_at``, ``.checkpoints``)."""
        self._check_open()
        return self.store.generations(limit)

    def restore(
        self,
        generation: int,
        thread_id: str | None = None,
        *,
        on_damage: str = "refuse",
        request_id: str | None = None,
    ) -> RestoreResult:
        """Put back the state of ``generation``, for all threads or one.

        The generation is read and every row checked against its checksum first; then a "pre-restore" generation is
        taken (the undo point), and the restored state is committed as a generation of its own, so
        a restart after a restore comes back restored. Writers wait while a restore runs.

        Args:
            generation: a kept generation (see :meth:`generations`).
            thread_id: restore only this thread; others stay as they are.
            on_damage: ``"refuse"`` (default) raises ``CorruptBackup`` naming the damaged rows and
                changes nothing; ``"skip"`` restores everything else and leaves the damaged rows out.

        Raises:
            GenerationNotFound: the generation does not exist (memory untouched).
            ThreadNotFound: the generation does not hold ``thread_id`` (memory untouched).
            CorruptBackup: rows of the generation cannot be decoded and ``on_damage="refuse"``.
            DatabaseUnavailable: PostgreSQL cannot be reached (memory untouched).
        """
        self._check_open()
        if on_damage not in ("refuse", "skip"):
            raise ValueError(f"on_damage must be 'refuse' or 'skip', got {on_damage!r}")
        if thread_id is not None and not isinstance(thread_id, str):
            raise InvalidValue(f"thread_id must be a str, got {type(thread_id).__name__} {thread_id!r:.80}.")
        try:
            self.store.get_generation(generation)
            if thread_id is not None and not self.store.has_thread(generation, thread_id):
                raise ThreadNotFound(
                    f"Thread {thread_id!r:.120} is not in generation {generation}. "
                    "Pick a generation that holds it (the Restore page or `python -m persistence generations`)."
                )
            snap = self.store.load(generation, thread_id, verify=True)
        except _DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot read generation {generation} from {describe_url(self.conninfo)}: "
                f"{scrub(str(exc), self.conninfo)}. Nothing was changed; retry when PostgreSQL is back."
            ) from None
        damaged = snap.damaged
        if damaged and on_damage == "refuse":
            listed = ", ".join(f"thread {t!r:.60} {what}" for t, what in damaged[:10])
            raise CorruptBackup(
                f"Generation {generation} has {len(damaged)} damaged row(s): {listed}"
                f"{' ...' if len(damaged) > 10 else ''}. Nothing was restored. Restore another generation, "
                "or pass on_damage='skip' to restore everything else.",
                damaged,
            )
        with self._backup_lock, self.lock:
            # no retention yet: it could drop the very generation being restored
            pre = self._backup_locked("pre-restore", None, True, retain=False)
            if not pre.ok:
                raise DatabaseUnavailable(
                    f"The pre-restore backup failed ({pre.error}); nothing was restored. Retry when the "
                    "database is reachable."
                )
            try:
                new = self.store.restore_generation(generation, trigger="restore", thread_id=thread_id)
            except _DB_ERRORS as exc:
                raise DatabaseUnavailable(
                    f"Restore of generation {generation} failed: {scrub(str(exc), self.conninfo)}. "
                    f"Memory is unchanged; generation {pre.generation} holds the state before the attempt."
                ) from None
            if thread_id is None:
                self._replace_all(snap)
            else:
                self._replace_thread(thread_id, snap)
            if damaged:
                self._tombstone_damaged(snap.dropped)
                self._backup_locked("restore", None, False)
            else:
                try:
                    self.store.apply_retention(self.retention)
                except _DB_ERRORS:
                    logger.warning("retention after restore failed; it runs again with the next backup")
        self._record(
            BackupRun(
                trigger="restore",
                started_at=pre.finished_at,
                finished_at=datetime.now(UTC),
                generation=new,
            ),
            request_id,
            self._generation_counts(new),
        )
        return RestoreResult(
            restored_from=generation,
            generation=new,
            undo_generation=pre.generation,
            thread_id=thread_id,
            threads=len(snap.storage),
            checkpoints=snap.checkpoints,
            damaged=damaged,
        )

    def _tombstone_damaged(self, dropped: dict[str, list[tuple]]) -> None:
        """Mark rows left out of a restore as deleted, so the next generation drops them too."""
        d = self._dirty
        for table, keys in dropped.items():
            target = getattr(d, table)
            for key in keys:
                _mark(target, key, True)
        if any(dropped.values()) and d.since is None:
            d.since = time.time()

    def _replace_all(self, snap: Snapshot) -> None:
        """Replace memory with ``snap`` in place (graphs may share these dicts). Caller holds the lock."""
        self.storage.clear()
        for tid, namespaces in snap.storage.items():
            self.storage[tid].update(namespaces)
        self.writes.clear()
        self.writes.update(snap.writes)
        self.blobs.clear()
        self.blobs.update(snap.blobs)
        self._dirty.take()

    def _replace_thread(self, thread_id: str, snap: Snapshot) -> None:
        self._forget_dirty({thread_id})
        self._dirty.deleted_threads.discard(thread_id)
        self.storage.pop(thread_id, None)
        for key in [k for k in self.writes if k[0] == thread_id]:
            del self.writes[key]
        for key in [k for k in self.blobs if k[0] == thread_id]:
            del self.blobs[key]
        for tid, namespaces in snap.storage.items():
            self.storage[tid].update(namespaces)
        self.writes.update(snap.writes)
        self.blobs.update(snap.blobs)

    # -- figures --------------------------------------------------------------------------------

    def thread_ids(self) -> list[str]:
        """Ids of the threads that hold at least one checkpoint."""
        with self.lock:
            return [t for t, namespaces in self.storage.items() if any(namespaces.values())]

    def pending_threads(self) -> set[str]:
        """Threads with changes not yet in PostgreSQL."""
        with self.lock:
            d = self._dirty
            out = {k[0] for k in d.checkpoints} | {k[0] for k in d.writes} | {k[0] for k in d.blobs}
            return out | d.deleted_threads

    def stats(self) -> SaverStats:
        """Threads and checkpoints in memory, pending changes and backup lag."""
        with self.lock:
            threads = 0
            checkpoints = 0
            for namespaces in self.storage.values():
                n = sum(len(cps) for cps in namespaces.values())
                if n:
                    threads += 1
                    checkpoints += n
            pending = len(self._dirty)
            since = self._dirty.since
        last = self.last_run
        return SaverStats(
            threads=threads,
            checkpoints=checkpoints,
            pending=pending,
            lag_seconds=time.time() - since if since is not None else 0.0,
            last_backup=last,
            last_success=self.last_success,
            database_ok=last is None or last.ok,
        )


# -- exit and signals -------------------------------------------------------------------------------

_live: weakref.WeakSet[HybridSaver] = weakref.WeakSet()
_exit_lock = threading.Lock()
_installed = False


def _close_all() -> None:
    for saver in list(_live):
        try:
            saver.close()
        except Exception:  # noqa: BLE001 - exit must go on
            logger.exception("closing a HybridSaver at exit failed")


def _on_sigterm(signum: int, _frame: Any) -> None:
    # Unwind the main thread first (locks released, transactions rolled back); the atexit
    # handler then closes every live saver, which takes the final backup.
    logger.info("signal %s: exiting, the final backup runs at exit", signum)
    raise SystemExit(128 + signum)


def _register_exit(saver: HybridSaver, handle_signals: bool) -> None:
    global _installed
    with _exit_lock:
        _live.add(saver)
        if not _installed:
            atexit.register(_close_all)
            _installed = True
    if (
        handle_signals
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
        and os.environ.get("HYBRID_SAVER_NO_SIGNALS") != "1"
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister_exit(saver: HybridSaver) -> None:
    _live.discard(saver)


__all__ = ["BackupRun", "HybridSaver", "RestoreResult", "SaverStats"]
