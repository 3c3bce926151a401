"""A memory budget: cold threads read back from PostgreSQL on demand, idle ones evicted, a start
that does not wait for the whole store, and what happens when PostgreSQL goes away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from helpers.pg import PrivateServer
from helpers.state import human_texts
from histories import put_checkpoint, served_state

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import DatabaseUnavailable, HybridSaver
from persistence.config import ConfigError, parse_bytes, saver_settings
from persistence.fleet.membership import Membership
from persistence.ops import attach

pytestmark = pytest.mark.all_postgres


def _fill(saver: HybridSaver, threads: int, turns: int = 2) -> None:
    graph = build_graph(saver, OfflineResponder())
    for i in range(threads):
        for turn in range(turns):
            chat_turn(graph, f"c{i}", f"my name is C{i}-{turn}")
    assert saver.backup().ok


def test_eight_workers_over_ten_times_more_threads_than_the_budget(open_saver: Callable[..., HybridSaver]) -> None:
    probe = open_saver(schema="probe")
    _fill(probe, 1, turns=2)
    thread_bytes = probe.stats().resident_bytes  # about one thread of the workload below
    budget = 24 * thread_bytes
    saver = open_saver(backup_interval=0.05, memory_budget=budget)
    threads = [f"w{i}" for i in range(240)]  # ten times what the budget holds
    told: dict[str, list[str]] = {t: [] for t in threads}
    errors: list[BaseException] = []
    peak = {"over": 0, "resident": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            stats = saver.stats()
            largest = max((e.bytes for e in list(saver.cache.residency.entries.values())), default=0)
            peak["resident"] = max(peak["resident"], stats.resident_bytes)
            peak["over"] = max(peak["over"], stats.resident_bytes - budget - largest)
            time.sleep(0.002)

    def work(worker: int) -> None:
        graph = build_graph(saver, OfflineResponder())
        try:
            for turn in range(2):
                for tid in threads[worker::8]:
                    text = f"my name is {tid}-{turn}"
                    chat_turn(graph, tid, text)
                    told[tid].append(text)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert not errors, errors
    stats = saver.stats()
    assert stats.evictions > 100 and stats.loads > 100, stats
    assert peak["over"] <= 0, f"resident bytes passed the budget by more than one thread: {peak}"
    for tid in threads:
        assert human_texts(saver, tid) == told[tid], tid
    saver.close()
    again = open_saver(memory_budget=budget)
    assert human_texts(again, "w42") == told["w42"]


def test_a_start_loads_half_the_budget_and_serves_at_once(open_saver: Callable[..., HybridSaver]) -> None:
    seed = open_saver()
    _fill(seed, 60)
    full = seed.stats().resident_bytes
    seed.close()
    budget = full // 4
    t0 = time.monotonic()
    saver = open_saver(memory_budget=budget)
    opened = time.monotonic() - t0
    assert saver.wait_warm(30)
    stats = saver.stats()
    assert stats.memory_budget == budget
    assert 0 < stats.resident_bytes <= budget // 2 + full // 60, stats
    # the most recently updated threads came first
    resident = set(saver.cache.residency.entries)
    assert "c59" in resident and "c0" not in resident
    # a cold thread loads on access and stays exact
    before = saver.stats().loads
    graph = build_graph(saver, OfflineResponder())
    assert chat_turn(graph, "c0", "what is my name?") == "Your name is C0-1."
    assert saver.stats().loads == before + 1
    # listing every thread covers the cold ones without making them resident
    resident_before = set(saver.cache.residency.entries)
    listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert listed == {f"c{i}" for i in range(60)}
    assert set(saver.cache.residency.entries) <= resident_before | {"c0"}
    rows, total = saver.store.directory.thread_page(limit=10)
    assert total == 60 and len(rows) == 10
    assert opened < 10


def test_a_lone_member_without_a_budget_serves_before_the_whole_store_is_in(
    open_saver: Callable[..., HybridSaver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone and without a budget, a start loads its most recent threads (WARM_FIRST_BYTES of them)
    and the rest in the background: the start returns, and serves every thread, while the rest are
    still loading; memory holds the whole store (``complete``) only once all of them are in."""
    seed = open_saver()
    _fill(seed, 60)
    one_thread = seed.store.directory.thread_page(limit=1)[0][0]["bytes"]
    seed.close()
    monkeypatch.setattr(attach, "WARM_FIRST_BYTES", 10 * one_thread + 1)
    hold = threading.Event()
    whole_store_read = Membership.warm_candidates

    def candidates(self: Membership, limit_bytes: int | None, limit_threads: int | None = 1_000_000) -> list[str]:
        if limit_bytes is None:  # the background's read of every free thread waits for the test
            assert hold.wait(60)
        return whole_store_read(self, limit_bytes, limit_threads)

    monkeypatch.setattr(Membership, "warm_candidates", candidates)
    opened: list[HybridSaver] = []
    starting = threading.Thread(target=lambda: opened.append(open_saver()))
    starting.start()
    starting.join(30)
    assert opened, "the start waited for the whole store"
    saver = opened[0]
    resident = set(saver.cache.residency.entries)
    assert 5 <= len(resident) <= 11 and "c59" in resident and "c0" not in resident
    assert not saver.cache.complete
    graph = build_graph(saver, OfflineResponder())
    assert chat_turn(graph, "c0", "what is my name?") == "Your name is C0-1."  # cold: loaded on use
    assert chat_turn(graph, "new", "my name is Neo").startswith("Got it: your name is Neo.")
    hold.set()
    assert saver.wait_warm(30)
    assert set(saver.cache.residency.entries) >= {f"c{i}" for i in range(60)}
    assert saver.cache.complete
    assert saver.stats().threads == 61


