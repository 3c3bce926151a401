"""Read-only views of a live :class:`~persistence.HybridSaver` for dashboards and tools.

Every function takes a saver and returns a pandas DataFrame or plain dicts; none of them changes
the saver. Memory is read under ``saver.lock`` only long enough to copy references (values are
immutable serialised tuples), and decoding happens outside the lock. Nothing here imports
streamlit: the pages in ``pages/`` render what these functions return.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg
from psycopg_pool import PoolTimeout

from persistence import export
from persistence.db import scrub
from persistence.errors import HybridSaverError
from persistence.export import to_jsonable

if TYPE_CHECKING:
    from persistence.saver import BackupRun, HybridSaver

logger = logging.getLogger(__name__)

#: errors that mean "PostgreSQL cannot answer right now"
DB_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error, PoolTimeout, HybridSaverError)

THREAD_COLUMNS = ["thread_id", "title", "checkpoints", "updated", "bytes", "status", "where", "owner", "snippet"]
RUN_COLUMNS = [
    "id",
    "trigger",
    "started_at",
    "finished_at",
    "duration_s",
    "generation",
    "rows",
    "bytes",
    "lag_s",
    "pending",
    "threads",
    "checkpoints",
    "ok",
    "error",
    "member",
    "folded",
]
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


# -- JSON ----------------------------------------------------------------------------------------


def preview(value: Any, limit: int = 120) -> str:
    """A one-line, at most ``limit`` characters, description of a channel value."""
    if isinstance(value, list) and value and all(hasattr(v, "content") for v in value):
        last = value[-1]
        text = last.content if isinstance(last.content, str) else json.dumps(to_jsonable(last.content))
        out = f"{len(value)} messages; last ({getattr(last, 'type', '?')}): {text}"
    elif isinstance(value, str):
        out = value
    else:
        try:
            out = json.dumps(to_jsonable(value), ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            out = repr(value)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


# -- threads -------------------------------------------------------------------------------------

THREAD_SORTS = {
    "Last update": "updated_at",
    "Checkpoints": "checkpoints",
    "Size": "bytes",
    "Title": "title",
    "Thread id": "thread_id",
}


def thread_page(
    saver: HybridSaver,
    query: str = "",
    sort: str = "updated_at",
    descending: bool = True,
    page: int = 1,
    page_size: int = 25,
) -> tuple[pd.DataFrame, int]:
    """One page of every thread of the store (resident or cold, any member's), searched, sorted and
    counted by PostgreSQL over all threads. Returns (rows, total matching).

    Columns :data:`THREAD_COLUMNS`. ``status`` says what this process knows: ``"pending"`` (this
    member holds changes not backed up yet, so the stored figures are behind), ``"backed up"``,
    or ``"not backed up"`` (claimed by a member, never written). ``where`` is ``"here"`` (resident
    in this process), ``"member N"`` (held by another member) or ``"cold"`` (only in PostgreSQL).

    Raises:
        psycopg.Error, PoolTimeout, HybridSaverError: PostgreSQL cannot answer (see
        :func:`resident_threads_frame` for what memory alone can show).
    """
    if not database_answering(saver):
        raise HybridSaverError("PostgreSQL is not answering")
    offset = (max(1, page) - 1) * page_size
    # threads this member claimed by reading them but that hold nothing are not listed
    rows, total = saver.store.thread_page(
        query=query,
        sort=sort,
        descending=descending,
        offset=offset,
        limit=page_size,
        hide_claims_of=saver.instance_id,
        unless=[t for t in saver.pending_threads() if any(saver.storage.get(t, {}).values())],
    )
    return _thread_frame(saver, rows), total


def _thread_frame(saver: HybridSaver, rows: list[dict[str, Any]]) -> pd.DataFrame:
    resident = set(saver.thread_ids())
    pending = saver.pending_threads()
    me = saver.instance_id
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
        checkpoints, title = r.get("checkpoints"), r.get("title")
        if tid in pending:
            # this member holds newer changes than the stored figures: read them from memory
            checkpoints, title = _resident_figures(saver, tid, title)
            status = "pending"
        elif r.get("backed_up"):
            status = "backed up"
        else:
            status = "not backed up"
        out.append(
            (
                tid,
                title or "",
                int(checkpoints or 0),
                r.get("updated_at"),
                int(r.get("bytes") or 0),
                status,
                where,
                owner,
                r.get("snippet") or "",
            )
        )
    df = pd.DataFrame(out, columns=THREAD_COLUMNS)
    df["updated"] = pd.to_datetime(df["updated"], utc=True)
    df["owner"] = df["owner"].astype("Int64")
    return df


def _resident_figures(saver: HybridSaver, thread_id: str, title: str | None) -> tuple[int, str | None]:
    """(checkpoints, title) of a resident thread as memory holds them now."""
    cps = saver.storage.get(thread_id, {})
    count = sum(len(c) for c in list(cps.values()))
    try:
        found = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    except HybridSaverError:
        return count, title
    if found is not None:
        value = (found.checkpoint.get("channel_values") or {}).get("title")
        if isinstance(value, str) and value:
            title = value
    return count, title


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
        rows, _ = saver.store.thread_page(thread_ids=ids[i : i + 5000], limit=5000)
        out.update({r["thread_id"]: r["title"] for r in rows if r.get("title")})
    return out


def thread_exists(saver: HybridSaver, thread_id: str) -> bool:
    """True when the thread has a checkpoint (loads it when it is cold)."""
    return saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}) is not None


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def checkpoint_history(saver: HybridSaver, thread_id: str, limit: int = 500) -> pd.DataFrame:
    """The thread's checkpoints (root namespace), newest first: id, time, step, source, parent,
    channels updated, pending writes and bytes. At most ``limit`` rows. Loads a cold thread."""
    snap = saver.thread_rows(thread_id)
    entries = snap.storage.get(thread_id, {}).get("", {})
    rows = []
    for cid in sorted(entries, reverse=True)[:limit]:
        (ctype, cdata), (mtype, mdata), parent = entries[cid]
        checkpoint = saver.serde.loads_typed((ctype, cdata))
        metadata = saver.serde.loads_typed((mtype, mdata)) or {}
        rows.append(
            (
                cid,
                checkpoint.get("ts"),
                metadata.get("step"),
                metadata.get("source"),
                parent,
                ", ".join(sorted(checkpoint.get("updated_channels") or [])),
                len(snap.writes.get((thread_id, "", cid), {})),
                len(cdata) + len(mdata),
            )
        )
    df = pd.DataFrame(
        rows, columns=["checkpoint_id", "ts", "step", "source", "parent_id", "updated_channels", "writes", "bytes"]
    )
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601", errors="coerce")
    df["step"] = df["step"].astype("Int64")
    return df


def checkpoint_state(saver: HybridSaver, thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any] | None:
    """The state of one checkpoint (newest when ``checkpoint_id`` is None), or None.

    Returns a dict with ``checkpoint_id``, ``parent_id``, ``ts``, ``values`` (channel values as
    stored, e.g. LangChain messages), ``metadata`` and ``pending_writes`` (task, channel, value).
    """
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    found = saver.get_tuple({"configurable": configurable})
    if found is None:
        return None
    parent = found.parent_config["configurable"].get("checkpoint_id") if found.parent_config else None
    return {
        "checkpoint_id": found.checkpoint["id"],
        "parent_id": parent,
        "ts": found.checkpoint.get("ts"),
        "values": dict(found.checkpoint.get("channel_values") or {}),
        "metadata": dict(found.metadata or {}),
        "pending_writes": list(found.pending_writes or []),
    }


def _message_key(message: Any) -> str:
    mid = getattr(message, "id", None)
    if mid:
        return str(mid)
    return json.dumps(to_jsonable(message), sort_keys=True, default=str)


def diff_checkpoints(saver: HybridSaver, thread_id: str, before_id: str, after_id: str) -> pd.DataFrame:
    """Channel-by-channel differences between two checkpoints of a thread.

    Columns: ``channel``, ``change`` (added, removed, changed, unchanged), ``before``, ``after``
    (one-line previews). Message lists are compared by message id: ``after`` then lists the
    messages added and ``before`` the ones removed.

    Raises:
        LookupError: a checkpoint is not in the thread.
    """
    a = checkpoint_state(saver, thread_id, before_id)
    b = checkpoint_state(saver, thread_id, after_id)
    for cid, state in ((before_id, a), (after_id, b)):
        if state is None:
            raise LookupError(f"Checkpoint {cid} is not in thread {thread_id!r}; pick one from its history.")
    assert a is not None and b is not None
    rows = []
    for channel in sorted(set(a["values"]) | set(b["values"])):
        if channel not in a["values"]:
            rows.append((channel, "added", "", preview(b["values"][channel])))
            continue
        if channel not in b["values"]:
            rows.append((channel, "removed", preview(a["values"][channel]), ""))
            continue
        old, new = a["values"][channel], b["values"][channel]
        if isinstance(old, list) and isinstance(new, list) and all(hasattr(m, "content") for m in [*old, *new]):
            old_keys = {_message_key(m) for m in old}
            new_keys = {_message_key(m) for m in new}
            added = [m for m in new if _message_key(m) not in old_keys]
            removed = [m for m in old if _message_key(m) not in new_keys]
            if not added and not removed and len(old) == len(new):
                rows.append((channel, "unchanged", preview(old), preview(new)))
            else:
                rows.append(
                    (
                        channel,
                        "changed",
                        f"{len(removed)} removed: " + "; ".join(preview(m.content, 60) for m in removed)
                        if removed
                        else f"{len(old)} messages",
                        f"{len(added)} added: " + "; ".join(preview(m.content, 60) for m in added)
                        if added
                        else f"{len(new)} messages",
                    )
                )
            continue
        same = to_jsonable(old) == to_jsonable(new)
        rows.append((channel, "unchanged" if same else "changed", preview(old), preview(new)))
    return pd.DataFrame(rows, columns=["channel", "change", "before", "after"])


def is_internal_channel(name: str) -> bool:
    """True for LangGraph's own channels (``__start__``, ``branch:to:respond``), not the graph's state."""
    return name.startswith("__") or name.startswith("branch:")


MESSAGE_DIFF_COLUMNS = ["change", "role", "before", "after"]


def message_diff(saver: HybridSaver, thread_id: str, before_id: str, after_id: str) -> pd.DataFrame:
    """The ``messages`` of two checkpoints compared message by message (by id, in order):
    ``change`` is ``added``, ``removed``, ``changed`` (same id, other content) or ``same``.

    Raises:
        LookupError: a checkpoint is not in the thread.
    """
    a = checkpoint_state(saver, thread_id, before_id)
    b = checkpoint_state(saver, thread_id, after_id)
    for cid, state in ((before_id, a), (after_id, b)):
        if state is None:
            raise LookupError(f"Checkpoint {cid} is not in thread {thread_id!r}; pick one from its history.")
    assert a is not None and b is not None
    old = [m for m in a["values"].get("messages") or [] if hasattr(m, "content")]
    new = [m for m in b["values"].get("messages") or [] if hasattr(m, "content")]
    old_by_key = {_message_key(m): m for m in old}
    new_keys = {_message_key(m) for m in new}
    rows = []
    for m in new:
        key = _message_key(m)
        role = getattr(m, "type", "message")
        was = old_by_key.get(key)
        if was is None:
            rows.append(("added", role, "", preview(m.content, 400)))
        elif to_jsonable(was.content) != to_jsonable(m.content):
            rows.append(("changed", role, preview(was.content, 400), preview(m.content, 400)))
        else:
            rows.append(("same", role, preview(m.content, 400), preview(m.content, 400)))
    for m in old:
        if _message_key(m) not in new_keys:
            rows.append(("removed", getattr(m, "type", "message"), preview(m.content, 400), ""))
    return pd.DataFrame(rows, columns=MESSAGE_DIFF_COLUMNS)


def pending_writes(saver: HybridSaver, thread_id: str, checkpoint_id: str | None = None) -> pd.DataFrame:
    """Writes stored against the thread's checkpoints (one checkpoint, or all of the thread)."""
    snap = saver.thread_rows(thread_id)
    rows = []
    for (_tid, ns, cid), inner in snap.writes.items():
        if checkpoint_id is not None and cid != checkpoint_id:
            continue
        for (task_id, idx), (_task, channel, typed, path) in inner.items():
            try:
                value = preview(saver.serde.loads_typed(typed))
            except Exception:  # noqa: BLE001 - show the row even when its value cannot be decoded
                value = f"<{typed[0]}: {len(typed[1])} bytes>"
            rows.append((cid, ns, task_id, idx, channel, value, path))
    df = pd.DataFrame(
        rows, columns=["checkpoint_id", "checkpoint_ns", "task_id", "idx", "channel", "value", "task_path"]
    )
    return df.sort_values(["checkpoint_id", "task_id", "idx"], ascending=[False, True, True]).reset_index(drop=True)


def export_thread(saver: HybridSaver, thread_id: str) -> dict[str, Any]:
    """Every checkpoint of a thread (all namespaces), oldest first, as JSON-able dicts."""
    snap = saver.thread_rows(thread_id)
    return export.export_thread(thread_id, snap.storage, snap.writes, snap.blobs, saver.serde)


# -- backups -------------------------------------------------------------------------------------


def attached(saver: HybridSaver) -> bool:
    """True when the saver holds its backup store (False while it runs offline from memory)."""
    return bool(getattr(saver, "attached", True)) and not saver.closed


def database_answering(saver: HybridSaver) -> bool:
    """False while the saver is offline or its last backup failed (PostgreSQL may be down).

    Views then read what memory holds instead of waiting for a pool connection to time out; the
    next successful backup turns database reads back on.
    """
    last = saver.last_run
    return attached(saver) and (last is None or last.ok)


def backup_figures(saver: HybridSaver) -> dict[str, Any]:
    """The figures of the Backups page.

    Keys: ``threads``, ``checkpoints``, ``pending``, ``lag_seconds``, ``last_backup``,
    ``last_success`` (BackupRun of this process or None), ``last_run_at``, ``last_run_ok``,
    ``last_run_error`` (the newest run, of this process or, after a restart, from the runs
    table), ``next_run`` (datetime or None), ``interval``
    (seconds or None when scheduled backups are off), ``paused``, ``attached``,
    ``attach_error``, ``generations_kept``, ``latest_generation``, ``retention``,
    ``database_size`` (None when the database could not answer) and ``database_error``.
    """
    stats = saver.stats()
    sched = saver.scheduler
    out: dict[str, Any] = {
        "resident_threads": stats.resident_threads,
        "resident_bytes": stats.resident_bytes,
        "dirty_bytes": stats.dirty_bytes,
        "memory_budget": stats.memory_budget,
        "hits": stats.hits,
        "loads": stats.loads,
        "evictions": stats.evictions,
        "instance_id": stats.instance_id,
        "store_threads": None,
        "store_checkpoints": None,
        "threads": stats.threads,
        "checkpoints": stats.checkpoints,
        "pending": stats.pending,
        "lag_seconds": stats.lag_seconds,
        "last_backup": stats.last_backup,
        "last_success": stats.last_success,
        "next_run": sched.next_run_time if sched is not None else None,
        "interval": sched.interval if sched is not None else None,
        "paused": bool(sched.paused) if sched is not None else False,
        "attached": attached(saver),
        "attach_error": getattr(saver, "attach_error", None),
        "retention": saver.retention,
        "generations_kept": None,
        "latest_generation": None,
        "database_size": None,
        "database_error": None,
        "last_run_at": stats.last_backup.finished_at if stats.last_backup else None,
        "last_run_ok": stats.last_backup.ok if stats.last_backup else None,
        "last_run_error": stats.last_backup.error if stats.last_backup else None,
    }
    if not out["attached"]:
        return out
    if not database_answering(saver):
        out["database_error"] = "not asked while the last backup is failing"
        return out
    try:
        if stats.last_backup is None:
            newest = saver.store.runs(1)
            if newest:
                out["last_run_at"] = newest[0]["finished_at"]
                out["last_run_ok"] = newest[0]["error"] is None
                out["last_run_error"] = newest[0]["error"]
        gens = saver.generations()
        out["generations_kept"] = len(gens)
        out["latest_generation"] = gens[0].generation if gens else None
        out["database_size"] = saver.store.database_size()
        figures = saver.store.store_figures()
        out["store_threads"] = figures.get("threads")
        out["store_checkpoints"] = figures.get("checkpoints")
    except DB_ERRORS as exc:
        out["database_error"] = scrub(_one_line(exc), saver.conninfo)
    return out


def _runs_from_memory(saver: HybridSaver) -> list[dict[str, Any]]:
    runs: list[BackupRun] = [r for r in saver.history if not r.empty]
    if saver.last_run is not None and saver.last_run not in runs:
        runs.append(saver.last_run)
    runs.sort(key=lambda r: r.started_at, reverse=True)
    return [
        {
            "id": None,
            "trigger": r.trigger,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "generation": r.generation,
            "rows_written": r.rows,
            "bytes_written": r.bytes,
            "lag_seconds": r.lag_seconds,
            "pending": r.pending,
            "threads": None,
            "checkpoints": None,
            "error": r.error,
            "folded": 0,
            "instance_id": saver.instance_id,
        }
        for r in runs
    ]


def runs_frame(saver: HybridSaver, limit: int = 500, *, empty: bool = False) -> pd.DataFrame:
    """Backup runs of every member, newest first (columns :data:`RUN_COLUMNS`); runs that had
    nothing to write are left out unless ``empty`` (they are folded: ``folded`` counts the empty
    runs a row stands for).

    Read from the runs table; while the saver is offline or its last backup failed, from the runs
    this process kept in memory (``df.attrs["source"]`` says which: ``"database"`` or ``"memory"``).
    """
    source = "database"
    try:
        if not database_answering(saver):
            raise HybridSaverError("offline or failing")
        raw = saver.store.runs(limit, empty=empty)
    except DB_ERRORS:
        raw = _runs_from_memory(saver)[:limit]
        source = "memory"
    rows = [
        (
            r.get("id"),
            r["trigger"],
            r["started_at"],
            r["finished_at"],
            (r["finished_at"] - r["started_at"]).total_seconds(),
            r.get("generation"),
            r.get("rows_written") or 0,
            r.get("bytes_written") or 0,
            float(r.get("lag_seconds") or 0.0),
            r.get("pending") or 0,
            r.get("threads"),
            r.get("checkpoints"),
            r.get("error") is None,
            r.get("error") or "",
            r.get("instance_id"),
            int(r.get("folded") or 0),
        )
        for r in raw
    ]
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in ("id", "generation", "threads", "checkpoints", "member"):
        df[col] = df[col].astype("Int64")
    df.attrs["source"] = source
    return df


class StatsHistory:
    """Samples of the saver's in-memory figures over time, for the charts.

    The runs table says what each backup wrote; what memory held in between lives only in this
    process, so it is sampled here: after every backup run (register :meth:`on_run` with
    ``saver.add_listener``) and whenever a page asks (:meth:`sample`, throttled).
    """

    def __init__(self, saver: HybridSaver, maxlen: int = 10_000, min_gap: float = 1.0) -> None:
        self.saver = saver
        self.min_gap = min_gap
        self._samples: deque[tuple] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, every: float) -> None:
        """Also sample every ``every`` seconds from a daemon thread (so the lag between two backups
        is seen even when no page is open), until :meth:`stop` or the saver closes."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every) and not self.saver.closed:
                try:
                    self.sample(force=True)
                except Exception:  # noqa: BLE001 - a failed sample must not end the sampling
                    logger.exception("sampling the saver's figures failed")

        self._thread = threading.Thread(target=loop, name="hybrid-saver-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sample(self, force: bool = False) -> None:
        """Record the saver's figures now (at most once per ``min_gap`` seconds unless ``force``)."""
        now = datetime.now(UTC)
        with self._lock:
            if not force and self._samples and (now - self._samples[-1][0]).total_seconds() < self.min_gap:
                return
        if self.saver.closed:
            return
        stats = self.saver.stats()
        with self._lock:
            self._samples.append(
                (
                    now,
                    stats.threads,
                    stats.checkpoints,
                    stats.pending,
                    stats.lag_seconds,
                    stats.resident_bytes,
                    stats.memory_budget,
                )
            )

    def on_run(self, _run: BackupRun) -> None:
        """Backup listener: sample right after every run."""
        self.sample(force=True)

    def frame(self) -> pd.DataFrame:
        """Columns ``at``, ``threads``, ``checkpoints``, ``pending``, ``lag_s``, ``resident_bytes``,
        ``budget``; oldest first."""
        with self._lock:
            rows = list(self._samples)
        df = pd.DataFrame(
            rows, columns=["at", "threads", "checkpoints", "pending", "lag_s", "resident_bytes", "budget"]
        )
        df["at"] = pd.to_datetime(df["at"], utc=True)
        return df


