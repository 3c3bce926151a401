"""Bad input (issue 5): each case gets a clear error that says what to do, and nothing saved is lost.

Every test starts from a store that already holds two backed-up threads (the ``saved`` fixture)
and ends by reopening it and comparing. Authentication cases use a PostgreSQL server of their own
that asks for passwords (scram-sha-256); the session server trusts every local connection.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from helpers.pg import PrivateServer
from helpers.state import all_human_texts, describe_difference, human_texts, memory_state, store_state
from langgraph.checkpoint.base import empty_checkpoint

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import (
    CorruptBackup,
    DatabaseUnavailable,
    GenerationNotFound,
    HybridSaver,
    HybridSaverError,
    InvalidValue,
    SaverClosed,
    ThreadBusy,
    ThreadNotFound,
)

PASSWORD = "Pw-9f3kQz"
ROLE_PASSWORD = "R0le-pa55-7c1e"


@dataclass
class Saved:
    """A store holding two backed-up threads, and the saver that wrote them (still open)."""

    url: str
    saver: HybridSaver
    graph: Any
    texts: dict[str, list[str]] = field(default_factory=dict)

    def open(self, **kwargs: Any) -> HybridSaver:
        kwargs.setdefault("backup_interval", None)
        kwargs.setdefault("listen", False)
        return HybridSaver.from_url(self.url, **kwargs)

    def assert_intact(self, also: dict[str, list[str]] | None = None) -> None:
        """Close the saver, reopen the store and find every saved turn (and ``also``) there."""
        self.saver.close()
        again = self.open()
        try:
            texts = all_human_texts(again)
        finally:
            again.close()
        for thread_id, wanted in {**self.texts, **(also or {})}.items():
            assert texts.get(thread_id) == wanted, f"thread {thread_id!r:.60} changed after bad input"


@pytest.fixture
def saved(db_url: str) -> Iterator[Saved]:
    saver = HybridSaver.from_url(db_url, backup_interval=None, listen=False)
    graph = build_graph(saver, OfflineResponder())
    chat_turn(graph, "ana", "my name is Ana")
    chat_turn(graph, "ana", "I live in Lisbon")
    chat_turn(graph, "bo", "my name is Bo")
    assert saver.backup().ok
    out = Saved(db_url, saver, graph, {"ana": ["my name is Ana", "I live in Lisbon"], "bo": ["my name is Bo"]})
    yield out
    saver.close()


@pytest.fixture(scope="module")
def secured() -> Iterator[PrivateServer]:
    """A server that asks every role but postgres for its password, with roles for the cases."""
    srv = PrivateServer("hs-auth-")
    try:
        srv.require_passwords()
        srv.create_database("app")
        srv.execute(
            "app",
            f"CREATE ROLE alice LOGIN PASSWORD '{ROLE_PASSWORD}'",
            f"CREATE ROLE bob LOGIN PASSWORD '{ROLE_PASSWORD}'",
            f"CREATE ROLE carol LOGIN PASSWORD '{ROLE_PASSWORD}'",
            "GRANT CREATE ON DATABASE app TO alice",
        )
        yield srv
    finally:
        srv.close()


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"the password {secret!r} appears in: {text}"


# -- connection strings -----------------------------------------------------------------------


MALFORMED_URLS = {
    "not-a-url": ("not a url at all", "not a valid PostgreSQL connection string"),
    "other-scheme": (f"mysql://app:{PASSWORD}@db.example/app", "not a valid PostgreSQL connection string"),
    "broken-ipv6-host": (f"postgresql://app:{PASSWORD}@[::1/app", "not a valid PostgreSQL connection string"),
    "bad-percent-escape": (
        f"postgresql://app:{PASSWORD}%zz@db.example/app",
        "not a valid PostgreSQL connection string",
    ),
    "unknown-parameter": (f"postgresql://app:{PASSWORD}@db.example/app?colour=blue", "colour"),
    "port-out-of-range": (f"postgresql://app:{PASSWORD}@localhost:99999/app", "99999"),
    "nothing-listening": (f"postgresql://app:{PASSWORD}@127.0.0.1:1/app", "Check that the server is running"),
    "empty": ("", "DATABASE_URL"),
}


@pytest.mark.parametrize("case", list(MALFORMED_URLS))
def test_malformed_or_unreachable_url(saved: Saved, case: str) -> None:
    url, says = MALFORMED_URLS[case]
    with pytest.raises(DatabaseUnavailable) as info:
        HybridSaver.from_url(url, backup_interval=None, listen=False)
    message = str(info.value)
    assert says in message
    assert "DATABASE_URL" in message or "postgresql://user:password@host" in message
    _assert_no_secret(message, PASSWORD)
    saved.assert_intact()


@pytest.mark.parametrize("url", [None, 5432, b"postgresql://app@/app"], ids=["none", "int", "bytes"])
def test_url_of_the_wrong_type(saved: Saved, url: object) -> None:
    with pytest.raises((HybridSaverError, TypeError)) as info:
        HybridSaver.from_url(url, backup_interval=None, listen=False)  # type: ignore[arg-type]
    message = str(info.value)
    assert "str" in message or "string" in message, message
    assert "url" in message.lower(), message
    saved.assert_intact()


def test_wrong_password(saved: Saved, secured: PrivateServer) -> None:
    with pytest.raises(DatabaseUnavailable, match="password authentication failed.*credentials") as info:
        HybridSaver.from_url(secured.url("app", "alice", "not-" + ROLE_PASSWORD), backup_interval=None, listen=False)
    assert "'alice'" in str(info.value)
    _assert_no_secret(str(info.value), "not-" + ROLE_PASSWORD, ROLE_PASSWORD)
    saved.assert_intact()


def test_role_that_does_not_exist(saved: Saved, secured: PrivateServer) -> None:
    with pytest.raises(DatabaseUnavailable, match="'nobody'.*credentials"):
        HybridSaver.from_url(secured.url("app", "nobody", ROLE_PASSWORD), backup_interval=None, listen=False)
    saved.assert_intact()


def test_database_that_does_not_exist(saved: Saved, secured: PrivateServer) -> None:
    with pytest.raises(DatabaseUnavailable, match=r"database \"nosuchdb\" does not exist.*database exists"):
        HybridSaver.from_url(secured.url("nosuchdb", "alice", ROLE_PASSWORD), backup_interval=None, listen=False)
    saved.assert_intact()


def test_no_permission_to_create_the_schema(saved: Saved, secured: PrivateServer) -> None:
    owner = HybridSaver.from_url(secured.url("app"), backup_interval=None, listen=False)
    chat_turn(build_graph(owner, OfflineResponder()), "owner", "my name is Olga")
    owner.close()
    with pytest.raises(DatabaseUnavailable, match=r"No permission .*'hybrid_saver'.*'bob'.*Grant CREATE"):
        HybridSaver.from_url(secured.url("app", "bob", ROLE_PASSWORD), backup_interval=None, listen=False)
    owner = HybridSaver.from_url(secured.url("app"), backup_interval=None, listen=False)
    try:
        assert human_texts(owner, "owner") == ["my name is Olga"]
    finally:
        owner.close()
    saved.assert_intact()


def test_the_permission_advice_works(saved: Saved, secured: PrivateServer) -> None:
    """The no-permission error says 'Grant CREATE on the database (or USAGE and CREATE on the schema)':
    a role given USAGE and CREATE on an existing store's schema (and its tables) can then use it."""
    owner = HybridSaver.from_url(secured.url("app"), backup_interval=None, listen=False)
    owner.close()
    secured.execute(
        "app",
        "GRANT USAGE, CREATE ON SCHEMA hybrid_saver TO carol",
        "GRANT ALL ON ALL TABLES IN SCHEMA hybrid_saver TO carol",
        "GRANT ALL ON ALL SEQUENCES IN SCHEMA hybrid_saver TO carol",
    )
    saver = HybridSaver.from_url(secured.url("app", "carol", ROLE_PASSWORD), backup_interval=None, listen=False)
    try:
        chat_turn(build_graph(saver, OfflineResponder()), "carol", "my name is Carol")
        assert saver.backup().ok
    finally:
        saver.close()
    saved.assert_intact()


