"""Import a LangGraph ``PostgresSaver`` database into a HybridSaver store, thread by thread.

The source is read with ``langgraph.checkpoint.postgres.PostgresSaver`` itself (its ``list()`` gives the
checkpoints exactly as LangGraph sees them) plus one query for the writes' task paths and indices, in one
read-only REPEATABLE READ transaction per thread, so a thread is read consistently even while an app still
writes to the source. Nothing is ever written to the source.

Each thread is written oldest checkpoint first through the target's own ``put_writes`` and ``put``: same
checkpoint ids, parents, metadata, channel versions and values, and the same pending writes (task ids,
indices, task paths). A checkpoint's writes go in before the checkpoint, so a checkpoint found in the
target always has all of its writes: an import cut anywhere (Ctrl-C, ``kill -9``) leaves every thread
either complete, or a part of the source that the next run completes. The target is backed up every
``batch`` checkpoints, so a memory budget bounds what the import holds.

A thread the target already has is compared by its keys (checkpoint ids and parents, write task ids and
indices): the same keys is done (skipped); a part of the source's is continued; anything else is other
content, refused unless ``replace`` (then the target's thread is deleted and imported afresh; what it
held stays in the generations kept before the import).

``PostgresSaver`` (``pip install langgraph-checkpoint-postgres``) is an optional dependency, imported
only when an import runs. The target is any saver shaped like :class:`ImportTarget` (a HybridSaver):
this module does not import the facade.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from persistence.db import CONNECT_TIMEOUT, describe_url, scrub
from persistence.errors import HybridSaverError
from persistence.records import BackupRun
from persistence.store import Snapshot, Store

logger = logging.getLogger(__name__)

#: the package that provides ``PostgresSaver``
PACKAGE = "langgraph-checkpoint-postgres"
#: PostgresSaver's tables and the columns this import reads
SOURCE_TABLES = {
    "checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "checkpoint", "metadata"),
    "checkpoint_blobs": ("thread_id", "checkpoint_ns", "channel", "version", "type", "blob"),
    "checkpoint_writes": ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "task_path", "idx", "channel"),
}
#: checkpoints (and writes) written between two backups of the target
DEFAULT_BATCH = 1000
#: checkpoints read from the source at once (each carries its whole state)
DEFAULT_PAGE = 100
#: the backup trigger the import's runs are recorded under
TRIGGER = "import"

#: what became of a thread
IMPORTED, CONTINUED, REPLACED, SKIPPED, REFUSED, MISSING = (
    "imported",
    "continued",
    "replaced",
    "skipped",
    "refused",
    "missing",
)


class SourceUnreadable(HybridSaverError):
    """The PostgresSaver source cannot be read: package missing, database unreachable, no tables, or
    the source is a HybridSaver store (this one, even)."""


class ImportFailed(HybridSaverError):
    """The target could not keep what was imported (a backup failed); run the import again."""


class _Inexact(Exception):
    """One thread's writes cannot be reproduced with their exact indices (that thread is refused)."""


class ImportTarget(Protocol):
    """What the import needs of the saver it writes to (a HybridSaver)."""

    store: Store

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig: ...

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None: ...

    def delete_thread(self, thread_id: str) -> None: ...

    def thread_rows(self, thread_id: str) -> Snapshot: ...

    def thread_ids(self) -> list[str]: ...

    def backup(self, trigger: str = "manual", request_id: str | None = None) -> BackupRun: ...


@dataclass(frozen=True)
class ThreadReport:
    """What the import did with one thread (or, in a dry run, would do)."""

    thread_id: str
    outcome: str
    #: checkpoints and writes written (to be written, in a dry run)
    checkpoints: int = 0
    writes: int = 0
    #: why a thread was refused or skipped, as a sentence
    reason: str = ""


@dataclass(frozen=True)
class ImportProgress:
    """Where an import is, after one thread."""

    threads_done: int
    threads_total: int
    checkpoints: int
    checkpoints_total: int
    writes: int
    elapsed: float
    thread: ThreadReport


