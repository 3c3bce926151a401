"""Helpers shared by the saver tests: build checkpoints directly and compare saver states exactly."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver


def put_checkpoint(
    saver: InMemorySaver,
    thread_id: str,
    values: dict[str, Any],
    *,
    ns: str = "",
    parent: str | None = None,
    run_id: str = "run",
    step: int = 0,
    checkpoint_id: str | None = None,
) -> str:
    """Put a checkpoint whose channels hold ``values`` (each with a new version); return its id."""
    checkpoint = empty_checkpoint()
    checkpoint["id"] = checkpoint_id or str(uuid6(clock_seq=step))
    if checkpoint_id is not None:
        checkpoint["ts"] = "2026-01-01T00:00:00+00:00"  # the same checkpoint, byte for byte, in every saver
    previous = {}
    if parent is not None:
        tup = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}})
        previous = dict(tup.checkpoint["channel_versions"]) if tup else {}
    if checkpoint_id is None:
        versions = {ch: saver.get_next_version(previous.get(ch), None) for ch in values}
    else:  # deterministic, so two savers given the same history hold the same bytes
        versions = {ch: f"{step:032}.0.5" for ch in values}
    checkpoint["channel_versions"] = {**previous, **versions}
    checkpoint["channel_values"] = dict(values)
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent
    saver.put(config, checkpoint, {"source": "loop", "step": step, "run_id": run_id}, versions)
    return checkpoint["id"]


def state_of(saver: InMemorySaver) -> tuple[dict, dict, dict]:
    """The saver's three dicts as plain dicts, without the empty containers reads may leave."""
    storage = {
        tid: {ns: dict(cps) for ns, cps in namespaces.items() if cps}
        for tid, namespaces in saver.storage.items()
        if any(namespaces.values())
    }
    writes = {k: dict(v) for k, v in saver.writes.items() if v}
    # values as LangGraph put them (the saver keeps large ones compressed and as deltas: ``[]`` decodes)
    return storage, writes, {k: saver.blobs[k] for k in saver.blobs}


def thread_state(state: tuple[dict, dict, dict], thread_id: str) -> tuple[dict, dict, dict]:
    storage, writes, blobs = state
    return (
        {t: v for t, v in storage.items() if t == thread_id},
        {k: v for k, v in writes.items() if k[0] == thread_id},
        {k: v for k, v in blobs.items() if k[0] == thread_id},
    )


def served_state(saver: Any, thread_ids: Any = None) -> tuple[dict, dict, dict]:
    """The state a saver serves, thread by thread (cold threads are loaded), for every thread of
    the store and of memory (or just ``thread_ids``): what a budget keeps out of memory counts too."""
    if thread_ids is None:
        thread_ids = set(saver.store.live_thread_ids()) | set(saver.thread_ids())
    storage: dict = {}
    writes: dict = {}
    blobs: dict = {}
    for tid in sorted(thread_ids):
        rows = saver.thread_rows(tid)
        storage.update(rows.storage)
        writes.update(rows.writes)
        blobs.update({k: rows.blobs[k] for k in rows.blobs})
    return storage, writes, blobs
