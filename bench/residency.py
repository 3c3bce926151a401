"""Residency: what a memory budget costs and saves, side by side in one run.

* cold start: from ``from_url`` to the first served turn on a large store, with a budget of a tenth
  of it (threads load on demand) against no budget (everything loaded first);
* a turn on a cold thread (claim + one read of its rows + the turn) against the same turn with
  ``PostgresSaver``; a turn on a resident thread against ``InMemorySaver``;
* peak resident bytes against the budget under random access over ten times what it holds.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver

from agent import OfflineResponder, build_graph, chat_turn
from bench.database import Database, postgres_pool
from bench.settings import Settings
from bench.stats import clock, summary
from bench.workload import Template, fill, pinned_serde, user_text
from persistence import HybridSaver


def _open(url: str, templates: list[Template], budget: int | None) -> HybridSaver:
    return HybridSaver.from_url(
        url, backup_interval=None, serde=pinned_serde(templates), memory_budget=budget, handle_signals=False
    )


def run_residency(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["cold_start"] = _cold_start(db, templates, settings, log)
    out["turns"] = _turns(db, templates, settings, log)
    out["budget"] = _random_access(db, templates, settings, log)
    return out


def _cold_start(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    threads = settings.cold_start_threads
    with db.database("coldstart") as url:
        seed = _open(url, templates, None)
        checkpoints = fill(seed, templates, threads)
        seed.serde.enabled = False  # type: ignore[attr-defined]
        if not seed.backup().ok:
            raise RuntimeError("the cold start store could not be backed up")
        store_bytes = seed.stats().resident_bytes
        seed.close()
        budget = store_bytes // 10
        # the first served turn after a start, with a budget of a tenth and without a budget (which loads
        # its most recent 32 MB first and the rest in the background), and the time until the whole store
        # is in memory (what a start without a budget cost when it waited for it)
        graph_turns: dict[str, list[float]] = {"budget": [], "full": [], "all_loaded": []}
        for rep in range(2):
            for kind in ("budget", "full") if rep == 0 else ("full", "budget"):
                start = clock()
                saver = _open(url, templates, budget if kind == "budget" else None)
                try:
                    saver.serde.enabled = False  # type: ignore[attr-defined]
                    graph = build_graph(saver, OfflineResponder())
                    chat_turn(graph, f"t{(rep * 7919) % threads}", "What is my name, and what did I tell you I like?")
                    graph_turns[kind].append(clock() - start)
                    if kind == "full":
                        if not saver.wait_warm(600):
                            raise RuntimeError("the warm start did not finish in 600 s")
                        graph_turns["all_loaded"].append(clock() - start)
                finally:
                    saver.close()
        budget_s = statistics.median(graph_turns["budget"])
        first_s = statistics.median(graph_turns["full"])
        full_s = statistics.median(graph_turns["all_loaded"])
    log(
        f"  cold start on {checkpoints:,} checkpoints: first turn {budget_s:.2f} s with a budget of a tenth, "
        f"{first_s:.2f} s without a budget; everything loaded {full_s:.2f} s"
    )
    return {
        "threads": threads,
        "checkpoints": checkpoints,
        "store_bytes": store_bytes,
        "budget_bytes": budget,
        "budget_first_turn_s": budget_s,
        "no_budget_first_turn_s": first_s,
        "full_load_s": full_s,
        "each": graph_turns,
        "ratio": max(budget_s, first_s) / full_s,
    }


def _turns(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Cold-thread turns against PostgresSaver, resident-thread turns against InMemorySaver, interleaved."""
    n = settings.miss_threads
    with db.database("turns") as url:
        pool = postgres_pool(url, size=2)
        try:
            postgres = PostgresSaver(pool, serde=pinned_serde(templates))
            postgres.setup()
            fill(postgres, templates, n, prefix="s")
            memory = InMemorySaver(serde=pinned_serde(templates))
            fill(memory, templates, n, prefix="s")
            seed = _open(url, templates, None)
            fill(seed, templates, n, prefix="s")
            sizes = seed.stats().resident_bytes
            fill(seed, templates, n, prefix="filler")  # more recent: the warm start loads these, not "s"
            seed.close()
            # twice the test threads: they all fit once loaded, and the fillers fill the half a start loads
            hybrid = _open(url, templates, 2 * sizes)
            hybrid.wait_warm(120)
            try:
                for saver in (postgres, memory, hybrid):
                    saver.serde.enabled = False  # type: ignore[attr-defined]
                cold = [t for t in (f"s{i}" for i in range(n)) if t not in hybrid.cache.residency.entries]
                graphs = {
                    "hybrid": build_graph(hybrid, OfflineResponder()),
                    "postgres": build_graph(postgres, OfflineResponder()),
                    "memory": build_graph(memory, OfflineResponder()),
                }
                miss, pg = _turns_side_by_side(graphs["hybrid"], graphs["postgres"], cold, 11)
                loads = hybrid.stats().loads
                hit, mem = _turns_side_by_side(graphs["hybrid"], graphs["memory"], cold, 12)
                hits_loaded = hybrid.stats().loads - loads
            finally:
                hybrid.close()
        finally:
            pool.close()
    out = {
        "cold_threads": len(cold),
        "miss_turn": summary(miss, 1e3),
        "postgres_turn": summary(pg, 1e3),
        "hit_turn": summary(hit, 1e3),
        "memory_turn": summary(mem, 1e3),
        "loads_during_hit_turns": hits_loaded,
    }
    log(
        f"  first turn on a cold thread {out['miss_turn']['median']:.2f} ms vs PostgresSaver "
        f"{out['postgres_turn']['median']:.2f} ms; resident {out['hit_turn']['median']:.2f} ms vs "
        f"InMemorySaver {out['memory_turn']['median']:.2f} ms"
    )
    return out


