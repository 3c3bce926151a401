"""Compare what a saver holds in memory with what its store holds, exactly (bytes for bytes)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage

from agent import build_graph, thread_config
from agent.responder import OfflineResponder
from persistence import HybridSaver
from persistence.store import Snapshot

State = tuple[dict[str, Any], dict[tuple, Any], dict[tuple, Any]]


def _normal(storage: Any, writes: Any, blobs: Any) -> State:
    return (
        {
            tid: {ns: dict(cps) for ns, cps in namespaces.items() if cps}
            for tid, namespaces in storage.items()
            if any(namespaces.values())
        },
        {key: dict(inner) for key, inner in writes.items() if inner},
        # values as LangGraph put them (``[]`` decodes what the saver keeps compressed)
        {key: blobs[key] for key in blobs},
    )


def memory_state(saver: HybridSaver) -> State:
    """Checkpoints, writes and blobs in memory (empty entries left out)."""
    with saver.lock:
        return _normal(saver.storage, saver.writes, saver.blobs)


def snapshot_state(snap: Snapshot) -> State:
    return _normal(snap.storage, snap.writes, snap.blobs)


def store_state(saver: HybridSaver, generation: int | None = None, thread_id: str | None = None) -> State:
    """The state PostgreSQL holds at ``generation`` (newest when None), read directly from the store."""
    return snapshot_state(saver.store.load(generation, thread_id))


def settled_values(graph: Any, thread_id: str) -> dict[str, Any]:
    """The state of ``thread_id`` as its next turn continues it.

    A run cut (by a crash, a backup cut or a restore) right after it saved its input checkpoint
    (metadata source "input") shows that input in ``get_state`` but never applied it: LangGraph's next
    run replaces a pending input with its own. So the state a next turn builds on is the parent's.
    """
    state = graph.get_state(thread_config(thread_id))
    while (state.metadata or {}).get("source") == "input":
        if state.parent_config is None:
            return {}
        state = graph.get_state(state.parent_config)
    return dict(state.values)


def human_texts(saver: HybridSaver, thread_id: str) -> list[str]:
    """The user messages of ``thread_id`` that its next turn builds on, oldest first."""
    values = settled_values(build_graph(saver, OfflineResponder()), thread_id)
    return [m.content for m in values.get("messages", []) if isinstance(m, HumanMessage)]


def all_human_texts(saver: HybridSaver) -> dict[str, list[str]]:
    return {tid: human_texts(saver, tid) for tid in saver.thread_ids()}


def describe_difference(left: State, right: State) -> str:
    """A short account of where two states differ (for assertion messages)."""
    names = ("checkpoints", "writes", "blobs")
    out = []
    for name, a, b in zip(names, left, right, strict=True):
        if a != b:
            only_a = set(a) - set(b)
            only_b = set(b) - set(a)
            changed = [k for k in set(a) & set(b) if a[k] != b[k]]
            out.append(
                f"{name}: {len(only_a)} only left {sorted(map(repr, only_a))[:3]}, {len(only_b)} only right "
                f"{sorted(map(repr, only_b))[:3]}, {len(changed)} changed {sorted(map(repr, changed))[:3]}"
            )
    return "; ".join(out) or "no difference"


def snapshot_texts(saver: HybridSaver, snap: Snapshot, thread_id: str) -> list[str]:
    """The user messages of ``thread_id`` in a stored snapshot (read through a plain InMemorySaver)."""
    from langgraph.checkpoint.memory import InMemorySaver

    mem = InMemorySaver(serde=saver.serde)
    for tid, namespaces in snap.storage.items():
        mem.storage[tid].update(namespaces)
    mem.writes.update(snap.writes)
    mem.blobs = snap.blobs  # a Blobs: decodes what the saver keeps compressed
    values = settled_values(build_graph(mem, OfflineResponder()), thread_id)
    return [m.content for m in values.get("messages", []) if isinstance(m, HumanMessage)]
