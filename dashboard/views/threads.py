"""Views of the thread directory: every thread of the store, searched, sorted and paged by PostgreSQL,
with where each is held and what its owner has not backed up yet (see :mod:`dashboard.views.thread`
for one thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.views.common import database_answering
from persistence.errors import HybridSaverError
from persistence.fleet import Member
from persistence.ops.observer import pending_by_thread
from persistence.store.summary import describe

if TYPE_CHECKING:
    from persistence import HybridSaver

THREAD_COLUMNS = [
    "thread_id",
    "title",
    "checkpoints",
    "updated",
    "bytes",
    "status",
    "where",
    "owner",
    "snippet",
    "pending",
]
THREAD_SORTS = {
    "Last update": "updated_at",
    "Checkpoints": "checkpoints",
    "Size": "bytes",
    "Title": "title",
    "Thread id": "thread_id",
}


@dataclass(frozen=True)
class FleetPending:
    """What the other live members hold that is not backed up, as their heartbeats published it."""

    #: thread -> (member id, checkpoints not backed up there)
    threads: dict[str, tuple[int, int]]
    #: member id -> the member (name, heartbeat time)
    members: dict[int, Member]
    #: a member had more pending threads than its heartbeat lists (the listing cannot tell all of them)
    truncated: bool


def fleet_pending(saver: HybridSaver, members: Sequence[Member] | None = None) -> FleetPending:
    """The pending threads of every other live member, from their last heartbeat figures."""
    me = saver.instance_id
    found: dict[str, tuple[int, int]] = {}
    truncated = False
    others: dict[int, Member] = {}
    for m in saver.members() if members is None else members:
        if m.instance_id == me or not m.alive:
            continue
        others[m.instance_id] = m
        listed = m.figures.get("pending_threads") or {}
        truncated = truncated or int(m.figures.get("pending_thread_count") or 0) > len(listed)
        for tid, n in listed.items():
            found[tid] = (m.instance_id, int(n))
    return FleetPending(found, others, truncated)


def member_label(m: Member | None, instance_id: int | None = None) -> str:
    """``member 3 (web-1/uvicorn#2)``."""
    if m is None:
        return f"member {instance_id}"
    return f"member {m.instance_id}" + (f" ({m.name})" if m.name else "")


def thread_page(
    saver: HybridSaver,
    query: str = "",
    sort: str = "updated_at",
    descending: bool = True,
    page: int = 1,
    page_size: int = 25,
    *,
    fleet: FleetPending | None = None,
) -> tuple[pd.DataFrame, int]:
    """One page of every thread of the store (resident or cold, any member's), searched, sorted and
    counted by PostgreSQL over all threads. Returns (rows, total matching).

    Columns :data:`THREAD_COLUMNS`. ``status`` says what a crash would lose: ``"pending here"`` (this
    process holds changes not backed up yet: figures read from its memory), ``"pending on member N"``
    (another member does, as its last heartbeat says; ``pending`` counts the checkpoints), ``"backed
    up"``, or ``"not backed up"`` (held by a member that lists too many threads to tell). ``where`` is
    ``"here"``, ``"member N"`` (held by another member) or ``"cold"`` (only in PostgreSQL). A thread
    nobody backed up nor holds changes of (a read of an unknown id) is not listed.

    Raises:
        psycopg.Error, PoolTimeout, HybridSaverError: PostgreSQL cannot answer (see
        :func:`resident_threads_frame` for what memory alone can show).
    """
    if not database_answering(saver):
        raise HybridSaverError("PostgreSQL is not answering")
    fleet = fleet if fleet is not None else fleet_pending(saver)
    offset = (max(1, page) - 1) * page_size
    mine = [t for t in saver.pending_threads() if any(saver.storage.get(t, {}).values())]
    rows, total = saver.store.directory.thread_page(
        query=query,
        sort=sort,
        descending=descending,
        offset=offset,
        limit=page_size,
        hide_claims_of=saver.instance_id,
        unless=mine,
        # an owner row alone is a claim, not a thread, unless its member holds changes of it
        unsaved=None if fleet.truncated else [*mine, *(t for t, (_m, n) in fleet.threads.items() if n)],
    )
    return _thread_frame(saver, rows, fleet), total


def _thread_frame(saver: HybridSaver, rows: list[dict[str, Any]], fleet: FleetPending | None = None) -> pd.DataFrame:
    resident = set(saver.thread_ids())
    pending = saver.pending_threads()
    mine = pending_by_thread(saver.cache, limit=len(pending) + 1)[0] if pending else {}
    entries = saver.cache.entries
    me = saver.instance_id
    others = fleet.threads if fleet is not None else {}
    out = []
    for r in rows:
        tid = r["thread_id"]
        owner = r.get("owner")
        if tid in resident:
            where = "here"
        elif owner is not None and owner != me:
            where = f"member {owner}"
        else:
            where = "cold"
        checkpoints, title, updated = r.get("checkpoints"), r.get("title"), r.get("updated_at")
        size = r.get("bytes")
        waiting = None
        if tid in pending:
            # this member holds newer changes than the stored figures: read them from memory
            checkpoints, title = _resident_figures(saver, tid, title)
            entry = entries.get(tid)
            if entry is not None and entry.changed_at:
                updated = datetime.fromtimestamp(entry.changed_at, UTC)
            size = entry.bytes if entry is not None else size
            waiting = mine.get(tid, 0)
            status = "pending here"
        elif tid in others and others[tid][1]:
            holder, waiting = others[tid]
            status = f"pending on member {holder}"
            if not r.get("backed_up"):
                checkpoints = waiting  # never backed up: all it has is pending there
        elif r.get("backed_up"):
            status = "backed up"
        else:
            status = "not backed up"
        out.append(
            (
                tid,
                title or "",
                checkpoints,
                updated,
                size,
                status,
                where,
                owner,
                r.get("snippet") or "",
                waiting,
            )
        )
    df = pd.DataFrame(out, columns=THREAD_COLUMNS)
    df["updated"] = pd.to_datetime(df["updated"], utc=True)
    for col in ("owner", "checkpoints", "bytes", "pending"):
        df[col] = df[col].astype("Int64")
    return df


def _resident_figures(saver: HybridSaver, thread_id: str, title: str | None) -> tuple[int, str | None]:
    """(checkpoints, title) of a resident thread as memory holds them now, summarised the way a
    backup summarises it (``summary.describe``)."""
    try:
        snap = saver.thread_rows(thread_id)
    except HybridSaverError:
        return 0, title
    namespaces = snap.storage.get(thread_id, {})
    now_title, _text = describe(saver.serde, thread_id, namespaces, snap.blobs)
    return sum(len(cps) for cps in namespaces.values()), now_title or title


def resident_threads_frame(saver: HybridSaver, query: str = "") -> pd.DataFrame:
    """The threads resident in this process, from memory alone (while PostgreSQL is away)."""
    query = query.strip().lower()
    rows = []
    pending = saver.pending_threads()
    for tid in saver.thread_ids():
        if query and query not in tid.lower():
            continue
        rows.append(
            {
                "thread_id": tid,
                "title": "",
                "checkpoints": None,
                "updated_at": None,
                "bytes": None,
                "backed_up": tid not in pending,
                "owner": saver.instance_id,
            }
        )
    return _thread_frame(saver, rows)


def thread_titles(saver: HybridSaver, thread_ids: Iterable[str]) -> dict[str, str]:
    """Titles of ``thread_ids`` as of their last backup (one query; empty titles left out)."""
    ids = list(dict.fromkeys(thread_ids))
    if not ids or not database_answering(saver):
        return {}
    out: dict[str, str] = {}
    for i in range(0, len(ids), 5000):
        rows, _ = saver.store.directory.thread_page(thread_ids=ids[i : i + 5000], limit=5000)
        out.update({r["thread_id"]: r["title"] for r in rows if r.get("title")})
    return out


def thread_exists(saver: HybridSaver, thread_id: str) -> bool:
    """True when the thread has a checkpoint in this process's memory or in PostgreSQL (nothing is
    loaded or claimed)."""
    if thread_id in saver.cache.entries:
        return bool(any(saver.storage.get(thread_id, {}).values()))
    if not database_answering(saver):
        return False
    return bool(saver.store.thread_counts(None, thread_id))


__all__ = [
    "FleetPending",
    "THREAD_COLUMNS",
    "THREAD_SORTS",
    "fleet_pending",
    "member_label",
    "resident_threads_frame",
    "thread_exists",
    "thread_page",
    "thread_titles",
]
