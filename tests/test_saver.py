"""HybridSaver against a real PostgreSQL (15 and 18): concurrency, scheduling, membership, offline start, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from histories import put_checkpoint, state_of
from langgraph.checkpoint.memory import InMemorySaver

from agent import build_graph, chat_turn
from persistence import DatabaseUnavailable, HybridSaver
from persistence.ops.scheduler import check_interval

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.all_postgres


def test_eight_threads_of_real_graphs_while_backups_run_every_50ms(
    open_saver: Callable[..., HybridSaver],
) -> None:
    saver = open_saver(backup_interval=0.05)
    graphs = [build_graph(saver) for _ in range(2)]  # several graphs share one saver
    errors: list[BaseException] = []

    last: dict[int, int] = {}

    def scheduled() -> list:
        return [r for r in saver.history if r.trigger == "scheduled"]

    def chat(worker: int) -> None:
        try:
            graph = graphs[worker % 2]
            # 12 turns each, and on until backups ran at least three times meanwhile (a loaded machine
            # may chat faster than the scheduler's first runs)
            for turn in range(400):
                if turn >= 12 and len(scheduled()) >= 3:
                    break
                chat_turn(graph, f"w{worker}", f"my name is N{worker}-{turn}")
                last[worker] = turn
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=chat, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    runs = scheduled()
    assert len(runs) >= 3 and all(r.ok for r in runs), runs
    expected = state_of(saver)
    saver.close()
    again = open_saver()
    assert state_of(again) == expected
    graph = build_graph(again)
    for worker in range(8):
        assert f"N{worker}-{last[worker]}." in chat_turn(graph, f"w{worker}", "what is my name?")


def test_manual_backup_and_scheduled_runs_never_overlap(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(backup_interval=0.02)
    active = []
    overlap = []
    original = saver.store.write_generation

    def watched(*args, **kwargs):
        active.append(1)
        if len(active) > 1:
            overlap.append(True)
        try:
            time.sleep(0.005)
            return original(*args, **kwargs)
        finally:
            active.pop()

    saver.store.write_generation = watched  # observe, not replace: the real write still happens
    for i in range(30):
        put_checkpoint(saver, "t", {"m": i}, step=i)
        saver.backup()
    assert not overlap
    assert saver.stats().pending == 0


def test_interval_change_pause_and_resume(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(backup_interval=3600)
    sched = saver.scheduler
    before = sched.next_run_time
    saver.set_interval(0.05)
    assert sched.next_run_time < before
    put_checkpoint(saver, "t", {"m": 1})
    deadline = time.time() + 5
    while saver.stats().pending and time.time() < deadline:
        time.sleep(0.02)
    assert saver.stats().pending == 0
    saver.pause()
    assert sched.paused and sched.next_run_time is None
    put_checkpoint(saver, "t", {"m": 2}, step=1)
    time.sleep(0.3)
    assert saver.stats().pending > 0 and saver.stats().lag_seconds > 0.2
    saver.resume()
    deadline = time.time() + 5
    while saver.stats().pending and time.time() < deadline:
        time.sleep(0.02)
    assert saver.stats().pending == 0 and saver.stats().lag_seconds == 0
    for bad in (0, -1, float("nan"), 10**9, "5"):
        with pytest.raises(ValueError, match="interval"):
            check_interval(bad)


def test_interval_and_pause_of_a_named_saver_survive_a_restart(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(backup_interval=30, name="app")
    saver.set_interval(10)
    saver.pause()
    saver.close()
    again = open_saver(backup_interval=30, name="app")
    assert again.scheduler.interval == 10 and again.scheduler.paused
    again.resume()
    again.close()
    third = open_saver(backup_interval=30, name="app")
    assert third.scheduler.interval == 10 and not third.scheduler.paused
    # settings are kept per name: a saver without one keeps what its code says
    assert open_saver(backup_interval=30).scheduler.interval == 30


def test_a_second_saver_joins_the_store_as_a_member(open_saver: Callable[..., HybridSaver]) -> None:
    first = open_saver()
    second = open_saver()
    assert first.instance_id != second.instance_id
    live = {m.instance_id: m for m in first.members()}
    assert set(live) == {first.instance_id, second.instance_id}
    assert all(m.alive and m.pid == os.getpid() for m in live.values())
    other_schema = open_saver(schema="second_store")
    assert other_schema.store.schema == "second_store" and len(other_schema.members()) == 1
    second.close()
    assert [m.instance_id for m in first.members()] == [first.instance_id]


def test_runs_are_logged_with_counts_and_stats(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    assert saver.stats().threads == 0
    saver.get_tuple({"configurable": {"thread_id": "unknown"}})  # reads never create threads
    assert saver.stats().threads == 0 and saver.stats().pending == 0
    parent = put_checkpoint(saver, "a", {"m": "x" * 1000})
    put_checkpoint(saver, "a", {"m": "y"}, parent=parent, step=1)
    put_checkpoint(saver, "b", {"m": "z"})
    stats = saver.stats()
    assert (stats.threads, stats.checkpoints) == (2, 3) and stats.pending == 6
    run = saver.backup()
    assert run.ok and run.rows == 6 and run.bytes > 1000
    runs = saver.store.runs.runs()
    assert runs[0]["generation"] == run.generation
    assert (runs[0]["threads"], runs[0]["checkpoints"]) == (2, 3)
    gens = saver.generations()
    assert gens[0].generation == run.generation and gens[0].checkpoints == 3 and gens[0].taken_at
    clean = saver.backup()
    assert clean.ok and clean.empty and clean.rows == 0 and clean.generation is None
    assert saver.generations()[0].generation == run.generation  # nothing to back up: no empty generation


def test_offline_start_refuses_unknown_threads_and_attaches_later(
    open_saver: Callable[..., HybridSaver], db_url: str
) -> None:
    seed = open_saver()
    put_checkpoint(seed, "old", {"m": "stored"})
    seed.close()
    # the role exists only after the "outage": connections fail until it is created
    base, _, query = db_url.partition("?")
    outage_url = db_url.replace("postgres:@", "late_role:@", 1)
    with pytest.raises(DatabaseUnavailable, match="late_role"):
        HybridSaver.from_url(outage_url, backup_interval=None)
    saver = HybridSaver.from_url(outage_url, backup_interval=None, allow_offline=True, listen=False)
    try:
        assert not saver.attached and "late_role" in saver.attach_error
        # offline it cannot tell a new thread from a stored one: it serves none (never a fork)
        with pytest.raises(DatabaseUnavailable, match="cannot be reached"):
            put_checkpoint(saver, "new", {"m": "offline"})
        failed = saver.backup()
        assert not failed.ok and saver.stats().pending == 0
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("CREATE ROLE late_role LOGIN SUPERUSER")
        run = saver.backup()
        assert run.ok and saver.attached, run
        put_checkpoint(saver, "new", {"m": "online"})
        assert {"old", "new"} <= set(saver.thread_ids())
        runs = saver.store.runs.runs()
        assert [r["error"] is None for r in runs[:2]] == [True, False]  # the failed run was logged later
    finally:
        saver.close()
    again = open_saver()
    assert {"old", "new"} <= set(again.thread_ids())


def test_close_is_idempotent_and_use_after_close_is_refused(open_saver: Callable[..., HybridSaver]) -> None:
    from persistence import SaverClosed

    saver = open_saver()
    put_checkpoint(saver, "t", {"m": 1})
    saver.close()
    saver.close()
    with pytest.raises(SaverClosed, match="closed"):
        put_checkpoint(saver, "t", {"m": 2})
    with pytest.raises(SaverClosed):
        saver.backup()
    again = open_saver()
    assert again.thread_ids() == ["t"]


def test_hybrid_reads_match_inmemorysaver(open_saver: Callable[..., HybridSaver]) -> None:
    hybrid, memory = open_saver(), InMemorySaver()
    for saver in (hybrid, memory):
        graph = build_graph(saver)
        chat_turn(graph, "t", "my name is Ana")
        chat_turn(graph, "t", "what is my name?")
    config = {"configurable": {"thread_id": "t"}}
    h = [t.checkpoint["channel_values"] for t in hybrid.list(config)]
    m = [t.checkpoint["channel_values"] for t in memory.list(config)]
    assert [len(v.get("messages", [])) for v in h] == [len(v.get("messages", [])) for v in m]
    assert len(list(hybrid.list(config, limit=2))) == 2
    assert len(list(hybrid.list(None))) == len(list(memory.list(None)))


def _run_child(url: str, script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYBRID_SAVER_NO_SIGNALS": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", script, url, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


CHILD = """
import sys, time
from persistence import HybridSaver
from agent import build_graph, chat_turn
saver = HybridSaver.from_url(sys.argv[1], backup_interval=float(sys.argv[2]))
graph = build_graph(saver)
chat_turn(graph, "chat", "my name is Ana")
saver.backup()
chat_turn(graph, "chat", "I live in Lisbon")
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_chat_survives_a_process_restart(how: str, db_url: str, open_saver: Callable[..., HybridSaver]) -> None:
    child = _run_child(db_url, CHILD, "3600")
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        child.kill() if how == "kill -9" else child.terminate()
        child.wait(timeout=30)
    finally:
        child.kill()
    saver = open_saver()
    graph = build_graph(saver)
    assert "Ana" in chat_turn(graph, "chat", "what is my name?")
    where = chat_turn(graph, "chat", "where do I live?")
    if how == "kill -9":
        assert "Lisbon" not in where  # changed after the last generation: the documented loss
        assert child.returncode == -9
    else:
        assert "Lisbon" in where  # a clean stop takes a final backup
        assert child.returncode == 128 + 15


