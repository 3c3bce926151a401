"""Long conversations (issue 18): channel versions kept compressed and as skip-deltas, in memory and in
the store; every version decodes to the bytes LangGraph put, in bounded steps; prune keeps what the
versions that stay (and DeltaChannel values) need; a resident long thread costs a fraction of
InMemorySaver's bytes."""

from __future__ import annotations

import gc
import operator
import os
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from persistence import HybridSaver
from persistence.codec import DELTA, ROOT, Blobs, BrokenDelta, compress
from persistence.packed import PACK_AFTER, PACKED, Packed


def _versions(n: int) -> list[tuple[str, bytes]]:
    """``n`` versions of a growing messages-like list, serialised as LangGraph does."""
    serde = JsonPlusSerializer()
    items: list[dict[str, Any]] = []
    out = []
    for i in range(n):
        items.append({"role": "user" if i % 2 else "assistant", "content": f"message {i}: " + "words " * (i % 7 + 60)})
        out.append(serde.dumps_typed(list(items)))
    return out


def test_every_version_decodes_exactly_in_bounded_steps() -> None:
    blobs = Blobs()
    versions = _versions(400)
    for i, typed in enumerate(versions):
        blobs[("t", "", "messages", f"{i:08d}")] = typed
    raw_bytes = sum(len(v[1]) for v in versions)
    kept = sum(len(blobs.raw(k)[1]) for k in blobs)
    assert kept / raw_bytes < 0.05, kept / raw_bytes
    tags = {blobs.raw(k)[0][:3] for k in blobs}
    assert {ROOT, DELTA} <= tags
    for i, typed in enumerate(versions):
        key = ("t", "", "messages", f"{i:08d}")
        assert blobs[key] == typed and blobs.get(key) == typed
        assert len(blobs.bases(key)) <= i.bit_length(), (i, blobs.bases(key))
    # kept decoded: the newest version and the bases of versions still to come (the chain starts at the
    # first version of 8 KiB; of its 381 versions, #0 and #256 are bases of later ones, #380 is the newest)
    first = min(int(k[3]) for k in blobs if blobs.raw(k)[0].startswith(ROOT))
    hot = {int(k[3]) for k in blobs if blobs._hot.get(k[:3], {}).get(k[3]) is not None}
    assert 400 - first == 381 and hot == {first, first + 256, 399}, (first, sorted(hot))
    assert blobs.hot_bytes == sum(len(versions[v][1]) for v in hot)
    # a fresh dict of the same encoded values (a reload from the store) decodes them too, and goes on
    # with the chain: the next version is a delta against the base the skip-delta rule names
    reloaded = Blobs({k: blobs.raw(k) for k in blobs})
    assert reloaded.plain() == {("t", "", "messages", f"{i:08d}"): v for i, v in enumerate(versions)}
    assert reloaded.resume(list(reloaded)) == 1
    reloaded[("t", "", "messages", f"{400:08d}")] = _versions(401)[-1]
    # chain index 381: its base is #380 (version 399), not a new root
    assert reloaded.bases(("t", "", "messages", f"{400:08d}"))[0] == ("t", "", "messages", f"{399:08d}")


def test_a_base_with_other_content_is_refused_not_misread() -> None:
    blobs = Blobs()
    versions = _versions(60)
    for i, typed in enumerate(versions):
        blobs[("t", "", "m", i)] = typed
    delta = next(k for k in blobs if blobs.raw(k)[0].startswith(DELTA))
    base = blobs.bases(delta)[0]
    # the base's key now holds another version's bytes (a store rewritten under the saver)
    other = Blobs({k: blobs.raw(k) for k in blobs})
    other.store_raw(base, (ROOT + "msgpack", compress(versions[0][1])))
    with pytest.raises(BrokenDelta, match="other content"):
        other[delta]
    other.store_raw(base, blobs.raw(base))
    assert other[delta] == versions[delta[3]]
    gone = Blobs({k: blobs.raw(k) for k in blobs if k != base})
    with pytest.raises(BrokenDelta, match="is gone"):
        gone[delta]


