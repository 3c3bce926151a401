"""Connection poolers in front of PostgreSQL, as operators deploy them: Debian's PgBouncer 1.18.

Transaction mode (what Supabase's port 6543, Neon's ``-pooler`` host and many Kubernetes setups hand
out) cannot carry the lease, LISTEN or the restore lock: the saver refuses it at start, in seconds,
naming it and the fix (issue: it started without a word, then NOTIFYs were dropped and ``close()``
hung). Session mode works when it has enough server connections, and a pool too small for one
member is a clear error in seconds instead of a 60 s hang.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from helpers.pgbouncer import PgBouncer

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import DatabaseUnavailable, HybridSaver


@pytest.fixture
def database(db_url: str) -> str:
    return db_url.split("?")[0].rsplit("/", 1)[1]


@pytest.fixture
def bouncers(db_url: str) -> Iterator[list[PgBouncer]]:
    made: list[PgBouncer] = []
    yield made
    for b in made:
        b.close()


def test_transaction_mode_is_refused_at_start_with_the_fix(db_url: str, database: str, bouncers: list) -> None:
    bouncer = PgBouncer(db_url, database, mode="transaction", pool_size=5)
    bouncers.append(bouncer)
    with psycopg.connect(bouncer.url, autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the pooler itself works
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="transaction mode") as err:
        HybridSaver.from_url(bouncer.url, backup_interval=None)
    assert time.monotonic() - t0 < 10
    assert "Direct connection" in str(err.value) and "pool_mode=session" in str(err.value)


def test_a_session_pool_too_small_for_one_member_is_a_clear_error_in_seconds(
    db_url: str, database: str, bouncers: list
) -> None:
    bouncer = PgBouncer(db_url, database, mode="session", pool_size=3)
    bouncers.append(bouncer)
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="too few server connections") as err:
        HybridSaver.from_url(bouncer.url, backup_interval=None, pool_size=4)
    took = time.monotonic() - t0
    assert took < 10, took
    assert "needs 7 sessions" in str(err.value)


def test_session_mode_serves_a_fleet_with_handoffs(db_url: str, database: str, bouncers: list) -> None:
    bouncer = PgBouncer(db_url, database, mode="session", pool_size=20)
    bouncers.append(bouncer)
    a = HybridSaver.from_url(bouncer.url, backup_interval=0.5, pool_size=3)
    b = HybridSaver.from_url(bouncer.url, backup_interval=0.5, pool_size=3)
    try:
        ga, gb = build_graph(a, OfflineResponder()), build_graph(b, OfflineResponder())
        chat_turn(ga, "t", "my name is Ana")
        t0 = time.monotonic()
        # b asks a over LISTEN/NOTIFY (through the pooler) to hand the thread over
        assert chat_turn(gb, "t", "what is my name?") == "Your name is Ana."
        handoff = time.monotonic() - t0
        assert handoff < 1.0, handoff
        assert chat_turn(ga, "t", "my name is Bea") and chat_turn(gb, "t", "what is my name?") == "Your name is Bea."
        assert a.membership.lease.valid() and b.membership.lease.valid()
    finally:
        a.close()
        b.close()
    again = HybridSaver.from_url(db_url, backup_interval=None, listen=False)
    try:
        texts = [
            m.content
            for m in again.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["channel_values"]["messages"]
            if m.type == "human"
        ]
        assert texts == ["my name is Ana", "what is my name?", "my name is Bea", "what is my name?"]
    finally:
        again.close()
