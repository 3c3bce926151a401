"""The write path: ``put`` and ``put_writes`` applied to the cache under its lock and tracked in the
change log, with the residency's byte counts kept exact and a failed write leaving nothing behind.

``base`` is the InMemorySaver-shaped object LangGraph called (the saver, or a shallow copy of it
with another serde, as ``with_allowlist`` makes): its serde serialises; the values go into the
cache's dicts, which ``base`` shares. ``put`` stores what InMemorySaver's would (the same tuples,
under the same keys); ``put_writes`` is InMemorySaver's own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.memory import InMemorySaver

from persistence.codec import Typed
from persistence.errors import HybridSaverError, InvalidValue
from persistence.memory.cache import MemoryCache
from persistence.memory.changes import mark
from persistence.memory.residency import Resident
from persistence.memory.sizes import blob_size, checkpoint_size, write_size
from persistence.packed import PACK_AFTER, Packed, pack

EMPTY: Typed = ("empty", b"")  # a channel with a new version and no value (InMemorySaver's own)


def unserialisable(exc: Exception, what: str) -> Exception:
    if isinstance(exc, HybridSaverError):
        return exc
    return InvalidValue(
        f"{what} cannot be serialised ({type(exc).__name__}: {str(exc)[:200]}); nothing was stored. "
        "Keep state values to types LangGraph's serializer handles (str, numbers within 64 bits, lists, "
        "dicts, messages, pydantic models, dataclasses) or pass a serde that handles yours."
    )


def config_key(config: RunnableConfig, name: str, default: str | None = None) -> str:
    """``config["configurable"][name]`` as a str, or an error that says how to pass it."""
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


def check_checkpoint(checkpoint: Checkpoint, new_versions: ChannelVersions) -> None:
    """Refuse a checkpoint whose id or channel versions could not be backed up exactly."""
    if not isinstance(checkpoint.get("id"), str):
        raise InvalidValue(f"checkpoint['id'] must be a str, got {checkpoint.get('id')!r:.80}.")
    for v in new_versions.values():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise InvalidValue(f"channel version {v!r:.80} must be a str, int or float.")


def check_size(typed: tuple[str, bytes], what: str, limit: int) -> None:
    if len(typed[1]) > limit:
        raise InvalidValue(
            f"{what} serialises to {len(typed[1]):,} bytes, more than the {limit:,} "
            "bytes a backup row can hold; store large payloads elsewhere and keep a reference in the state."
        )


def put_checkpoint(
    cache: MemoryCache,
    base: InMemorySaver,
    entry: Resident,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
    ns: str,
    limit: int,
) -> RunnableConfig:
    """Store one checkpoint and its new channel values. Under the cache's lock.

    InMemorySaver's ``put`` in two steps: everything is serialised (and its size checked) before
    anything is stored, so a value the serde refuses leaves nothing behind; then the values are
    stored, logged for the next backup and counted, with the key tuples made here kept by the
    dicts and the thread's key set alike."""
    conf = config["configurable"]
    thread_id, checkpoint_id, parent_id = conf["thread_id"], checkpoint["id"], conf.get("checkpoint_id")
    if cache.guard:
        cache.guard.check(thread_id, ns, parent_id)
    dumps = base.serde.dumps_typed
    c = checkpoint.copy()
    values: dict[str, Any] = c.pop("channel_values")  # type: ignore[misc]
    try:
        new_blobs = [
            ((thread_id, ns, k, v), dumps(values[k]) if k in values else EMPTY) for k, v in new_versions.items()
        ]
        saved = (dumps(c), dumps(get_checkpoint_metadata(config, metadata)), parent_id)
    except Exception as exc:
        raise unserialisable(exc, "the checkpoint") from exc
    check_size(saved[0], "the checkpoint", limit)
    for key, typed in new_blobs:
        if len(typed[1]) > limit:
            check_size(typed, f"channel {key[2]!r}", limit)
    blobs, log = cache.blobs, cache.changes
    cps = cache.storage[thread_id][ns]
    old_cp = cps.get(checkpoint_id)
    raw = dict.get  # the stored (encoded) values: what the sizes count
    blob_keys, logged = entry.blob_keys, log.blobs
    grown = 0
    for key, typed in new_blobs:
        old = raw(blobs, key)
        blobs[key] = typed
        value: Typed = dict.__getitem__(blobs, key)
        blob_keys[key] = None
        if old is None:
            grown += blob_size(value)
            mark(logged, key, False, value)
        else:
            grown += blob_size(value) - blob_size(old)
            logged[key] = (True, value)
    cps[checkpoint_id] = saved
    grown += checkpoint_size(saved) - (checkpoint_size(old_cp) if old_cp is not None else 0)
    mark(log.checkpoints, (thread_id, ns, checkpoint_id), old_cp is not None, saved)
    grown += _pack_parent(cache, thread_id, ns, checkpoint_id, parent_id)
    cache.residency.grow(entry, grown)
    cache.touch(entry)
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