def test_a_thread_held_by_a_member_that_does_not_answer(saved: Saved) -> None:
    """A second saver on the store joins it; a thread the first one holds and cannot hand over (it
    does not listen for commands) gets ThreadBusy naming the holder, never a second writer."""
    second = saved.open(handoff_timeout=0.5)
    try:
        assert {m.instance_id for m in second.members()} == {saved.saver.instance_id, second.instance_id}
        graph = build_graph(second, OfflineResponder())
        with pytest.raises(
            ThreadBusy,
            match=rf"'ana' is held by member {saved.saver.instance_id} \((?:.*, )?host .*, pid {os.getpid()}\), which did "
            r"not hand it over within 0.5 s.*Retry",
        ) as caught:
            chat_turn(graph, "ana", "what is my name?")
        assert caught.value.owner == saved.saver.instance_id and caught.value.thread_id == "ana"
        assert chat_turn(graph, "new", "my name is Nia") and second.backup().ok
    finally:
        second.close()
    saved.assert_intact({"new": ["my name is Nia"]})


# -- generations and threads ------------------------------------------------------------------


@pytest.mark.parametrize("generation", [999, -1, 0], ids=["999", "negative", "zero"])
def test_unknown_generation(saved: Saved, generation: int) -> None:
    before = memory_state(saved.saver)
    with pytest.raises(GenerationNotFound, match=rf"Generation {generation} does not exist.*hybrid-saver generations"):
        saved.saver.restore(generation)
    assert memory_state(saved.saver) == before
    saved.assert_intact()


