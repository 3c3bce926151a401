"""The restorer: put back the state of a kept generation, for every
thread or one, across the whole fleet.

A restore checks the generation's rows against their checksums first (nothing changes when they are
damaged, unless told to skip them). Then it makes the fleet hand the threads over: for every thread,
it holds the store's restore lock (claims wait) and asks each live member to back up and release what
it holds; for one thread, it claims that thread. Its own pending changes are backed up too, so the
newest generation is then the undo point. The rewrite is server-side SQL committed as a generation of
its own; the threads are cold afterwards and load on demand: a restore costs the SQL, not a reload (a
member alone without a budget loads them back as a start does: the most recent now, the rest in the
background).

Progress (``progress(phase, fraction, detail)``) goes through the phases in order, each over its share
of the bar (:data:`PHASES`), with the fraction of that phase's work done; "done" (1.0) comes last, when
the restore returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from persistence.db import DB_ERRORS, connect_session, describe_url
from persistence.errors import (
    CorruptBackup,
    DatabaseUnavailable,
    GenerationNotFound,
    InvalidValue,
    ThreadBusy,
    ThreadNotFound,
)
from persistence.fleet.member import FleetMember
from persistence.fleet.membership import Membership, restore_lock_key
from persistence.fleet.messenger import Messenger
from persistence.fleet.ownership import WARM_FIRST_BYTES, Ownership
from persistence.fleet.remote import CommandTimeout
from persistence.memory import MemoryCache
from persistence.ops.backup import BackupWriter
from persistence.records import BackupRun, RestoreResult
from persistence.store import Changes, Generation, Store
from persistence.store.link import DatabaseLink
from persistence.store.records import Row
from persistence.store.schema import enc, enc_version

logger = logging.getLogger(__name__)

#: how long the members of a fleet get to back up and hand over their threads before a restore
HANDOVER_TIMEOUT = 60.0
#: how long a restore waits for another restore to finish
RESTORE_LOCK_TIMEOUT = 30

Progress = Callable[[str, float, str], None]

#: each phase's share of a restore's progress, in order: about its share of the time a restore of every
#: thread took at 10,000 threads (300,000 checkpoints) with an app member holding them all
#: (bench/restore_scale.py: checking 43%, handing over 32%, rewriting 25%)
PHASES: tuple[tuple[str, float], ...] = (
    ("checking", 0.45),  # the generation's checksums (by block ranges of the tables)
    ("handing over", 0.30),  # every member backs up and releases (member by member as they answer)
    ("backing up", 0.02),  # this process's own pending changes (the undo point)
    ("rewriting", 0.21),  # the server-side SQL, statement by statement
    ("finishing", 0.02),  # retention, the record of the run, threads loaded back (a lone member)
)


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


class _Phases:
    """Maps each phase's own fraction onto the restore's bar (:data:`PHASES`), never backwards."""

    def __init__(self, report: Progress) -> None:
        self._report = report
        self._at = 0.0
        self._starts: dict[str, tuple[float, float]] = {}
        start = 0.0
        for name, share in PHASES:
            self._starts[name] = (start, share)
            start += share

    def __call__(self, phase: str, within: float, detail: str) -> None:
        start, share = self._starts[phase]
        self._at = max(self._at, min(start + share * min(max(within, 0.0), 1.0), 0.999))
        self._report(phase, self._at, detail)

    def done(self, detail: str) -> None:
        self._at = 1.0
        self._report("done", 1.0, detail)


class Restorer:
    """Generations, verification and restores of one saver, across its fleet."""

    def __init__(
        self,
        cache: MemoryCache,
        store: Store,
        link: DatabaseLink,
        ownership: Ownership,
        membership: Membership,
        messenger: Messenger,
        member: FleetMember,
        writer: BackupWriter,
        *,
        budget: int | None,
    ) -> None:
        self._cache = cache
        self._store = store
        self._link = link
        self._ownership = ownership
        self._membership = membership
        self._messenger = messenger
        self._member = member
        self._writer = writer
        self._budget = budget

    def generations(self, limit: int | None = None) -> list[Generation]:
        """Kept generations, newest first (``.generation``, ``.taken_at``, ``.checkpoints``)."""
        return self._store.generations(limit)

    def verify(self, generation: int, thread_id: str | None = None) -> VerifyResult:
        """Check every row of ``generation`` (all threads or one) against its checksum.

        Raises:
            GenerationNotFound: the generation is not kept.
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            rows, damaged = self._store.upkeep.verify_generation(generation, thread_id)
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot read generation {generation} from {describe_url(self._link.conninfo)}: "
                f"{self._link.scrub(str(exc))}. Retry when PostgreSQL is back."
            ) from None
        return VerifyResult(generation, rows, damaged)

    def restore(
        self,
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
        if on_damage not in ("refuse", "skip"):
            raise ValueError(f"on_damage must be 'refuse' or 'skip', got {on_damage!r}")
        if thread_id is not None and not isinstance(thread_id, str):
            raise InvalidValue(f"thread_id must be a str, got {type(thread_id).__name__} {thread_id!r:.80}.")
        report = _Phases(progress or _quiet)
        started = datetime.now(UTC)
        try:
            self._store.get_generation(generation)
            if thread_id is not None and not self._store.has_thread(generation, thread_id):
                raise ThreadNotFound(
                    f"Thread {thread_id!r:.120} is not in generation {generation}. "
                    "Pick a generation that holds it (the Restore page or `hybrid-saver generations`)."
                )
            what = f"checking the rows of generation {generation} against their checksums"
            report("checking", 0.0, what)
            _rows, damaged = self._store.upkeep.verify_generation(
                generation, thread_id, progress=lambda done: report("checking", done, f"{what} ({done:.0%})")
            )
        except DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot read generation {generation} from {describe_url(self._link.conninfo)}: "
                f"{self._link.scrub(str(exc))}. Nothing was changed; retry when PostgreSQL is back."
            ) from None
        if damaged and on_damage == "refuse":
            listed = ", ".join(f"thread {t!r:.60} {what}" for t, what in damaged[:10])
            raise CorruptBackup(
                f"Generation {generation} has {len(damaged)} damaged row(s): {listed}"
                f"{' ...' if len(damaged) > 10 else ''}. Nothing was restored. Restore another generation, "
                "or pass on_damage='skip' to restore everything else.",
                damaged,
            )
        # the source generation's totals, read now: retention right after the restore may drop it (the oldest kept)
        if thread_id is None:
            source_counts = self._generation_counts(generation)
        else:
            held = self._store.thread_counts(generation, thread_id)
            source_counts = len(held), sum(n for n, _ in held.values())
        with self._writer.exclusive():
            hold = _Hold(
                self._cache, self._link, self._ownership, self._membership, self._messenger, self._member, thread_id
            )
            try:
                members = hold.take(report)
                new, undo = self._rewrite(generation, thread_id, damaged, report)
            finally:
                hold.release()
            report("finishing", 0.0, "dropping the generations past the retention")
            try:
                self._writer.apply_retention()
            except DB_ERRORS:
                logger.warning("retention after restore failed; it runs again with the next backup")
        if self._budget is None:
            report("finishing", 0.3, "loading the restored threads back (no memory budget)")
            self._reload_after_restore(thread_id)
        report("finishing", 0.8, "recording the run")
        counts = self._generation_counts(new)
        # the source's totals, read before the rewrite (counting the rows again takes seconds on a large
        # store, and retention may have dropped the source since)
        threads, checkpoints = source_counts
        self._writer.record(
            BackupRun(trigger="restore", started_at=started, finished_at=datetime.now(UTC), generation=new),
            request_id,
            counts,
        )
        # last: a progress that says "done" while work goes on is not true
        report.done(f"restored as generation {new}")
        return RestoreResult(
            restored_from=generation,
            generation=new,
            undo_generation=undo,
            thread_id=thread_id,
            threads=threads or 0,
            checkpoints=checkpoints or 0,
            damaged=damaged,
            members=members,
        )

    def _rewrite(
        self, generation: int, thread_id: str | None, damaged: list[tuple[str, str]], report: _Phases
    ) -> tuple[int, int | None]:
        """Back up what is pending, drop the threads from memory, rewrite server-side. Returns
        (new generation, undo generation). Writers of this process wait meanwhile."""
        cache = self._cache
        with cache.lock:
            report("backing up", 0.0, "backing up what this process has not written yet (the undo point)")
            pre = self._writer.run_locked("pre-restore", None, retain=False)
            if not pre.ok:
                raise DatabaseUnavailable(
                    f"The pre-restore backup failed ({pre.error}); nothing was restored. Retry when the "
                    "database is reachable."
                )
            cache.guard.mark(list(cache.entries) if thread_id is None else [thread_id])
            if thread_id is None:
                cache.complete = False
                cache.residency.drop_all()
                self._membership.release_all()
            else:
                cache.residency.store_epoch += 1
                cache.residency.evict(thread_id, give_back=False)
            undo = self._store.latest_generation()
            what = f"rewriting {'every thread' if thread_id is None else 'the thread'} server-side"
            report("rewriting", 0.0, what)
            try:
                new = self._store.upkeep.restore_generation(
                    generation,
                    trigger="restore",
                    thread_id=thread_id,
                    progress=lambda done: report("rewriting", done, f"{what} ({done:.0%})"),
                )
                if damaged:
                    self._tombstone_damaged(damaged, generation, thread_id)
            except DB_ERRORS as exc:
                raise DatabaseUnavailable(
                    f"Restore of generation {generation} failed: {self._link.scrub(str(exc))}. "
                    f"Nothing was restored; generation {undo} holds the state before the attempt."
                ) from None
        return new, undo

    def _reload_after_restore(self, thread_id: str | None) -> None:
        """Without a budget, a member alone holds every thread: it loads them back as a start does
        (the most recent now, the rest in the background). In a fleet it takes none: the threads
        load where they are used next (taking them all here would take them from the others)."""
        try:
            if thread_id is None:
                if not self._ownership.others_alive():
                    self._ownership.warm(first=WARM_FIRST_BYTES)
                    self._ownership.warm_in_background()
            else:
                entry, pinned = self._cache.residency.acquire(thread_id)
                if pinned:
                    self._cache.residency.unpin(entry)
        except (*DB_ERRORS, ThreadBusy) as exc:
            self._cache.complete = False
            logger.warning("threads load on demand after the restore: %s", self._link.scrub(str(exc)))

    def _tombstone_damaged(self, damaged: list[tuple[str, str]], generation: int, thread_id: str | None) -> None:
        """Leave rows that failed their checksum out of the restored state (a generation of its own)."""
        snap = self._store.load(generation, thread_id, verify=True)
        changes = Changes()
        for table, keys in snap.dropped.items():
            for key in keys:
                if table == "blobs":
                    encoded: Row = (enc(key[0]), enc(key[1]), enc(key[2]), enc_version(key[3]))
                elif table == "writes":
                    encoded = (enc(key[0]), enc(key[1]), enc(key[2]), enc(key[3]), key[4])
                else:
                    encoded = tuple(enc(k) for k in key)
                changes.tombstones[table].append(encoded)
        self._store.write_generation(changes, trigger="restore")

    def _generation_counts(self, generation: int) -> tuple[int | None, int | None]:
        try:
            gen = self._store.get_generation(generation)
        except (*DB_ERRORS, psycopg.Error, GenerationNotFound):
            return (None, None)
        return (gen.threads, gen.checkpoints)