def test_one_load_for_many_callers_and_other_threads_never_wait(
    open_saver: Callable[..., HybridSaver], db_url: str
) -> None:
    seed = open_saver()
    put_checkpoint(seed, "cold", {"m": "x" * 5000})
    put_checkpoint(seed, "hot", {"m": "y"})
    seed.close()
    saver = open_saver(memory_budget=20_000)
    assert saver.wait_warm(30)
    assert saver.get_tuple({"configurable": {"thread_id": "hot"}}) is not None
    saver.cache.residency.evict("cold")
    loads = saver.stats().loads
    results: list[object] = []
    blocker = psycopg.connect(db_url)
    blocker.execute("LOCK TABLE hybrid_saver.checkpoints IN ACCESS EXCLUSIVE MODE")  # loads wait on it
    callers = [
        threading.Thread(target=lambda: results.append(saver.get_tuple({"configurable": {"thread_id": "cold"}})))
        for _ in range(6)
    ]
    try:
        for c in callers:
            c.start()
        time.sleep(0.3)
        assert not results, "the cold thread loaded while its rows were locked"
        t0 = time.monotonic()
        assert saver.get_tuple({"configurable": {"thread_id": "hot"}}) is not None
        assert time.monotonic() - t0 < 1.0, "a resident thread waited for another thread's load"
    finally:
        blocker.rollback()
        blocker.close()
    for c in callers:
        c.join(timeout=30)
    assert len(results) == 6 and all(r is not None for r in results)
    assert saver.stats().loads == loads + 1


def test_writers_past_the_budget_make_a_backup_run_early(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(backup_interval=3600, memory_budget=20_000)
    graph = build_graph(saver, OfflineResponder())
    for i in range(12):
        chat_turn(graph, f"p{i}", f"my name is P{i}")
    triggers = [r.trigger for r in saver.history]
    assert "pressure" in triggers, triggers
    assert saver.stats().resident_bytes <= 20_000 + max(e.bytes for e in saver.cache.residency.entries.values())
    assert all(r.ok for r in saver.history)


def test_restore_under_a_budget_drops_what_it_touched_and_reloads_on_demand(
    open_saver: Callable[..., HybridSaver],
) -> None:
    saver = open_saver(memory_budget=40_000)
    graph = build_graph(saver, OfflineResponder())
    for i in range(6):
        chat_turn(graph, f"r{i}", f"my name is R{i}")
    first = saver.backup().generation
    for i in range(6):
        chat_turn(graph, f"r{i}", f"my name is S{i}")
    saver.backup()
    result = saver.restore(first)
    assert saver.stats().resident_threads == 0  # nothing reloaded: the restore cost the SQL
    for i in range(6):
        assert chat_turn(graph, f"r{i}", "what is my name?") == f"Your name is R{i}."
    saver.restore(result.undo_generation)
    assert chat_turn(graph, "r3", "what is my name?") == "Your name is S3."
    assert served_state(saver) == served_state(saver)  # reads are repeatable after a restore


def test_an_outage_keeps_resident_threads_and_names_the_cold_one(tmp_path: object) -> None:
    server = PrivateServer("hs-budget-outage-")
    try:
        url = server.create_database("budget")
        seed = HybridSaver.from_url(url, backup_interval=None, listen=False)
        _fill(seed, 4)
        seed.close()
        saver = HybridSaver.from_url(url, backup_interval=None, listen=False, memory_budget=60_000)
        assert saver.wait_warm(30)
        graph = build_graph(saver, OfflineResponder())
        chat_turn(graph, "c3", "I live in Porto")  # resident, pending
        saver.cache.residency.evict("c0")
        server.stop()
        try:
            assert chat_turn(graph, "c3", "where do I live?") == "You live in Porto."
            with pytest.raises(
                DatabaseUnavailable, match=r"'c0' is not in memory.*works again as soon as the database"
            ):
                chat_turn(graph, "c0", "what is my name?")
            assert saver.stats().pending > 0
        finally:
            server.start()
        assert chat_turn(graph, "c0", "what is my name?") == "Your name is C0-1."
        assert saver.backup().ok
        saver.close()
        again = HybridSaver.from_url(url, backup_interval=None, listen=False, memory_budget=60_000)
        try:
            assert human_texts(again, "c3")[-2:] == ["I live in Porto", "where do I live?"]
        finally:
            again.close()
    finally:
        server.close()


def test_memory_budget_values() -> None:
    assert parse_bytes("512MB") == 512_000_000 and parse_bytes("1GiB") == 1024**3 and parse_bytes("65536") == 65536
    assert saver_settings({"MEMORY_BUDGET": "2 GB"}).memory_budget == 2_000_000_000
    assert saver_settings({}).memory_budget is None
    for bad, said in (
        ("lots", "not a size"),
        ("12 parsecs", "not a size"),
        ("10", "below the smallest"),
        ("-5MB", "not a size"),
    ):
        with pytest.raises(ConfigError, match=said):
            saver_settings({"MEMORY_BUDGET": bad})
    with pytest.raises(ValueError, match="memory_budget"):
        HybridSaver(None, memory_budget="512MB", start=False)  # type: ignore[arg-type]
