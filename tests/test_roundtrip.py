"""Generated histories: back up, reopen, compare byte for byte; restore every kept generation exactly."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import psycopg
import pytest
from histories import put_checkpoint, state_of, thread_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence import HybridSaver

_schemas = itertools.count()

thread_ids = st.one_of(
    st.sampled_from(["a", "b", 'it\'s "quoted"', "nul\x00byte", "emoji 🧵", "x" * 10_000, "'; DROP TABLE x; --"]),
    st.text(min_size=1, max_size=20),
)
values = st.one_of(
    st.text(max_size=50),
    st.binary(max_size=64),
    st.integers(-(2**63), 2**63 - 1),
    st.lists(st.integers(-(2**31), 2**31), max_size=5),
)
namespaces = st.sampled_from(["", "child:1", "ns|\x00"])

operation = st.one_of(
    st.tuples(st.just("put"), thread_ids, namespaces, st.dictionaries(st.sampled_from(["m", "n", "o"]), values)),
    st.tuples(
        st.just("write"),
        thread_ids,
        st.sampled_from(["m", "__error__", "__interrupt__", "__scheduled__"]),
        values,
    ),
    st.tuples(st.just("delete"), thread_ids),
    st.tuples(st.just("copy"), thread_ids, thread_ids),
    st.tuples(st.just("prune"), thread_ids, st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("backup")),
)


def apply(saver: HybridSaver, op: tuple, heads: dict, step: list[int]) -> None:
    kind = op[0]
    step[0] += 1
    if kind == "put":
        _, tid, ns, vals = op
        heads[(tid, ns)] = put_checkpoint(saver, tid, vals, ns=ns, parent=heads.get((tid, ns)), step=step[0])
    elif kind == "write":
        _, tid, channel, value = op
        head = heads.get((tid, ""))
        if head is not None and saver.get_tuple({"configurable": {"thread_id": tid, "checkpoint_id": head}}):
            config = {"configurable": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": head}}
            saver.put_writes(config, [(channel, value)], task_id=f"task{step[0] % 3}")
    elif kind == "delete":
        saver.delete_thread(op[1])
        for key in [k for k in heads if k[0] == op[1]]:
            del heads[key]
    elif kind == "copy":
        saver.copy_thread(op[1], op[2])
    elif kind == "prune":
        saver.prune([op[1]], strategy="keep_last", keep_last=op[2])
        for key in [k for k in heads if k[0] == op[1]]:
            latest = saver.get_tuple({"configurable": {"thread_id": key[0], "checkpoint_ns": key[1]}})
            heads[key] = latest.config["configurable"]["checkpoint_id"] if latest else None
    elif kind == "backup":
        saver.backup()


@pytest.fixture(scope="module")
def roundtrip_db(pg_server: str) -> str:
    name = "roundtrip"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = pg_server.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=25))
def test_backup_reopen_and_restore_every_generation(roundtrip_db: str, ops: list[tuple]) -> None:
    schema = f"rt{next(_schemas)}"
    saver = HybridSaver.from_url(roundtrip_db, schema=schema, backup_interval=None, retention=1000, listen=False)
    heads: dict = {}
    step = [0]
    at_generation: dict[int, tuple] = {}
    try:
        for op in ops:
            apply(saver, op, heads, step)
            if op[0] == "backup":
                at_generation[saver.last_run.generation] = state_of(saver)
        final = saver.backup()
        at_generation[final.generation] = state_of(saver)
        expected = state_of(saver)
    finally:
        saver.close()

    again = HybridSaver.from_url(roundtrip_db, schema=schema, backup_interval=None, retention=1000, listen=False)
    try:
        assert state_of(again) == expected
        for generation, state in sorted(at_generation.items()):
            again.restore(generation)
            assert state_of(again) == state, f"restore of generation {generation}"
        # one thread from the oldest generation, the rest from the newest
        oldest, newest = min(at_generation), max(at_generation)
        again.restore(newest)
        for tid in list(at_generation[oldest][0])[:2]:
            again.restore(oldest, tid)
            assert thread_state(state_of(again), tid) == thread_state(at_generation[oldest], tid)
            for other in at_generation[newest][0]:
                if other != tid and other not in at_generation[oldest][0]:
                    assert thread_state(state_of(again), other) == thread_state(at_generation[newest], other)
    finally:
        again.close()


def test_reopen_after_restore_comes_back_restored(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver()
    first = put_checkpoint(saver, "t", {"m": "one"})
    g1 = saver.backup().generation
    put_checkpoint(saver, "t", {"m": "two"}, parent=first, step=1)
    saver.backup()
    restored = state_of(saver)
    result = saver.restore(g1)
    at_g1 = state_of(saver)
    assert at_g1 != restored
    saver.close()
    again = open_saver()
    assert state_of(again) == at_g1
    again.restore(result.undo_generation)
    assert state_of(again) == restored


def test_retention_keeps_last_n_and_compacts(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver(retention=3)
    parent = None
    for i in range(6):
        parent = put_checkpoint(saver, "t", {"m": f"v{i}"}, parent=parent, step=i)
        saver.prune(["t"], strategy="keep_latest")
        saver.backup()
    gens = [g.generation for g in saver.generations()]
    assert gens == sorted(gens, reverse=True) and len(gens) == 3
    with psycopg.connect(db_url) as conn:
        dead = conn.execute(
            "SELECT count(*) FROM hybrid_saver.checkpoints WHERE deleted_gen IS NOT NULL AND deleted_gen <= %s",
            (min(gens),),
        ).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM hybrid_saver.checkpoints").fetchone()[0]
    assert dead == 0
    assert total <= 3  # one live checkpoint plus the ones the two older kept generations need
    oldest = min(gens)
    saver.restore(oldest)
    assert len(saver.storage["t"][""]) == 1
