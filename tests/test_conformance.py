"""LangGraph's own conformance suite, base and extended capabilities, on HybridSaver."""

from __future__ import annotations

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, EXTENDED_CAPABILITIES

from persistence import HybridSaver

BASE_TESTS = 58
EXTENDED_TESTS = 23


def _register(name: str, url: str):
    """A conformance factory: a fresh saver per capability suite, closed (final backup) after it."""

    @checkpointer_test(name=name)
    async def hybrid():
        saver = HybridSaver.from_url(url, backup_interval=None)
        try:
            yield saver
        finally:
            saver.close()

    return hybrid


async def test_conformance_all_81_tests_pass(db_url: str) -> None:
    report = await validate(_register("HybridSaver", db_url))
    failures = {name: r.failures for name, r in report.results.items() if r.tests_failed}
    assert not failures, failures

    def passed(caps: frozenset) -> int:
        return sum(report.results[c.value].tests_passed for c in caps)

    assert all(report.results[c.value].detected for c in BASE_CAPABILITIES | EXTENDED_CAPABILITIES)
    assert passed(BASE_CAPABILITIES) == BASE_TESTS
    assert passed(EXTENDED_CAPABILITIES) == EXTENDED_TESTS


async def test_conformance_state_survives_backup_and_reload(db_url: str) -> None:
    """The suite's final state, backed up and reloaded, is the same state."""
    from langgraph.checkpoint.conformance.capabilities import Capability

    report = await validate(
        _register("HybridSaver-reload", db_url), capabilities={Capability.PUT.value, Capability.PUT_WRITES.value}
    )
    assert all(r.tests_failed == 0 for r in report.results.values())
    first = HybridSaver.from_url(db_url, backup_interval=None)
    storage = {t: {ns: dict(c) for ns, c in n.items()} for t, n in first.storage.items()}
    writes, blobs = dict(first.writes), dict(first.blobs)
    first.close()
    again = HybridSaver.from_url(db_url, backup_interval=None)
    try:
        assert storage and {t: {ns: dict(c) for ns, c in n.items()} for t, n in again.storage.items()} == storage
        assert dict(again.writes) == writes
        assert dict(again.blobs) == blobs
    finally:
        again.close()
