"""Generated histories, with and without a memory budget: back up, reopen, compare byte for byte;
restore every kept generation exactly; a budget never makes the saver serve a stale value."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import psycopg
import pytest
from histories import put_checkpoint, served_state, state_of, thread_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base.id import uuid6

from persistence import HybridSaver

_schemas = itertools.count()
pytestmark = pytest.mark.all_postgres
#: a budget that holds one or two of the generated threads: nearly every access evicts and reloads
SMALL_BUDGET = 1_500

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


def apply(saver: HybridSaver, op: tuple, heads: dict, step: list[int], checkpoint_id: str | None = None) -> None:
    kind = op[0]
    step[0] += 1
    if kind == "put":
        _, tid, ns, vals = op
        heads[(tid, ns)] = put_checkpoint(
            saver, tid, vals, ns=ns, parent=heads.get((tid, ns)), step=step[0], checkpoint_id=checkpoint_id
        )
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


def _threads(ops: list[tuple]) -> set[str]:
    out: set[str] = set()
    for op in ops:
        out.update(x for x in op[1:3] if isinstance(x, str) and op[0] in ("put", "write", "delete", "copy", "prune"))
    return out


@pytest.mark.parametrize("budget", [None, SMALL_BUDGET], ids=["no-budget", "small-budget"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=25))
def test_backup_reopen_and_restore_every_generation(roundtrip_db: str, budget: int | None, ops: list[tuple]) -> None:
    schema = f"rt{next(_schemas)}"
    open_kw = {"schema": schema, "backup_interval": None, "retention": 1000, "listen": False, "memory_budget": budget}
    saver = HybridSaver.from_url(roundtrip_db, **open_kw)
    heads: dict = {}
    step = [0]
    at_generation: dict[int, tuple] = {}
    names = _threads(ops)
    try:
        for op in ops:
            apply(saver, op, heads, step)
            if op[0] == "backup" and saver.last_run.generation is not None:
                at_generation[saver.last_run.generation] = served_state(saver, names)
        final = saver.backup()
        expected = served_state(saver, names)
        newest = saver.store.latest_generation()
        if newest is not None:
            at_generation[newest] = expected
        assert final.ok
    finally:
        saver.close()

    again = HybridSaver.from_url(roundtrip_db, **open_kw)
    try:
        assert served_state(again, names) == expected
        if budget is None:
            assert state_of(again) == expected  # everything came back into memory
        for generation, state in sorted(at_generation.items()):
            again.restore(generation)
            assert served_state(again, names) == state, f"restore of generation {generation}"
        if not at_generation:
            return
        # one thread from the oldest generation, the rest from the newest
        oldest, newest = min(at_generation), max(at_generation)
        again.restore(newest)
        for tid in list(at_generation[oldest][0])[:2]:
            again.restore(oldest, tid)
            assert thread_state(served_state(again, names), tid) == thread_state(at_generation[oldest], tid)
            for other in at_generation[newest][0]:
                if other != tid and other not in at_generation[oldest][0]:
                    assert thread_state(served_state(again, names), other) == thread_state(at_generation[newest], other)
    finally:
        again.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=25))
def test_a_small_budget_never_serves_a_stale_value(roundtrip_db: str, ops: list[tuple]) -> None:
    """The same history on a saver with no budget (everything in memory: the model) and on one with a
    budget of about one thread: after every operation both serve exactly the same state."""
    n = next(_schemas)
    model = HybridSaver.from_url(roundtrip_db, schema=f"model{n}", backup_interval=None, listen=False)
    small = HybridSaver.from_url(
        roundtrip_db, schema=f"small{n}", backup_interval=None, listen=False, memory_budget=SMALL_BUDGET
    )
    names = _threads(ops)
    heads_model: dict = {}
    heads_small: dict = {}
    step_model, step_small = [0], [0]
    try:
        for op in ops:
            checkpoint_id = str(uuid6(clock_seq=step_model[0] + 1))
            apply(model, op, heads_model, step_model, checkpoint_id)
            apply(small, op, heads_small, step_small, checkpoint_id)
            assert served_state(small, names) == served_state(model, names), f"after {op[0]}"
            largest = max((e.bytes for e in list(small.cache.residency.entries.values())), default=0)
            assert small.stats().resident_bytes <= SMALL_BUDGET + largest, "over the budget by more than a thread"
        assert small.backup().ok and model.backup().ok
        assert served_state(small, names) == served_state(model, names)
    finally:
        model.close()
        small.close()
    reopened = HybridSaver.from_url(
        roundtrip_db, schema=f"small{n}", backup_interval=None, listen=False, memory_budget=SMALL_BUDGET
    )
    try:
        model_again = HybridSaver.from_url(roundtrip_db, schema=f"model{n}", backup_interval=None, listen=False)
        try:
            assert served_state(reopened, names) == served_state(model_again, names)
        finally:
            model_again.close()
    finally:
        reopened.close()


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


def test_a_load_reads_the_same_rows_as_one_result_and_as_a_copy_stream(
    open_saver: Callable[..., HybridSaver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load of a few threads reads one binary result, a batch streams through COPY: both give the
    same snapshot, byte for byte, odd thread ids and namespaces included."""
    import persistence.store.generations as generations

    saver = open_saver()
    tids = ["a", "nul\x00byte", "emoji 🧵", "'; DROP TABLE x; --", "x" * 2_000]
    for k, tid in enumerate(tids):
        head = None
        for step in range(4):
            head = put_checkpoint(saver, tid, {"m": f"{tid[:5]}-{step}", "n": step * k}, parent=head, step=step)
        put_checkpoint(saver, tid, {"o": b"\x00\xff" * 50}, ns="child:1", step=9)
        config = {"configurable": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": head}}
        saver.put_writes(config, [("m", "pending"), ("__error__", "boom")], "task-1")
    saver.backup()
    one_result = saver.store.load_threads(tids)
    monkeypatch.setattr(generations, "SELECT_LOAD_MAX", 0)
    streamed = saver.store.load_threads(tids)
    assert set(one_result.storage) == set(tids)
    assert one_result.storage == streamed.storage
    assert one_result.writes == streamed.writes and len(one_result.writes) == len(tids)
    assert dict(one_result.blobs) == dict(streamed.blobs) and len(one_result.blobs) == 4 * len(tids) * 2 + len(tids)