def _pack_parent(cache: MemoryCache, thread_id: str, ns: str, child_id: str, parent_id: str | None) -> int:
    """The parent of a checkpoint just put is no longer its namespace's newest: keep it packed (see
    :mod:`persistence.packed`), in the store too: the next backup writes it packed (a row of ~190 B instead
    of ~570, replacing the one a backup wrote while it was the newest), so a thread loaded again is as
    compact as it was. Returns the bytes it grew by."""
    if parent_id is None or parent_id >= child_id:  # ids grow with time: the parent is older
        return 0
    cps = cache.storage[thread_id][ns]
    if len(cps) < PACK_AFTER:
        return 0
    old = cps.get(parent_id)
    if old is None or type(old[0]) is Packed:
        return 0
    packed = pack(old[0])
    if packed is old[0]:
        return 0
    value = cps[parent_id] = (packed, old[1], old[2])
    key = (thread_id, ns, parent_id)
    pending = cache.changes.checkpoints.get(key)
    cache.changes.checkpoints[key] = (pending[0] if pending is not None else True, value)
    return checkpoint_size(value) - checkpoint_size(old)


def put_task_writes(
    cache: MemoryCache,
    base: InMemorySaver,
    entry: Resident,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
    outer: tuple[str, str, str],
    limit: int,
) -> None:
    """Store the writes of one task. Under the cache's lock."""
    if cache.guard:
        cache.guard.check(outer[0], outer[1], outer[2])
    all_writes = cache.writes
    before = all_writes.get(outer)
    before_keys = dict(before) if before else {}
    if before is None:
        # made here, so the dict's key is ``outer``, the object the thread's key set keeps too
        all_writes[outer] = {}

    def undo() -> None:
        if before is None:
            all_writes.pop(outer, None)
        else:
            before.clear()
            before.update(before_keys)

    try:
        # one string per distinct path (every write of a task keeps it; a long thread has thousands)
        InMemorySaver.put_writes(base, config, writes, task_id, sys.intern(task_path))
    except Exception as exc:
        undo()
        raise unserialisable(exc, "a write") from exc
    stored = all_writes.get(outer, {})
    if before is None and not stored:
        all_writes.pop(outer, None)  # no write at all: leave no empty entry
    try:
        for idx, (channel, _value) in enumerate(writes):
            inner = (task_id, WRITES_IDX_MAP.get(channel, idx))
            if inner in stored and stored[inner] is not before_keys.get(inner):
                check_size(stored[inner][2], f"the write to channel {channel!r}", limit)
    except InvalidValue:
        undo()
        raise
    log = cache.changes
    changed = False
    res = cache.residency
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
    if outer in all_writes:
        entry.write_keys.add(outer)
    if changed:
        cache.touch(entry)


__all__ = ["check_checkpoint", "check_size", "config_key", "put_checkpoint", "put_task_writes", "unserialisable"]
