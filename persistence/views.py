"""Read-only views of a live :class:`~persistence.HybridSaver` for dashboards and tools.

Every function takes a saver and returns a pandas DataFrame or plain dicts; none of them changes
the saver. Memory is read under ``saver.lock`` only long enough to copy references (values are
immutable serialised tuples), and decoding happens outside the lock. Nothing here imports
streamlit: the pages in ``pages/`` render what these functions return.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
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

THREAD_COLUMNS = [
    "thread_id",
    "title",
    "checkpoints",
    "updated",
    "backed_up",
    "step",
    "source",
    "metadata",
    "newest_checkpoint",
]
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


@dataclasses.dataclass(frozen=True)
class _Head:
    """What the thread table shows of a thread's newest checkpoint (immutable, so cacheable)."""

    checkpoint_id: str
    title: str
    updated: datetime | None
    step: int | None
    source: str
    metadata: str


class ThreadIndex:
    """Summaries of every thread in a saver, cheap to recompute.

    The newest checkpoint of a thread is decoded once and cached under its id: checkpoints are
    immutable, so a cached head stays right until the thread gets a newer checkpoint. A call to
    :meth:`frame` therefore costs one pass over memory under the lock plus the decoding of the
    threads that changed since the last call. Safe to share between threads (sessions).
    """

    def __init__(self, saver: HybridSaver) -> None:
        self.saver = saver
        self._heads: dict[str, _Head] = {}
        self._lock = threading.Lock()
        #: seconds the last :meth:`frame` took, and how many heads it had to decode
        self.last_build_seconds = 0.0
        self.last_decoded = 0

    def frame(self) -> pd.DataFrame:
        """One row per thread (columns :data:`THREAD_COLUMNS`), newest update first.

        Sizes are not here (they need a pass over every blob): ask :func:`thread_sizes` for the
        rows you show.
        """
        started = time.perf_counter()
        saver = self.saver
        with saver.lock:
            heads: dict[str, tuple[str, tuple]] = {}
            counts: dict[str, int] = {}
            for tid, namespaces in saver.storage.items():
                root = namespaces.get("")
                n = len(root) if root else 0
                if len(namespaces) > 1:
                    n = sum(len(cps) for cps in namespaces.values())
                if not n:
                    continue
                cps = root if root else next(c for c in namespaces.values() if c)
                cid = max(cps)
                counts[tid] = n
                heads[tid] = (cid, cps[cid])
            blobs_ref = saver.blobs
            pending = saver.pending_threads()
        rows = []
        decoded = 0
        with self._lock:
            cache = self._heads
            for tid, (cid, entry) in heads.items():
                head = cache.get(tid)
                if head is None or head.checkpoint_id != cid:
                    head = self._decode_head(tid, cid, entry, blobs_ref)
                    cache[tid] = head
                    decoded += 1
                rows.append(
                    (
                        tid,
                        head.title,
                        counts[tid],
                        head.updated,
                        tid not in pending,
                        head.step,
                        head.source,
                        head.metadata,
                        head.checkpoint_id,
                    )
                )
            for tid in [t for t in cache if t not in heads]:
                del cache[tid]
        df = pd.DataFrame(rows, columns=THREAD_COLUMNS)
        df["updated"] = pd.to_datetime(df["updated"], utc=True)
        df["step"] = df["step"].astype("Int64")
        df = df.sort_values(["updated", "thread_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
        self.last_build_seconds = time.perf_counter() - started
        self.last_decoded = decoded
        return df

    def _decode_head(self, tid: str, cid: str, entry: tuple, blobs: Mapping) -> _Head:
        serde = self.saver.serde
        (ctype, cdata), (mtype, mdata), _parent = entry
        try:
            checkpoint = serde.loads_typed((ctype, cdata))
            metadata = serde.loads_typed((mtype, mdata)) or {}
        except Exception:  # noqa: BLE001 - one undecodable checkpoint must not hide every thread
            logger.warning("thread %r: checkpoint %s cannot be decoded", tid, cid)
            return _Head(cid, "", None, None, "undecodable", "{}")
        title = ""
        version = checkpoint.get("channel_versions", {}).get("title")
        if version is not None:
            blob = blobs.get((tid, "", "title", version))
            if blob is not None and blob[0] != "empty":
                try:
                    value = serde.loads_typed(blob)
                    title = value if isinstance(value, str) else ""
                except Exception:  # noqa: BLE001
                    title = ""
        step = metadata.get("step")
        return _Head(
            checkpoint_id=cid,
            title=title,
            updated=_parse_ts(checkpoint.get("ts")),
            step=step if isinstance(step, int) and not isinstance(step, bool) else None,
            source=str(metadata.get("source") or ""),
            metadata=json.dumps(to_jsonable(metadata), ensure_ascii=False, sort_keys=True, default=str),
        )


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def thread_sizes(saver: HybridSaver, thread_ids: Iterable[str]) -> dict[str, int]:
    """Bytes each thread holds in memory (checkpoints, metadata, channel values, writes).

    One pass over the blobs and writes, so ask for a page of threads at a time, not per thread.
    """
    sizes = dict.fromkeys(thread_ids, 0)
    with saver.lock:
        for tid in sizes:
            for cps in saver.storage.get(tid, {}).values():
                for (_ct, cdata), (_mt, mdata), _parent in cps.values():
                    sizes[tid] += len(cdata) + len(mdata)
        blob_sizes = [(k[0], len(v[1])) for k, v in saver.blobs.items() if k[0] in sizes]
        write_sizes = [
            (outer[0], sum(len(w[2][1]) for w in inner.values()))
            for outer, inner in saver.writes.items()
            if outer[0] in sizes
        ]
    for tid, n in blob_sizes:
        sizes[tid] += n
    for tid, n in write_sizes:
        sizes[tid] += n
    return sizes


def filter_threads(df: pd.DataFrame, query: str = "", status: str = "all") -> pd.DataFrame:
    """Rows of a :meth:`ThreadIndex.frame` whose id, title or metadata contain ``query`` (any case),
    limited to ``status`` ``"pending"`` or ``"backed up"`` (``"all"``: no limit)."""
    out = df
    if status == "pending":
        out = out[~out["backed_up"]]
    elif status == "backed up":
        out = out[out["backed_up"]]
    query = query.strip()
    if query:
        mask = (
            out["thread_id"].str.contains(query, case=False, regex=False)
            | out["title"].str.contains(query, case=False, regex=False)
            | out["metadata"].str.contains(query, case=False, regex=False)
        )
        out = out[mask]
    return out


def paginate(df: pd.DataFrame, page: int, page_size: int) -> tuple[pd.DataFrame, int]:
    """Return rows of 1-based ``page`` and the number of pages (at least 1)."""
    pages = max(1, -(-len(df) // page_size))
    page = min(max(1, page), pages)
    return df.iloc[(page - 1) * page_size : page * page_size], pages


def _checkpoint_entries(saver: HybridSaver, thread_id: str, ns: str = "") -> dict[str, tuple]:
    with saver.lock:
        return dict(saver.storage.get(thread_id, {}).get(ns, {}))


def checkpoint_history(saver: HybridSaver, thread_id: str, limit: int = 500) -> pd.DataFrame:
    """The thread's checkpoints (root namespace), newest first: id, time, step, source, parent,
    channels updated and pending writes. At most ``limit`` rows."""
    entries = _checkpoint_entries(saver, thread_id)
    with saver.lock:
        writes = {cid: len(saver.writes.get((thread_id, "", cid), {})) for cid in entries}
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
                writes[cid],
                len(cdata) + len(mdata),
            )
        )
    df = pd.DataFrame(
        rows, columns=["checkpoint_id", "ts", "step", "source", "parent_id", "updated_channels", "writes", "bytes"]
    )
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601", errors="coerce")
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


def pending_writes(saver: HybridSaver, thread_id: str, checkpoint_id: str | None = None) -> pd.DataFrame:
    """Writes stored against the thread's checkpoints (one checkpoint, or all of the thread)."""
    with saver.lock:
        items = [
            (outer, dict(inner))
            for outer, inner in saver.writes.items()
            if outer[0] == thread_id and (checkpoint_id is None or outer[2] == checkpoint_id)
        ]
    rows = []
    for (_tid, ns, cid), inner in items:
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
    with saver.lock:  # copy references only; decoding happens outside the lock
        storage = {thread_id: {ns: dict(cps) for ns, cps in saver.storage.get(thread_id, {}).items()}}
        writes = {k: dict(w) for k, w in saver.writes.items() if k[0] == thread_id}
        blobs = {k: b for k, b in saver.blobs.items() if k[0] == thread_id}
    return export.export_thread(thread_id, storage, writes, blobs, saver.serde)


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
    except DB_ERRORS as exc:
        out["database_error"] = scrub(_one_line(exc), saver.conninfo)
    return out


def _runs_from_memory(saver: HybridSaver) -> list[dict[str, Any]]:
    runs: list[BackupRun] = list(saver.scheduler.history) if saver.scheduler is not None else []
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
        }
        for r in runs
    ]


