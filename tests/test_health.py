"""``saver.health()`` and the FastAPI example's probes (issue 19), on a PostgreSQL server of the test's own
that it stops and starts: a member alone goes degraded while the database is down (it keeps serving from
memory, so it stays ready) and back to ok when it returns; a member of a fleet whose lease lapses goes
down (it refuses requests: not ready) and comes back; a closed saver is down."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.app import ExampleApp
from helpers.pg import PrivateServer, stoppable_server
from langchain_core.messages import AIMessage
from langgraph.graph import START, MessagesState, StateGraph

from persistence import HybridSaver
from persistence.ops.health import Health

INTERVAL = 0.2


server, url, savers = stoppable_server("hs-health-")


def _graph(saver: HybridSaver):
    def reply(state: MessagesState) -> dict:
        return {"messages": [AIMessage(content=f"echo {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


def _until(check: Callable[[], Health], wanted: Callable[[Health], bool], timeout: float, what: str) -> Health:
    deadline = time.monotonic() + timeout
    while True:
        health = check()
        if wanted(health):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:g} s: {health}")
        time.sleep(0.05)


def test_health_goes_degraded_while_postgresql_is_down_and_back(
    server: PrivateServer, url: str, savers: list[HybridSaver]
) -> None:
    saver = HybridSaver.from_url(url, backup_interval=INTERVAL, handle_signals=False)
    savers.append(saver)
    graph = _graph(saver)
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"messages": [("user", "hello")]}, config)
    saver.backup()
    health = saver.health()
    assert health.status == "ok" and health.reasons == (), health
    assert health.ready and health.database_reachable and health.attached and health.lease_valid
    assert health.backup_interval == INTERVAL and health.lag_seconds == 0.0 and health.memory_budget is None
    assert health.to_dict()["ready"] is True and isinstance(health.to_dict()["reasons"], list)

    server.stop()
    try:
        # alone in the fleet it keeps serving what it holds: the turn succeeds and stays pending
        graph.invoke({"messages": [("user", "during the outage")]}, config)
        health = _until(saver.health, lambda h: h.status != "ok", 5, "degraded")
        assert health.status == "degraded" and health.ready, health
        assert not health.database_reachable
        assert any("PostgreSQL does not answer" in r for r in health.reasons), health.reasons
        # three intervals later the lag is a reason of its own (a crash now would lose the turn)
        health = _until(saver.health, lambda h: any("Backup lag" in r for r in h.reasons), 5, "a lag reason")
        assert health.pending > 0 and health.lag_seconds > 3 * INTERVAL
        assert any("failed" in r for r in health.reasons), health.reasons
    finally:
        server.start()
    health = _until(saver.health, lambda h: h.status == "ok", 15, "ok again")
    assert health.database_reachable and health.pending == 0 and health.reasons == ()
    assert [m.content for m in graph.get_state(config).values["messages"]][-1] == "echo during the outage"

    saver.close()
    health = saver.health()
    assert health.status == "down" and not health.ready
    assert health.reasons and "closed" in health.reasons[0]


def test_a_member_whose_lease_lapses_among_others_is_down_until_it_renews(
    server: PrivateServer, url: str, savers: list[HybridSaver]
) -> None:
    first = HybridSaver.from_url(url, backup_interval=INTERVAL, lease_seconds=1.0, handle_signals=False)
    savers.append(first)
    second = HybridSaver.from_url(url, backup_interval=INTERVAL, lease_seconds=1.0, handle_signals=False)
    savers.append(second)
    assert second.health().status == "ok"
    server.stop()
    try:
        health = _until(second.health, lambda h: h.status == "down", 5, "down")
        assert not health.ready and not health.lease_valid and health.lease_remaining_seconds == 0.0
        assert any("lease" in r and "refuses" in r for r in health.reasons), health.reasons
        assert any("PostgreSQL does not answer" in r for r in health.reasons), health.reasons
    finally:
        server.start()
    health = _until(second.health, lambda h: h.status == "ok", 15, "ok again")
    assert health.lease_valid and health.ready


def test_memory_over_the_budget_is_degraded(url: str, savers: list[HybridSaver], server: PrivateServer) -> None:
    saver = HybridSaver.from_url(url, backup_interval=None, memory_budget=64 * 1024, handle_signals=False)
    savers.append(saver)
    graph = _graph(saver)
    big = {"configurable": {"thread_id": "big"}}
    graph.invoke({"messages": [("user", "hello")]}, big)
    server.stop()
    try:
        # nothing can be backed up, so changed threads cannot be evicted: memory grows past the budget
        for _ in range(40):
            graph.invoke({"messages": [("user", "x" * 4000)]}, big)
            if saver.stats().resident_bytes > 64 * 1024:
                break
        health = saver.health()
        assert health.status == "degraded" and health.resident_bytes > health.memory_budget  # type: ignore[operator]
        assert any("over the budget" in r for r in health.reasons), health.reasons
    finally:
        server.start()
    # backed up, the thread is clean: memory may be evicted again
    saver.backup()
    health = _until(saver.health, lambda h: h.status == "ok", 15, "ok again")
    assert saver.stats().dirty_bytes == 0


@pytest.mark.slow
def test_the_readiness_endpoint_follows_the_health(server: PrivateServer, url: str, tmp_path: Path) -> None:
    app = ExampleApp(url, tmp_path / "uvicorn.log", BACKUP_INTERVAL=str(INTERVAL))
    try:
        app.start()
        app.wait()
        assert app.turn("c1", "hello").status_code == 200
        r = app.ready()
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        server.stop()
        try:
            deadline = time.monotonic() + 5
            while (r := app.ready()).json()["status"] == "ok" and time.monotonic() < deadline:
                time.sleep(0.05)
            # degraded is still ready: the worker serves the threads it holds (and nobody else can)
            assert r.status_code == 200 and r.json()["status"] == "degraded", r.text
            assert r.json()["database_reachable"] is False and r.json()["ready"] is True
            assert app.turn("c1", "still here").json()["reply"] == "turn 2: still here"
            live = app.ready()
            assert live.status_code == 200
        finally:
            server.start()
        deadline = time.monotonic() + 15
        while (r := app.ready()).json()["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        assert r.json()["pending"] == 0
    finally:
        app.stop()
        app.kill()
    assert "Traceback" not in app.text(), app.text()[-4000:]
