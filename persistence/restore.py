"""Restores of :class:`~persistence.HybridSaver`: put back the state of a kept generation, for every
thread or one, across the whole fleet.

A restore checks the generation's rows against their checksums first (nothing changes when they are
damaged, unless told to skip them). Then it makes the fleet hand the threads over: for every thread,
it holds the store's restore lock (claims wait) and asks each live member to back up and release what
it holds; for one thread, it claims that thread. Its own pending changes are backed up too, so the
newest generation is then the undo point. The rewrite is server-side SQL committed as a generation of
its own; the threads are cold afterwards and load on demand: a restore costs the SQL, not a reload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from persistence.backup import DB_ERRORS
from persistence.db import describe_url, scrub
from persistence.errors import (
    CorruptBackup,
    DatabaseUnavailable,
    InvalidValue,
    ThreadBusy,
    ThreadNotFound,
    ThreadRestored,
)
from persistence.records import BackupRun, RestoreResult
from persistence.remote import CommandTimeout
from persistence.schema import enc, enc_version
from persistence.store import Changes, Generation

if TYPE_CHECKING:
    from persistence.saver import HybridSaver

logger = logging.getLogger(__name__)

#: how long the members of a fleet get to back up and hand over their threads before a restore
HANDOVER_TIMEOUT = 60.0
#: how long a restore waits for another restore to finish
RESTORE_LOCK_TIMEOUT = 30
#: how long a restore refuses the steps of runs that began before it (see _check_not_restored)
RESTORED_TTL = 3600.0

Progress = Callable[[str, float, str], None]


@dataclass(frozen=True)
class VerifyResult:
    """What :meth:`HybridSaver.verify` found in a generation."""

    generation: int
    rows: int
    damaged: list[tuple[str, str]]

    @property
    def ok(self) -> bool:
        return not self.damaged


def _quiet(_phase: str, _fraction: float, _detail: str) -> None:
    return None


class RestoreMixin:
    """Generations, verification and restores of a HybridSaver (mixed into it)."""

    def _mark_restored(self: HybridSaver, thread_ids: Sequence[str]) -> None:
        """Remember that a restore rewrote ``thread_ids``. Under the lock."""
        now = time.monotonic()
        if len(self._restored) > 100_000:
            self._restored = {t: at for t, at in self._restored.items() if now - at < RESTORED_TTL}
        for tid in thread_ids:
            self._restored[tid] = now

    def _check_not_restored(self: HybridSaver, thread_id: str, ns: str, parent: str | None) -> None:
        """Refuse a step of a run that began before a restore of its thread: its parent checkpoint
        is gone, and writing it would put back what the restore took away. Under the lock."""
        at = self._restored.get(thread_id)
        if at is None:
            return
        if (
            parent is None
            or parent in self.storage.get(thread_id, {}).get(ns, {})
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

    def generations(self: HybridSaver, limit: int | None = None) -> list[Generation]:
        """Kept generations, newest first (``.generation``, ``.taken_at``, ``.checkpoints``)."""
        self._check_open()
        return self.store.generations(limit)

    def verify(self: HybridSaver, generation: int, thread_id: str | None = None) -> VerifyResult:
        """Check every row of ``generation`` (all threads or one) against its checksum.

        Raises:
            GenerationNotFound: the generation is not kept.
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        self._check_open()
        try:
            rows, damaged = self.store.verify_generation(generation, thread_id)
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot read generation {generation} from {describe_url(self.conninfo)}: "
                f"{scrub(str(exc), self.conninfo)}. Retry when PostgreSQL is back."
            ) from None
        return VerifyResult(generation, rows, damaged)

    def restore(
        self: HybridSaver,
        generation: int,
        thread_id: str | None = None,
        *,
        on_damage: str = "refuse",
        request_id: str | None = None,
        progress: Progress | None = None,
    ) -> RestoreResult:
        """Put back the state of ``generation``, for all threads or one, across the fleet.

        Args:
            generation: a kept generation (see :meth:`generations`).
            thread_id: restore only this thread; others stay as they are.
            on_damage: ``"refuse"`` (default) raises ``CorruptBackup`` naming the damaged rows and
                changes nothing; ``"skip"`` restores everything else and leaves the damaged rows out.
            progress: called as ``progress(phase, fraction, detail)`` while it runs.

        Raises:
            GenerationNotFound: the generation does not exist (nothing changed).
            ThreadNotFound: the generation does not hold ``thread_id`` (nothing changed).
            CorruptBackup: rows of the generation are damaged and ``on_damage="refuse"``.
            ThreadBusy: a member did not hand its threads over in time (nothing changed).
            DatabaseUnavailable: PostgreSQL cannot be reached (nothing changed).
        """
        self._check_open()
        if on_damage not in ("refuse", "skip"):
            raise ValueError(f"on_damage must be 'refuse' or 'skip', got {on_damage!r}")
        if thread_id is not None and not isinstance(thread_id, str):
            raise InvalidValue(f"thread_id must be a str, got {type(thread_id).__name__} {thread_id!r:.80}.")
        report = progress or _quiet
        started = datetime.now(UTC)
        try:
            self.store.get_generation(generation)
            if thread_id is not None and not self.store.has_thread(generation, thread_id):
                raise ThreadNotFound(
                    f"Thread {thread_id!r:.120} is not in generation {generation}. "
                    "Pick a generation that holds it (the Restore page or `python -m persistence generations`)."
                )
            report("checking", 0.0, f"checking the rows of generation {generation} against their checksums")
            _rows, damaged = self.store.verify_generation(generation, thread_id)
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot read generation {generation} from {describe_url(self.conninfo)}: "
                f"{scrub(str(exc), self.conninfo)}. Nothing was changed; retry when PostgreSQL is back."
            ) from None
        if damaged and on_damage == "refuse":
            listed = ", ".join(f"thread {t!r:.60} {what}" for t, what in damaged[:10])
            raise CorruptBackup(
                f"Generation {generation} has {len(damaged)} damaged row(s): {listed}"
                f"{' ...' if len(damaged) > 10 else ''}. Nothing was restored. Restore another generation, "
                "or pass on_damage='skip' to restore everything else.",
                damaged,
            )
        with self._backup_lock:
            hold = _Hold(self, thread_id)
            try:
                members = hold.take(report)
                new, undo = self._rewrite(generation, thread_id, damaged, report)
            finally:
                hold.release()
            try:
                self.store.apply_retention(self.retention)
            except DB_ERRORS:
                logger.warning("retention after restore failed; it runs again with the next backup")
        if self.memory_budget is None:
            # no budget: every thread stays resident, as before the restore
            self._reload_after_restore(thread_id)
        counts = self._generation_counts(new)
        report("done", 1.0, f"restored as generation {new}")
        self._record(
            BackupRun(trigger="restore", started_at=started, finished_at=datetime.now(UTC), generation=new),
            request_id,
            counts,
        )
        restored = self.store.thread_counts(generation, thread_id)
        return RestoreResult(
            restored_from=generation,
            generation=new,
            undo_generation=undo,
            thread_id=thread_id,
            threads=len(restored),
            checkpoints=sum(n for n, _ in restored.values()),
            damaged=damaged,
            members=members,
        )

    def _rewrite(
        self: HybridSaver, generation: int, thread_id: str | None, damaged: list, report: Progress
    ) -> tuple[int, int | None]:
        """Back up what is pending, drop the threads from memory, rewrite server-side. Returns
        (new generation, undo generation). Writers of this process wait meanwhile."""
        with self.lock:
            report("backing up", 0.3, "backing up what this process has not written yet (the undo point)")
            pre = self._backup_locked("pre-restore", None, retain=False)
            if not pre.ok:
                raise DatabaseUnavailable(
                    f"The pre-restore backup failed ({pre.error}); nothing was restored. Retry when the "
                    "database is reachable."
                )
            self._mark_restored(list(self._res.entries) if thread_id is None else [thread_id])
            if thread_id is None:
                self._complete = False
                self._res.drop_all()
                self.membership.release_all()
            else:
                self._res.store_epoch += 1
                self._res.evict(thread_id, give_back=False)
            undo = self.store.latest_generation()
            report("rewriting", 0.5, f"rewriting {'every thread' if thread_id is None else 'the thread'} server-side")
            try:
                new = self.store.restore_generation(generation, trigger="restore", thread_id=thread_id)
                if damaged:
                    self._tombstone_damaged(damaged, generation, thread_id)
            except DB_ERRORS as exc:
                raise DatabaseUnavailable(
                    f"Restore of generation {generation} failed: {scrub(str(exc), self.conninfo)}. "
                    f"Nothing was restored; generation {undo} holds the state before the attempt."
                ) from None
        return new, undo

    def _reload_after_restore(self: HybridSaver, thread_id: str | None) -> None:
        try:
            if thread_id is None:
                self._warm()
                self._complete = not any(m.alive and m.instance_id != self.instance_id for m in self.members())
            else:
                entry, pinned = self._res.acquire(thread_id)
                if pinned:
                    self._res.unpin(entry)
        except (*DB_ERRORS, ThreadBusy) as exc:
            self._complete = False
            logger.warning("threads load on demand after the restore: %s", scrub(str(exc), self.conninfo))

    def _tombstone_damaged(self: HybridSaver, damaged: list, generation: int, thread_id: str | None) -> None:
        """Leave rows that failed their checksum out of the restored state (a generation of its own)."""
        snap = self.store.load(generation, thread_id, verify=True)
        changes = Changes()
        for table, keys in snap.dropped.items():
            for key in keys:
                if table == "blobs":
                    encoded = (enc(key[0]), enc(key[1]), enc(key[2]), enc_version(key[3]))
                elif table == "writes":
                    encoded = (enc(key[0]), enc(key[1]), enc(key[2]), enc(key[3]), key[4])
                else:
                    encoded = tuple(enc(k) for k in key)
                changes.tombstones[table].append(encoded)
        self.store.write_generation(changes, trigger="restore")

    def _generation_counts(self: HybridSaver, generation: int) -> tuple[int | None, int | None]:
        try:
            gen = self.store.get_generation(generation)
        except (*DB_ERRORS, psycopg.Error):
            return (None, None)
        return (gen.threads, gen.checkpoints)


