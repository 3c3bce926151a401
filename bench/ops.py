"""Single operations and whole graph turns, InMemorySaver vs HybridSaver vs PostgresSaver.

The savers take turns operation by operation (the order rotates every round), so a noisy moment
on this machine hits all of them alike and the ratios stay meaningful.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver

from agent import OfflineResponder, build_graph, chat_turn
from bench.database import Database, postgres_pool
from bench.settings import Settings
from bench.stats import clock, summary
from bench.workload import TURNS_PER_THREAD, OpFactory, Template, fill, pinned_serde, user_text

OPS = ("get_tuple", "list", "put", "put_writes")
READ_THREADS = 20
PUT_THREADS = 100


class Target:
    """One saver prepared for the operations: read threads, put threads and a chat graph."""

    def __init__(self, name: str, saver: Any, templates: list[Template], prefix: str = "read-") -> None:
        self.name = name
        self.saver = saver
        self.graph = build_graph(saver, OfflineResponder())
        self.factory = OpFactory(templates[0])
        self.read_threads = [f"{prefix}{i}" for i in range(READ_THREADS)]
        self._reads = itertools.cycle(self.read_threads)
        self._puts = itertools.cycle(range(PUT_THREADS))
        self._latest: dict[int, str | None] = {}
        self._last_saved: dict[str, Any] | None = None
        self.turn_prefix = f"turn-{name}-"

    def fill_reads(self, templates: list[Template]) -> None:
        serde = getattr(self.saver, "serde", None)
        fill(self.saver, templates, READ_THREADS, prefix="read-")
        if hasattr(serde, "enabled"):
            serde.enabled = False

    # each op returns a zero-argument callable to time (arguments are built outside the timing)
    def get_tuple(self) -> Callable[[], Any]:
        config = {"configurable": {"thread_id": next(self._reads), "checkpoint_ns": ""}}
        return lambda: self.saver.get_tuple(config)

    def list(self) -> Callable[[], Any]:
        config = {"configurable": {"thread_id": next(self._reads)}}
        return lambda: list(self.saver.list(config, limit=10))

    def put(self) -> Callable[[], Any]:
        k = next(self._puts)
        args = self.factory.put_args(f"put-{k}", self._latest.get(k))

        def op() -> Any:
            saved = self.saver.put(*args)
            self._latest[k] = saved["configurable"]["checkpoint_id"]
            self._last_saved = saved
            return saved

        return op

    def put_writes(self) -> Callable[[], Any]:
        if self._last_saved is None:
            self.put()()
        config = self._last_saved
        writes, task_id = self.factory.writes_args()
        return lambda: self.saver.put_writes(config, writes, task_id)

    def turn(self, thread: int, turn: int) -> Callable[[], Any]:
        tid = f"{self.turn_prefix}{thread}"
        text = user_text(thread, turn)
        return lambda: chat_turn(self.graph, tid, text)


def time_op(fn: Callable[[], Any]) -> float:
    start = clock()
    fn()
    return clock() - start


def run_ops(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Per-operation and per-turn times of the three savers, measured round-robin."""
    from bench.backup import open_hybrid

    url = db.create("ops")
    pool = postgres_pool(url)
    hybrid = open_hybrid(url, "hybrid_saver", pinned_serde(templates))
    try:
        memory = InMemorySaver(serde=pinned_serde(templates))
        postgres = PostgresSaver(pool, serde=pinned_serde(templates))
        postgres.setup()
        targets = [
            Target("memory", memory, templates),
            Target("hybrid", hybrid, templates),
            Target("postgres", postgres, templates),
        ]
        for target in targets:
            target.fill_reads(templates)
        samples: dict[str, dict[str, list[float]]] = {op: {t.name: [] for t in targets} for op in (*OPS, "turn")}
        gc.collect()
        for i in range(settings.op_samples):
            order = targets[i % 3 :] + targets[: i % 3]
            for op in OPS:
                for target in order:
                    samples[op][target.name].append(time_op(getattr(target, op)()))
        log(f"  {settings.op_samples} rounds of {', '.join(OPS)} done")
        for thread in range(settings.turn_threads):
            for turn in range(TURNS_PER_THREAD):
                k = thread * TURNS_PER_THREAD + turn
                order = targets[k % 3 :] + targets[: k % 3]
                for target in order:
                    samples["turn"][target.name].append(time_op(target.turn(thread, turn)))
        log(f"  {settings.turn_threads * TURNS_PER_THREAD} graph turns per saver done")
        breakdown = {t.name: _turn_breakdown(t, max(2, settings.turn_threads // 3)) for t in targets}
    finally:
        hybrid.close()
        pool.close()
        db.drop(url)
    out: dict[str, Any] = {
        op: {name: summary(values, 1e3 if op == "turn" else 1e6) for name, values in by_saver.items()}
        for op, by_saver in samples.items()
    }
    out["turn_breakdown"] = breakdown
    return out


SAVER_METHODS = ("get_tuple", "list", "put", "put_writes")


def _turn_breakdown(target: Target, threads: int) -> dict[str, Any]:
    """Time spent inside the checkpointer during graph turns (every call timed, any thread)."""
    calls: list[tuple[str, float]] = []
    saver = target.saver
    for method in SAVER_METHODS:
        inner = getattr(saver, method)

        def wrapped(*args: Any, _inner: Any = inner, _name: str = method, **kwargs: Any) -> Any:
            start = clock()
            try:
                return _inner(*args, **kwargs)
            finally:
                calls.append((_name, clock() - start))

        setattr(saver, method, wrapped)
    target.turn_prefix = f"breakdown-{target.name}-"
    turns: list[float] = []
    try:
        for thread in range(threads):
            for turn in range(TURNS_PER_THREAD):
                turns.append(time_op(target.turn(thread, turn)))
    finally:
        for method in SAVER_METHODS:
            saver.__dict__.pop(method, None)
    n = len(turns)
    per_method = {m: sum(d for name, d in calls if name == m) * 1e3 / n for m in SAVER_METHODS}
    return {
        "turns": n,
        "turn_ms": sum(turns) * 1e3 / n,
        "saver_ms_per_turn": sum(per_method.values()),
        "calls_per_turn": {m: sum(1 for name, _d in calls if name == m) / n for m in SAVER_METHODS},
        "ms_per_turn_by_method": per_method,
    }


__all__ = ["OPS", "Target", "run_ops", "time_op"]