@pytest.mark.parametrize("generation", ["1", 1.0, None, True], ids=["str", "float", "none", "bool"])
def test_generation_that_is_not_an_integer(saved: Saved, generation: object) -> None:
    before = memory_state(saved.saver)
    with pytest.raises(GenerationNotFound, match="must be an integer"):
        saved.saver.restore(generation)  # type: ignore[arg-type]
    assert memory_state(saved.saver) == before
    saved.assert_intact()


def test_restore_of_a_thread_the_generation_does_not_hold(saved: Saved) -> None:
    generation = saved.saver.generations()[0].generation
    chat_turn(saved.graph, "later", "my name is Lea")
    before = memory_state(saved.saver)
    with pytest.raises(ThreadNotFound, match=rf"'later' is not in generation {generation}.*Pick a generation"):
        saved.saver.restore(generation, thread_id="later")
    assert memory_state(saved.saver) == before
    saved.assert_intact({"later": ["my name is Lea"]})


def test_restore_with_an_unknown_damage_option(saved: Saved) -> None:
    generation = saved.saver.generations()[0].generation
    with pytest.raises(ValueError, match="on_damage must be 'refuse' or 'skip'"):
        saved.saver.restore(generation, on_damage="ignore")
    saved.assert_intact()


# -- backup interval and retention ----------------------------------------------------------------


BAD_INTERVALS = {
    "negative": -1,
    "zero": 0,
    "huge": 10**9,
    "nan": math.nan,
    "infinite": math.inf,
    "text": "30",
    "bool": True,
}


@pytest.mark.parametrize("case", list(BAD_INTERVALS))
def test_bad_backup_interval(saved: Saved, case: str) -> None:
    saved.saver.close()
    with pytest.raises(ValueError, match="backup interval") as info:
        saved.open(backup_interval=BAD_INTERVALS[case])
    message = str(info.value)
    assert repr(BAD_INTERVALS[case]) in message or str(BAD_INTERVALS[case]) in message, message
    saved.assert_intact()


def test_bad_interval_at_run_time_keeps_the_old_one(saved: Saved) -> None:
    saved.saver.close()
    saver = saved.open(backup_interval=5)
    try:
        with pytest.raises(ValueError, match=r"-2.*between"):
            saver.scheduler.set_interval(-2)
        assert saver.scheduler.interval == 5.0 and saver.scheduler.running
    finally:
        saver.close()
    saved.assert_intact()


def test_retention_too_small(saved: Saved) -> None:
    saved.saver.close()
    with pytest.raises(ValueError, match="retention=1.*at least 2"):
        saved.open(retention=1)
    saved.assert_intact()


