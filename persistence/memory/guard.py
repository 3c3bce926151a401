"""The restore guard: threads whose history a restore replaced while runs on them may be in flight.

A run that began before a restore of its thread continues from a checkpoint the restore took away;
writing its next step would put back what the restore removed. The guard refuses such a step with
``ThreadRestored`` until a run on the restored state shows the thread is back to normal.
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

    def __bool__(self) -> bool:
        return bool(self._restored)

    def mark(self, thread_ids: Sequence[str]) -> None:
        """Remember that a restore rewrote ``thread_ids``."""
        now = time.monotonic()
        if len(self._restored) > 100_000:
            self._restored = {t: at for t, at in self._restored.items() if now - at < RESTORED_TTL}
        for tid in thread_ids:
            self._restored[tid] = now

    def check(self, thread_id: str, ns: str, parent: str | None) -> None:
        """Refuse a step of a run that began before a restore of its thread: its parent checkpoint
        is gone, and writing it would put back what the restore took away."""
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


__all__ = ["RESTORED_TTL", "RestoreGuard"]
