"""Reading threads without taking them: what an observer (the dashboard, a tool) may ask of a member.

A thread another member holds is never claimed by a read here. Its rows travel as JSON over the
command channel (``read_thread``: the owner copies them from its memory under its lock, nothing is
loaded, claimed or evicted), and a member's pending changes are published per thread with its
heartbeat (:func:`pending_by_thread`) or answered exactly on request (``pending``).
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any, overload

from persistence.codec import Blobs
from persistence.memory import MemoryCache
from persistence.store import Snapshot

#: threads whose pending checkpoints a member lists in its heartbeat figures (the rest are counted)
PUBLISHED_PENDING = 500


def _b(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


@overload
def _u(text: str) -> bytes: ...
@overload
def _u(text: None) -> None: ...
def _u(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def snapshot_to_json(snap: Snapshot) -> dict[str, Any]:
    """A snapshot's rows as JSON-ready lists (payloads base64, channel values decoded from the cache's
    encoding, so the reader needs none of the sender's delta chains)."""
    checkpoints = [
        [tid, ns, cid, ctype, _b(cdata), mtype, _b(mdata), parent]
        for tid, namespaces in snap.storage.items()
        for ns, cps in namespaces.items()
        for cid, ((ctype, cdata), (mtype, mdata), parent) in cps.items()
    ]
    writes = [
        [tid, ns, cid, task_id, idx, channel, vtype, _b(value), path]
        for (tid, ns, cid), inner in snap.writes.items()
        for (task_id, idx), (_task, channel, (vtype, value), path) in inner.items()
    ]
    blobs = []
    for key in list(snap.blobs):
        vtype, value = snap.blobs[key]
        blobs.append([*key, vtype, _b(value)])
    return {"checkpoints": checkpoints, "writes": writes, "blobs": blobs}


def snapshot_from_json(data: dict[str, Any]) -> Snapshot:
    """The inverse of :func:`snapshot_to_json`."""
    snap = Snapshot(blobs=Blobs())
    for tid, ns, cid, ctype, cdata, mtype, mdata, parent in data.get("checkpoints") or []:
        snap.storage.setdefault(tid, {}).setdefault(ns, {})[cid] = ((ctype, _u(cdata)), (mtype, _u(mdata)), parent)
    for tid, ns, cid, task_id, idx, channel, vtype, value, path in data.get("writes") or []:
        snap.writes.setdefault((tid, ns, cid), {})[(task_id, int(idx))] = (task_id, channel, (vtype, _u(value)), path)
    for tid, ns, channel, version, vtype, value in data.get("blobs") or []:
        snap.blobs.store_raw((tid, ns, channel, version), (vtype, _u(value)))
    return snap


def pending_by_thread(cache: MemoryCache, limit: int = PUBLISHED_PENDING) -> tuple[dict[str, int], int]:
    """(thread -> checkpoints not backed up yet, for the ``limit`` threads with the most; how many
    threads have changes pending in all). Under the cache's lock, O(pending keys)."""
    with cache.lock:
        changes = cache.changes
        counts: Counter[str] = Counter(k[0] for k, (_e, value) in changes.checkpoints.items() if value is not None)
        threads = changes.threads()
    for tid in threads:
        counts.setdefault(tid, 0)
    return dict(counts.most_common(limit)), len(threads)


__all__ = ["PUBLISHED_PENDING", "pending_by_thread", "snapshot_from_json", "snapshot_to_json"]