def test_cli_against_a_live_saver(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver(backup_interval=3600)
    chat_turn(build_graph(saver), "cli", "my name is Ana")
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "persistence", *args], env=env, capture_output=True, text=True, timeout=120
        )

    status = cli("status")
    assert status.returncode == 0 and f":{os.getpid()}" in status.stdout and "1 live" in status.stdout, status.stdout
    members = cli("members")
    assert members.returncode == 0 and f"{saver.instance_id}  alive" in members.stdout, members.stdout
    backup = cli("backup")
    assert backup.returncode == 0 and "live saver wrote generation" in backup.stdout, backup.stderr
    assert saver.stats().pending == 0
    gen = saver.generations()[0].generation
    chat_turn(build_graph(saver), "cli", "my name is Bo")
    restore = cli("restore", str(gen), "--thread", "cli")
    assert restore.returncode == 0, restore.stderr
    assert "Ana" in chat_turn(build_graph(saver), "cli", "what is my name?")
    export = cli("export", "cli")
    assert export.returncode == 0 and '"thread_id": "cli"' in export.stdout
    unknown = cli("restore", "999")
    assert unknown.returncode == 1 and "Generation 999 does not exist" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    nobody = cli("backup", "--member", "424242")
    assert nobody.returncode == 1 and "Member 424242 is not a live member" in nobody.stderr
    verify = cli("verify", str(gen))
    assert verify.returncode == 0 and "all intact" in verify.stdout, verify.stdout


