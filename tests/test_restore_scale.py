"""Restores at 10,000 threads from the Restore page (AppTest, real PostgreSQL): the one-thread picker is
searched and paged by PostgreSQL and reads only the picked thread's counts; restoring every thread
reports its phases in order and ends when the work ends; the dashboard holds no more threads after it.
Also the verification by block ranges (many ranges, damage found in any of them, on 18 and 15)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from streamlit.testing.v1 import AppTest

from agent import chat_turn, thread_config
from dashboard.runtime import get_runtime, reset_runtime
from persistence import CorruptBackup, HybridSaver
from persistence.ops.restore import PHASES
from persistence.store import upkeep
from persistence.store.schema import GENERATIONAL, RESTORE_COLUMNS

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
SCHEMA = "hybrid_saver"
THREADS = 10_000
# the page's bound (the brief of issue 17); the times are printed (pytest -s) and are far lower
PAGE_SECONDS = 1.0


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch, new_database: Callable[[], str], db_url: str) -> Iterator[AppTest]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("BACKUP_INTERVAL", "3600")
    monkeypatch.setenv("DASHBOARD_REFRESH", "60")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    reset_runtime()
    yield AppTest.from_file(APP, default_timeout=60)
    reset_runtime()


def copy_thread(url: str, source: str, count: int) -> int:
    """Commit a generation of ``count`` copies of thread ``source`` (``synth-00000``...), server-side, as a
    backup of them would write it (each copy has its own title and text). Returns the generation."""
    s = sql.Identifier(SCHEMA)
    with psycopg.connect(url) as conn:
        gen = conn.execute(sql.SQL("UPDATE {}.counter SET generation = generation + 1 RETURNING generation").format(s))
        generation = int(gen.fetchone()[0])  # type: ignore[index]
        conn.execute(
            sql.SQL("INSERT INTO {}.generations (generation, trigger, kind) VALUES (%s, 'manual', 'backup')").format(s),
            (generation,),
        )
        for table in GENERATIONAL:
            cols = [c for c in RESTORE_COLUMNS[table] if c != "thread_id"]
            values = [sql.Identifier(c) for c in cols]
            if table == "summaries":
                values = [
                    sql.SQL("'Synthetic ' || lpad(i::text, 5, '0')") if c == "title" else
                    sql.SQL("'hello from ' || i") if c == "content" else sql.Identifier(c)
                    for c in cols
                ]  # fmt: skip
            conn.execute(
                sql.SQL(
                    "INSERT INTO {s}.{t} (thread_id, {c}, added_gen) SELECT convert_to('synth-' || lpad(i::text, 5, "
                    "'0'), 'UTF8'), {v}, %s FROM {s}.{t}, generate_series(0, %s) AS i "
                    "WHERE thread_id = %s AND deleted_gen IS NULL"
                ).format(
                    s=s,
                    t=sql.Identifier(table),
                    c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    v=sql.SQL(", ").join(values),
                ),
                (generation, count - 1, source.encode()),
            )
        conn.execute(
            sql.SQL(
                "UPDATE {s}.generations SET (threads, checkpoints) = (SELECT count(DISTINCT thread_id), count(*) "
                "FROM {s}.checkpoints WHERE deleted_gen IS NULL) WHERE generation = %s"
            ).format(s=s),
            (generation,),
        )
    return generation


def timed_run(at: AppTest) -> float:
    started = time.perf_counter()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return time.perf_counter() - started


def texts(at: AppTest) -> str:
    parts = [str(e.value) for kind in ("markdown", "caption", "error", "warning", "success") for e in getattr(at, kind)]
    return "\n".join(parts)


def test_restore_page_with_10k_threads(dashboard: AppTest, db_url: str) -> None:
    at = dashboard.run()
    rt = get_runtime()
    chat_turn(rt.graph, "template", "my name is Ana")
    chat_turn(rt.graph, "template", "I live in Lisbon")
    first = rt.saver.backup().generation
    started = time.perf_counter()
    copied = copy_thread(db_url, "template", THREADS)
    print(f"\n{THREADS:,} threads copied server-side in {time.perf_counter() - started:.1f}s")
    chat_turn(rt.graph, "synth-04242", "my name is Bob")  # a cold thread: loaded, then written
    rt.saver.backup()
    assert "Bob" in rt.graph.get_state(thread_config("synth-04242")).values["messages"][-1].content

    at.switch_page("pages/restore.py")
    timed_run(at)  # the first run of a page pays for its imports
    at.selectbox(key="restore_generation").select(copied)
    all_threads = timed_run(at)  # the preview of every thread
    assert {m.label: m.value for m in at.metric}["Threads changed"] == "1"

    calls: list[tuple] = []
    counts = rt.saver.store.thread_counts
    rt.saver.store.thread_counts = lambda *a, **k: calls.append(a) or counts(*a, **k)  # type: ignore[method-assign]
    try:
        at.radio(key="restore_scope").set_value("One thread")
        picker = timed_run(at)
        assert len(at.selectbox(key="restore_thread").options) == 100
        assert f"{THREADS + 1:,} threads in generation {copied}" in texts(at)
        at.text_input(key="restore_thread_query").input("04242")
        searched = timed_run(at)
        assert at.selectbox(key="restore_thread").options == ["Synthetic 04242 · synth-04242"]
        at.selectbox(key="restore_thread").select("synth-04242")
        picked = timed_run(at)
        # no list of every thread's counts: only the picked thread's (then and now)
        assert calls and all(len(a) == 2 and a[1] == "synth-04242" for a in calls), calls
    finally:
        del rt.saver.store.thread_counts
    assert {m.label: m.value for m in at.metric}["Threads changed"] == "1"
    print(
        f"restore page at {THREADS:,} threads: all threads {all_threads:.2f}s, one-thread picker {picker:.2f}s, "
        f"search {searched:.2f}s, pick {picked:.2f}s"
    )
    for seconds in (all_threads, picker, searched, picked):
        assert seconds < PAGE_SECONDS

    at.button(key="restore").click().run()
    at.button(key="confirm-restore").click().run()
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["restore_result"]["result"]
    assert result.thread_id == "synth-04242" and result.restored_from == copied
    assert not at.session_state["restore_result"]["mismatched"]
    messages = rt.graph.get_state(thread_config("synth-04242")).values["messages"]
    assert messages[-1].content.startswith("Got it") and "Lisbon" in messages[-2].content  # back before "Bob"
    generation = rt.saver.generations(1)[0]
    assert (generation.threads, generation.checkpoints) == (
        THREADS + 1,
        rt.saver.store.generations(generation=copied)[0].checkpoints,
    )

    # every thread, back to before the copies: 10,000 threads removed, so the number is typed
    held = rt.saver.stats().resident_threads
    at.radio(key="restore_scope").set_value("All threads")
    at.selectbox(key="restore_generation").select(first).run()
    assert "removes 10,000 of 10,001 threads" in texts(at)
    at.button(key="restore").click().run()
    at.text_input(key="restore_typed").input(str(first))
    started = time.perf_counter()
    at.button(key="confirm-restore").click().run()
    took = time.perf_counter() - started
    assert not at.exception, [e.value for e in at.exception]
    done = at.session_state["restore_result"]
    assert done["result"].restored_from == first and rt.saver.store.live_thread_ids() == ["template"]
    order = [name for name, _share in PHASES]
    seen = [p.split(":", 1)[0] for p in done["phases"]]
    assert seen[-1] == "done" and seen.count("done") == 1
    assert [order.index(p) for p in seen[:-1]] == sorted(order.index(p) for p in seen[:-1]), seen
    assert {"checking", "handing over", "rewriting"} <= set(seen)
    assert rt.saver.stats().resident_threads <= held
    print(f"restore of every thread ({THREADS:,} removed) from the page: {took:.2f}s")


# -- verification by block ranges --------------------------------------------------------------------


@pytest.mark.all_postgres  # checksums are checked server-side on 18, here on 15
def test_verify_by_block_ranges_finds_damage_in_any_range(
    open_saver: Callable[..., HybridSaver], db_url: str, monkeypatch: pytest.MonkeyPatch, pg_version: str
) -> None:
    saver = open_saver()
    from langgraph.checkpoint.base import empty_checkpoint

    for i in range(60):
        for step in range(3):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": [f"message {i}/{step} " + "x" * 200]}
            checkpoint["channel_versions"] = {"messages": step + 1}
            config = {"configurable": {"thread_id": f"t{i:02d}", "checkpoint_ns": ""}}
            saver.put(config, checkpoint, {"step": step}, {"messages": step + 1})
    generation = saver.backup().generation
    assert generation is not None
    monkeypatch.setattr(upkeep, "VERIFY_BLOCKS", 1)  # before 18, a range per block: many on both connections
    fractions: list[float] = []
    clean = saver.store.upkeep.verify_generation(generation, progress=fractions.append)
    assert clean[1] == [] and clean[0] == saver.verify(generation).rows
    assert len(fractions) >= (3 if pg_version == "18" else 5)  # 18: a table per statement
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with psycopg.connect(db_url, autocommit=True) as conn:
        for tid in (b"t03", b"t57"):  # rows stored in different blocks
            conn.execute(
                "UPDATE hybrid_saver.blobs SET value = '\\xdeadbeef'::bytea WHERE thread_id = %s AND version = "
                "(SELECT version FROM hybrid_saver.blobs WHERE thread_id = %s ORDER BY version LIMIT 1)",
                (tid, tid),
            )
    checked, damaged = saver.store.upkeep.verify_generation(generation)
    assert checked == clean[0] and [t for t, _what in damaged] == ["t03", "t57"], damaged
    before = saver.generations(1)[0].generation
    with pytest.raises(CorruptBackup):
        saver.restore(generation)
    assert saver.generations(1)[0].generation == before  # refused: nothing written


def test_every_page_after_a_start_with_10k_threads(dashboard: AppTest, db_url: str) -> None:
    """A dashboard process starting on a store of 10,000 threads: the first run of every page (the
    dashboard's saver built for it: connect, join, no thread loaded) and the next one, under 1 s."""
    at = dashboard.run()
    rt = get_runtime()
    chat_turn(rt.graph, "template", "my name is Ana")
    rt.saver.backup()
    copy_thread(db_url, "template", THREADS)
    for page in ("pages/chat.py", "pages/threads.py", "pages/backups.py", "pages/restore.py"):
        at.switch_page(page)
        timed_run(at)  # the page's imports, once per process
    times: dict[str, tuple[float, float]] = {}
    for page in ("pages/chat.py", "pages/threads.py", "pages/backups.py", "pages/restore.py"):
        reset_runtime()  # a new start: the saver is built again by the page's first run
        fresh = AppTest.from_file(APP, default_timeout=60)
        fresh.switch_page(page)
        first = timed_run(fresh)
        times[page] = (first, timed_run(fresh))
        assert get_runtime().saver.stats().resident_threads == 0  # the start loaded nothing
    print(
        "\nafter a start at 10,000 threads: " + ", ".join(f"{p} {a:.2f}s then {b:.2f}s" for p, (a, b) in times.items())
    )
    for first, then in times.values():
        assert first < PAGE_SECONDS and then < PAGE_SECONDS
