"""Views of the generations: the kept ones, and what a restore of one would change."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.views.common import DB_ERRORS

if TYPE_CHECKING:
    from persistence import HybridSaver

#: seconds the preview waits for each member's list of pending threads
PENDING_TIMEOUT = 5.0
#: threads the one-thread restore picker lists at a time (a search narrows them)
PICK_LIMIT = 100

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


def generation_threads(
    saver: HybridSaver, generation: int, query: str = "", limit: int = PICK_LIMIT
) -> tuple[dict[str, str], int]:
    """Threads of ``generation`` for a picker, searched and paged by PostgreSQL (no thread's
    checkpoints are read): thread id -> title ("" when it has none), most recently updated first,
    and how many match ``query`` (title, message text or id). A query that is the id of a thread the
    generation holds always lists that thread.

    Raises:
        psycopg.Error, PoolTimeout: PostgreSQL cannot answer.
    """
    rows, total = saver.store.directory.generation_threads(generation, query=query, limit=limit)
    found = {r["thread_id"]: r["title"] or "" for r in rows}
    text = query.strip()
    if text and text not in found and saver.store.has_thread(generation, text):
        found = {text: "", **found}
    return found, max(total, len(found))


@dataclass
class FleetCounts:
    """The threads other live members hold changes of that are not backed up yet, as each answered
    (a read-only ``pending`` command), and when."""

    #: thread -> (checkpoints, newest checkpoint id) in that member's memory, or None (deleted there)
    threads: dict[str, tuple[int, str] | None] = field(default_factory=dict)
    #: member id -> (threads pending there, when it answered)
    answered: dict[int, tuple[int, datetime]] = field(default_factory=dict)
    #: member id -> why it gave no list (its pending changes are then not counted)
    missing: dict[int, str] = field(default_factory=dict)


def fleet_counts(saver: HybridSaver, timeout: float = PENDING_TIMEOUT) -> FleetCounts:
    """Ask every other live member, at once, for the threads it has not backed up yet."""
    out = FleetCounts()
    me = saver.instance_id
    others = [m for m in saver.members() if m.alive and m.instance_id != me]
    answers: dict[int, Any] = {}

    def ask(mid: int) -> None:
        try:
            answers[mid] = saver.ask(mid, "pending", timeout=timeout)
        except DB_ERRORS as exc:
            answers[mid] = exc

    asks = [threading.Thread(target=ask, args=(m.instance_id,), daemon=True) for m in others]
    for t in asks:
        t.start()
    for t in asks:
        t.join(timeout + 1)
    for m in others:
        answer = answers.get(m.instance_id)
        if answer is None or isinstance(answer, BaseException) or not answer.ok:
            reason = answer.error if answer is not None and not isinstance(answer, BaseException) else answer
            out.missing[m.instance_id] = str(reason or "no answer")
            continue
        listed = answer.result.get("threads") or {}
        for tid, value in listed.items():
            out.threads[tid] = (int(value[0]), str(value[1])) if value else None
        out.answered[m.instance_id] = (len(listed), answer.answered_at or datetime.now(UTC))
    return out


def current_thread_counts(
    saver: HybridSaver, thread_id: str | None = None, fleet: FleetCounts | None = None
) -> dict[str, tuple[int, str]]:
    """thread_id -> (checkpoints, newest checkpoint id) now: the store's live rows, overlaid with
    what the other members (``fleet``) and this one hold that is not backed up yet (memory wins: a
    restore backs it all up first)."""
    now = saver.store.thread_counts(None, thread_id)
    overlay: dict[str, tuple[int, str] | None] = dict(fleet.threads) if fleet is not None else {}
    with saver.lock:
        for tid in saver.pending_threads():
            ids = [cid for cps in saver.storage.get(tid, {}).values() for cid in cps]
            overlay[tid] = (len(ids), max(ids)) if ids else None
    for tid, value in overlay.items():
        if thread_id is not None and tid != thread_id:
            continue
        if value is None:
            now.pop(tid, None)  # deleted in memory, not backed up yet
        else:
            now[tid] = value
    return now


def restore_preview(
    saver: HybridSaver, generation: int, thread_id: str | None = None, fleet: FleetCounts | None = None
) -> pd.DataFrame:
    """What restoring ``generation`` (all threads, or one) would do to the current state: the store
    overlaid with what every member holds not backed up yet (``fleet``, from :func:`fleet_counts`, and
    this process's own), since a restore has them all back it up first.

    One row per thread that differs, plus unchanged ones (columns :data:`PREVIEW_COLUMNS`):
    ``change`` is ``added`` (restore brings the thread back), ``removed`` (restore deletes it),
    ``changed`` (other checkpoints) or ``unchanged``; ``delta`` = checkpoints then - now.

    Raises:
        GenerationNotFound: the generation is not kept.
        psycopg.Error, PoolTimeout: PostgreSQL cannot answer.
    """
    saver.store.get_generation(generation)
    then = saver.store.thread_counts(generation, thread_id)
    now = current_thread_counts(saver, thread_id, fleet)
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
    "PENDING_TIMEOUT",
    "PICK_LIMIT",
    "PREVIEW_COLUMNS",
    "FleetCounts",
    "current_thread_counts",
    "fleet_counts",
    "generation_threads",
    "generations_frame",
    "preview_summary",
    "restore_preview",
]