def test_small_and_encrypted_values_are_kept_as_they_are() -> None:
    blobs = Blobs()
    small = JsonPlusSerializer().dumps_typed("short")
    blobs[("t", "", "a", 1)] = small
    enc = EncryptedSerializer.from_pycryptodome_aes(key=b"k" * 16)
    secret = enc.dumps_typed(["x" * 2000])
    blobs[("t", "", "b", 1)] = secret
    blobs[("t", "", "c", 1)] = ("empty", b"")
    assert blobs.raw(("t", "", "a", 1)) == small and blobs.raw(("t", "", "b", 1)) == secret
    assert blobs.raw(("t", "", "c", 1)) == ("empty", b"")
    # incompressible: kept whole, and nothing kept decoded beside it (it would be counted twice)
    noise = ("bytes", os.urandom(100_000))
    blobs[("t", "", "d", 1)] = noise
    assert blobs.raw(("t", "", "d", 1)) is noise and blobs[("t", "", "d", 1)] == noise
    assert blobs.hot_bytes == 0 and blobs.decoded_bytes == 0


def _payload(saver: InMemorySaver) -> int:
    total = sum(
        len(c) + len(m) for ns in saver.storage.values() for cps in ns.values() for (_, c), (_, m), _ in cps.values()
    )
    total += sum(len(v[2][1]) for inner in saver.writes.values() for v in inner.values())
    return total + sum(len(v[1]) for v in dict.values(saver.blobs))


def _history(graph: Any, thread_id: str) -> list[tuple[Any, ...]]:
    """Every state of the thread, newest first, exactly (ids included: for one saver before and after)."""
    return [
        (s.config["configurable"]["checkpoint_id"], s.values, s.next, s.metadata.get("step"))
        for s in graph.get_state_history({"configurable": {"thread_id": thread_id}})
    ]


def _said(graph: Any, thread_id: str) -> list[tuple[Any, ...]]:
    """Every state's messages as (type, text), its next nodes and step: what two savers fed the same
    turns must agree on (ids are random per run)."""
    out = []
    for s in graph.get_state_history({"configurable": {"thread_id": thread_id}}):
        messages = [(m.type, m.content) for m in s.values.get("messages", [])]
        out.append((messages, s.next, s.metadata.get("step")))
    return out


def test_long_thread_costs_a_fraction_and_round_trips(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    saver = open_saver()
    memory = InMemorySaver()
    graph, reference = build_graph(saver, OfflineResponder()), build_graph(memory, OfflineResponder())
    for turn in range(120):
        text = f"turn {turn}: tell me about topic {turn}, with an example and a short summary"
        assert chat_turn(graph, "long", text) == chat_turn(reference, "long", text)
        if turn % 10 == 9:
            assert saver.backup().ok
    assert saver.backup().ok
    resident = saver.stats().resident_bytes
    ratio = resident / _payload(memory)
    print(f"120 turns: InMemorySaver {_payload(memory):,} B, HybridSaver {resident:,} B ({ratio:.3f})")
    # counted as the budget counts it: stored bytes, ~400 B per entry, the decoded versions kept; against
    # InMemorySaver's payload alone (at 1,000 turns the bench finds about 0.01)
    assert ratio < 0.2, ratio
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT sum(length(value)) FROM hybrid_saver.blobs WHERE deleted_gen IS NULL").fetchone()[
            0
        ]
    assert stored < 0.1 * sum(len(v[1]) for v in memory.blobs.values()), stored
    assert _said(graph, "long") == _said(reference, "long")
    before = _history(graph, "long")
    saver.close()
    reopened = open_saver()
    assert _history(build_graph(reopened, OfflineResponder()), "long") == before
    # what a turn adds to the next backup: about the turn, not the conversation, also right after a
    # reload (the thread goes on with its chains: the new versions are deltas, not new roots)
    graph = build_graph(reopened, OfflineResponder())
    reopened.get_tuple({"configurable": {"thread_id": "long"}})  # loaded as stored
    loaded = set(reopened.cache.blobs)
    chat_turn(graph, "long", "one more")
    chat_turn(graph, "long", "and another")
    new = [k for k in reopened.cache.blobs if k not in loaded and k[2] == "messages"]
    assert len(new) == 4 and all(reopened.cache.blobs.raw(k)[0].startswith(DELTA) for k in new)
    run = reopened.backup()
    print(f"two turns after a reload: {run.bytes:,} B")
    assert run.ok and run.bytes < 12_000, run.bytes
    # the decoded versions kept for the next reads are counted in the resident bytes
    stats, decoded = reopened.stats(), reopened.cache.blobs.decoded_bytes
    assert decoded > 0 and stats.resident_bytes >= decoded + reopened.cache.residency.resident_bytes