MEMBER_COLUMNS = [
    "member",
    "name",
    "host",
    "pid",
    "started",
    "heartbeat",
    "resident_threads",
    "resident_bytes",
    "memory_budget",
    "pending",
    "lag_s",
    "last_backup",
    "last_ok",
    "interval",
    "paused",
    "this",
]


def members_frame(saver: HybridSaver) -> pd.DataFrame:
    """The live members of the store with their figures as of their last heartbeat (this
    process's own figures are live). Columns :data:`MEMBER_COLUMNS`."""
    rows = []
    mine = saver._figures() if saver.instance_id is not None else {}
    for m in saver.members():
        f = mine if m.instance_id == saver.instance_id else m.figures
        rows.append(
            (
                m.instance_id,
                m.name or "",
                m.host,
                m.pid,
                m.started_at,
                m.heartbeat_at,
                int(f.get("resident_threads") or 0),
                int(f.get("resident_bytes") or 0),
                f.get("memory_budget"),
                int(f.get("pending") or 0),
                float(f.get("lag_seconds") or 0.0),
                _parse_ts(f.get("last_run_at")),
                f.get("last_run_ok"),
                f.get("interval"),
                bool(f.get("paused")),
                m.instance_id == saver.instance_id,
            )
        )
    df = pd.DataFrame(rows, columns=MEMBER_COLUMNS)
    for col in ("started", "heartbeat", "last_backup"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df["memory_budget"] = df["memory_budget"].astype("Int64")
    return df


# -- generations and restore -----------------------------------------------------------------------


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "DB_ERRORS",
    "GENERATION_COLUMNS",
    "PREVIEW_COLUMNS",
    "RUN_COLUMNS",
    "THREAD_COLUMNS",
    "StatsHistory",
    "attached",
    "backup_figures",
    "checkpoint_history",
    "checkpoint_state",
    "database_answering",
    "diff_checkpoints",
    "export_thread",
    "generations_frame",
    "current_thread_counts",
    "is_internal_channel",
    "members_frame",
    "message_diff",
    "resident_threads_frame",
    "thread_exists",
    "thread_page",
    "thread_titles",
    "pending_writes",
    "preview",
    "preview_summary",
    "restore_preview",
    "runs_frame",
    "to_jsonable",
]