@dataclass
class ImportResult:
    """The outcome of an import: counts by outcome and what was written."""

    threads_total: int = 0
    checkpoints: int = 0
    writes: int = 0
    elapsed: float = 0.0
    backups: int = 0
    dry_run: bool = False
    #: writes whose checkpoint the source does not have (PostgresSaver never shows them): left out
    orphan_writes: int = 0
    #: the target's newest generation before the import wrote anything (None: an empty store)
    generation_before: int | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    #: the threads refused or missing, with why
    problems: list[ThreadReport] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return self.outcomes.get(outcome, 0)

    @property
    def ok(self) -> bool:
        """Every thread asked for is in the target (or would be, in a dry run)."""
        return not self.problems


Progress = Callable[[ImportProgress], None]
_Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id)


def _postgres_saver() -> Any:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise SourceUnreadable(
            f"Importing from PostgresSaver needs LangGraph's PostgresSaver, which is not installed: "
            f"pip install {PACKAGE} (or the extra: pip install 'hybrid-saver[postgres-saver]')"
        ) from None
    return PostgresSaver


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class _Source:
    """The PostgresSaver database: one connection, read-only snapshots, PostgresSaver's own reads."""

    def __init__(self, url: str, schema: str | None, serde: SerializerProtocol | None, own_store: str) -> None:
        saver_class = _postgres_saver()
        self.url = url
        self.own_store = own_store
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise SourceUnreadable(
                f"The source URL is not a valid PostgreSQL connection string ({_first_line(scrub(str(exc), url))}). "
                "Give the PostgresSaver's database as postgresql://user:password@host:5432/dbname."
            ) from None
        try:
            self.conn = psycopg.connect(
                url,
                autocommit=True,
                prepare_threshold=0,
                row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="hybrid-saver import",
            )
        except psycopg.Error as exc:
            reason = _first_line(scrub(str(exc), url)) or type(exc).__name__
            raise SourceUnreadable(
                f"Cannot connect to the PostgresSaver source, {describe_url(url)}: {reason}. Check that the server "
                "is reachable, the database exists and the credentials are right, then fix the source URL."
            ) from None
        try:
            self.schema = self._check(schema)
        except BaseException:
            self.conn.close()
            raise
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        self.saver = saver_class(self.conn, serde=serde)

    def _check(self, schema: str | None) -> str:
        """Point the search path at ``schema`` and find PostgresSaver's tables; return their schema."""
        where = describe_url(self.url)
        conn = self.conn
        if schema is not None:
            row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if row is None:
                raise SourceUnreadable(
                    f"The source {where} has no schema {schema!r}; give the schema PostgresSaver's tables "
                    "are in with --source-schema (or leave it out for the URL's default search_path)."
                )
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        found = {}
        for table in SOURCE_TABLES:
            row = conn.execute(
                "SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(%s)",
                (table,),
            ).fetchone()
            if row is not None:
                found[table] = row["schema"]
        path = conn.execute("SELECT array_to_string(current_schemas(false), ', ') AS p").fetchone()["p"] or "(empty)"
        store_id = self._hybrid_store(found["checkpoints"]) if "checkpoints" in found else None
        if store_id is not None:
            what = "the target store itself" if store_id == self.own_store else "a HybridSaver store"
            raise SourceUnreadable(
                f"Schema {found['checkpoints']!r} of the source {where} is {what}, not a PostgresSaver database: "
                "give the database (and --source-schema) where PostgresSaver.setup() created its tables "
                "checkpoints, checkpoint_blobs and checkpoint_writes."
            )
        missing = [t for t in SOURCE_TABLES if t not in found]
        if missing:
            raise SourceUnreadable(
                f"The source {where} has no PostgresSaver table{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} in its search_path ({path}). Give the database PostgresSaver.setup() ran on, "
                "and --source-schema if its tables are in another schema."
            )
        schemas = set(found.values())
        if len(schemas) > 1:
            raise SourceUnreadable(
                f"PostgresSaver's tables of the source {where} are spread over schemas {', '.join(sorted(schemas))}; "
                "name the one that holds all three with --source-schema."
            )
        (home,) = schemas
        for table, columns in SOURCE_TABLES.items():
            rows = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (f'"{home}"."{table}"',),
            ).fetchall()
            lacking = [c for c in columns if c not in {r["attname"] for r in rows}]
            if lacking:
                raise SourceUnreadable(
                    f"Table {home}.{table} of the source {where} lacks column(s) {', '.join(lacking)}: it was made by an "
                    f"older PostgresSaver. Run PostgresSaver.setup() of {PACKAGE} 3.x on it once (it only adds "
                    "columns and indexes), or give the right database."
                )
        return home

    def _hybrid_store(self, schema: str) -> str | None:
        """The store id of the HybridSaver store in ``schema`` ("" when unreadable), or None when it is none."""
        row = self.conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL AS hybrid",
            (f'"{schema}".generations', f'"{schema}".identity'),
        ).fetchone()
        if not row["hybrid"]:
            return None
        try:
            found = self.conn.execute(
                sql.SQL("SELECT store_id::text AS id FROM {}.identity LIMIT 1").format(sql.Identifier(schema))
            ).fetchone()
        except psycopg.Error:
            return ""
        return found["id"] if found else ""

    def close(self) -> None:
        self.conn.close()

    # -- reads ----------------------------------------------------------------------------------

    def thread_ids(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id").fetchall()
        return [r["thread_id"] for r in rows]

    def present(self, thread_ids: Sequence[str]) -> set[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id = ANY(%s)", (list(thread_ids),)
        ).fetchall()
        return {r["thread_id"] for r in rows}

    def count(self, thread_ids: Sequence[str] | None) -> int:
        if thread_ids is None:
            row = self.conn.execute("SELECT count(*) AS n FROM checkpoints").fetchone()
        else:
            row = self.conn.execute(
                "SELECT count(*) AS n FROM checkpoints WHERE thread_id = ANY(%s)", (list(thread_ids),)
            ).fetchone()
        return int(row["n"])

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read-only REPEATABLE READ transaction: every read inside sees the same state."""
        with self.conn.transaction():
            yield

    def checkpoint_keys(self, thread_id: str) -> list[tuple[str, str, str | None]]:
        """(ns, id, parent) of every checkpoint of the thread, oldest first (in the server's order)."""
        rows = self.conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id FROM checkpoints WHERE thread_id = %s "
            "ORDER BY checkpoint_id, checkpoint_ns",
            (thread_id,),
        ).fetchall()
        return [(r["checkpoint_ns"], r["checkpoint_id"], r["parent_checkpoint_id"]) for r in rows]

    def write_keys(self, thread_id: str) -> set[tuple[str, str, str, int]]:
        rows = self.conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, task_id, idx FROM checkpoint_writes WHERE thread_id = %s",
            (thread_id,),
        ).fetchall()
        return {(r["checkpoint_ns"], r["checkpoint_id"], r["task_id"], r["idx"]) for r in rows}

    def page(self, thread_id: str, before: str | None, limit: int) -> list[Any]:
        """The ``limit`` newest checkpoint tuples older than ``before`` (all namespaces), as PostgresSaver lists them."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        bound: RunnableConfig | None = {"configurable": {"checkpoint_id": before}} if before is not None else None
        return list(self.saver.list(config, before=bound, limit=limit))

    def writes(self, thread_id: str, checkpoint_ids: Sequence[str]) -> list[dict[str, Any]]:
        return self.conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob FROM checkpoint_writes "
            "WHERE thread_id = %s AND checkpoint_id = ANY(%s)",
            (thread_id, list(checkpoint_ids)),
        ).fetchall()

    def load(self, row: dict[str, Any]) -> Any:
        return self.saver.serde.loads_typed((row["type"], row["blob"]))


@dataclass
class _Plan:
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
) -> _Plan:
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
        return _Plan(IMPORTED, missing=set(source), tasks={(k[0], k[1], k[2]) for k in writes}, orphans=orphans)
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
        return _Plan(REFUSED, reason=f"thread {thread_id!r} exists in the target with other content: {why}")
    missing = {k for k in source if k not in held}
    tasks = {(k[0], k[1], k[2]) for k in writes - held_writes} | {
        (k[0], k[1], k[2]) for k in writes if k[:2] in missing
    }
    if not missing and not tasks:
        return _Plan(SKIPPED, reason=f"thread {thread_id!r} is already imported ({len(held)} checkpoints)")
    return _Plan(CONTINUED, missing=missing, tasks=tasks, blobs=blobs, orphans=orphans)


def task_writes(rows: Sequence[dict[str, Any]], load: Callable[[dict[str, Any]], Any]) -> list[tuple[Any, ...]]:
    """The ``put_writes`` calls that store one task's rows with exactly their indices.

    ``put_writes`` numbers a write by its place in the list (special channels by ``WRITES_IDX_MAP``), so the
    list puts each regular write at its index; a place another call of the run used for a special write is
    filled with one of the task's special writes (the last of a special index wins, and they are all put
    again at the end). Returns ``[(writes, task_path)]``.

    Raises:
        _Inexact: the indices cannot be reproduced (a gap with no special write to fill it).
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
                raise _Inexact(
                    f"write {r['idx']} of task {r['task_id']!r} is on channel {r['channel']!r}, which this version of "
                    "LangGraph does not number that way; it cannot be imported exactly."
                )
        for r in regular.values():
            if r["channel"] in WRITES_IDX_MAP:
                raise _Inexact(
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
                raise _Inexact(
                    f"the writes of task {group[0]['task_id']!r} skip index {idx}; they cannot be imported exactly."
                )
        writes.extend((r["channel"], load(r)) for r in special)
        calls.append((writes, task_path))
    return calls


def _chunks(keys: Sequence[tuple[str, str, str | None]], size: int) -> Iterable[list[tuple[str, str, str | None]]]:
    """Consecutive runs of about ``size`` checkpoints that never split one checkpoint id."""
    chunk: list[tuple[str, str, str | None]] = []
    for key in keys:
        if len(chunk) >= size and key[1] != chunk[-1][1]:
            yield chunk
            chunk = []
        chunk.append(key)
    if chunk:
        yield chunk


class PostgresSaverImport:
    """One import of a PostgresSaver database into ``target``; :meth:`run` does it."""

    def __init__(
        self,
        source_url: str,
        target: ImportTarget,
        *,
        thread_ids: Sequence[str] | None = None,
        replace: bool = False,
        dry_run: bool = False,
        source_schema: str | None = None,
        batch: int = DEFAULT_BATCH,
        page: int = DEFAULT_PAGE,
        progress: Progress | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        if batch < 1 or page < 1:
            raise ValueError(f"batch and page must be at least 1, got {batch} and {page}")
        self.source_url = source_url
        self.target = target
        self.thread_ids = list(dict.fromkeys(thread_ids)) if thread_ids is not None else None
        self.replace = replace
        self.dry_run = dry_run
        self.source_schema = source_schema
        self.batch = batch
        self.page = page
        self.progress = progress
        self.serde = serde
        self._pending = 0
        self._result = ImportResult(dry_run=dry_run)

    def run(self) -> ImportResult:
        """Import every thread (or ``thread_ids``); back the target up as it goes and at the end.

        Raises:
            SourceUnreadable: the source cannot be read (the message says what to give instead).
            ImportFailed: a backup of the target failed; what it had not written stays pending in the
                target (its ``close()`` tries again) and the next run continues from what the store holds.
        """
        started = time.monotonic()
        source = _Source(self.source_url, self.source_schema, self.serde, self.target.store.identity())
        result = self._result
        try:
            wanted = self.thread_ids
            order = source.thread_ids() if wanted is None else wanted
            found = set(order) if wanted is None else source.present(wanted)
            result.threads_total = len(order)
            total_checkpoints = source.count(wanted)
            in_target = set(self.target.store.live_thread_ids()) | set(self.target.thread_ids())
            result.generation_before = self.target.store.latest_generation()
            logger.info(
                "importing %s threads (%s checkpoints) from %s",
                len(found),
                total_checkpoints,
                describe_url(self.source_url),
            )
            done = 0
            for thread_id in order:
                if thread_id in found:
                    try:
                        report = self._thread(source, thread_id, thread_id in in_target)
                    except psycopg.Error as exc:
                        reason = _first_line(scrub(str(exc), self.source_url)) or type(exc).__name__
                        raise SourceUnreadable(
                            f"Reading thread {thread_id!r} from the source, {describe_url(self.source_url)}, failed: "
                            f"{reason}. What was imported before it is kept; run the import again to continue."
                        ) from None
                else:
                    report = ThreadReport(thread_id, MISSING, reason=f"thread {thread_id!r} is not in the source")
                done += 1
                result.outcomes[report.outcome] = result.outcomes.get(report.outcome, 0) + 1
                result.checkpoints += report.checkpoints
                result.writes += report.writes
                if report.outcome in (REFUSED, MISSING):
                    result.problems.append(report)
                    logger.warning("%s", report.reason)
                if self.progress is not None:
                    self.progress(
                        ImportProgress(
                            done, result.threads_total, result.checkpoints, total_checkpoints, result.writes,
                            time.monotonic() - started, report,
                        )
                    )  # fmt: skip
            if not self.dry_run:
                self._backup(force=True)
        finally:
            source.close()
            result.elapsed = time.monotonic() - started
        return result

    # -- one thread -------------------------------------------------------------------------------

    def _thread(self, source: _Source, thread_id: str, in_target: bool) -> ThreadReport:
        with source.snapshot():
            keys = source.checkpoint_keys(thread_id)
            write_keys = source.write_keys(thread_id)
            held = self.target.thread_rows(thread_id) if in_target else None
            plan = plan_thread(thread_id, keys, write_keys, held)
            self._result.orphan_writes += plan.orphans
            outcome = plan.outcome
            if outcome == SKIPPED:
                return ThreadReport(thread_id, SKIPPED, reason=plan.reason)
            if outcome == REFUSED:
                if not self.replace:
                    return ThreadReport(
                        thread_id, REFUSED, reason=plan.reason + "; nothing was changed (--replace replaces it)"
                    )
                plan = plan_thread(thread_id, keys, write_keys, None)
                outcome = REPLACED
            writes = sum(1 for k in write_keys if k[:3] in plan.tasks)
            if self.dry_run:
                return ThreadReport(thread_id, outcome, len(plan.missing), writes)
            if outcome == REPLACED:
                self.target.delete_thread(thread_id)
            try:
                written, writes = self._write(source, thread_id, keys, plan)
            except _Inexact as exc:
                return ThreadReport(thread_id, REFUSED, reason=f"thread {thread_id!r}: {exc}")
            return ThreadReport(thread_id, outcome, written, writes)

    def _write(
        self, source: _Source, thread_id: str, keys: list[tuple[str, str, str | None]], plan: _Plan
    ) -> tuple[int, int]:
        target = self.target
        blobs = set(plan.blobs)
        written = writes = 0
        needed = plan.missing | {(ns, cid) for ns, cid, _task in plan.tasks}
        chunks = list(_chunks(keys, self.page))
        for i, chunk in enumerate(chunks):
            if not any((ns, cid) in needed for ns, cid, _ in chunk):
                continue
            before = chunks[i + 1][0][1] if i + 1 < len(chunks) else None
            tuples = {
                (t.config["configurable"]["checkpoint_ns"], t.config["configurable"]["checkpoint_id"]): t
                for t in source.page(thread_id, before, len(chunk))
            }
            ids = sorted({cid for ns, cid, _ in chunk if (ns, cid) in needed})
            # (ns, checkpoint id) -> task id -> its rows
            by_task: dict[_Key, dict[str, list[dict[str, Any]]]] = {}
            for row in source.writes(thread_id, ids):
                ns, cid, task_id = row["checkpoint_ns"], row["checkpoint_id"], row["task_id"]
                if (ns, cid, task_id) in plan.tasks:
                    by_task.setdefault((ns, cid), {}).setdefault(task_id, []).append(row)
            for ns, cid, parent in chunk:
                tasks = by_task.get((ns, cid), {})
                config: RunnableConfig = {
                    "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}
                }
                for task_id, rows in sorted(tasks.items()):
                    for task_list, task_path in task_writes(rows, source.load):
                        target.put_writes(config, task_list, task_id, task_path)
                    writes += len(rows)
                if (ns, cid) not in plan.missing:
                    self._pending += len(tasks)
                    continue
                tup = tuples.get((ns, cid))
                if tup is None:
                    raise ImportFailed(f"checkpoint {cid!r} was listed but PostgresSaver did not return it")
                checkpoint = tup.checkpoint
                versions = checkpoint["channel_versions"]
                new_versions = {ch: v for ch, v in versions.items() if (ns, ch, v) not in blobs}
                blobs.update((ns, ch, v) for ch, v in new_versions.items())
                parent_config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
                if parent is not None:
                    parent_config["configurable"]["checkpoint_id"] = parent
                target.put(parent_config, checkpoint, tup.metadata, new_versions)
                written += 1
                self._pending += 1 + len(tasks)
                if self._pending >= self.batch:
                    self._backup()
        return written, writes

    def _backup(self, *, force: bool = False) -> None:
        if not force and self._pending < self.batch:
            return
        run = self.target.backup(trigger=TRIGGER)
        self._pending = 0
        if not run.ok:
            raise ImportFailed(
                f"Backing up the imported threads failed: {run.error}. What was imported since the last backup "
                "stays pending in the saver (closing it tries again); run the import again to continue."
            )
        if run.refused:
            raise ImportFailed(
                f"Another member of the store took thread(s) {', '.join(map(repr, run.refused[:5]))} during the "
                "import, so this saver's writes to them were refused; run the import again when the store is quiet."
            )
        if run.generation is not None:
            self._result.backups += 1


def import_postgres_saver(
    source_url: str,
    target: ImportTarget,
    *,
    thread_ids: Sequence[str] | None = None,
    replace: bool = False,
    dry_run: bool = False,
    source_schema: str | None = None,
    batch: int = DEFAULT_BATCH,
    page: int = DEFAULT_PAGE,
    progress: Progress | None = None,
    serde: SerializerProtocol | None = None,
) -> ImportResult:
    """Bring the threads of the PostgresSaver database at ``source_url`` into ``target`` (a HybridSaver).

    Args:
        source_url: the PostgresSaver's database; its tables are found in the URL's default search_path,
            or in ``source_schema``. Only read, in one read-only transaction per thread.
        target: the saver to write into; it is backed up every ``batch`` checkpoints and at the end.
        thread_ids: only these threads (default: every thread of the source).
        replace: a thread the target holds with other content is deleted there and imported afresh
            (default: it is refused and left as it is).
        dry_run: only count what would be written; nothing is written.
        page: checkpoints read from the source at once.
        progress: called after every thread with where the import is.
        serde: the serializer the source was written with (default: PostgresSaver's, JsonPlusSerializer).

    Returns:
        The counts by outcome (imported, continued, replaced, skipped, refused, missing) and what was written.

    Raises:
        SourceUnreadable: PostgresSaver is not installed, or the source cannot be reached or holds no
            PostgresSaver tables (or is a HybridSaver store); the message says what to do.
        ImportFailed: a backup of the target failed; run the import again to continue.
    """
    return PostgresSaverImport(
        source_url, target, thread_ids=thread_ids, replace=replace, dry_run=dry_run, source_schema=source_schema,
        batch=batch, page=page, progress=progress, serde=serde,
    ).run()  # fmt: skip


__all__ = [
    "CONTINUED",
    "IMPORTED",
    "MISSING",
    "PACKAGE",
    "REFUSED",
    "REPLACED",
    "SKIPPED",
    "ImportFailed",
    "ImportProgress",
    "ImportResult",
    "ImportTarget",
    "PostgresSaverImport",
    "SourceUnreadable",
    "ThreadReport",
    "import_postgres_saver",
    "plan_thread",
    "task_writes",
]