# -- thread ids and values -------------------------------------------------------------------------


UNUSUAL_THREAD_IDS = {
    "quotes": 'it\'s "quoted" `back` \\ ;',
    "nul-bytes": "nul\x00in\x00the\x00middle",
    "emoji": "chat 🧵🐘✨ ñ",
    "10000-chars": "x" * 10_000,
    "lone-surrogate": "half \ud800 pair",
}


@pytest.mark.parametrize("case", list(UNUSUAL_THREAD_IDS))
def test_unusual_thread_id_round_trips(saved: Saved, case: str) -> None:
    thread_id = UNUSUAL_THREAD_IDS[case]
    chat_turn(saved.graph, thread_id, "my name is Ümit \x00 'o' 🧵")
    assert chat_turn(saved.graph, thread_id, "what is my name?").startswith("Your name is Ümit")
    run = saved.saver.backup()
    assert run.ok, run.error
    expected = human_texts(saved.saver, thread_id)
    chat_turn(saved.graph, thread_id, "I live in Porto")
    saved.saver.restore(run.generation, thread_id=thread_id)
    assert human_texts(saved.saver, thread_id) == expected
    saved.assert_intact({thread_id: expected})


def test_ten_megabyte_message(saved: Saved) -> None:
    huge = "my name is Zed. " + "blah " * 2_000_000
    chat_turn(saved.graph, "big", huge)
    assert saved.saver.backup().ok
    saved.saver.close()
    again = saved.open()
    try:
        assert human_texts(again, "big") == [huge]
        assert chat_turn(build_graph(again, OfflineResponder()), "big", "what is my name?") == "Your name is Zed."
    finally:
        again.close()
    saved.assert_intact({"big": [huge, "what is my name?"]})


def _config(thread_id: object = "t", **extra: object) -> dict:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", **extra}}


def test_value_the_serializer_cannot_handle(saved: Saved) -> None:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"fine": 1, "lock": threading.Lock()}
    before = memory_state(saved.saver)
    with pytest.raises(InvalidValue, match=r"cannot be serialised.*nothing was stored") as info:
        saved.saver.put(_config("odd"), checkpoint, {}, {"fine": 1, "lock": 1})
    assert "lock" in str(info.value)  # names what could not be serialised
    after = memory_state(saved.saver)
    assert after == before, "a refused checkpoint left something in memory: " + describe_difference(before, after)
    assert saved.saver.backup().ok
    assert store_state(saved.saver) == memory_state(saved.saver)
    saved.assert_intact()


def test_checkpoint_too_big_for_a_backup_row(saved: Saved) -> None:
    saved.saver.max_value_bytes = 10_000
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"small": "ok", "big": "x" * 20_000}
    before = memory_state(saved.saver)
    with pytest.raises(InvalidValue, match=r"channel 'big' serialises to .* bytes.*store large payloads elsewhere"):
        saved.saver.put(_config("huge"), checkpoint, {}, {"small": 1, "big": 1})
    after = memory_state(saved.saver)
    assert after == before, "a refused checkpoint left something in memory: " + describe_difference(before, after)
    saved.assert_intact()


def test_write_too_big_for_a_backup_row(saved: Saved) -> None:
    saved.saver.max_value_bytes = 10_000
    head = saved.saver.get_tuple({"configurable": {"thread_id": "ana"}})
    assert head is not None
    before = memory_state(saved.saver)
    with pytest.raises(InvalidValue, match=r"write to channel 'big'.*store large payloads elsewhere"):
        saved.saver.put_writes(head.config, [("big", "x" * 20_000)], task_id="task-1")
    after = memory_state(saved.saver)
    assert after == before, "a refused write stayed in memory: " + describe_difference(before, after)
    saved.assert_intact()


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (_config(42), "thread_id must be a str, got int 42; convert it with str"),
        ({"configurable": {}}, r"config\['configurable'\]\['thread_id'\] is missing"),
        ({}, r"config\['configurable'\]\['thread_id'\] is missing"),
        (_config("t", checkpoint_ns=7), "checkpoint_ns must be a str"),
    ],
    ids=["int-thread-id", "no-thread-id", "no-configurable", "int-namespace"],
)
def test_bad_config(saved: Saved, config: dict, says: str) -> None:
    before = memory_state(saved.saver)
    with pytest.raises(InvalidValue, match=says):
        saved.saver.put(config, empty_checkpoint(), {}, {})
    assert memory_state(saved.saver) == before
    saved.assert_intact()