def runs_frame(saver: HybridSaver, limit: int = 500) -> pd.DataFrame:
    """Backup runs, newest first (columns :data:`RUN_COLUMNS`).

    Read from the runs table; while the saver is offline or its last backup failed, from the runs
    this process kept in memory (``df.attrs["source"]`` says which: ``"database"`` or ``"memory"``).
    """
    source = "database"
    try:
        if not database_answering(saver):
            raise HybridSaverError("offline or failing")
        raw = saver.store.runs(limit)
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
        )
        for r in raw
    ]
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in ("id", "generation", "threads", "checkpoints"):
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
        self._samples: deque[tuple[datetime, int, int, int, float]] = deque(maxlen=maxlen)
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
            self._samples.append((now, stats.threads, stats.checkpoints, stats.pending, stats.lag_seconds))

    def on_run(self, _run: BackupRun) -> None:
        """Backup listener: sample right after every run."""
        self.sample(force=True)

    def frame(self) -> pd.DataFrame:
        """Columns ``at``, ``threads``, ``checkpoints``, ``pending``, ``lag_s``; oldest first."""
        with self._lock:
            rows = list(self._samples)
        df = pd.DataFrame(rows, columns=["at", "threads", "checkpoints", "pending", "lag_s"])
        df["at"] = pd.to_datetime(df["at"], utc=True)
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


