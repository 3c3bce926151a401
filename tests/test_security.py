"""Security (issue 5): injection strings are data, never SQL; the database password never leaks.

Thread ids, schema names and search strings carrying SQL (and format-string) payloads must
round-trip and harm nothing. The password of DATABASE_URL must not appear in exceptions, logs, the
runs table or the output of ``python -m persistence``; these cases use a PostgreSQL server of their
own that really checks passwords, with a password that needs percent-encoding in a URL.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from helpers.pg import PrivateServer
from helpers.state import all_human_texts, human_texts

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from dashboard import views
from persistence import HybridSaver, HybridSaverError

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "S3cr3t/p@ss:w%rd!Qx"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), "S3cr3t")

INJECTIONS = {
    "quote-drop-table": "'; DROP TABLE hybrid_saver.checkpoints; --",
    "identifier-drop-schema": '"; DROP SCHEMA hybrid_saver CASCADE; --',
    "tautology": "x' OR '1'='1",
    "dollar-quote": "$$; DELETE FROM hybrid_saver.generations; $$",
    "format-placeholders": "%s %(x)s {s} {} {0}",
    "backslash-nul": "\\'); TRUNCATE hybrid_saver.runs; --\x00",
}


def _tables(url: str, schema: str = "hybrid_saver") -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {r[0] for r in rows}


# -- injection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(INJECTIONS))
def test_injection_thread_id_round_trips_and_harms_nothing(open_saver, db_url: str, case: str) -> None:
    payload = INJECTIONS[case]
    saver = open_saver()
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "victim", "my name is Vic")
    chat_turn(graph, payload, "my name is Eve")
    first = saver.backup()
    tables = _tables(db_url)
    assert {"checkpoints", "writes", "blobs", "generations", "runs"} <= tables

    assert saver.store.has_thread(first.generation, payload)
    assert not saver.store.has_thread(first.generation, payload + "'")
    assert set(saver.store.thread_counts(first.generation)) == {"victim", payload}
    chat_turn(graph, payload, "I live in Porto")
    saver.restore(first.generation, thread_id=payload)
    assert human_texts(saver, payload) == ["my name is Eve"]
    saver.delete_thread(payload)
    assert saver.backup().ok
    assert _tables(db_url) == tables
    assert [g.generation for g in saver.generations()] == sorted(
        {g.generation for g in saver.generations()}, reverse=True
    )
    saver.close()
    again = open_saver()
    assert all_human_texts(again) == {"victim": ["my name is Vic"]}
    # the payload's thread is still in the older generation, exactly
    again.restore(first.generation, thread_id=payload)
    assert human_texts(again, payload) == ["my name is Eve"]


def test_injection_in_the_schema_name(open_saver, db_url: str) -> None:
    schema = 'hs"; DROP SCHEMA hybrid_saver CASCADE; --'
    plain = open_saver()
    chat_turn(build_graph(plain, OfflineResponder()), "plain", "my name is Pia")
    plain.close()
    odd = open_saver(schema=schema)
    chat_turn(build_graph(odd, OfflineResponder()), "odd", "my name is Oda")
    assert odd.backup().ok
    odd.close()
    assert "generations" in _tables(db_url, schema)
    assert human_texts(open_saver(schema=schema), "odd") == ["my name is Oda"]
    assert human_texts(open_saver(), "plain") == ["my name is Pia"]


@pytest.mark.parametrize(
    "query",
    [*INJECTIONS.values(), ".*", "([", "\\", "%", "_"],
    ids=[*INJECTIONS, "dot-star", "bracket", "backslash", "percent", "underscore"],
)
def test_search_string_is_matched_literally(open_saver, query: str) -> None:
    saver = open_saver()
    graph = build_graph(saver, OfflineResponder())
    for thread_id in ("alpha", f"has {query} inside", "omega_%"):
        chat_turn(graph, thread_id, "hello")
    frame, _total = views.thread_page(saver, query, page_size=100)  # searched by PostgreSQL
    found = set(frame["thread_id"])
    expected = {t for t in ("alpha", f"has {query} inside", "omega_%") if query.strip().lower() in t.lower()}
    assert found == expected
    assert len(saver.thread_ids()) == 3


def _cli(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=url, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "persistence", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_export_and_restore_of_injection_thread_ids(open_saver, db_url: str) -> None:
    saver = open_saver()
    graph = build_graph(saver, OfflineResponder())
    payloads = [INJECTIONS["quote-drop-table"], INJECTIONS["identifier-drop-schema"]]
    for payload in payloads:
        chat_turn(graph, payload, "my name is Eve")
    chat_turn(graph, "victim", "my name is Vic")
    generation = saver.backup().generation
    saver.close()
    for payload in payloads:
        out = _cli("export", payload, url=db_url)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["thread_id"] == payload
        out = _cli("restore", str(generation), "--thread", payload, url=db_url)
        assert out.returncode == 0, out.stderr
    again = open_saver()
    assert all_human_texts(again) == {p: ["my name is Eve"] for p in payloads} | {"victim": ["my name is Vic"]}


# -- the password ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured() -> Iterator[PrivateServer]:
    srv = PrivateServer("hs-secret-")
    try:
        srv.require_passwords()
        srv.create_database("app")
        escaped = PASSWORD.replace("'", "''")
        srv.execute(
            "app",
            f"CREATE ROLE dave LOGIN PASSWORD '{escaped}'",
            f"CREATE ROLE erin LOGIN PASSWORD '{escaped}'",
            "GRANT CREATE ON DATABASE app TO dave",
        )
        yield srv
    finally:
        srv.close()


@pytest.fixture
def server(secured: PrivateServer) -> Iterator[PrivateServer]:
    if not secured.running:
        secured.start()
    yield secured
    if not secured.running:
        secured.start()


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"the password ({secret!r}) appears in {where}: {text[:2000]}"


def _exception_text(exc: BaseException) -> str:
    """What a log or an error tracker shows: message, repr and the traceback with its exception chain."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


