"""The fleet: several processes serve one store, each thread owned by one of them at a time.

Real member processes (``tests/helpers/member.py``) serve chat turns over HTTP; a driver sends
numbered turns for many threads to random members, never two turns of one thread at once. Handoffs,
crashes, a frozen member, fencing and restores under traffic are checked against what PostgreSQL
holds at the end.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from helpers.fleet import Driver, MemberProc, fleet_of, stop_all
from helpers.state import settled_values
from histories import put_checkpoint
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg_pool import ConnectionPool

from agent import build_graph
from agent.responder import OfflineResponder
from persistence import HybridSaver
from persistence.fleet.membership import restore_lock_key
from persistence.store import Snapshot, Store

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
INTERVAL = 0.5
HANDOFF = 3.0

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(db_url: str, tmp_path: Path) -> Iterator[Callable[..., list[MemberProc]]]:
    with fleet_of(db_url, tmp_path, interval=INTERVAL, handoff=HANDOFF) as start:
        yield start


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with ConnectionPool(db_url, min_size=1, max_size=2) as pool:
        yield Store(pool)


def texts_of(snap: Snapshot, thread: str) -> list[str]:
    """The user messages of ``thread`` in a stored snapshot, read through the demo graph, as its next
    turn builds on them (see ``settled_values``)."""
    mem = InMemorySaver(serde=JsonPlusSerializer())
    for tid, namespaces in snap.storage.items():
        mem.storage[tid].update(namespaces)
    mem.writes.update(snap.writes)
    mem.blobs = snap.blobs  # a Blobs: decodes what the saver keeps compressed
    values = settled_values(build_graph(mem, OfflineResponder()), thread)
    return [m.content for m in values.get("messages", []) if isinstance(m, HumanMessage)]


def _rows(snap: Snapshot) -> tuple:
    return (
        {t: {ns: dict(c) for ns, c in n.items()} for t, n in snap.storage.items()},
        {k: dict(v) for k, v in snap.writes.items()},
        dict(snap.blobs),
    )


def _report(name: str, figures: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"fleet_{name}.json").write_text(json.dumps(figures, indent=2, default=str))


def test_three_members_random_routing_every_turn_once_in_order(fleet, store: Store) -> None:
    members = fleet(3)
    threads = [f"t{i}" for i in range(30)]
    driver = Driver(members, threads, seed=11, workers=4)
    t0 = time.monotonic()
    driver.run(turns_per_thread=4)
    elapsed = time.monotonic() - t0
    stop_all(members)
    snap = store.load()
    for thread in threads:
        assert texts_of(snap, thread) == [t.text for t in driver.sent(thread)], thread
    moves = sum(
        1
        for thread in threads
        for a, b in zip(driver.sent(thread), driver.sent(thread)[1:], strict=False)
        if a.member != b.member
    )
    assert moves >= 40, "random routing should move most threads between members"
    _report("random_routing", {"turns": 120, "handoffs": moves, "busy_retries": driver.retries, "seconds": elapsed})


def test_a_member_killed_midway_loses_at_most_one_interval(fleet, store: Store) -> None:
    members = fleet(3)
    victim = members[0]
    threads = [f"k{i}" for i in range(30)]
    driver = Driver(members, threads, seed=7, workers=4)
    killed: dict[str, float] = {}

    def on_progress(done: int) -> None:
        if done >= 60 and not killed:
            killed["t"] = time.time()
            victim.kill()

    driver.run(turns_per_thread=4, on_progress=on_progress)
    stop_all(members)
    t_kill = killed["t"]
    snap = store.load()
    lost = []
    for thread in threads:
        sent = driver.sent(thread)
        stored = texts_of(snap, thread)
        # in order, no duplicate, nothing that was not sent
        assert stored == [t.text for t in sent if t.text in stored], (thread, stored)
        assert len(stored) == len(set(stored))
        for turn in sent:
            if turn.text in stored or turn.outcome == "uncertain":
                continue
            lost.append(turn)
            assert turn.member == victim.instance_id, f"a turn served by a live member was lost: {turn}"
            assert turn.finished is not None and turn.finished > t_kill - INTERVAL - 1.0, (
                f"a turn finished {t_kill - turn.finished:.2f} s before the kill was lost (interval {INTERVAL} s)"
            )
    # the victim's threads moved at once: the first turn on each after the kill did not wait for a handoff
    firsts = {}
    for turn in sorted(driver.log, key=lambda t: t.started):
        if turn.started > t_kill and turn.outcome == "ok" and turn.thread not in firsts:
            firsts[turn.thread] = turn.finished - turn.started
    assert firsts and max(firsts.values()) < HANDOFF, firsts
    _report(
        "kill_9",
        {
            "lost_turns": len(lost),
            "uncertain_turns": sum(1 for t in driver.log if t.outcome == "uncertain"),
            "slowest_first_turn_after_kill_s": round(max(firsts.values()), 3),
        },
    )


def test_a_frozen_member_keeps_its_thread_until_it_thaws(fleet, store: Store) -> None:
    a, b = fleet(2, handoff=1.0)
    assert a.post("/turn", {"thread": "cold", "text": "note cold 0"}).status_code == 200
    a.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        busy = b.post("/turn", {"thread": "cold", "text": "note cold 1"})
        waited = time.monotonic() - t0
        assert busy.status_code == 409, busy.text
        assert busy.json()["owner"] == a.instance_id and f"member {a.instance_id}" in busy.json()["error"]
        assert 0.9 <= waited < 10
        # the other threads are served meanwhile
        assert b.post("/turn", {"thread": "other", "text": "note other 0"}).status_code == 200
    finally:
        a.signal(signal.SIGCONT)
    deadline = time.monotonic() + 20
    while True:
        reply = b.post("/turn", {"thread": "cold", "text": "note cold 1"})
        if reply.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.status_code == 200, reply.text
    stop_all([a, b])
    assert texts_of(store.load(), "cold") == ["note cold 0", "note cold 1"]


def test_fencing_a_member_that_lost_its_thread_cannot_overwrite_the_new_owner(fleet, store: Store, db_url: str) -> None:
    a = fleet(1, interval="none")[0]
    b = fleet(1, interval=0.2)[0]
    assert a.post("/turn", {"thread": "fenced", "text": "note fenced 0"}).status_code == 200
    assert a.post("/backup").json()["generation"] is not None
    assert a.post("/turn", {"thread": "fenced", "text": "note fenced 1"}).status_code == 200  # pending
    a.signal(signal.SIGSTOP)
    try:
        # cut the frozen member off: its lease can no longer be renewed, so it counts as dead once the
        # lease has run out
        with psycopg.connect(db_url, autocommit=True) as conn:
            pids = [
                r[0]
                for r in conn.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = %s::oid",
                    (a.instance_id,),
                ).fetchall()
            ]
            assert pids, "the member's liveness lock was not found"
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 20
        while (reply := b.post("/turn", {"thread": "fenced", "text": "note fenced 2"})).status_code == 409:
            assert time.monotonic() < deadline, reply.text
        assert reply.status_code == 200, reply.text
        assert b.post("/backup").status_code == 200
    finally:
        a.signal(signal.SIGCONT)
    refused = a.post("/backup").json()  # the stale change of the frozen member
    assert refused["error"] is None
    assert texts_of(store.load(), "fenced") == ["note fenced 0", "note fenced 2"]
    deadline = time.monotonic() + 10
    while "fenced" not in a.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = a.log_text()
    assert "ERROR" in log and "'fenced'" in log and "dropped it from memory" in log, log[-2000:]
    # the thread is whole wherever it is asked for next, and the old owner takes it over cleanly
    assert a.texts("fenced") == ["note fenced 0", "note fenced 2"]
    stop_all([a, b])
    assert texts_of(store.load(), "fenced") == ["note fenced 0", "note fenced 2"]


def test_restores_while_members_serve_traffic(fleet, store: Store, db_url: str) -> None:
    members = fleet(3)
    threads = [f"r{i}" for i in range(12)]
    driver = Driver(members, threads, seed=5, workers=3)
    stop = threading.Event()
    count = {"n": 0}

    def progress(done: int) -> None:
        count["n"] = done

    runner = threading.Thread(target=driver.run, args=(10_000,), kwargs={"stop": stop, "on_progress": progress})
    runner.start()

    def wait_turns(n: int) -> None:
        deadline = time.monotonic() + 60
        target = count["n"] + n
        while count["n"] < target and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.05)

    try:
        wait_turns(30)
        for m in members:
            assert m.post("/backup").status_code == 200
        g = store.latest_generation()
        at_g = store.load(g)
        wait_turns(20)
        # one thread, through one member, while the others keep serving
        one = members[1].post("/restore", {"generation": g, "thread": "r0"}).json()
        assert _rows(store.load(one["generation"], "r0")) == _rows(store.load(g, "r0"))
        wait_turns(15)
        # every thread, through another member
        restore_began = time.time()
        result = members[2].post("/restore", {"generation": g}).json()
        assert result["restored_from"] == g and result["undo_generation"] is not None
        assert _rows(store.load(result["generation"])) == _rows(at_g)
        undone_state = store.load(result["undo_generation"])
        wait_turns(15)
    finally:
        stop.set()
        runner.join(timeout=120)
    stop_all(members)
    final = store.load()
    for thread in threads:
        then = texts_of(at_g, thread)
        now = texts_of(final, thread)
        assert now[: len(then)] == then, (thread, then, now)
        # a turn overtaken by the restore is refused (ThreadRestored) and sent again: it may be in both
        resent = {t.text for t in driver.sent(thread) if t.started >= restore_began}
        rolled_back = set(texts_of(undone_state, thread)) - set(then) - resent
        assert not rolled_back & set(now), f"{thread}: a member served its cache from before the restore"
    # undo works: the state before the restore comes back exactly
    saver = HybridSaver.from_url(db_url, backup_interval=None, listen=False)
    try:
        undo = saver.restore(result["undo_generation"])
        assert _rows(store.load(undo.generation)) == _rows(undone_state)
    finally:
        saver.close()


def test_a_member_joining_a_live_fleet_takes_no_threads_at_start(open_saver: Callable[..., HybridSaver]) -> None:
    """Members without a budget (the workers of one app): one alone loads the store; one that joins
    while another lives loads nothing, not even the threads nobody holds, and claims each when used."""
    writer = open_saver()
    graph = build_graph(writer, OfflineResponder())
    for i in range(20):
        graph.invoke({"messages": [HumanMessage(f"my name is N{i}")]}, {"configurable": {"thread_id": f"w{i}"}})
    writer.close()
    first = open_saver()
    assert first.stats().resident_threads == 20
    first.release_threads([f"w{i}" for i in range(10)])  # free: no member holds them
    assert first.stats().resident_threads == 10
    second = open_saver()
    assert second.stats().resident_threads == 0
    other = build_graph(second, OfflineResponder())
    for thread, held_by_first in (("w3", 10), ("w15", 9)):
        values = other.get_state({"configurable": {"thread_id": thread}}).values
        assert [m.content for m in values["messages"] if isinstance(m, HumanMessage)] == [f"my name is N{thread[1:]}"]
        assert first.stats().resident_threads == held_by_first
    assert second.stats().resident_threads == 2


def test_a_handoff_passes_the_claim_made_unless_a_restore_of_everything_holds_the_store(
    open_saver: Callable[..., HybridSaver], db_url: str
) -> None:
    """The holder passes a thread to the asker with the asker's claim made, so the asker loads it
    without claiming again; while a restore of every thread holds the store, the holder passes the
    thread but no token, and the asker claims it itself, at the gate that waits for the restore."""
    a, b = open_saver(), open_saver()
    first = put_checkpoint(a, "t", {"m": "one"})
    claims: list[list[str]] = []
    inner = b.membership.claim

    def counted(thread_ids, **kwargs):  # type: ignore[no-untyped-def]
        claims.append(list(thread_ids))
        return inner(thread_ids, **kwargs)

    b.membership.claim = counted  # type: ignore[method-assign]
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    assert b.get_tuple(config).checkpoint["id"] == first  # type: ignore[union-attr]
    assert claims == [["t"]]  # refused (a held it), then a's hand-over made the claim
    token = b.cache.entries["t"].token
    assert b.membership.owned() == {"t": token}
    second = put_checkpoint(b, "t", {"m": "two"}, parent=first, step=1)
    run = b.backup()
    assert run.ok and run.generation is not None  # the store's fencing takes the handed-over token
    assert b.store.load_threads(["t"]).storage["t"][""].keys() == {first, second}

    # b hands it back while a restore of every thread holds the restore lock: the thread passes to
    # a (no other claim can take it in between), with no token
    assert token is not None
    b.release_threads(["t"])
    b.membership.claim(["t"])
    token = b.membership.owned()["t"]
    with psycopg.connect(db_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(hashtext(%s))", (restore_lock_key(b.store.schema),))
        assert b.membership.hand_over([("t", token)], a.instance_id) == {}
        assert a.membership.owners_of(["t"]) == {"t": a.instance_id}
        lock.execute("SELECT pg_advisory_unlock(hashtext(%s))", (restore_lock_key(b.store.schema),))
    assert b.membership.owned() == {}
    # once the lock is free, the same hand-over gives the token of the asker's row
    passed = a.membership.owned()["t"]
    handed = a.membership.hand_over([("t", passed)], b.instance_id)
    assert handed == b.membership.owned() and handed["t"] > passed
