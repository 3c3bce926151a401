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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.db import _first_line, describe_url, scrub
from persistence.errors import HybridSaverError
from persistence.ops.import_plan import (
    CONTINUED,
    IMPORTED,
    MISSING,
    REFUSED,
    REPLACED,
    SKIPPED,
    Inexact,
    Plan,
    checkpoint_runs,
    plan_thread,
    task_writes,
)
from persistence.ops.import_source import PACKAGE, Source, SourceUnreadable
from persistence.records import BackupRun
from persistence.store import Snapshot, Store

logger = logging.getLogger(__name__)

#: checkpoints (and writes) written between two backups of the target
DEFAULT_BATCH = 1000
#: checkpoints read from the source at once (each carries its whole state)
DEFAULT_PAGE = 100
#: the backup trigger the import's runs are recorded under
TRIGGER = "import"


class ImportFailed(HybridSaverError):
    """The target could not keep what was imported (a backup failed); run the import again."""


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
        source = Source(self.source_url, self.source_schema, self.serde, self.target.store.identity())
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

    def _thread(self, source: Source, thread_id: str, in_target: bool) -> ThreadReport:
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
            except Inexact as exc:
                return ThreadReport(thread_id, REFUSED, reason=f"thread {thread_id!r}: {exc}")
            return ThreadReport(thread_id, outcome, written, writes)

    def _write(
        self, source: Source, thread_id: str, keys: list[tuple[str, str, str | None]], plan: Plan
    ) -> tuple[int, int]:
        target = self.target
        blobs = set(plan.blobs)
        written = writes = 0
        needed = plan.missing | {(ns, cid) for ns, cid, _task in plan.tasks}
        chunks = list(checkpoint_runs(keys, self.page))
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
            by_task: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
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
