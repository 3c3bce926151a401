"""A clean stop never loses silently: ``close()`` while PostgreSQL is down retries, then keeps the pending
changes in a recovery file that the next start on the same store writes back (issue: "close() returns
normally, logs 'final backup failed; 40000 changes were not saved', and the data is gone")."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.pg import PrivateServer
from helpers.state import all_human_texts

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import HybridSaver
from persistence.ops.recovery import SUFFIX


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    srv = PrivateServer("hs-recovery-")
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def url(server: PrivateServer, request: pytest.FixtureRequest) -> Iterator[str]:
    if not server.running:
        server.start()
    yield server.create_database(f"recovery_{request.node.name[:40].lower()}")
    if not server.running:
        server.start()


def _open(url: str, folder: Path) -> HybridSaver:
    return HybridSaver.from_url(
        url, backup_interval=None, listen=False, close_timeout=1.0, recovery_dir=folder, lease_seconds=1.0
    )


def test_close_during_an_outage_keeps_the_changes_and_the_next_start_writes_them_back(
    server: PrivateServer, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saver = _open(url, tmp_path)
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "kept", "my name is Ana")
    assert saver.backup().ok
    chat_turn(graph, "kept", "I live in Lisbon")  # pending: only the final backup could save it
    chat_turn(graph, "other", "my name is Bea")
    pending = saver.stats().pending
    server.stop()
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="persistence"):
        saver.close()
    took = time.monotonic() - t0
    files = list(tmp_path.glob(f"*{SUFFIX}"))
    assert len(files) == 1, files
    assert files[0].stat().st_mode & 0o077 == 0, "a recovery file is readable by its owner only"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(files[0]) in m and f"{pending} pending change" in m for m in errors), errors
    assert 0.9 <= took < 10, took  # retried for close_timeout, then kept

    server.start()
    again = _open(url, tmp_path)
    try:
        texts = all_human_texts(again)
        assert texts["kept"] == ["my name is Ana", "I live in Lisbon"]
        assert texts["other"] == ["my name is Bea"]
        assert not list(tmp_path.glob(f"*{SUFFIX}*")), "the file goes once its changes are in PostgreSQL"
        graph = build_graph(again, OfflineResponder())
        assert chat_turn(graph, "kept", "what is my name?") == "Your name is Ana."
    finally:
        again.close()
    third = _open(url, tmp_path)
    try:
        assert all_human_texts(third)["kept"] == ["my name is Ana", "I live in Lisbon", "what is my name?"]
    finally:
        third.close()


def test_a_thread_written_after_the_stop_is_not_merged_the_kept_turns_go_to_a_fork(
    server: PrivateServer, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saver = _open(url, tmp_path)
    chat_turn(build_graph(saver, OfflineResponder()), "shared", "my name is Ana")
    assert saver.backup().ok
    chat_turn(build_graph(saver, OfflineResponder()), "shared", "I like tea")
    server.stop()
    saver.close()
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 1
    server.start()
    # another process, with no access to that file, writes the thread meanwhile
    other = _open(url, tmp_path / "elsewhere")
    chat_turn(build_graph(other, OfflineResponder()), "shared", "I like coffee")
    other.close()

    with caplog.at_level(logging.WARNING, logger="persistence"):
        again = _open(url, tmp_path)
    try:
        texts = all_human_texts(again)
        assert texts["shared"] == ["my name is Ana", "I like coffee"]
        forks = [t for t in texts if t.startswith("shared~recovered-")]
        assert len(forks) == 1 and texts[forks[0]] == ["my name is Ana", "I like tea"], texts
        assert any(forks[0] in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    finally:
        again.close()
