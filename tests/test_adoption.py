"""Safe to adopt (issue 16): nothing in clear behind an encrypting serde, operator commands that cannot
surprise, a DBA-made schema, retention by time, log lines that fit, and an event loop never held.

Everything runs on the session's real PostgreSQL; the command line runs as a subprocess without a
terminal, as it does in scripts and CI jobs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from psycopg import sql

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import HybridSaver
from persistence.serde import EncryptedStore, encrypts, serde_from_env

ROOT = Path(__file__).resolve().parents[1]
KEY = "0123456789abcdef0123456789abcdef"
SECRET = "TOPSECRET-4111-1111-1111-1111"
_roles = itertools.count()


def _cli(
    url: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    full = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), **(env or {})}
    if env is None:
        full.pop("LANGGRAPH_AES_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "persistence", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%'")}


def _scan(url: str, schema: str, needle: str) -> dict[str, int]:
    """Rows of every table of ``schema`` whose text form holds ``needle`` (text, json and number columns)."""
    found: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,))
        ]
        assert len(tables) >= 12, tables
        for table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {s}.{t} AS r WHERE strpos(r::text, %s) > 0").format(
                    s=sql.Identifier(schema), t=sql.Identifier(table)
                ),
                (needle,),
            ).fetchone()
            if row and row[0]:
                found[table] = int(row[0])
    return found


def _bytes_scan(url: str, schema: str, needle: bytes) -> dict[str, int]:
    """Like :func:`_scan`, on every bytea column's raw bytes (a value stored as bytes, not as text)."""
    found: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND data_type = 'bytea'",
            (schema,),
        ).fetchall()
        for table, column in columns:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {s}.{t} WHERE position(%s IN {c}) > 0").format(
                    s=sql.Identifier(schema), t=sql.Identifier(table), c=sql.Identifier(column)
                ),
                (needle,),
            ).fetchone()
            if row and row[0]:
                found[f"{table}.{column}"] = int(row[0])
    return found


# -- encryption ----------------------------------------------------------------------------------


def test_encrypted_store_keeps_no_plaintext(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=KEY.encode())
    saver = open_saver(serde=serde)
    assert saver.encrypted and encrypts(serde)
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "secret-thread", f"my card is {SECRET}")
    chat_turn(graph, "secret-thread", "and remember it")
    assert saver.backup().ok
    # the planted secret is in memory, and nowhere in the store: not in a row, a summary or a run
    assert SECRET in str(graph.get_state({"configurable": {"thread_id": "secret-thread"}}).values)
    assert _scan(db_url, "hybrid_saver", SECRET) == {}
    assert _bytes_scan(db_url, "hybrid_saver", SECRET.encode()) == {}
    # the same conversation through a serde that does not encrypt is found: the scan can see it
    plain = open_saver(schema="plain")
    chat_turn(build_graph(plain, OfflineResponder()), "secret-thread", f"my card is {SECRET}")
    assert plain.backup().ok
    assert "summaries" in _scan(db_url, "plain", SECRET)
    assert _bytes_scan(db_url, "plain", SECRET.encode())


