"""Ownership of threads by this member: claiming them (with handoff), loading them into the cache,
giving evicted ones back, threads made offline, and finding out which ones were lost.

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
from collections.abc import Callable, Sequence

import psycopg

from persistence.db import DB_ERRORS, describe_url
from persistence.errors import DatabaseUnavailable, ThreadBusy
from persistence.fleet import remote
from persistence.fleet.membership import Membership
from persistence.fleet.messenger import Messenger
from persistence.memory import MemoryCache, Resident
from persistence.store import Snapshot, Store
from persistence.store.link import DatabaseLink
from persistence.tally import Tally

logger = logging.getLogger(__name__)

#: threads loaded per query by the warm start
WARM_BATCH = 500
#: a lone member without a budget loads this many stored bytes of its most recent threads before it
#: serves, the rest in the background (a start never waits for the whole store)
WARM_FIRST_BYTES = 32 * 1024 * 1024
#: seconds a claim waits for one answer from a thread's owner before it claims again
ASK_EVERY = 0.5


class Ownership:
    """Which threads this member holds, and getting the ones it needs."""

    def __init__(
        self,
        cache: MemoryCache,
        store: Store,
        membership: Membership,
        link: DatabaseLink,
        messenger: Messenger,
        *,
        handoff_timeout: float,
        budget: int | None,
        closed: Callable[[], bool],
    ) -> None:
        self._cache = cache
        self._store = store
        self._membership = membership
        self._link = link
        self._messenger = messenger
        self.handoff_timeout = handoff_timeout
        self._budget = budget
        self._closed = closed
        self._warming: threading.Thread | None = None
        #: another live member was seen at the last look (while alone, an outage cannot split the fleet)
        self.others_seen = False
        #: one revalidation (or re-claim of everything) at a time: two would hand out tokens twice
        self._regain = threading.Lock()
        membership.lease.on_regained = self.revalidate
        #: for the metrics: threads claimed; of them, threads another member held first (handed over, or
        #: taken once its lease ran out) and the seconds each such claim took; claims that raised ThreadBusy
        self.claims = 0
        self.handoffs = 0
        self.handoff_seconds = Tally()
        self.busy = 0
        self._counting = threading.Lock()

    # -- loading: the cache's loader ----------------------------------------------------------

    def load_threads(self, thread_ids: Sequence[str]) -> tuple[Snapshot, dict[str, int | None]]:
        """Claim ``thread_ids`` (handing them over from a live owner) and read their live rows.

        While PostgreSQL is unreachable a thread can only be new, and served from memory, when this
        member knows it holds every thread of the store (no budget, no other member, all loaded);
        otherwise the access raises ``DatabaseUnavailable``.
        """
        link = self._link
        if link.attached and link.reachable():
            try:
                tokens = self.claim(thread_ids, wait=True)
                return self._store.load_threads(list(tokens)), dict(tokens)
            except DB_ERRORS as exc:
                link.mark_failed()
                reason = link.scrub(str(exc))
        else:
            reason = link.attach_error or "the last backup could not reach it"
        if self._cache.complete:
            # the store has no such thread: a new one, claimed once the database is back
            return Snapshot(), dict.fromkeys(thread_ids)
        names = ", ".join(repr(t)[:80] for t in thread_ids[:3])
        raise DatabaseUnavailable(
            f"Thread {names} is not in memory, and PostgreSQL ({describe_url(link.conninfo)}) cannot be reached "
            f"to load it: {reason}. It works again as soon as the database is back; threads in memory keep "
            "working and nothing pending is lost."
        )

    def claim(self, thread_ids: Sequence[str], *, wait: bool, for_restore: bool = False) -> dict[str, int]:
        """Claim ``thread_ids``; with ``wait``, ask live owners to hand them over (up to
        ``handoff_timeout``) and raise ``ThreadBusy`` for a thread still held after it."""
        started = time.monotonic()
        deadline = started + self.handoff_timeout
        granted: dict[str, int] = {}
        todo = list(thread_ids)
        handed: set[str] = set()
        while True:
            got, held = self._membership.claim(todo)
            granted.update(got)
            todo = [t for t in todo if t not in got]
            if not todo or not wait:
                self._count(granted, handed, started)
                return granted
            handed.update(t for t in todo if t in held)
            by_owner: dict[int, list[str]] = defaultdict(list)
            for tid in todo:
                if tid in held:
                    by_owner[held[tid]].append(tid)
            for owner, threads in by_owner.items():
                left = deadline - time.monotonic()
                answer = None
                if left > 0:
                    try:
                        # short asks: an owner that died keeps its lease until it runs out, and the claim
                        # after that succeeds without an answer
                        answer = self._messenger.ask(
                            owner, "release", timeout=min(left, ASK_EVERY), thread_ids=threads, restore=for_restore
                        )
                    except remote.CommandTimeout:
                        if time.monotonic() < deadline:
                            break  # claim again
                        answer = None
                if answer is None or (time.monotonic() >= deadline and answer.result.get("busy")):
                    member = self._membership.member(owner)
                    who = member.describe() if member else f"member {owner}"
                    with self._counting:
                        self.busy += 1
                    raise ThreadBusy(
                        f"Thread {threads[0]!r:.80} is held by {who}, which did not hand it over within "
                        f"{self.handoff_timeout:g} s: it is busy with the thread or stuck. Retry, or send requests "
                        "for this thread to that member.",
                        thread_id=threads[0],
                        owner=owner,
                    )
                # the owner passed them to this member and made its claim (see Membership.hand_over)
                tokens = answer.result.get("tokens") if not for_restore else None
                if isinstance(tokens, dict):
                    got = {t: int(tokens[t]) for t in threads if t in tokens}
                    granted.update(got)
                    todo = [t for t in todo if t not in got]
                if answer.result.get("busy"):
                    time.sleep(0.02)
            if not todo:
                self._count(granted, handed, started)
                return granted

    def _count(self, granted: dict[str, int], handed: set[str], started: float) -> None:
        moved = len(handed.intersection(granted))
        with self._counting:
            self.claims += len(granted)
            self.handoffs += moved
        if moved:
            self.handoff_seconds.observe(time.monotonic() - started)

    def give_back(self) -> None:
        """Release the ownership of threads evicted since the last call."""
        cache = self._cache
        with cache.lock:
            pairs = cache.residency.take_released()
        if not pairs:
            return
        try:
            self._membership.release(pairs)
        except (*DB_ERRORS, psycopg.Error):
            with cache.lock:
                cache.residency.released.extend(pairs)

    def revalidate(self) -> None:
        """After this member's lease lapsed: drop the threads another member took, and make sure a run
        that read one of them before cannot fork its history (see the cache's guard). A thread whose
        ownership row is simply gone (reaped while this member was cut off, or lost with the database
        in a failover) and that nobody wrote since is claimed again and kept: memory holds its truth."""
        # the cache's lock first, then _regain: the order of a handoff's release, which holds the cache's
        # lock through its backup and may renew the lease (and so revalidate) from inside it; the other
        # order deadlocked the lease thread against that release
        with self._cache.lock, self._regain:
            # loads under way claimed before the lapse: their tokens may be another member's now, so
            # they are thrown away (read again) rather than installed after this look at the entries
            self._cache.residency.store_epoch += 1
            self._revalidate()

    def _revalidate(self) -> None:
        membership, cache = self._membership, self._cache
        owned = membership.owned()
        with cache.lock:
            lost = [t for t, e in cache.entries.items() if e.token is not None and owned.get(t) != e.token]
        if not lost:
            return
        holders = membership.owners_of(lost)
        me = membership.instance_id
        free = [t for t in lost if holders.get(t) in (None, me)]
        granted, _held = membership.claim(free) if free else ({}, {})
        snap = self._store.load_threads(list(granted)) if granted else Snapshot()
        given_back: list[tuple[str, int]] = []
        with cache.lock:
            drop = [t for t in lost if t not in granted]
            for tid, token in granted.items():
                entry = cache.entries.get(tid)
                if entry is None:
                    given_back.append((tid, token))
                elif not cache.knows_all_of(snap, tid):
                    drop.append(tid)
                    given_back.append((tid, token))
                else:
                    entry.token = token
            cache.drop(drop, "this member could not renew its lease for a while")
            cache.guard.mark_moved(drop)
            if drop:
                cache.complete = False  # another member took some: memory no longer holds the whole store
        if given_back:
            membership.release(given_back)
        if granted:
            logger.warning(
                "member %s claimed %s thread(s) again after its lease lapsed: nobody wrote them meanwhile",
                me,
                len(granted) - len(given_back),
            )

    def reclaim_all(self) -> list[str]:
        """The store lost this member's recent generations: claim every resident thread again (the
        ownership rows went with them) and have the next backup write each one whole. Returns them."""
        cache = self._cache
        with cache.lock, self._regain:  # the order of revalidate()
            resident = list(cache.entries)
            granted = self.claim(resident, wait=False) if resident else {}
        with cache.lock:
            for tid, token in granted.items():
                entry = cache.entries.get(tid)
                if entry is not None:
                    entry.token = token
                    cache.mark_all_changed(tid)
        return list(granted)

    # -- the lease, as reads and writes see it -----------------------------------------------------

    @property
    def lease_deadline(self) -> float:
        """Monotonic time until which this member's lease is certainly valid."""
        return self._membership.lease.deadline

    def lease_check(self, entries: Sequence[Resident] = ()) -> None:
        """Raise ``LeaseExpired`` unless this member may serve its threads now (a clock read). Under the
        cache's lock in writes, so no write is acknowledged after the lease is gone.

        Alone in an outage the member writes on (nobody can take its threads while nobody reaches the
        store), but the threads written past the lease become provisional: when the store answers they
        are claimed again, and should another member have taken one meanwhile, the turns made here go
        to a fork instead of being dropped."""
        lease = self._membership.lease
        if lease.valid() or self._membership.instance_id is None:
            return
        if self._outage_alone():
            for entry in entries:
                entry.token = None
            return
        lease.check()

    def lease_recover(self) -> None:
        """The lease lapsed: renew it now (dropping the threads others took meanwhile), or raise
        ``LeaseExpired`` when PostgreSQL does not answer."""
        lease = self._membership.lease
        if lease.valid() or self._outage_alone():
            return
        if not (self._link.reachable() and lease.renew()):
            lease.check()

    def _outage_alone(self) -> bool:
        """PostgreSQL is down and no other member was seen: nobody can take this member's threads, so it
        keeps serving them from memory (the outage promise); with other members it may not."""
        return self._link.failed and not self.others_seen

    # -- offline threads ---------------------------------------------------------------------

    def resolve_provisional(self, *, wait: bool = False) -> None:
        """Claim threads made while PostgreSQL was unreachable (or written back from a recovery file)
        and add what the store holds of them under what memory holds (memory wins). With ``wait``, a
        thread still held by a member whose lease runs is waited for (up to ``handoff_timeout``)."""
        cache = self._cache
        with cache.lock:
            todo = [t for t, e in cache.entries.items() if e.token is None]
        if not todo:
            return
        try:
            granted = self.claim(todo, wait=wait)
        except ThreadBusy as exc:
            logger.warning("threads kept in memory stay unclaimed for now: %s", exc)
            granted = self.claim(todo, wait=False)
        held = self._membership.owners_of([t for t in todo if t not in granted])
        if held:
            # another member owns them now: never two writers; what was made here is kept apart
            with cache.lock:
                for tid in held:
                    if tid in cache.entries:
                        self._fork(tid, "another member took it over while this one could not reach PostgreSQL")
        if not granted:
            return
        snap = self._store.load_threads(list(granted))
        given_back: list[tuple[str, int]] = []
        with cache.lock:
            for tid, token in granted.items():
                entry = cache.entries.get(tid)
                if entry is None:
                    continue
                if not cache.knows_all_of(snap, tid):
                    # the store has a history this member never saw: keep it, and the turns made here
                    # apart under a fork, instead of mixing two histories in one thread
                    self._fork(tid, "the store has a history of it this member never saw")
                    given_back.append((tid, token))
                    continue
                cache.merge_under(tid, entry, snap)
                entry.token = token
        if given_back:
            self._membership.release(given_back)

    def _fork(self, tid: str, why: str) -> None:
        """Move what memory holds of ``tid`` (made while PostgreSQL was unreachable) to a new thread id,
        so the stored history stays as it is. Under the cache's lock."""
        fork = f"{tid}~offline-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        self._cache.rename(tid, fork)
        logger.warning(
            "thread %r was written here while PostgreSQL was unreachable, but %s: the store's history stays, "
            "the turns made here are in the new thread %r",
            tid,
            why,
            fork,
        )

    # -- warm start ----------------------------------------------------------------------------

    def others_alive(self) -> bool:
        """Another live member shares the store."""
        me = self._membership.instance_id
        self.others_seen = any(m.alive and m.instance_id != me for m in self._membership.members())
        return self.others_seen

    def warm(self, first: int | None = None) -> int:
        """Load the most recently updated free threads until half the budget is used (all of them
        without a budget), or until ``first`` stored bytes are loaded. Returns how many threads were
        loaded."""
        half = None if self._budget is None else self._budget // 2
        limit = half if first is None else first if half is None else min(first, half)
        res = self._cache.residency
        loaded = 0
        candidates = self._membership.warm_candidates(limit)
        for start in range(0, len(candidates), WARM_BATCH):
            if self._closed() or (limit is not None and res.resident_bytes >= limit):
                break
            loaded += res.load_many(candidates[start : start + WARM_BATCH], self._grant_and_load)
        return loaded

    def _holds_the_whole_store(self) -> bool:
        """No other member is alive, and then every thread of the store is resident here. In that
        order: a member that stops cleanly backs up first, so a thread it wrote is in the store once it
        is no longer alive (and a killed one stays alive until its lease ends)."""
        if self.others_alive():
            return False
        entries = self._cache.entries
        return all(t in entries for t in self._membership.warm_candidates(None, None))

    def _grant_and_load(self, thread_ids: Sequence[str]) -> tuple[Snapshot, dict[str, int | None]]:
        tokens = self.claim(thread_ids, wait=False)
        return self._store.load_threads(list(tokens)), dict(tokens)

    def warm_in_background(self) -> None:
        """Warm start in a thread of its own; a member without a budget then knows it holds the whole
        store (``cache.complete``) once every free thread is in and no other member is alive."""

        def run() -> None:
            started = time.perf_counter()
            delay = 1.0
            while not self._closed():
                seen = self._cache.complete_epoch
                try:
                    loaded = self.warm()
                    if self._budget is None and not self._closed() and self._holds_the_whole_store():
                        self._cache.set_complete_since(seen)
                except Exception as exc:  # noqa: BLE001 - threads load on demand meanwhile; try again later
                    log = logger.warning if delay == 1.0 else logger.debug
                    log(
                        "warm start interrupted (%s); it goes on in %.0f s, threads load on demand meanwhile",
                        self._link.scrub(f"{type(exc).__name__}: {exc}"),
                        delay,
                    )
                    stop = time.monotonic() + delay
                    while time.monotonic() < stop and not self._closed():
                        time.sleep(0.1)
                    delay = min(delay * 2, 60.0)
                    continue
                if loaded:
                    logger.info(
                        "warm start: %s more threads loaded in the background in %.1f s",
                        loaded,
                        time.perf_counter() - started,
                    )
                return

        self._warming = threading.Thread(target=run, name="hybrid-saver-warm", daemon=True)
        self._warming.start()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait for the warm start running in the background; True when it is done."""
        warming = self._warming
        if warming is not None:
            warming.join(timeout)
            return not warming.is_alive()
        return True


__all__ = ["ASK_EVERY", "WARM_BATCH", "Ownership"]
