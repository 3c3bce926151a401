"""PostgreSQL outages while chats go on (issue 5: faults).

These tests stop and restart a PostgreSQL server of their own (the session server is shared with
every other test). The saver must keep serving from memory, log the failed runs (buffered while the
database is down, written with the next run that reaches it), and catch up with nothing lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from helpers.pg import PrivateServer, stoppable_server
from helpers.state import all_human_texts, describe_difference, memory_state, store_state

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import BackupRun, DatabaseUnavailable, HybridSaver

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
INTERVAL = 0.5
OUTAGE = 8 * INTERVAL


server, url, savers = stoppable_server("hs-outage-")


class Runs:
    """Backup runs as the saver reports them to its listeners."""

    def __init__(self, saver: HybridSaver) -> None:
        self.items: list[tuple[float, BackupRun]] = []
        self._cond = threading.Condition()
        saver.add_listener(self._add)

    def _add(self, run: BackupRun) -> None:
        with self._cond:
            self.items.append((time.time(), run))
            self._cond.notify_all()

    def wait_ok(self, after: float, timeout: float) -> BackupRun:
        """The first successful run that started after ``after`` (epoch seconds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _t, run in self.items:
                    if run.ok and run.started_at.timestamp() > after:
                        return run
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no successful backup within {timeout} s; runs: {self.items[-5:]}")
                self._cond.wait(left)

    def failed(self, start: float, end: float) -> list[BackupRun]:
        return [r for _t, r in self.items if not r.ok and start <= r.started_at.timestamp() <= end]


def chat_for(graph: object, seconds: float, prefix: str) -> tuple[int, float, float]:
    """Chat for ``seconds`` over three threads; return (turns, slowest turn in seconds, when the first
    turn had returned: its changes were made by then)."""
    end = time.monotonic() + seconds
    turns, slowest, first_done = 0, 0.0, 0.0
    while time.monotonic() < end:
        t0 = time.monotonic()
        chat_turn(graph, f"{prefix}-{turns % 3}", f"my name is {prefix}{turns}")
        slowest = max(slowest, time.monotonic() - t0)
        turns += 1
        first_done = first_done or time.time()
        time.sleep(0.02)
    return turns, slowest, first_done


def test_outage_keeps_serving_logs_failed_runs_and_catches_up(
    server: PrivateServer, url: str, savers: list[HybridSaver]
) -> None:
    saver = HybridSaver.from_url(url, backup_interval=INTERVAL)
    savers.append(saver)
    runs = Runs(saver)
    graph = build_graph(saver, OfflineResponder())
    t_begin = time.time()
    chat_for(graph, 1.0, "before")
    runs.wait_ok(t_begin, timeout=10)

    t_stopping = time.time()
    server.stop()
    t_stop = time.time()
    manual: list[tuple[BackupRun, float, float]] = []

    def press_backup_now() -> None:
        time.sleep(2 * INTERVAL)
        t0 = time.monotonic()
        run = saver.backup()
        manual.append((run, time.monotonic() - t0, time.time()))

    presser = threading.Thread(target=press_backup_now)
    presser.start()
    turns, slowest, first_done = chat_for(graph, OUTAGE, "during")
    during = saver.stats()
    during_at = time.time()
    server.start()
    t_start = time.time()
    presser.join(timeout=30)
    outage = t_start - t_stop

    # the app kept serving from memory; the database being down shows in the figures
    assert turns >= 20 and slowest < 1.0, f"{turns} turns during the outage, slowest {slowest:.2f} s"
    assert not during.database_ok and during.pending > 0
    # the lag counts from the oldest change not backed up, at the latest the first turn of the outage
    assert during.lag_seconds >= during_at - first_done - 0.05, (during, during_at - first_done)
    assert manual, "a manual backup during the outage did not return"
    manual_run, manual_s, manual_returned = manual[0]
    failed = [r for r in runs.failed(t_stop, t_start) if r.trigger == "scheduled"]
    assert failed, "no failed run was reported during the outage"

    catch_up = runs.wait_ok(t_start, timeout=20)
    caught_up_after = catch_up.finished_at.timestamp() - t_start
    assert catch_up.rows > 0 and catch_up.lag_seconds >= outage - 2 * INTERVAL
    assert caught_up_after < 10.0, f"the first backup after the restart finished {caught_up_after:.1f} s later"
    mem, stored = memory_state(saver), store_state(saver)
    assert mem == stored, describe_difference(mem, stored)
    assert saver.stats().pending == 0 and saver.stats().database_ok

    # the failed runs were buffered and written with the first run that reached the database
    logged = saver.store.runs.runs(limit=1000)
    errors = [r for r in logged if r["error"]]
    reported = {r.started_at for r in runs.failed(t_stopping, t_start)}
    assert reported <= {r["started_at"] for r in errors}, "failed runs missing from the runs table"
    # every failed run overlapped the outage (a run under way when the stop began fails too)
    assert all(r["finished_at"].timestamp() >= t_stopping and r["started_at"].timestamp() <= t_start for r in errors), [
        (r["started_at"], r["finished_at"], r["error"]) for r in errors
    ]
    # the saver took its liveness lock again after the restart: it is a live member, and a second
    # saver that joins does not take its threads
    deadline = time.time() + 10
    while time.time() < deadline and saver.instance_id not in {m.instance_id for m in saver.members() if m.alive}:
        time.sleep(0.2)
    assert saver.instance_id in {m.instance_id for m in saver.members() if m.alive}
    second = HybridSaver.from_url(url, backup_interval=None, listen=False)
    assert second.stats().resident_threads == 0
    second.close()

    texts = all_human_texts(saver)
    saver.close()
    again = HybridSaver.from_url(url, backup_interval=None, listen=False)
    savers.append(again)
    assert all_human_texts(again) == texts
    assert sum(len(v) for v in texts.values()) >= turns

    ARTIFACTS.mkdir(exist_ok=True)
    report = {
        "backup_interval_s": INTERVAL,
        "outage_s": round(outage, 2),
        "outage_intervals": round(outage / INTERVAL, 1),
        "turns_during_outage": turns,
        "slowest_turn_during_outage_s": round(slowest, 4),
        "failed_runs_reported": len(failed),
        "failed_runs_logged": len(errors),
        "catch_up_after_restart_s": round(caught_up_after, 2),
        "catch_up_rows": catch_up.rows,
        "manual_backup_during_outage_s": round(manual_s, 2),
        "turns_lost": 0,
    }
    (ARTIFACTS / "outage.json").write_text(json.dumps(report, indent=2))

    # a run is due every interval: they must run (and fail) and say so, not stall behind a pool timeout
    assert len(failed) >= 3, (
        f"only {len(failed)} failed runs over a {outage:.1f} s outage ({outage / INTERVAL:.0f} intervals)"
    )
    # "Backup now" during the outage says at once that it failed (it must not wait for the restart)
    assert manual_returned < t_start and manual_s < 2.0, (
        f"a manual backup pressed during the outage returned after {manual_s:.1f} s "
        f"({'after' if manual_returned >= t_start else 'before'} the restart): {manual_run}"
    )
    assert not manual_run.ok and "connect" in manual_run.error.lower(), manual_run


def test_start_offline_refuses_threads_it_cannot_know_then_serves_them_whole(
    server: PrivateServer, url: str, savers: list[HybridSaver]
) -> None:
    """A saver started offline cannot tell a new thread from a stored one, so it serves none until the
    database answers (issue: a turn on a thread with 114 stored turns hid its whole history)."""
    first = HybridSaver.from_url(url, backup_interval=None, listen=False)
    graph = build_graph(first, OfflineResponder())
    chat_turn(graph, "old", "my name is Ana")
    first.close()

    server.stop()
    with pytest.raises(DatabaseUnavailable, match="Check that the server is running"):
        HybridSaver.from_url(url, backup_interval=None, listen=False)
    saver = HybridSaver.from_url(url, backup_interval=INTERVAL, allow_offline=True)
    savers.append(saver)
    runs = Runs(saver)
    graph = build_graph(saver, OfflineResponder())
    for thread in ("old", "new"):
        with pytest.raises(DatabaseUnavailable, match="cannot be reached"):
            chat_turn(graph, thread, "my name is Bea")
    assert saver.stats().pending == 0
    server.start()
    t_start = time.time()
    runs.wait_ok(t_start - 1, timeout=20)
    assert chat_turn(graph, "old", "what is my name?") == "Your name is Ana."
    assert (
        chat_turn(graph, "new", "my name is Bea") and chat_turn(graph, "new", "what is my name?") == "Your name is Bea."
    )
    saver.close()
    again = HybridSaver.from_url(url, backup_interval=None, listen=False)
    savers.append(again)
    texts = all_human_texts(again)
    assert texts["old"] == ["my name is Ana", "what is my name?"]
    assert texts["new"] == ["my name is Bea", "what is my name?"]


def test_a_thread_made_offline_that_the_store_has_keeps_both_histories_apart(
    server: PrivateServer, url: str, savers: list[HybridSaver], caplog: pytest.LogCaptureFixture
) -> None:
    """A member that held the whole store serves new threads through an outage; if another process had
    written one of those ids meanwhile, the stored history stays and the offline turns go to a fork."""
    alone = HybridSaver.from_url(url, backup_interval=INTERVAL, listen=False)
    savers.append(alone)
    runs = Runs(alone)
    time.sleep(2.5)  # past its first look at the fleet (the heartbeat's)
    other = HybridSaver.from_url(url, backup_interval=None, listen=False)
    chat_turn(build_graph(other, OfflineResponder()), "same", "my name is Ana")
    other.close()
    assert alone.cache.complete, "the member still believes it holds the whole store"
    server.stop()
    graph = build_graph(alone, OfflineResponder())
    assert chat_turn(graph, "same", "my name is Bea")  # served from memory: the outage promise
    server.start()
    with caplog.at_level(logging.WARNING, logger="persistence"):
        runs.wait_ok(time.time(), timeout=20)
    forks = [r.getMessage() for r in caplog.records if "~offline-" in r.getMessage()]
    assert forks, [r.getMessage() for r in caplog.records]
    alone.close()
    again = HybridSaver.from_url(url, backup_interval=None, listen=False)
    savers.append(again)
    texts = all_human_texts(again)
    assert texts["same"] == ["my name is Ana"]
    fork = [t for t in texts if t.startswith("same~offline-")]
    assert len(fork) == 1 and texts[fork[0]] == ["my name is Bea"], texts


def test_restore_during_an_outage_changes_nothing(server: PrivateServer, url: str, savers: list[HybridSaver]) -> None:
    saver = HybridSaver.from_url(url, backup_interval=None, listen=False)
    savers.append(saver)
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "t", "my name is Ana")
    first = saver.backup().generation
    chat_turn(graph, "t", "my name is Bea")
    saver.backup()
    chat_turn(graph, "t", "I live in Porto")  # pending, not yet in PostgreSQL
    before = memory_state(saver)
    server.stop()
    try:
        with pytest.raises(DatabaseUnavailable, match=r"Nothing was changed|nothing was restored"):
            saver.restore(first)
        assert memory_state(saver) == before
        assert chat_turn(graph, "t", "what is my name?") == "Your name is Bea."
    finally:
        server.start()
    assert saver.backup().ok
    saver.close()
    again = HybridSaver.from_url(url, backup_interval=None, listen=False)
    savers.append(again)
    assert all_human_texts(again)["t"] == ["my name is Ana", "my name is Bea", "I live in Porto", "what is my name?"]