def test_encrypted_store_read_with_the_key(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver(serde=EncryptedSerializer.from_pycryptodome_aes(key=KEY.encode()))
    chat_turn(build_graph(saver, OfflineResponder()), "enc", f"note {SECRET}")
    assert saver.backup().ok
    saver.close()
    # without the key: the command says what to set, and prints nothing of the thread
    missing = _cli(db_url, "export", "enc")
    assert missing.returncode == 1, missing.stdout
    assert "encrypted" in missing.stderr and "LANGGRAPH_AES_KEY" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr and SECRET not in missing.stdout + missing.stderr
    # with the key, as LangGraph reads it
    found = _cli(db_url, "export", "enc", env={"LANGGRAPH_AES_KEY": KEY})
    assert found.returncode == 0, found.stderr
    assert SECRET in found.stdout
    wrong = _cli(db_url, "export", "enc", env={"LANGGRAPH_AES_KEY": "short"})
    assert wrong.returncode == 1 and "16, 24 or 32 bytes" in wrong.stderr, wrong.stderr
    # a saver without the key refuses the store at start instead of failing on a thread later
    with pytest.raises(EncryptedStore, match="LANGGRAPH_AES_KEY"):
        HybridSaver.from_url(db_url, backup_interval=None, listen=False, handle_signals=False)
    # the dashboard's serde comes from the same variable
    reader = open_saver(serde=serde_from_env({"LANGGRAPH_AES_KEY": KEY}))
    assert f"note {SECRET}" in str(
        build_graph(reader, OfflineResponder()).get_state({"configurable": {"thread_id": "enc"}}).values
    )


def test_encrypting_saver_clears_summaries_written_in_clear(
    open_saver: Callable[..., HybridSaver], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    plain = open_saver()
    chat_turn(build_graph(plain, OfflineResponder()), "old", f"said before encryption: {SECRET}")
    assert plain.backup().ok
    plain.close()
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM hybrid_saver.summaries WHERE content LIKE %s", (f"%{SECRET}%",)
        ).fetchone()[0]
    with caplog.at_level(logging.WARNING, logger="persistence"):
        open_saver(serde=EncryptedSerializer.from_pycryptodome_aes(key=KEY.encode()))
    with psycopg.connect(db_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM hybrid_saver.summaries WHERE content IS NOT NULL OR title IS NOT NULL"
        )
        assert left.fetchone()[0] == 0
    assert any("cleared the title and text of 1 thread summary" in r.getMessage() for r in caplog.records)


# -- the command line ----------------------------------------------------------------------------


def test_restore_of_every_thread_needs_confirmation(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver()
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "a", "my name is Ana")
    first = saver.backup().generation
    chat_turn(graph, "b", "my name is Bo")
    assert saver.backup().ok
    saver.close()
    before = _cli(db_url, "generations").stdout
    refused = _cli(db_url, "restore", str(first))
    assert refused.returncode == 1
    assert "every thread" in refused.stderr and "--yes" in refused.stderr and "Nothing was changed" in refused.stderr
    assert _cli(db_url, "generations").stdout == before
    # on a terminal-less stdin a wrong answer changes nothing either (the prompt reads the generation number)
    done = _cli(db_url, "restore", str(first), "--yes")
    assert done.returncode == 0, done.stderr
    undo = next(line for line in done.stdout.splitlines() if line.startswith("undo: "))
    assert undo.endswith("--yes") and undo.startswith("undo: hybrid-saver restore "), undo
    assert _threads(db_url) == ["a"]
    # following the printed undo restores exactly the state before
    args = undo.removeprefix("undo: hybrid-saver ").split()
    assert _cli(db_url, *args).returncode == 0
    assert set(_threads(db_url)) == {"a", "b"}


def _threads(url: str, schema: str = "hybrid_saver") -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT convert_from(thread_id, 'UTF8') FROM {s}.summaries WHERE deleted_gen IS NULL").format(
                s=sql.Identifier(schema)
            )
        ).fetchall()
    return sorted(r[0] for r in rows)