class _Hold:
    """What a restore holds while it rewrites: the store's restore lock (every thread) or the one
    thread's ownership, after the members holding them backed up and released them."""

    def __init__(
        self,
        cache: MemoryCache,
        link: DatabaseLink,
        ownership: Ownership,
        membership: Membership,
        messenger: Messenger,
        member: FleetMember,
        thread_id: str | None,
    ) -> None:
        self._cache = cache
        self._link = link
        self._ownership = ownership
        self._membership = membership
        self._messenger = messenger
        self._member = member
        self.thread_id = thread_id
        self._conn: psycopg.Connection | None = None
        self._token: int | None = None

    def take(self, report: _Phases) -> tuple[int, ...]:
        link = self._link
        if self.thread_id is not None:
            report("handing over", 0.0, "asking the member that holds the thread to hand it over")
            self._member.restoring.add(self.thread_id)
            entry = self._cache.entries.get(self.thread_id)
            if entry is not None and entry.token is not None:
                self._token = entry.token  # already ours: a new claim would fence our own pending changes
            else:
                self._token = self._ownership.claim([self.thread_id], wait=True, for_restore=True)[self.thread_id]
            return ()
        report("handing over", 0.0, "waiting for other restores, then asking every member to hand over its threads")
        try:
            conn = connect_session(link.conninfo, "restore")
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"Cannot reach {describe_url(link.conninfo)} to restore: {link.scrub(str(exc))}. "
                "Nothing was changed; retry when PostgreSQL is back."
            ) from None
        self._conn = conn
        try:
            conn.execute(f"SET lock_timeout = '{RESTORE_LOCK_TIMEOUT}s'")
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (restore_lock_key(self._membership.schema),))
        except psycopg.errors.LockNotAvailable:
            raise ThreadBusy(
                f"Another restore of this store has been running for over {RESTORE_LOCK_TIMEOUT} s; nothing was "
                "changed. Wait for it to finish, then restore again."
            ) from None
        me = self._membership.instance_id
        others = [m for m in self._membership.members() if m.alive and m.instance_id != me]
        answers: dict[int, Any] = {}
        threads = []
        for member in others:
            t = threading.Thread(target=self._ask_release_all, args=(member.instance_id, answers), daemon=True)
            t.start()
            threads.append(t)
        for done in range(len(threads)):
            while threads[done].is_alive():
                threads[done].join(0.5)
                answered = sum(1 for m in others if m.instance_id in answers)
                report("handing over", answered / len(others), f"{answered} of {len(others)} member(s) handed over")
        for member in others:
            outcome = answers.get(member.instance_id)
            if isinstance(outcome, BaseException) or (outcome is not None and not outcome.ok):
                reason = outcome if isinstance(outcome, BaseException) else outcome.error
                raise ThreadBusy(
                    f"{member.describe()} did not hand its threads over ({reason}); nothing was restored. "
                    "Check that member (or stop it), then restore again.",
                    owner=member.instance_id,
                )
        report("handing over", 1.0, f"{len(others)} other member(s) backed up and released their threads")
        return tuple(m.instance_id for m in others)

    def _ask_release_all(self, member: int, answers: dict[int, Any]) -> None:
        try:
            answers[member] = self._messenger.ask(member, "release_all", timeout=HANDOVER_TIMEOUT)
        except (CommandTimeout, *DB_ERRORS) as exc:
            answers[member] = exc

    def release(self) -> None:
        if self.thread_id is not None:
            self._member.restoring.discard(self.thread_id)
            if self._token is not None:
                try:
                    self._membership.release([(self.thread_id, self._token)])
                except DB_ERRORS:
                    logger.warning("could not give back thread %r after its restore", self.thread_id)
        if self._conn is not None:
            try:
                self._conn.close()  # ends the session: the restore lock goes with it
            except psycopg.Error:
                pass


__all__ = ["HANDOVER_TIMEOUT", "PHASES", "Progress", "Restorer", "VerifyResult"]
