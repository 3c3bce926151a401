"""What an import writes of one thread: the source's keys compared with what the target holds
(:func:`plan_thread`), and the ``put_writes`` calls that reproduce a task's writes with exactly their
indices (:func:`task_writes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import WRITES_IDX_MAP

from persistence.store import Snapshot

#: what became of a thread
IMPORTED, CONTINUED, REPLACED, SKIPPED, REFUSED, MISSING = (
    "imported",
    "continued",
    "replaced",
    "skipped",
    "refused",
    "missing",
)


class Inexact(Exception):
    """One thread's writes cannot be reproduced with their exact indices (that thread is refused)."""


_Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id)


@dataclass
class Plan:
    """What one thread needs: the checkpoints to put, the tasks whose writes to put, the blobs already there."""

    outcome: str
    reason: str = ""
    missing: set[_Key] = field(default_factory=set)
    tasks: set[tuple[str, str, str]] = field(default_factory=set)
    blobs: set[tuple[str, str, str | int | float]] = field(default_factory=set)
    orphans: int = 0


def plan_thread(
    thread_id: str,
    checkpoints: Sequence[tuple[str, str, str | None]],
    write_keys: set[tuple[str, str, str, int]],
    target: Snapshot | None,
) -> Plan:
    """Compare the source's keys of one thread with what the target holds of it (None: nothing)."""
    source = {(ns, cid): parent for ns, cid, parent in checkpoints}
    writes = {k for k in write_keys if (k[0], k[1]) in source}
    orphans = len(write_keys) - len(writes)
    held: dict[_Key, str | None] = {}
    held_writes: set[tuple[str, str, str, int]] = set()
    blobs: set[tuple[str, str, str | int | float]] = set()
    if target is not None:
        for ns, cps in target.storage.get(thread_id, {}).items():
            held.update({(ns, cid): entry[2] for cid, entry in cps.items()})
        for (tid, ns, cid), inner in target.writes.items():
            if tid == thread_id and (ns, cid) in held:
                held_writes.update((ns, cid, task_id, idx) for task_id, idx in inner)
        blobs = {(k[1], k[2], k[3]) for k in target.blobs if k[0] == thread_id}
    if not held:
        return Plan(IMPORTED, missing=set(source), tasks={(k[0], k[1], k[2]) for k in writes}, orphans=orphans)
    extra = [k for k in held if k not in source]
    moved = [k for k, parent in held.items() if k in source and source[k] != parent]
    extra_writes = held_writes - writes
    if extra or moved or extra_writes:
        if extra:
            why = f"{len(extra)} of its {len(held)} checkpoint(s) in the target are not in the source"
        elif moved:
            why = f"checkpoint {moved[0][1]!r} has another parent in the target"
        else:
            why = f"the target holds {len(extra_writes)} pending write(s) the source does not have"
        return Plan(REFUSED, reason=f"thread {thread_id!r} exists in the target with other content: {why}")
    missing = {k for k in source if k not in held}
    tasks = {(k[0], k[1], k[2]) for k in writes - held_writes} | {
        (k[0], k[1], k[2]) for k in writes if k[:2] in missing
    }
    if not missing and not tasks:
        return Plan(SKIPPED, reason=f"thread {thread_id!r} is already imported ({len(held)} checkpoints)")
    return Plan(CONTINUED, missing=missing, tasks=tasks, blobs=blobs, orphans=orphans)


def task_writes(rows: Sequence[dict[str, Any]], load: Callable[[dict[str, Any]], Any]) -> list[tuple[Any, ...]]:
    """The ``put_writes`` calls that store one task's rows with exactly their indices.

    ``put_writes`` numbers a write by its place in the list (special channels by ``WRITES_IDX_MAP``), so the
    list puts each regular write at its index; a place another call of the run used for a special write is
    filled with one of the task's special writes (the last of a special index wins, and they are all put
    again at the end). Returns ``[(writes, task_path)]``.

    Raises:
        Inexact: the indices cannot be reproduced (a gap with no special write to fill it).
    """
    by_path: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_path.setdefault(row["task_path"], []).append(row)
    calls = []
    for task_path, group in by_path.items():
        regular = {r["idx"]: r for r in group if r["idx"] >= 0}
        special = sorted((r for r in group if r["idx"] < 0), key=lambda r: r["idx"], reverse=True)
        for r in special:
            if WRITES_IDX_MAP.get(r["channel"]) != r["idx"]:
                raise Inexact(
                    f"write {r['idx']} of task {r['task_id']!r} is on channel {r['channel']!r}, which this version of "
                    "LangGraph does not number that way; it cannot be imported exactly."
                )
        for r in regular.values():
            if r["channel"] in WRITES_IDX_MAP:
                raise Inexact(
                    f"write {r['idx']} of task {r['task_id']!r} is on the special channel {r['channel']!r} with a "
                    "regular index; it cannot be imported exactly."
                )
        writes: list[tuple[str, Any]] = []
        for idx in range(max(regular, default=-1) + 1):
            if idx in regular:
                writes.append((regular[idx]["channel"], load(regular[idx])))
            elif special:
                writes.append((special[0]["channel"], load(special[0])))
            else:
                raise Inexact(
                    f"the writes of task {group[0]['task_id']!r} skip index {idx}; they cannot be imported exactly."
                )
        writes.extend((r["channel"], load(r)) for r in special)
        calls.append((writes, task_path))
    return calls


def checkpoint_runs(
    keys: Sequence[tuple[str, str, str | None]], size: int
) -> Iterable[list[tuple[str, str, str | None]]]:
    """Consecutive runs of about ``size`` checkpoints that never split one checkpoint id."""
    chunk: list[tuple[str, str, str | None]] = []
    for key in keys:
        if len(chunk) >= size and key[1] != chunk[-1][1]:
            yield chunk
            chunk = []
        chunk.append(key)
    if chunk:
        yield chunk


__all__ = [
    "CONTINUED",
    "IMPORTED",
    "MISSING",
    "REFUSED",
    "REPLACED",
    "SKIPPED",
    "Inexact",
    "Plan",
    "checkpoint_runs",
    "plan_thread",
    "task_writes",
]