def test_new_thread_right_after_the_database_went_away_does_not_wait_for_the_pool(
    server: PrivateServer, url: str, savers: list[HybridSaver]
) -> None:
    """The database goes away between two backups and the pool has already dropped its dead
    connections (it reconnects in the background, with back-off): a turn on a new thread must not
    wait the pool's timeout for a connection before it learns that the server is down."""
    saver = HybridSaver.from_url(url, backup_interval=None)
    savers.append(saver)
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "kept", "my name is Ada")
    saver.backup()
    server.stop()
    saver.pool.check()  # drops the dead idle connections, as a run that met them does
    assert saver.stats().database_ok, "no failure was recorded yet: the saver still believes the database is up"

    t0 = time.monotonic()
    chat_turn(graph, "new-during-outage", "my name is Grace")
    first = time.monotonic() - t0
    assert first < 2.0, f"the first turn on a new thread took {first:.2f} s (the pool's timeout is 5 s)"
    assert not saver.stats().database_ok and saver.stats().pending > 0

    server.start()
    run = saver.backup()
    assert run.ok, run
    assert memory_state(saver) == store_state(saver)


def test_listing_every_thread_during_an_outage_says_so_at_once(
    server: PrivateServer, url: str, savers: list[HybridSaver]
) -> None:
    """With a budget, ``list(None)`` and ``delete_for_runs`` need PostgreSQL for the cold threads:
    when the database went away they raise DatabaseUnavailable at once (not the pool's PoolTimeout
    after its 5 s)."""
    seed = HybridSaver.from_url(url, backup_interval=None)
    savers.append(seed)
    graph = build_graph(seed, OfflineResponder())
    for i in range(3):
        chat_turn(graph, f"listed-{i}", f"my name is L{i}")
    seed.close()
    saver = HybridSaver.from_url(url, backup_interval=None, memory_budget=64 * 1024)
    savers.append(saver)
    assert saver.wait_warm(30)
    server.stop()
    saver.pool.check()

    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="cannot be reached"):
        list(saver.list(None))
    took = time.monotonic() - t0
    assert took < 2.0, f"list(None) took {took:.2f} s to say that PostgreSQL is down"
    with pytest.raises(DatabaseUnavailable, match="nothing was deleted"):
        saver.delete_for_runs(["some-run"])

    server.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
            break
        except DatabaseUnavailable:
            assert time.monotonic() < deadline, "list(None) did not work again after the restart"
            time.sleep(0.2)
    assert {f"listed-{i}" for i in range(3)} <= listed