class _Hold:
    """What a restore holds while it rewrites: the store's restore lock (every thread) or the one
    thread's ownership, after the members holding them backed up and released them."""

    def __init__(self, saver: HybridSaver, thread_id: str | None) -> None:
        self.saver = saver
        self.thread_id = thread_id
        self._conn: psycopg.Connection | None = None
        self._token: int | None = None

    def take(self, report: Progress) -> tuple[int, ...]:
        saver = self.saver
        if self.thread_id is not None:
            report("handing over", 0.1, "asking the member that holds the thread to hand it over")
            saver._restoring.add(self.thread_id)
            entry = saver._res.entries.get(self.thread_id)
            if entry is not None and entry.token is not None:
                self._token = entry.token  # already ours: a new claim would fence our own pending changes
            else:
                self._token = saver._claim([self.thread_id], wait=True, for_restore=True)[self.thread_id]
            return ()
        report("handing over", 0.1, "waiting for other restores, then asking every member to hand over its threads")
        try:
            conn = psycopg.connect(saver.conninfo, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"Cannot reach {describe_url(saver.conninfo)} to restore: {scrub(str(exc), saver.conninfo)}. "
                "Nothing was changed; retry when PostgreSQL is back."
            ) from None
        self._conn = conn
        try:
            conn.execute(f"SET lock_timeout = '{RESTORE_LOCK_TIMEOUT}s'")
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"hybrid_saver.restore:{saver.store.schema}",))
        except psycopg.errors.LockNotAvailable:
            raise ThreadBusy(
                f"Another restore of this store has been running for over {RESTORE_LOCK_TIMEOUT} s; nothing was "
                "changed. Wait for it to finish, then restore again."
            ) from None
        others = [m for m in saver.members() if m.alive and m.instance_id != saver.instance_id]
        answers: dict[int, Any] = {}
        threads = []
        for member in others:
            t = threading.Thread(target=_ask_release_all, args=(saver, member.instance_id, answers), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        for member in others:
            outcome = answers.get(member.instance_id)
            if isinstance(outcome, BaseException) or (outcome is not None and not outcome.ok):
                reason = outcome if isinstance(outcome, BaseException) else outcome.error
                raise ThreadBusy(
                    f"{member.describe()} did not hand its threads over ({reason}); nothing was restored. "
                    "Check that member (or stop it), then restore again.",
                    owner=member.instance_id,
                )
        report("handing over", 0.25, f"{len(others)} other member(s) backed up and released their threads")
        return tuple(m.instance_id for m in others)

    def release(self) -> None:
        saver = self.saver
        if self.thread_id is not None:
            saver._restoring.discard(self.thread_id)
            if self._token is not None:
                try:
                    saver.membership.release([(self.thread_id, self._token)])
                except DB_ERRORS:
                    logger.warning("could not give back thread %r after its restore", self.thread_id)
        if self._conn is not None:
            try:
                self._conn.close()  # ends the session: the restore lock goes with it
            except psycopg.Error:
                pass


def _ask_release_all(saver: HybridSaver, member: int, answers: dict[int, Any]) -> None:
    try:
        answers[member] = saver.ask(member, "release_all", timeout=HANDOVER_TIMEOUT)
    except (CommandTimeout, *DB_ERRORS) as exc:
        answers[member] = exc


__all__ = ["HANDOVER_TIMEOUT", "RestoreMixin", "VerifyResult"]