BAD_CONNECTIONS = {
    "wrong-password": lambda s: s.url("app", "dave", PASSWORD + "-wrong"),
    "missing-database": lambda s: s.url("nosuchdb", "dave", PASSWORD),
    "unknown-role": lambda s: s.url("app", "mallory", PASSWORD),
    "no-permission": lambda s: s.url("app", "erin", PASSWORD),
    "bad-percent-escape": lambda s: s.url("app", "dave", PASSWORD).replace("%21", "%zz"),
    "bad-port": lambda s: f"postgresql://dave:{quote(PASSWORD, safe='')}@localhost:99999/app",
    "unknown-parameter": lambda s: s.url("app", "dave", PASSWORD) + "&colour=blue",
}


@pytest.mark.parametrize("case", list(BAD_CONNECTIONS))
def test_password_not_in_connection_errors(server: PrivateServer, case: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = BAD_CONNECTIONS[case](server)
    with pytest.raises(HybridSaverError) as info:
        HybridSaver.from_url(url, backup_interval=None, listen=False)
    _assert_clean(_exception_text(info.value), "the exception")
    _assert_clean(caplog.text, "the log")


def test_password_not_in_errors_when_the_server_is_down(
    server: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.stop()
    with pytest.raises(HybridSaverError) as info:
        HybridSaver.from_url(server.url("app", "dave", PASSWORD), backup_interval=None, listen=False)
    _assert_clean(_exception_text(info.value), "the exception")
    _assert_clean(caplog.text, "the log")


def test_password_not_in_logs_runs_or_figures(server: PrivateServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = server.url("app", "dave", PASSWORD)
    saver = HybridSaver.from_url(url, backup_interval=0.2, schema="logs")
    runs = []
    saver.add_listener(runs.append)
    try:
        graph = build_graph(saver, OfflineResponder())
        chat_turn(graph, "t", "my name is Dave")
        assert saver.backup().ok
        server.stop()
        chat_turn(graph, "t", "I live in Porto")
        failed = saver.backup()
        time.sleep(0.6)  # scheduled runs fail too
        server.start()
        deadline = time.monotonic() + 20
        while not (runs[-1].ok and runs[-1].started_at > failed.finished_at) and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = saver.stats()
        stored = saver.store.runs.runs(limit=100)
    finally:
        saver.close()
    assert not failed.ok
    assert any(r["error"] for r in stored), "the failed runs were not logged"
    _assert_clean(caplog.text, "the log")
    _assert_clean("\n".join(str(r.error) for r in runs), "BackupRun.error")
    _assert_clean("\n".join(str(r) for r in stored), "the runs table")
    _assert_clean(repr(stats), "the saver's figures")


@pytest.fixture
def cli_store(server: PrivateServer) -> str:
    """A store with one backed-up thread, written as dave; returns dave's URL."""
    url = server.url("app", "dave", PASSWORD)
    saver = HybridSaver.from_url(url, backup_interval=None, listen=False, schema="cli")
    chat_turn(build_graph(saver, OfflineResponder()), "ana", "my name is Ana")
    saver.close()
    return url


CLI_COMMANDS = {
    "status": ["--schema", "cli", "status"],
    "backup": ["--schema", "cli", "backup"],
    "generations": ["--schema", "cli", "generations"],
    "restore": ["--schema", "cli", "restore", "1", "--yes"],
    "restore-unknown": ["--schema", "cli", "restore", "999"],
    "export": ["--schema", "cli", "export", "ana"],
    "export-unknown": ["--schema", "cli", "export", "nobody"],
}


@pytest.mark.parametrize("command", list(CLI_COMMANDS))
def test_password_not_in_cli_output(cli_store: str, command: str) -> None:
    out = _cli(*CLI_COMMANDS[command], url=cli_store)
    _assert_clean(out.stdout + out.stderr, f"the output of `python -m persistence {command}`")
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == (1 if command.endswith("unknown") else 0), out.stderr


@pytest.mark.parametrize("failure", ["wrong-password", "server-down", "bad-percent-escape"])
def test_password_not_in_cli_errors(cli_store: str, server: PrivateServer, failure: str) -> None:
    url = cli_store
    if failure == "wrong-password":
        url = url.replace(quote(PASSWORD, safe=""), quote(PASSWORD + "-wrong", safe=""))
    elif failure == "bad-percent-escape":
        url = url.replace("%21", "%zz")
    else:
        server.stop()
    out = _cli("--schema", "cli", "status", url=url)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    _assert_clean(out.stdout + out.stderr, f"the output of `python -m persistence status` ({failure})")
