"""The restore guard: threads whose history changed under runs that may still be in flight.

A run that began before a restore of its thread continues from a checkpoint the restore took away;
writing its next step would put back what the restore removed. A run that began on a member that
then lost the thread (its lease lapsed while it was frozen or cut off, and another member wrote the
thread meanwhile) continues from a checkpoint that is no longer the newest; writing its next step
would fork the history. The guard refuses such a step with ``ThreadRestored`` until a run on the
current state shows the thread is back to normal.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from persistence.errors import ThreadRestored

#: how long a restore refuses the steps of runs that began before it (seconds)
RESTORED_TTL = 3600.0


class RestoreGuard:
    """Threads a restore rewrote, with when. Every method runs under the cache's lock."""

    def __init__(self, storage: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        self._storage = storage
        self._restored: dict[str, float] = {}
        #: threads that came back from another member: a step must continue from the newest checkpoint
        self._moved: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._restored) or bool(self._moved)

    def mark(self, thread_ids: Sequence[str]) -> None:
        """Remember that a restore rewrote ``thread_ids``."""
        now = time.monotonic()
        if len(self._restored) > 100_000:
            self._restored = {t: at for t, at in self._restored.items() if now - at < RESTORED_TTL}
        for tid in thread_ids:
            self._restored[tid] = now

    def mark_moved(self, thread_ids: Sequence[str]) -> None:
        """Remember that another member may have written ``thread_ids`` after this member last read them."""
        self._moved.update(thread_ids)

    def check(self, thread_id: str, ns: str, parent: str | None) -> None:
        """Refuse a step of a run that began before a restore of its thread: its parent checkpoint
        is gone, and writing it would put back what the restore took away; and a step of a run that
        read a thread before another member wrote it, which would fork its history."""
        if thread_id in self._moved:
            self._check_moved(thread_id, ns, parent)
        at = self._restored.get(thread_id)
        if at is None:
            return
        if (
            parent is None
            or parent in self._storage.get(thread_id, {}).get(ns, {})
            or time.monotonic() - at > RESTORED_TTL
        ):
            del self._restored[thread_id]  # a run on the restored state: the thread is back to normal
            return
        raise ThreadRestored(
            f"Thread {thread_id!r:.80} was restored while this run was in flight, and the checkpoint the run "
            f"continues from ({parent}) is not in the restored state; the step was not saved, so the thread "
            "stays as restored. Run the request again.",
            thread_id=thread_id,
        )

    def _check_moved(self, thread_id: str, ns: str, parent: str | None) -> None:
        cps = self._storage.get(thread_id, {}).get(ns, {})
        if parent is None or not cps or parent == max(cps):
            self._moved.discard(thread_id)  # a run on the current state: the thread is back to normal
            return
        raise ThreadRestored(
            f"Thread {thread_id!r:.80} was written by another member while this member could not prove its "
            f"lease, and this run continues from checkpoint {parent}, which is no longer the newest; the step "
            "was not saved, so the history does not fork. Run the request again: it reads the current state.",
            thread_id=thread_id,
        )


__all__ = ["RESTORED_TTL", "RestoreGuard"]