def _random_access(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Random turns over ten times more threads than the budget holds; the peak of resident bytes."""
    threads = settings.budget_threads
    with db.database("budget") as url:
        seed = _open(url, templates, None)
        fill(seed, templates, threads)
        per_thread = seed.stats().resident_bytes / threads
        seed.close()
        budget = int(per_thread * threads / 10)
        saver = HybridSaver.from_url(
            url, backup_interval=0.5, serde=pinned_serde(templates), memory_budget=budget, handle_signals=False
        )
        peak = {"bytes": 0}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak["bytes"] = max(peak["bytes"], saver.cache.residency.resident_bytes)
                time.sleep(0.001)

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            saver.wait_warm(120)
            saver.serde.enabled = False  # type: ignore[attr-defined]
            graph = build_graph(saver, OfflineResponder())
            rng = random.Random(3)
            watcher.start()
            start = clock()
            turns = settings.budget_turns
            for k in range(turns):
                chat_turn(graph, f"t{rng.randrange(threads)}", user_text(k, 13))
            seconds = clock() - start
            stats = saver.stats()
        finally:
            stop.set()
            saver.close()
    out = {
        "threads": threads,
        "budget_bytes": budget,
        "peak_resident_bytes": peak["bytes"],
        "thread_bytes": per_thread,
        "turns": turns,
        "turns_per_s": turns / seconds,
        "loads": stats.loads,
        "evictions": stats.evictions,
        "hits": stats.hits,
        "ratio": peak["bytes"] / budget,
    }
    log(
        f"  random turns over {threads} threads with a budget of {threads // 10}: peak {out['ratio']:.3f} x budget, "
        f"{stats.loads} loads, {stats.evictions} evictions"
    )
    return out


def _turns_side_by_side(first: Any, second: Any, threads: list[str], turn: int) -> tuple[list[float], list[float]]:
    """One turn per thread on each of two graphs, alternating which goes first; their durations."""
    times: tuple[list[float], list[float]] = ([], [])
    for k, tid in enumerate(threads):
        text = user_text(k, turn)
        for which in (0, 1) if k % 2 else (1, 0):  # as before: odd threads start with the first
            start = clock()
            chat_turn((first, second)[which], tid, text)
            times[which].append(clock() - start)
    return times


__all__ = ["run_residency"]