def test_a_shallow_copy_shares_pending_changes_and_close(open_saver: Callable[..., HybridSaver]) -> None:
    """LANGGRAPH_STRICT_MSGPACK graphs use copy.copy(saver): the copy must stay part of it."""
    import copy

    from persistence import SaverClosed

    saver = open_saver()
    clone = copy.copy(saver)
    put_checkpoint(clone, "t", {"m": 1})
    assert saver.backup().rows > 0
    put_checkpoint(clone, "t", {"m": 2}, step=1)
    assert saver.stats().pending > 0
    saver.close()
    with pytest.raises(SaverClosed):
        put_checkpoint(clone, "t", {"m": 3}, step=2)


def test_a_run_overtaken_by_a_restore_cannot_write_over_it(open_saver: Callable[..., HybridSaver]) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    from agent import thread_config
    from persistence import ThreadRestored

    saver = open_saver()
    graph = build_graph(saver)
    chat_turn(graph, "t", "my name is Ana")
    kept = saver.backup().generation
    assert kept is not None
    chat_turn(graph, "t", "my name is Bob")
    in_flight = saver.get_tuple(thread_config("t"))  # what a run holds when the restore starts
    assert in_flight is not None
    saver.restore(kept)
    restored = saver.get_tuple(thread_config("t"))
    with pytest.raises(ThreadRestored, match="restored while this run was in flight"):
        saver.put(in_flight.config, empty_checkpoint(), {"source": "loop", "step": 9}, {})
    with pytest.raises(ThreadRestored):
        saver.put_writes(in_flight.config, [("messages", [])], "task-1")
    assert saver.get_tuple(thread_config("t")) == restored  # nothing written over the restored state
    # a new run starts from the restored state and is served as usual
    assert chat_turn(graph, "t", "what is my name?") == "Your name is Ana."


async def test_aprune_delete_all_removes_the_threads_as_the_agent_server_asks(
    open_saver: Callable[..., HybridSaver],
) -> None:
    """LangGraph Agent Server's gRPC checkpointer path calls ``aprune(ids, strategy="delete_all")``."""
    saver = open_saver()
    put_checkpoint(saver, "gone", {"m": 1})
    put_checkpoint(saver, "kept", {"m": 2})
    await saver.aprune(["gone"], strategy="delete_all")
    assert saver.get_tuple({"configurable": {"thread_id": "gone"}}) is None
    assert saver.get_tuple({"configurable": {"thread_id": "kept"}}) is not None
    with pytest.raises(ValueError, match="delete_all"):
        await saver.aprune(["kept"], strategy="nosuch")
    saver.close()
    again = open_saver()
    assert again.thread_ids() == ["kept"]