def test_prune_keeps_what_the_kept_versions_decode_through(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    memory = InMemorySaver()
    graph, reference = build_graph(saver, OfflineResponder()), build_graph(memory, OfflineResponder())
    for turn in range(40):
        chat_turn(graph, "p", f"turn {turn}: something long enough to be compressed " * 3)
        chat_turn(reference, "p", f"turn {turn}: something long enough to be compressed " * 3)
    saver.prune(["p"], strategy="keep_last", keep_last=3)
    kept = _history(graph, "p")
    assert len(kept) == 3
    assert _said(graph, "p") == _said(reference, "p")[:3]
    assert saver.backup().ok
    saver.close()
    assert _history(build_graph(open_saver(), OfflineResponder()), "p") == kept


def _append(state: list[str], writes: Sequence[list[str]]) -> list[str]:
    out = list(state)
    for w in writes:
        out.extend(w)
    return out


class _Notes(TypedDict):
    notes: Annotated[list[str], DeltaChannel(_append, snapshot_frequency=50)]
    count: Annotated[int, operator.add]


def _notes_graph(checkpointer: Any) -> Any:
    builder = StateGraph(_Notes)
    builder.add_node("note", lambda s: {"notes": [f"note {s.get('count', 0)}"], "count": 1})
    builder.add_edge(START, "note")
    return builder.compile(checkpointer=checkpointer)


@pytest.mark.parametrize("budget", [None, 64 * 1024])
def test_delta_channel_graph(open_saver: Callable[..., HybridSaver], budget: int | None) -> None:
    """A graph on LangGraph's DeltaChannel: values rebuilt from ancestors' writes, on cold threads too
    (evicted under a budget, reloaded after a restart), and after a prune that keeps one checkpoint."""
    saver = open_saver(memory_budget=budget)
    graph, reference = _notes_graph(saver), _notes_graph(InMemorySaver())
    for turn in range(10):
        for thread in ("d1", "d2", "d3"):
            config = {"configurable": {"thread_id": thread}}
            assert graph.invoke({"notes": [f"in {turn}"]}, config) == reference.invoke(
                {"notes": [f"in {turn}"]}, config
            )
    for thread in ("d1", "d2", "d3"):
        assert [h[1:] for h in _history(graph, thread)] == [h[1:] for h in _history(reference, thread)]
    assert saver.backup().ok
    saver.close()
    again = open_saver(memory_budget=budget)
    graph = _notes_graph(again)
    config = {"configurable": {"thread_id": "d1"}}
    expected = reference.get_state(config).values
    assert graph.get_state(config).values == expected
    again.prune(["d1"], strategy="keep_latest")
    assert graph.get_state(config).values == expected
    assert again.backup().ok
    again.close()
    assert _notes_graph(open_saver(memory_budget=budget)).get_state(config).values == expected


class _Recording(JsonPlusSerializer):
    """LangGraph's serde, keeping the bytes it wrote for each checkpoint (by checkpoint id)."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: dict[str, tuple[str, bytes]] = {}

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        typed = super().dumps_typed(obj)
        if isinstance(obj, dict) and "channel_versions" in obj and "id" in obj:
            self.checkpoints[obj["id"]] = typed
        return typed


def test_old_checkpoints_are_packed_and_read_as_put(open_saver: Callable[..., HybridSaver], db_url: str) -> None:
    serde = _Recording()
    saver = open_saver(serde=serde)
    graph = build_graph(saver, OfflineResponder())
    for turn in range(80):
        chat_turn(graph, "long", f"turn {turn}: tell me about topic {turn}")
        if turn % 8 == 7:
            assert saver.backup().ok
    assert saver.backup().ok
    history = _history(graph, "long")

    def check(s: HybridSaver) -> int:
        cps = s.cache.storage["long"][""]
        newest = max(cps)
        packed = {cid for cid, value in cps.items() if type(value[0]) is Packed}
        # every checkpoint of the namespace once it held PACK_AFTER, but never the newest (a turn's read)
        assert newest not in packed and len(packed) >= len(cps) - PACK_AFTER, (len(packed), len(cps))
        for cid, value in cps.items():
            assert tuple(value[0]) == serde.checkpoints[cid], cid  # the bytes LangGraph's serde wrote
        return len(packed)

    packed = check(saver)
    stored = sum(len(tuple.__getitem__(v[0], 1)) for v in saver.cache.storage["long"][""].values())
    plain = sum(len(serde.checkpoints[cid][1]) for cid in saver.cache.storage["long"][""])
    print(f"{packed} of {len(history)} checkpoints packed: {stored:,} B for {plain:,} B")
    assert stored < 0.6 * plain
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FILTER (WHERE checkpoint_type LIKE %s), count(*) FROM hybrid_saver.checkpoints "
            "WHERE deleted_gen IS NULL",
            (PACKED + "%",),
        ).fetchone()
    assert rows == (packed, len(history)), rows  # the store holds them as memory does
    saver.close()
    reopened = open_saver(serde=serde)
    reopened.get_tuple({"configurable": {"thread_id": "long"}})
    assert check(reopened) == packed
    assert _history(build_graph(reopened, OfflineResponder()), "long") == history
    # a time-travel read of an old checkpoint, and a turn forked from it
    old = history[len(history) // 2][0]
    config = {"configurable": {"thread_id": "long", "checkpoint_ns": "", "checkpoint_id": old}}
    found = reopened.get_tuple(config)
    assert found is not None and found.checkpoint["id"] == old
    forked = build_graph(reopened, OfflineResponder())
    forked.invoke({"messages": [("user", "a fork")]}, config)
    assert check(reopened) >= packed


def test_the_count_of_a_loaded_thread_is_its_real_memory(open_saver: Callable[..., HybridSaver]) -> None:
    """What the budget counts of a long thread loaded from the store against what it really allocates."""
    saver = open_saver()
    graph = build_graph(saver, OfflineResponder())
    for turn in range(150):
        chat_turn(graph, "long", f"turn {turn}: tell me about topic {turn}, with an example and a short summary")
    assert saver.backup().ok
    saver.close()

    def traced(build: Callable[[], HybridSaver]) -> tuple[int, HybridSaver]:
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            made = build()
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - base, made
        finally:
            tracemalloc.stop()

    baseline, empty = traced(lambda: open_saver(schema="an_empty_store"))  # what a saver costs by itself
    empty.close()

    def load() -> HybridSaver:
        s = open_saver()
        s.get_tuple({"configurable": {"thread_id": "long"}})
        return s

    total, loaded = traced(load)
    real, counted = total - baseline, loaded.stats().resident_bytes
    print(f"150-turn thread loaded: counted {counted:,} B, real {real:,} B ({counted / real:.2f})")
    assert 0.85 <= counted / real <= 1.3, (counted, real)