def test_undo_of_a_one_thread_restore_is_exact(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver(schema="team store")
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "t 1", "my name is Ana")
    chat_turn(graph, "other", "my name is Cy")
    first = saver.backup().generation
    chat_turn(graph, "t 1", "my name is Bo")
    chat_turn(graph, "other", "I live in Oslo")
    assert saver.backup().ok
    saver.close()
    done = _cli(db_url, "restore", str(first), "--thread", "t 1", "--schema", "team store")
    assert done.returncode == 0, done.stderr
    undo = next(line for line in done.stdout.splitlines() if line.startswith("undo: "))
    assert "--thread 't 1'" in undo and "--schema 'team store'" in undo, undo
    completed = subprocess.run(
        undo.removeprefix("undo: ").replace("hybrid-saver", f"{sys.executable} -m persistence", 1),
        shell=True,
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    reader = open_saver(schema="team store")
    texts = str(build_graph(reader, OfflineResponder()).get_state({"configurable": {"thread_id": "t 1"}}).values)
    assert "Bo" in texts
    assert "Oslo" in str(
        build_graph(reader, OfflineResponder()).get_state({"configurable": {"thread_id": "other"}}).values
    )


@pytest.mark.parametrize("command", ["status", "members", "generations", "verify 1", "export ana"])
def test_reading_commands_create_nothing(db_url: str, command: str) -> None:
    before = _schemas(db_url)
    for args in (["--schema", "nosuch", *command.split()], [*command.split(), "--schema", "nosuch"]):
        out = _cli(db_url, *args)
        assert out.returncode == 1, out.stdout
        assert "no store in schema 'nosuch'" in out.stderr and "nothing was created" in out.stderr, out.stderr
    assert _schemas(db_url) == before


def test_cli_polish(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver()
    chat_turn(build_graph(saver, OfflineResponder()), "one", "hello")
    assert saver.backup().ok
    helped = _cli(db_url, "--help")
    assert helped.stdout.startswith("usage: hybrid-saver") and "DATABASE_URL" in helped.stdout
    sub = _cli(db_url, "restore", "--help")
    assert "--yes" in sub.stdout and "DATABASE_URL" in sub.stdout and "undoes it" in sub.stdout
    status = _cli(db_url, "status")
    assert "1 thread," in status.stdout and "1 threads" not in status.stdout, status.stdout
    assert "restorable back to" in status.stdout
    piped = subprocess.run(
        f"{sys.executable} -m persistence status | head -1",
        shell=True,
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.stdout.startswith("store:") and piped.stderr == "", piped.stderr


# -- a schema made by a DBA ---------------------------------------------------------------------


@pytest.fixture
def app_role(db_url: str) -> Iterator[tuple[str, str]]:
    """A role without CREATE on the database (as an application's role is); its name and URL."""
    name = f"app_{os.getpid()}_{next(_roles)}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name, db_url.replace("postgres:@", f"{name}:@", 1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_schema_made_by_a_dba_is_enough(db_url: str, app_role: tuple[str, str]) -> None:
    role, url = app_role
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA hybrid_saver")
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA hybrid_saver TO {}").format(sql.Identifier(role)))
    saver = HybridSaver.from_url(url, backup_interval=None, handle_signals=False)
    try:
        chat_turn(build_graph(saver, OfflineResponder()), "dba", "my name is Dee")
        assert saver.backup().ok
    finally:
        saver.close()
    assert _threads(db_url) == ["dba"]


def test_sql_prints_ddl_a_dba_applies(db_url: str, app_role: tuple[str, str]) -> None:
    role, url = app_role
    printed = _cli(db_url, "sql", "--schema", "app store")
    assert printed.returncode == 0, printed.stderr
    assert 'CREATE SCHEMA IF NOT EXISTS "app store"' in printed.stdout
    assert "app store" not in _schemas(db_url)  # printing creates nothing
    psql = "/usr/lib/postgresql/15/bin/psql"
    with psycopg.connect(db_url, autocommit=True) as conn:
        if Path(psql).exists():
            info = conn.info
            applied = subprocess.run(
                [
                    psql,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-h",
                    info.host,
                    "-p",
                    str(info.port),
                    "-U",
                    "postgres",
                    "-d",
                    info.dbname,
                ],
                input=printed.stdout,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert applied.returncode == 0, applied.stderr
        else:
            conn.execute(printed.stdout)  # type: ignore[arg-type]
        ident = sql.Identifier(role)
        conn.execute(sql.SQL('GRANT USAGE ON SCHEMA "app store" TO {}').format(ident))
        conn.execute(
            sql.SQL('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "app store" TO {}').format(ident)
        )
        conn.execute(sql.SQL('GRANT USAGE ON ALL SEQUENCES IN SCHEMA "app store" TO {}').format(ident))
    saver = HybridSaver.from_url(url, schema="app store", backup_interval=None, handle_signals=False)
    try:
        chat_turn(build_graph(saver, OfflineResponder()), "ddl", "my name is Di")
        assert saver.backup().ok
    finally:
        saver.close()
    assert _threads(db_url, "app store") == ["ddl"]
    assert _cli(db_url, "status", "--schema", "app store").returncode == 0


# -- retention by time ---------------------------------------------------------------------------


def test_load_backups_never_shrink_the_restore_window(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(retention=3)
    graph = build_graph(saver, OfflineResponder())
    kept = []
    for turn in range(3):
        chat_turn(graph, "w", f"turn {turn}")
        kept.append(saver.backup().generation)
    oldest_at = saver.restore_window().oldest_at
    for turn in range(30):  # what memory pressure writes
        chat_turn(graph, "w", f"pressed {turn}")
        assert saver.backup(trigger="pressure").ok
    saver._writer.apply_retention()
    window = saver.restore_window()
    assert window.oldest == kept[0] and window.oldest_at == oldest_at
    assert window.kept == 33 and window.by_load == 30
    # one more backup by time: the oldest of the three counted ones goes, with the load ones before it
    chat_turn(graph, "w", "later")
    assert saver.backup().ok
    saver._writer.apply_retention()
    assert saver.restore_window().oldest == kept[1]


def test_retention_age_keeps_young_generations(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver(retention=2, retention_age="3s")
    assert saver.retention_age == 3.0
    graph = build_graph(saver, OfflineResponder())
    for turn in range(6):
        chat_turn(graph, "a", f"turn {turn}")
        assert saver.backup().ok
    saver._writer.apply_retention()
    assert saver.restore_window().kept == 6  # all younger than 3 s
    time.sleep(3.2)
    chat_turn(graph, "a", "late")
    assert saver.backup().ok
    saver._writer.apply_retention()
    assert saver.restore_window().kept == 2  # the count alone now
    with pytest.raises(ValueError, match="not a duration"):
        open_saver(retention_age="a week")


# -- log lines -----------------------------------------------------------------------------------


def test_backups_recovering_say_so(caplog: pytest.LogCaptureFixture) -> None:
    from helpers.pg import PrivateServer

    server = PrivateServer("hs-adopt-")
    try:
        saver = HybridSaver.from_url(server.url(), backup_interval=None, handle_signals=False, listen=False)
        try:
            chat_turn(build_graph(saver, OfflineResponder()), "x", "hello")
            server.stop()
            with caplog.at_level(logging.WARNING, logger="persistence"):
                assert not saver.backup().ok
                assert not saver.backup().ok
                server.start()
                deadline = time.monotonic() + 30
                while not (run := saver.backup()).ok and time.monotonic() < deadline:
                    time.sleep(0.5)
            assert run.ok
            lines = [r.getMessage() for r in caplog.records if "backups work again" in r.getMessage()]
            assert len(lines) == 1 and "failed runs since" in lines[0], lines
            failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
            assert not any("unset it to use the embedded server" in m for m in failures), failures
        finally:
            saver.close()
    finally:
        server.close()


def test_restore_by_another_member_is_logged(
    open_saver: Callable[..., HybridSaver], caplog: pytest.LogCaptureFixture
) -> None:
    serving = open_saver()
    graph = build_graph(serving, OfflineResponder())
    chat_turn(graph, "served", "my name is Ana")
    first = serving.backup().generation
    chat_turn(graph, "served", "my name is Bo")
    operator = open_saver()
    with caplog.at_level(logging.WARNING, logger="persistence"):
        operator.restore(first, "served")
    lines = [r.getMessage() for r in caplog.records if "a restore run by" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"member {operator.instance_id} rewrites 1 thread this member serves ('served')" in lines[0], lines
    assert "Bo" not in str(graph.get_state({"configurable": {"thread_id": "served"}}).values)


# -- the event loop under memory pressure ---------------------------------------------------------


def test_async_writes_never_hold_the_event_loop(open_saver: Callable[..., HybridSaver]) -> None:
    """Many async conversations under a tiny budget: every write that may back up or load runs off the
    loop. A ticker measures how late the loop wakes it; the saver's own pressure backups happen meanwhile."""
    saver = open_saver(memory_budget=256 * 1024)
    graph = build_graph(saver, OfflineResponder())
    text = "x" * 4000

    on_loop: list[str] = []
    loop_thread: list[int] = []
    saver.add_listener(lambda run: on_loop.append(run.trigger) if threading.get_ident() in loop_thread else None)

    async def run() -> tuple[list[float], int]:
        loop_thread.append(threading.get_ident())
        lags: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.002)
                lags.append(time.perf_counter() - t0 - 0.002)

        async def chats(worker: int) -> None:
            for turn in range(12):
                config = {"configurable": {"thread_id": f"loop-{worker}-{turn % 6}"}}
                await graph.ainvoke({"messages": [("user", f"{text} {turn}")]}, config)

        tick = asyncio.create_task(ticker())
        await asyncio.gather(*(chats(w) for w in range(6)))
        stop.set()
        await tick
        return lags, len(lags)

    lags, ticks = asyncio.run(run())
    pressure = [r for r in saver.history if r.trigger == "pressure" and r.ok]
    assert pressure, "the budget never pressed: the test measures nothing"
    worst = max(lags)
    print(
        f"event loop: {ticks} ticks, median lag {statistics.median(lags) * 1e3:.2f} ms, worst {worst * 1e3:.1f} ms, "
        f"{len(pressure)} pressure backups"
    )
    assert on_loop == [], f"backups ran on the event loop's thread: {on_loop}"
    # a pressure backup on the loop held it for hundreds of milliseconds; off the loop, the worst wake-up is
    # the GIL's switch interval and a scheduler's slice or two on a busy 2-core machine
    assert worst < 0.1, f"the event loop was held for {worst * 1e3:.0f} ms"
    assert statistics.median(lags) < 0.005
