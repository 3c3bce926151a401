"""LangGraph's own conformance suite, base and extended capabilities, on HybridSaver: without a budget,
with a budget so small that nearly every operation evicts and reloads, on one member of a
three-member fleet, and with every checkpoint but a namespace's newest packed."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, EXTENDED_CAPABILITIES

from persistence import HybridSaver, SaverStats, packed
from persistence.memory import writes

BASE_TESTS = 58
EXTENDED_TESTS = 23
#: smaller than one conformance thread: every access to another thread evicts and reloads
TINY_BUDGET = 600


def _register(name: str, url: str, figures: list[SaverStats] | None = None, **options: object):
    """A conformance factory: a fresh saver per capability suite, closed (final backup) after it."""

    @checkpointer_test(name=name)
    async def hybrid():
        saver = HybridSaver.from_url(url, backup_interval=None, **options)
        try:
            yield saver
        finally:
            if figures is not None:
                figures.append(saver.stats())
            saver.close()

    return hybrid


async def _assert_all_pass(factory) -> None:
    report = await validate(factory)
    failures = {name: r.failures for name, r in report.results.items() if r.tests_failed}
    assert not failures, failures

    def passed(caps: frozenset) -> int:
        return sum(report.results[c.value].tests_passed for c in caps)

    assert all(report.results[c.value].detected for c in BASE_CAPABILITIES | EXTENDED_CAPABILITIES)
    assert passed(BASE_CAPABILITIES) == BASE_TESTS
    assert passed(EXTENDED_CAPABILITIES) == EXTENDED_TESTS


async def test_conformance_all_81_tests_pass(db_url: str) -> None:
    await _assert_all_pass(_register("HybridSaver", db_url))


async def test_conformance_all_81_tests_pass_with_a_tiny_budget(db_url: str) -> None:
    figures: list[SaverStats] = []
    await _assert_all_pass(_register("HybridSaver-tiny-budget", db_url, figures, memory_budget=TINY_BUDGET))
    loads = sum(f.loads for f in figures)
    evictions = sum(f.evictions for f in figures)
    # the suite touches a few hundred threads; with this budget nearly every access is a miss
    hits = sum(f.hits for f in figures)
    assert loads >= 200 and loads >= 2 * hits and evictions >= 0.9 * loads, (loads, evictions, hits)


async def test_conformance_on_a_member_of_a_three_member_fleet(
    db_url: str, open_saver: Callable[..., HybridSaver]
) -> None:
    others = [open_saver(backup_interval=0.5) for _ in range(2)]
    await _assert_all_pass(_register("HybridSaver-fleet-member", db_url))
    assert all(len([m for m in o.members() if m.alive]) == 2 for o in others)


@pytest.mark.parametrize("budget", [None, TINY_BUDGET], ids=["no-budget", "tiny-budget"])
async def test_conformance_state_survives_backup_and_reload(db_url: str, budget: int | None) -> None:
    """The suite's final state, backed up and reloaded, is the same state."""
    from histories import served_state
    from langgraph.checkpoint.conformance.capabilities import Capability

    report = await validate(
        _register("HybridSaver-reload", db_url, memory_budget=budget),
        capabilities={Capability.PUT.value, Capability.PUT_WRITES.value},
    )
    assert all(r.tests_failed == 0 for r in report.results.values())
    first = HybridSaver.from_url(db_url, backup_interval=None, memory_budget=budget)
    state = served_state(first)
    first.close()
    again = HybridSaver.from_url(db_url, backup_interval=None, memory_budget=budget)
    try:
        assert state[0] and served_state(again) == state
    finally:
        again.close()


async def test_conformance_all_81_tests_pass_with_every_older_checkpoint_packed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's threads are short: packing (see persistence.packed) starts here at the second
    checkpoint of a namespace, whatever its size, so every read the suite makes of an older
    checkpoint goes through a Packed one."""
    monkeypatch.setattr(writes, "PACK_AFTER", 1)
    monkeypatch.setattr(packed, "MIN_PACK", 0)
    await _assert_all_pass(_register("HybridSaver-packed", db_url))
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM hybrid_saver.checkpoints WHERE checkpoint_type LIKE %s", (packed.PACKED + "%",)
        ).fetchone()
    assert row is not None and row[0] > 50, row  # the suite's checkpoints went to the store packed
