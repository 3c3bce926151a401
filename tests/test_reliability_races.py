"""Races (issue 5: faults): backups, restores, interval changes and close() while chats go on.

A run is held "under way" deterministically by locking the generations table from another
connection: the run's transaction waits on the lock until the test releases it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from helpers.state import all_human_texts, describe_difference, human_texts, memory_state, snapshot_texts, store_state

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import BackupRun, HybridSaver, ThreadRestored

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


class Writers:
    """Threads that chat, each on its own thread id, and record every turn they completed."""

    def __init__(self, graph: object, thread_ids: list[str], pace: float = 0.005, turns: int = 0) -> None:
        self.graph = graph
        self.done: list[tuple[float, str, str]] = []
        self.errors: list[BaseException] = []
        self.latency = 0.0
        #: turns refused because a restore rewrote their thread while they ran (sent again)
        self.overtaken = 0
        self._stop = threading.Event()
        self._pace = pace
        self._turns = turns
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in thread_ids]

    def _run(self, thread_id: str) -> None:
        i = 0
        try:
            while not self._stop.is_set() and (not self._turns or i < self._turns):
                text = f"my name is {thread_id}n{i}"
                t0 = time.monotonic()
                try:
                    chat_turn(self.graph, thread_id, text)
                except ThreadRestored:
                    # a restore overtook this turn: it was not saved, and a client sends it again
                    self.overtaken += 1
                    continue
                self.latency = max(self.latency, time.monotonic() - t0)
                self.done.append((time.time(), thread_id, text))
                i += 1
                time.sleep(self._pace)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.wait()

    def wait(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self._threads), "a chat writer hung"

    def by_thread(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for _t, thread_id, text in sorted(self.done):
            out.setdefault(thread_id, []).append(text)
        return out


def collect_runs(saver: HybridSaver) -> list[BackupRun]:
    runs: list[BackupRun] = []
    saver.add_listener(runs.append)
    return runs


@contextmanager
def generations_locked(url: str) -> Iterator[Callable[[], None]]:
    """Hold an exclusive lock on the generations table; yields a function that waits for a blocked run."""
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE hybrid_saver.generations IN ACCESS EXCLUSIVE MODE")

        def wait_blocked(timeout: float = 10.0) -> None:
            deadline = time.monotonic() + timeout
            with psycopg.connect(url, autocommit=True) as watcher:
                while time.monotonic() < deadline:
                    row = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    ).fetchone()
                    if row and row[0]:
                        return
                    time.sleep(0.02)
            raise AssertionError(f"no backup run blocked on the generations table within {timeout} s")

        try:
            yield wait_blocked
        finally:
            blocker.rollback()


def assert_backed_up_and_reopens(saver: HybridSaver, open_saver: Callable[..., HybridSaver], expect: dict) -> None:
    """A final backup makes the store equal to memory; a new saver holds every expected turn, in order."""
    assert saver.backup().ok
    mem, stored = memory_state(saver), store_state(saver)
    assert mem == stored, describe_difference(mem, stored)
    texts = all_human_texts(saver)
    saver.close()
    again = open_saver()
    assert all_human_texts(again) == texts
    for thread_id, wanted in expect.items():
        have = texts.get(thread_id, [])
        missing = [t for t in wanted if t not in have]
        assert not missing, f"thread {thread_id!r} lost {len(missing)} completed turns: {missing[:3]}"


def test_manual_and_scheduled_backups_at_the_same_moment(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(backup_interval=0.02)
    runs = collect_runs(saver)
    graph = build_graph(saver, OfflineResponder())
    pressers, rounds = 4, 10
    barrier = threading.Barrier(pressers)
    manual: list[BackupRun] = []
    errors: list[BaseException] = []

    def press() -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=30)
                manual.append(saver.backup())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with Writers(graph, ["m-a", "m-b"]) as writers:
        threads = [threading.Thread(target=press) for _ in range(pressers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors and not writers.errors, (errors, writers.errors)
    assert len(manual) == pressers * rounds
    scheduled = [r for r in runs if r.trigger == "scheduled"]
    assert scheduled, "no scheduled run happened alongside the manual ones"
    failed = [r for r in runs if not r.ok]
    assert not failed, failed[:3]
    # no two runs wrote the same generation, and the store's generations are distinct
    written = [r.generation for r in runs if r.rows]
    assert len(written) == len(set(written))
    numbers = [g.generation for g in saver.generations()]
    assert numbers == sorted(set(numbers), reverse=True)
    assert_backed_up_and_reopens(saver, open_saver, writers.by_thread())


def test_restore_while_chats_and_backups_run(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(backup_interval=0.1)
    graph = build_graph(saver, OfflineResponder())
    for text in ("my name is Zoe", "I live in Lisbon", "my favourite colour is teal"):
        chat_turn(graph, "z", text)
    kept = saver.backup().generation
    chat_turn(graph, "z", "my name is Zed")
    with Writers(graph, ["r-x", "r-y"]) as writers:
        time.sleep(0.4)
        # one thread, while the others chat: that thread goes back, the others lose nothing
        one = saver.restore(kept, thread_id="z")
        assert human_texts(saver, "z") == ["my name is Zoe", "I live in Lisbon", "my favourite colour is teal"]
        assert chat_turn(graph, "z", "what is my name?") == "Your name is Zoe."
        time.sleep(0.3)
        full = saver.backup().generation
        time.sleep(0.3)
        t0 = time.time()
        res = saver.restore(full)
        t1 = time.time()
        time.sleep(0.3)
    assert not writers.errors, writers.errors
    assert writers.latency < 2.0, f"a chat turn waited {writers.latency:.2f} s behind a restore"
    assert one.undo_generation is not None and res.undo_generation is not None
    # the restored generation holds exactly the state of the generation restored
    assert store_state(saver, res.generation) == store_state(saver, full)
    # the undo point holds every turn completed before the restore began
    undo = saver.store.load(res.undo_generation)
    for t, thread_id, text in writers.done:
        if t < t0:
            assert text in snapshot_texts(saver, undo, thread_id), (thread_id, text)
    after = {}
    for t, thread_id, text in writers.done:
        if t > t1:
            after.setdefault(thread_id, []).append(text)
    assert after, "no turn completed after the restore"
    assert_backed_up_and_reopens(saver, open_saver, after)


def test_interval_changed_while_a_run_is_under_way(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver(backup_interval=0.3)
    runs = collect_runs(saver)
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "i", "my name is Ivo")
    with generations_locked(db_url) as wait_blocked:
        wait_blocked()
        t0 = time.monotonic()
        saver.scheduler.set_interval(0.05)
        took = time.monotonic() - t0
        t0 = time.monotonic()
        chat_turn(graph, "i", "I live in Faro")  # served while the run waits
        turn = time.monotonic() - t0
        assert saver.scheduler.interval == 0.05
        assert not runs, "the blocked run finished while the table was locked"
    assert took < 1.0, f"set_interval waited {took:.2f} s for the run under way"
    assert turn < 1.0, f"a chat turn waited {turn:.2f} s for the run under way"
    deadline = time.monotonic() + 10
    while not runs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runs and runs[0].ok, runs[:1]
    released = time.time()
    time.sleep(1.5)
    later = [r for r in runs if r.trigger == "scheduled" and r.started_at.timestamp() > released]
    # the new interval is in force: at 0.3 s there would be at most 5 runs in these 1.5 s
    assert len(later) >= 8, f"{len(later)} scheduled runs in 1.5 s after changing the interval to 0.05 s"
    assert all(r.ok for r in runs)
    assert_backed_up_and_reopens(saver, open_saver, {"i": ["my name is Ivo", "I live in Faro"]})


@pytest.mark.parametrize("trigger", ["manual", "scheduled"])
def test_close_while_a_backup_runs(open_saver: Callable[..., HybridSaver], db_url: str, trigger: str) -> None:
    saver = open_saver(backup_interval=0.2 if trigger == "scheduled" else None)
    runs = collect_runs(saver)
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "c", "my name is Cai")
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        return run

    backup = threading.Thread(target=guarded(saver.backup)) if trigger == "manual" else None
    closer = threading.Thread(target=guarded(saver.close))
    with generations_locked(db_url) as wait_blocked:
        if backup is not None:
            backup.start()
        wait_blocked()
        chat_turn(graph, "c", "I live in Braga")  # changed while the run is under way
        closer.start()
        time.sleep(0.5)
        assert closer.is_alive(), "close() returned while a backup was still writing"
    closer.join(timeout=15)
    if backup is not None:
        backup.join(timeout=15)
    assert not closer.is_alive(), "close() hung after the run finished"
    assert not errors, errors
    assert saver.closed
    assert runs and all(r.ok for r in runs), runs
    assert runs[-1].trigger == "close"
    again = open_saver()
    assert human_texts(again, "c") == ["my name is Cai", "I live in Braga"]


def test_close_from_several_threads_at_once(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver(backup_interval=0.05)
    runs = collect_runs(saver)
    graph = build_graph(saver, OfflineResponder())
    for i in range(5):
        chat_turn(graph, "d", f"my name is D{i}")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def close() -> None:
        try:
            barrier.wait(timeout=10)
            saver.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert saver.closed
    closing = [r for r in runs if r.trigger == "close"]
    assert len(closing) == 1 and closing[0].ok, f"{len(closing)} final backups: {closing}"
    # nobody holds the store any more: its advisory lock was released, not leaked on a stray connection
    with psycopg.connect(db_url, autocommit=True) as conn:
        held = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        ).fetchone()
    assert held == (0,), f"{held[0]} advisory locks still held after close()"
    again = open_saver()
    assert human_texts(again, "d") == [f"my name is D{i}" for i in range(5)]


def test_two_savers_starting_at_the_same_moment_both_join(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def start() -> None:
        barrier.wait(timeout=10)
        try:
            outcomes.append(HybridSaver.from_url(db_url, backup_interval=None, listen=False))
        except BaseException as exc:  # noqa: BLE001
            outcomes.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    savers = [o for o in outcomes if isinstance(o, HybridSaver)]
    try:
        assert len(savers) == 2, outcomes  # both join the store's fleet
        ids = {s.instance_id for s in savers}
        assert len(ids) == 2 and {m.instance_id for m in savers[0].members() if m.alive} == ids
        graph = build_graph(savers[0], OfflineResponder())
        chat_turn(graph, "both", "my name is Bea")
        assert savers[0].backup().ok
    finally:
        for saver in savers:
            saver.close()
    again = open_saver()
    assert human_texts(again, "both") == ["my name is Bea"]


def test_concurrent_writers_lose_nothing(open_saver: Callable[..., HybridSaver]) -> None:
    writers_n, turns = 8, 25
    saver = open_saver(backup_interval=0.05)
    runs = collect_runs(saver)
    graph = build_graph(saver, OfflineResponder())
    t0 = time.monotonic()
    with Writers(graph, [f"w{i}" for i in range(writers_n)], pace=0, turns=turns) as writers:
        writers.wait()
    elapsed = time.monotonic() - t0
    assert not writers.errors, writers.errors
    done = writers.by_thread()
    assert sum(len(v) for v in done.values()) == writers_n * turns
    assert len([r for r in runs if r.ok and r.rows]) >= 2, "backups did not run while the writers wrote"
    assert_backed_up_and_reopens(saver, open_saver, done)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "concurrent_writers.json").write_text(
        json.dumps(
            {
                "writer_threads": writers_n,
                "turns": writers_n * turns,
                "seconds": round(elapsed, 2),
                "backups_during": len([r for r in runs if r.ok and r.rows]),
                "slowest_turn_s": round(writers.latency, 3),
                "turns_lost": 0,
            },
            indent=2,
        )
    )