def test_restore_with_a_thread_id_that_is_not_a_string(saved: Saved) -> None:
    generation = saved.saver.generations()[0].generation
    with pytest.raises(InvalidValue, match="thread_id must be a str, got int 7"):
        saved.saver.restore(generation, thread_id=7)  # type: ignore[arg-type]
    saved.assert_intact()


# -- close ---------------------------------------------------------------------------------------


def test_double_close(saved: Saved) -> None:
    runs: list[object] = []
    saved.saver.add_listener(runs.append)
    chat_turn(saved.graph, "ana", "my name is Ana Maria")
    saved.saver.close()
    saved.saver.close()  # a no-op: no second final backup, no error
    assert saved.saver.closed and len(runs) == 1
    saved.assert_intact({"ana": ["my name is Ana", "I live in Lisbon", "my name is Ana Maria"]})


USE_AFTER_CLOSE: dict[str, Callable[[HybridSaver, Any], object]] = {
    "put": lambda s, g: s.put(_config("ana"), empty_checkpoint(), {}, {}),
    "put_writes": lambda s, g: s.put_writes(_config("ana", checkpoint_id="c"), [("a", 1)], "task"),
    "get_tuple": lambda s, g: s.get_tuple({"configurable": {"thread_id": "ana"}}),
    "list": lambda s, g: list(s.list(None)),
    "delete_thread": lambda s, g: s.delete_thread("ana"),
    "backup": lambda s, g: s.backup(),
    "restore": lambda s, g: s.restore(1),
    "generations": lambda s, g: s.generations(),
    "chat_turn": lambda s, g: chat_turn(g, "ana", "my name is Eve"),
}


@pytest.mark.parametrize("operation", list(USE_AFTER_CLOSE))
def test_use_after_close(saved: Saved, operation: str) -> None:
    saved.saver.close()
    with pytest.raises(SaverClosed, match=r"closed\. Create a new one with HybridSaver\.from_url"):
        USE_AFTER_CLOSE[operation](saved.saver, saved.graph)
    saved.assert_intact()


# -- damaged backups -----------------------------------------------------------------------------


def _damage(url: str, table: str, column: str, how: str, **key: str) -> int:
    """Corrupt (overwrite) or truncate one stored value; returns the rows changed."""
    value = "'\\xdeadbeef'::bytea" if how == "corrupt" else f"substring({column} from 1 for length({column}) / 2)"
    where = " AND ".join(f"{k} = %s" for k in key)
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            f"UPDATE hybrid_saver.{table} SET {column} = {value} WHERE {where}",  # type: ignore[arg-type]
            [v.encode() for v in key.values()],
        )
        return cur.rowcount


def _checkpoint_ids(saver: HybridSaver, thread_id: str) -> list[str]:
    return sorted(saver.storage[thread_id][""])


def _newest_generation(saver: HybridSaver) -> int:
    return saver.generations()[0].generation


@pytest.mark.all_postgres  # checksums are checked server-side on 18, here on 15
@pytest.mark.parametrize("how", ["corrupt", "truncate"])
@pytest.mark.parametrize("column", ["checkpoint", "metadata"])
def test_damaged_checkpoint_refused_by_default(saved: Saved, how: str, column: str) -> None:
    chat_turn(saved.graph, "ana", "my favourite colour is teal")
    generation = saved.saver.backup().generation
    target = _checkpoint_ids(saved.saver, "ana")[2]
    assert _damage(saved.url, "checkpoints", column, how, thread_id="ana", checkpoint_id=target) == 1
    chat_turn(saved.graph, "bo", "I live in Porto")
    before, newest = memory_state(saved.saver), _newest_generation(saved.saver)
    with pytest.raises(CorruptBackup) as info:
        saved.saver.restore(generation)
    message = str(info.value)
    assert "'ana'" in message and target in message and "on_damage='skip'" in message, message
    assert [t for t, what in info.value.damaged if target in what] == ["ana"], info.value.damaged
    # refused: memory and the store are as they were, and the app goes on
    assert memory_state(saved.saver) == before
    assert _newest_generation(saved.saver) == newest
    assert chat_turn(saved.graph, "ana", "what is my name?") == "Your name is Ana."
    saved.texts["ana"] += ["my favourite colour is teal", "what is my name?"]
    saved.texts["bo"].append("I live in Porto")
    saved.assert_intact()


