"""Failover to a standby, on a real primary and standby (Debian's PostgreSQL 15, ``pg_basebackup -R``).

The saver's URL lists both hosts with ``target_session_attrs=read-write``. When the new primary lacks
generations this member committed (asynchronous replication lagged), the member notices, never
reuses their numbers, and writes what it holds in memory back as a new generation, keeping its
threads (issue: 5 acknowledged turns and 162 checkpoints lost, "another member took it over": there
was none). A URL that reaches only a standby is refused at start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import psycopg
import pytest
from helpers.cluster import Cluster
from helpers.state import all_human_texts

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import DatabaseUnavailable, HybridSaver

THREADS = [f"f{i}" for i in range(5)]

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        yield made
    finally:
        made.close()


def _generations(url: str) -> dict[int, tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT generation, kind, trigger FROM hybrid_saver.generations").fetchall()
    return {int(r[0]): (r[1], r[2]) for r in rows}


def test_a_url_that_reaches_only_a_standby_is_refused(cluster: Cluster) -> None:
    standby = cluster.standby("replica")
    standby.start()
    with pytest.raises(DatabaseUnavailable, match="read-only standby") as err:
        HybridSaver.from_url(standby.url(), backup_interval=None)
    assert "target_session_attrs=read-write" in str(err.value)


def test_failover_to_a_lagging_standby_heals_from_memory(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    stale = None
    url = (
        f"postgresql://postgres@/postgres?host={cluster.primary.sock},{cluster.root / 'replica-sock'}"
        "&target_session_attrs=read-write"
    )
    saver = HybridSaver.from_url(url, backup_interval=0.3, listen=False)
    try:
        graph = build_graph(saver, OfflineResponder())
        sent: dict[str, list[str]] = {t: [] for t in THREADS}

        def turns(round_: int) -> None:
            for thread in THREADS:
                text = f"my name is {thread}-{round_}"
                chat_turn(graph, thread, text)
                sent[thread].append(text)

        turns(0)
        assert saver.backup().ok
        stale = cluster.standby("replica")  # the standby's copy, as of now; it will not catch up
        for round_ in (1, 2, 3):
            turns(round_)
            assert saver.backup().ok
        committed = saver.last_success.generation
        before = _generations(cluster.primary.url())
        cluster.primary.stop("immediate")
        stale.start()
        stale.promote()
        lost = {g for g in before if g not in _generations(stale.url())}
        assert lost, "the standby should lack the newest generations (it was taken before them)"

        with caplog.at_level(logging.WARNING, logger="persistence"):
            turns(4)  # served from memory while the old primary is gone
            deadline = time.monotonic() + 30
            while not (saver.last_run and saver.last_run.ok and saver.last_run.generation):
                assert time.monotonic() < deadline, saver.last_run
                time.sleep(0.1)
            run = saver.backup()
            assert run.ok, run
        messages = [r.getMessage() for r in caplog.records]
        assert any("has lost generations" in m for m in messages), messages
        assert not any("dropped it from memory" in m for m in messages), messages
        after = _generations(stale.url())
        # no number that meant other content on the old primary was used again
        assert not (set(after) & lost), (sorted(lost), sorted(after))
        assert max(after) > committed
        assert saver.stats().threads == len(THREADS)
    finally:
        saver.close()
    again = HybridSaver.from_url(stale.url(), backup_interval=None, listen=False)
    try:
        texts = all_human_texts(again)
        assert {t: texts[t] for t in THREADS} == sent
    finally:
        again.close()
