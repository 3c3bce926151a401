"""Views of the generations: the kept ones, and what a restore of one would change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from persistence import HybridSaver

GENERATION_COLUMNS = [
    "generation",
    "taken_at",
    "trigger",
    "kind",
    "threads",
    "checkpoints",
    "rows_written",
    "bytes_written",
    "restored_from",
    "thread_id",
]
PREVIEW_COLUMNS = ["thread_id", "change", "checkpoints_now", "checkpoints_then", "delta", "newest_now", "newest_then"]


def generations_frame(saver: HybridSaver, limit: int | None = None) -> pd.DataFrame:
    """Kept generations, newest first (columns :data:`GENERATION_COLUMNS`)."""
    rows = [
        (
            g.generation,
            g.taken_at,
            g.trigger,
            g.kind,
            g.threads,
            g.checkpoints,
            g.rows_written,
            g.bytes_written,
            g.restored_from,
            g.thread_id,
        )
        for g in saver.generations(limit)
    ]
    df = pd.DataFrame(rows, columns=GENERATION_COLUMNS)
    df["taken_at"] = pd.to_datetime(df["taken_at"], utc=True)
    df["restored_from"] = df["restored_from"].astype("Int64")
    return df


def current_thread_counts(saver: HybridSaver, thread_id: str | None = None) -> dict[str, tuple[int, str]]:
    """thread_id -> (checkpoints, newest checkpoint id) now: the store's live rows, overlaid with
    the threads this member changed since its last backup (read from memory)."""
    now = saver.store.thread_counts(None, thread_id)
    for tid in saver.pending_threads():
        if thread_id is not None and tid != thread_id:
            continue
        namespaces = saver.thread_rows(tid).storage.get(tid, {})
        ids = [cid for cps in namespaces.values() for cid in cps]
        if ids:
            now[tid] = (len(ids), max(ids))
        else:
            now.pop(tid, None)  # deleted here, not backed up yet
    return now


def restore_preview(saver: HybridSaver, generation: int, thread_id: str | None = None) -> pd.DataFrame:
    """What restoring ``generation`` (all threads, or one) would do to the store's current state
    (as of the newest backup: a restore backs up what is pending first).

    One row per thread that differs, plus unchanged ones (columns :data:`PREVIEW_COLUMNS`):
    ``change`` is ``added`` (restore brings the thread back), ``removed`` (restore deletes it),
    ``changed`` (other checkpoints) or ``unchanged``; ``delta`` = checkpoints then - now.

    Raises:
        GenerationNotFound: the generation is not kept.
        psycopg.Error, PoolTimeout: PostgreSQL cannot answer.
    """
    saver.store.get_generation(generation)
    then = saver.store.thread_counts(generation, thread_id)
    now = current_thread_counts(saver, thread_id)
    rows = []
    for tid in sorted(set(then) | set(now)):
        n_now, newest_now = now.get(tid, (0, ""))
        n_then, newest_then = then.get(tid, (0, ""))
        if tid not in now:
            change = "added"
        elif tid not in then:
            change = "removed"
        elif (n_now, newest_now) != (n_then, newest_then):
            change = "changed"
        else:
            change = "unchanged"
        rows.append((tid, change, n_now, n_then, n_then - n_now, newest_now or None, newest_then or None))
    return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)


def preview_summary(preview_df: pd.DataFrame) -> dict[str, int]:
    """Counts of a :func:`restore_preview`: threads added/removed/changed/unchanged, checkpoints
    now and then."""
    counts = preview_df["change"].value_counts()
    return {
        "added": int(counts.get("added", 0)),
        "removed": int(counts.get("removed", 0)),
        "changed": int(counts.get("changed", 0)),
        "unchanged": int(counts.get("unchanged", 0)),
        "checkpoints_now": int(preview_df["checkpoints_now"].sum()),
        "checkpoints_then": int(preview_df["checkpoints_then"].sum()),
    }


__all__ = [
    "GENERATION_COLUMNS",
    "PREVIEW_COLUMNS",
    "current_thread_counts",
    "generations_frame",
    "preview_summary",
    "restore_preview",
]