def memory_thread_counts(saver: HybridSaver) -> dict[str, tuple[int, str]]:
    """thread_id -> (checkpoints, newest checkpoint id) in memory (threads with checkpoints only)."""
    out: dict[str, tuple[int, str]] = {}
    with saver.lock:
        for tid, namespaces in saver.storage.items():
            n = 0
            newest = ""
            for cps in namespaces.values():
                if cps:
                    n += len(cps)
                    newest = max(newest, max(cps))
            if n:
                out[tid] = (n, newest)
    return out


def restore_preview(saver: HybridSaver, generation: int, thread_id: str | None = None) -> pd.DataFrame:
    """What restoring ``generation`` (all threads, or one) would do to the current state.

    One row per thread that differs, plus unchanged ones (columns :data:`PREVIEW_COLUMNS`):
    ``change`` is ``added`` (restore brings the thread back), ``removed`` (restore deletes it),
    ``changed`` (other checkpoints) or ``unchanged``; ``delta`` = checkpoints then - now.

    Raises:
        GenerationNotFound: the generation is not kept.
        psycopg.Error, PoolTimeout: PostgreSQL cannot answer.
    """
    saver.store.get_generation(generation)
    then = saver.store.thread_counts(generation)
    now = memory_thread_counts(saver)
    if thread_id is not None:
        then = {k: v for k, v in then.items() if k == thread_id}
        now = {k: v for k, v in now.items() if k == thread_id}
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
    "ThreadIndex",
    "attached",
    "backup_figures",
    "checkpoint_history",
    "checkpoint_state",
    "database_answering",
    "diff_checkpoints",
    "export_thread",
    "filter_threads",
    "generations_frame",
    "memory_thread_counts",
    "paginate",
    "pending_writes",
    "preview",
    "preview_summary",
    "restore_preview",
    "thread_sizes",
    "runs_frame",
    "to_jsonable",
]
