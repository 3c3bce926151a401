"""The fleet side of :class:`~persistence.HybridSaver`: claiming threads (with handoff), giving them
back, the heartbeat, commands from other processes, and the operator's settings.

Single activation: a thread is resident in at most one member, the one whose ``owners`` row names
it. To load a cold thread the member claims it; a live owner is asked to back the thread up, evict it
and release it, and the claim waits up to ``handoff_timeout`` before raising ``ThreadBusy`` (never
two writers). A member that lost a thread it still has in memory (it was taken for dead while
frozen or cut off) finds out from its heartbeat or from its next backup, which the store refuses for
that thread; it then drops the thread and its stale changes and says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from persistence import remote
from persistence.backup import DB_ERRORS
from persistence.changes import mark
from persistence.db import describe_url, scrub
from persistence.errors import DatabaseUnavailable, HybridSaverError, ThreadBusy
from persistence.fleet import Member
from persistence.residency import Resident, blob_size, checkpoint_size, write_size
from persistence.store import Snapshot

if TYPE_CHECKING:
    from persistence.saver import HybridSaver

logger = logging.getLogger(__name__)

#: threads loaded per query by the warm start
WARM_BATCH = 500
#: every this many heartbeats, members without their lock are reaped
REAP_EVERY = 5


class FleetMixin:
    """Membership behaviour of a HybridSaver (mixed into it)."""

    @property
    def instance_id(self: HybridSaver) -> int | None:
        """This saver's member id in the store (None until it attached)."""
        return self.membership.instance_id

    def members(self: HybridSaver, *, include_stopped: bool = False) -> list[Member]:
        """The members of the store (``.instance_id``, ``.host``, ``.pid``, ``.alive``,
        ``.resident_threads``, ``.pending``, ``.lag_seconds``), figures as of their last heartbeat."""
        self._check_open()
        return self.membership.members(include_stopped=include_stopped)

    def ask(self: HybridSaver, member: int, op: str, *, timeout: float = 60.0, **args: Any) -> remote.Answer:
        """Send a command to another member and wait for its answer (see ``remote.py`` for the ops).

        Raises:
            CommandTimeout: no answer within ``timeout`` seconds.
        """
        return remote.ask(
            self.pool,
            self.store.schema,
            member,
            op,
            timeout,
            sender=self.instance_id,
            listener=self._commands,
            **args,
        )

    # -- loading: the residency's loader ------------------------------------------------------

    def _load_threads(self: HybridSaver, thread_ids: Sequence[str]) -> tuple[Snapshot, dict[str, int | None]]:
        """Claim ``thread_ids`` (handing them over from a live owner) and read their live rows.

        While PostgreSQL is unreachable a thread can only be new, and served from memory, when this
        member knows it holds every thread of the store (no budget, no other member, all loaded);
        otherwise the access raises ``DatabaseUnavailable``.
        """
        if self.attached and self._reachable():
            try:
                tokens = self._claim(thread_ids, wait=True)
                return self.store.load_threads(list(tokens)), dict(tokens)
            except DB_ERRORS as exc:
                self._db_failed = True
                reason = scrub(str(exc), self.conninfo)
        else:
            reason = self.attach_error or "the last backup could not reach it"
        if self._complete:
            # the store has no such thread: a new one, claimed once the database is back
            return Snapshot(), dict.fromkeys(thread_ids)
        names = ", ".join(repr(t)[:80] for t in thread_ids[:3])
        raise DatabaseUnavailable(
            f"Thread {names} is not in memory, and PostgreSQL ({describe_url(self.conninfo)}) cannot be reached "
            f"to load it: {reason}. It works again as soon as the database is back; threads in memory keep "
            "working and nothing pending is lost."
        )

    def _claim(
        self: HybridSaver, thread_ids: Sequence[str], *, wait: bool, for_restore: bool = False
    ) -> dict[str, int]:
        """Claim ``thread_ids``; with ``wait``, ask live owners to hand them over (up to
        ``handoff_timeout``) and raise ``ThreadBusy`` for a thread still held after it."""
        deadline = time.monotonic() + self.handoff_timeout
        granted: dict[str, int] = {}
        todo = list(thread_ids)
        while True:
            got, held = self.membership.claim(todo)
            granted.update(got)
            todo = [t for t in todo if t not in got]
            if not todo or not wait:
                return granted
            by_owner: dict[int, list[str]] = defaultdict(list)
            for tid in todo:
                if tid in held:
                    by_owner[held[tid]].append(tid)
            for owner, threads in by_owner.items():
                left = deadline - time.monotonic()
                answer = None
                if left > 0:
                    try:
                        answer = self.ask(owner, "release", timeout=left, thread_ids=threads, restore=for_restore)
                    except remote.CommandTimeout:
                        answer = None
                if answer is None or (time.monotonic() >= deadline and answer.result.get("busy")):
                    member = self.membership.member(owner)
                    who = member.describe() if member else f"member {owner}"
                    raise ThreadBusy(
                        f"Thread {threads[0]!r:.80} is held by {who}, which did not hand it over within "
                        f"{self.handoff_timeout:g} s: it is busy with the thread or stuck. Retry, or send requests "
                        "for this thread to that member.",
                        thread_id=threads[0],
                        owner=owner,
                    )
                if answer.result.get("busy"):
                    time.sleep(0.02)

    def release_threads(
        self: HybridSaver, thread_ids: Sequence[str] | None = None, *, restore: bool = False
    ) -> dict[str, Any]:
        """Back up, evict and give back ``thread_ids`` (None: every thread), so another member can
        take them. Threads being restored here are not given back (``busy``). With ``restore`` (a
        restore asked for them) runs in flight on the released threads may not write on top of the
        restored state (see :meth:`_mark_restored`)."""
        stale: dict[str, int] = {}
        if thread_ids is not None:
            for tid in thread_ids:
                load = self._res.loading.get(tid)
                if load is not None:
                    load.done.wait(self.handoff_timeout)
            # tokens first: a claim by this member after this read changes the token, so the release
            # below cannot take back a claim it did not see
            _missing, stale = self.membership.release_unheld(thread_ids)
        with self._backup_lock, self.lock:
            # threads with nothing pending are in PostgreSQL as they are: hand them over without a backup
            if thread_ids is None or restore or not self._changes.threads().isdisjoint(thread_ids):
                run = self._backup_locked("release", None)
                if not run.ok:
                    raise DatabaseUnavailable(f"Could not back up before handing threads over: {run.error}")
            if restore:
                self._mark_restored(list(self._res.entries) if thread_ids is None else thread_ids)
            if thread_ids is None:
                released = len(self._res.drop_all())
                self._complete = False
                self.membership.release_all()
                return {"released": released, "busy": []}
            busy = [t for t in thread_ids if t in self._restoring]
            pairs: list[tuple[str, int]] = []
            for tid in thread_ids:
                if tid in busy:
                    continue
                entry = self._res.entries.get(tid)
                if entry is not None and entry.token is not None and self._res.is_clean(entry):
                    self._res.evict(tid, give_back=False)
                    pairs.append((tid, entry.token))
                elif entry is None and tid not in self._res.loading and tid in stale:
                    pairs.append((tid, stale[tid]))
                elif entry is not None:
                    busy.append(tid)
            self.membership.release(pairs)
            if pairs:
                self._complete = False
        return {"released": len(pairs), "busy": busy}

    def _give_back(self: HybridSaver) -> None:
        """Release the ownership of threads evicted since the last call."""
        with self.lock:
            pairs = self._res.take_released()
        if not pairs:
            return
        try:
            self.membership.release(pairs)
        except (*DB_ERRORS, psycopg.Error):
            with self.lock:
                self._res.released.extend(pairs)

    def _drop_lost(self: HybridSaver, threads: Sequence[str], why: str, lost: dict[str, int] | None = None) -> None:
        """Forget threads this member no longer owns, with their stale changes. Under the lock.

        ``lost`` counts the changes of each thread that never reached PostgreSQL (default: those in
        the change log)."""
        for tid in threads:
            count = lost.get(tid, 0) if lost is not None else sum(1 for k in self._changes.checkpoints if k[0] == tid)
            self._res.evict(tid, give_back=False)
            self._changes.forget([tid])
            logger.error(
                "thread %r: %s; another member took it over, so this member dropped it from memory "
                "with %s pending change(s) that never reached PostgreSQL",
                tid,
                why,
                count,
            )

    # -- offline threads ---------------------------------------------------------------------

    def _resolve_provisional(self: HybridSaver) -> None:
        """Claim threads made while PostgreSQL was unreachable and add what the store holds of them
        under what memory holds (memory wins)."""
        with self.lock:
            todo = [t for t, e in self._res.entries.items() if e.token is None]
        if not todo:
            return
        granted = self._claim(todo, wait=False)
        if not granted:
            return
        snap = self.store.load_threads(list(granted))
        with self.lock:
            for tid, token in granted.items():
                entry = self._res.entries.get(tid)
                if entry is not None:
                    self._merge_under(tid, entry, snap)
                    entry.token = token

    def _merge_under(self: HybridSaver, tid: str, entry: Resident, snap: Snapshot) -> None:
        """Add the stored rows of ``tid`` under what memory holds (memory wins). Under the lock."""
        log = self._changes
        if tid in log.deleted_threads:
            return
        res = self._res
        for ns, cps in snap.storage.get(tid, {}).items():
            mem = self.storage[tid].setdefault(ns, {})
            for cid, value in cps.items():
                if cid in mem:
                    mark(log.checkpoints, (tid, ns, cid), True, mem[cid])
                else:
                    mem[cid] = value
                    res.grow(entry, checkpoint_size(value))
        for outer, inner in snap.writes.items():
            if outer[0] != tid:
                continue
            mem_w = self.writes.setdefault(outer, {})
            entry.write_keys.add(outer)
            for key, value in inner.items():
                if key in mem_w:
                    mark(log.writes, (*outer, *key), True, mem_w[key])
                else:
                    mem_w[key] = value
                    res.grow(entry, write_size(value))
        for key, value in snap.blobs.items():
            if key[0] != tid:
                continue
            if key in self.blobs:
                mark(log.blobs, key, True, self.blobs[key])
            else:
                self.blobs[key] = value
                entry.blob_keys.add(key)
                res.grow(entry, blob_size(value))

    # -- warm start ----------------------------------------------------------------------------

    def _warm(self: HybridSaver) -> int:
        """Load the most recently updated free threads until half the budget is used (all of them
        without a budget). Returns how many threads were loaded."""
        budget = self.memory_budget
        half = None if budget is None else budget // 2
        loaded = 0
        candidates = self.membership.warm_candidates(half)
        for start in range(0, len(candidates), WARM_BATCH):
            if self.closed or (half is not None and self._res.resident_bytes >= half):
                break
            loaded += self._res.load_many(candidates[start : start + WARM_BATCH], self._grant_and_load)
        return loaded

    def _grant_and_load(self: HybridSaver, thread_ids: Sequence[str]) -> tuple[Snapshot, dict[str, int | None]]:
        tokens = self._claim(thread_ids, wait=False)
        return self.store.load_threads(list(tokens)), dict(tokens)

    def _warm_in_background(self: HybridSaver) -> None:
        def run() -> None:
            try:
                self._warm()
                if self.memory_budget is None:
                    self._complete = not any(m.alive and m.instance_id != self.instance_id for m in self.members())
            except Exception as exc:  # noqa: BLE001 - threads load on demand anyway
                logger.warning("warm start stopped: %s", scrub(f"{type(exc).__name__}: {exc}", self.conninfo))

        self._warming = threading.Thread(target=run, name="hybrid-saver-warm", daemon=True)
        self._warming.start()

    # -- heartbeat and commands ----------------------------------------------------------------

    def _heartbeat(self: HybridSaver) -> None:
        if self.closed or not self.attached or self._db_failed:
            return
        try:
            if not self.membership.lock_held():
                self._revalidate()
            self.membership.heartbeat(self._figures())
            self._give_back()
            self._beats += 1
            if self._beats % REAP_EVERY == 1:
                self.membership.reap()
                if self._complete and any(m.alive and m.instance_id != self.instance_id for m in self.members()):
                    self._complete = False
        except (*DB_ERRORS, psycopg.Error) as exc:
            logger.debug("heartbeat failed: %s", type(exc).__name__)

    def _revalidate(self: HybridSaver) -> None:
        """After this member was taken for dead: drop the threads it no longer owns."""
        owned = self.membership.owned()
        with self.lock:
            lost = [t for t, e in self._res.entries.items() if e.token is not None and owned.get(t) != e.token]
            self._drop_lost(lost, "this member was cut off from PostgreSQL for a while")

    def _figures(self: HybridSaver) -> dict[str, Any]:
        stats = self.stats()
        last = stats.last_backup
        sched = self.scheduler
        return {
            "resident_threads": stats.resident_threads,
            "resident_bytes": stats.resident_bytes,
            "memory_budget": stats.memory_budget,
            "checkpoints": stats.checkpoints,
            "pending": stats.pending,
            "lag_seconds": round(stats.lag_seconds, 3),
            "hits": stats.hits,
            "loads": stats.loads,
            "evictions": stats.evictions,
            "last_run_at": last.finished_at.isoformat() if last else None,
            "last_run_ok": last.ok if last else None,
            "last_generation": stats.last_success.generation if stats.last_success else None,
            "last_error": last.error if last else None,
            "interval": sched.interval if sched is not None else None,
            "paused": bool(sched.paused) if sched is not None else False,
        }

    def _handle_command(self: HybridSaver, command: dict[str, Any]) -> dict[str, Any] | None:
        op = command["op"]
        request_id = str(command["request_id"])
        if op == "backup":
            run = self.backup(trigger="remote", request_id=request_id)
            if not run.ok:
                raise HybridSaverError(run.error or "backup failed")
            return {"generation": run.generation, "rows": run.rows, "empty": run.empty}
        if op == "set_interval":
            self.set_interval(float(command["seconds"]))
            return self._figures()
        if op == "pause":
            self.pause()
            return self._figures()
        if op == "resume":
            self.resume()
            return self._figures()
        if op == "release":
            return self.release_threads(
                [str(t) for t in command.get("thread_ids") or []], restore=bool(command.get("restore"))
            )
        if op == "release_all":
            return self.release_threads(None, restore=True)
        if op == "restore":
            result = self.restore(
                int(command["generation"]),
                command.get("thread_id"),
                on_damage=str(command.get("on_damage") or "refuse"),
                request_id=request_id,
            )
            return {
                "generation": result.generation,
                "restored_from": result.restored_from,
                "undo_generation": result.undo_generation,
                "threads": result.threads,
                "checkpoints": result.checkpoints,
                "damaged": len(result.damaged),
            }
        if op == "status":
            return self._figures()
        raise ValueError(f"unknown command {op!r}")

    # -- operator settings ---------------------------------------------------------------------

    def set_interval(self: HybridSaver, seconds: float) -> None:
        """Run scheduled backups every ``seconds`` from now on (kept in the store for savers with a ``name``)."""
        self._check_open()
        self.scheduler.set_interval(seconds)
        self._save_settings()

    def pause(self: HybridSaver) -> None:
        """Pause scheduled backups (manual backups and the final one still run)."""
        self._check_open()
        self.scheduler.pause()
        self._save_settings()

    def resume(self: HybridSaver) -> None:
        """Resume scheduled backups."""
        self._check_open()
        self.scheduler.resume()
        self._save_settings()

    def _save_settings(self: HybridSaver) -> None:
        if self.name is None or not self.attached:
            return
        sched = self.scheduler
        try:
            self.membership.save_settings(self.name, sched.interval, bool(sched.paused))
        except (*DB_ERRORS, psycopg.Error) as exc:
            logger.warning("could not keep the backup settings of %r in the store: %s", self.name, type(exc).__name__)

    def _load_settings(self: HybridSaver) -> None:
        if self.name is None:
            return
        found = self.membership.load_settings(self.name)
        if found is None:
            return
        interval, paused = found
        if interval is not None and interval != self.scheduler.interval:
            self.scheduler.set_interval(interval)
        if paused:
            self.scheduler.pause()
        else:
            self.scheduler.resume()


__all__ = ["FleetMixin"]