@pytest.mark.all_postgres  # checksums are checked server-side on 18, here on 15
@pytest.mark.parametrize("how", ["corrupt", "truncate"])
def test_damaged_checkpoint_skipped_on_request(saved: Saved, how: str) -> None:
    chat_turn(saved.graph, "ana", "my favourite colour is teal")
    generation = saved.saver.backup().generation
    newest_ana = _checkpoint_ids(saved.saver, "ana")[-1]
    assert _damage(saved.url, "checkpoints", "checkpoint", how, thread_id="ana", checkpoint_id=newest_ana) == 1
    chat_turn(saved.graph, "bo", "I live in Porto")  # after the generation: the restore takes it back
    result = saved.saver.restore(generation, on_damage="skip")
    assert [t for t, what in result.damaged if newest_ana in what] == ["ana"], result.damaged
    # everything else came back: bo as it was in the generation, ana up to its last good checkpoint
    assert human_texts(saved.saver, "bo") == ["my name is Bo"]
    assert newest_ana not in saved.saver.storage["ana"][""]
    assert human_texts(saved.saver, "ana")[:2] == ["my name is Ana", "I live in Lisbon"]
    assert chat_turn(saved.graph, "ana", "what is my name?") == "Your name is Ana."
    # the damaged row is not carried forward: the newest generation decodes cleanly
    saved.saver.backup()
    clean = saved.saver.restore(_newest_generation(saved.saver))
    assert clean.damaged == []
    saved.saver.close()
    again = saved.open()
    try:
        assert newest_ana not in again.storage["ana"][""]
        assert human_texts(again, "bo") == ["my name is Bo"]
    finally:
        again.close()


@pytest.mark.all_postgres  # checksums are checked server-side on 18, here on 15
def test_damaged_channel_value(saved: Saved) -> None:
    generation = saved.saver.generations()[0].generation
    blob = next(k for k in saved.saver.blobs if k[0] == "bo" and k[2] == "messages")
    with psycopg.connect(saved.url, autocommit=True) as conn:
        changed = conn.execute(
            "UPDATE hybrid_saver.blobs SET value = '\\xc1c1c1'::bytea WHERE thread_id = %s AND channel = %s",
            [b"bo", b"messages"],
        ).rowcount
    assert changed >= 1 and blob
    before = memory_state(saved.saver)
    with pytest.raises(CorruptBackup, match=r"'bo'.*messages") as info:
        saved.saver.restore(generation, thread_id="bo")
    assert {t for t, _what in info.value.damaged} == {"bo"}
    assert memory_state(saved.saver) == before
    result = saved.saver.restore(generation, on_damage="skip")
    assert {t for t, _what in result.damaged} == {"bo"}
    # the app does not crash on the thread that lost its messages, and ana is whole
    assert human_texts(saved.saver, "ana") == ["my name is Ana", "I live in Lisbon"]
    assert chat_turn(saved.graph, "bo", "hello again")
    del saved.texts["bo"]  # what survives of a thread whose values were damaged is not specified
    saved.assert_intact()


def test_start_on_a_damaged_newest_generation(saved: Saved) -> None:
    saved.saver.close()
    with psycopg.connect(saved.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE hybrid_saver.checkpoints SET checkpoint = '\\xdeadbeef'::bytea WHERE thread_id = %s", [b"bo"]
        )
    saver = saved.open()  # starting does not crash
    try:
        graph = build_graph(saver, OfflineResponder())
        assert chat_turn(graph, "ana", "what is my name?") == "Your name is Ana."
        with pytest.raises(CorruptBackup, match="'bo'"):
            saver.restore(_newest_generation(saver))
    finally:
        saver.close()
