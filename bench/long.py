"""Long conversations: one thread per saver driven to 1,000 turns on the real chat graph, the savers
alternating turn by turn; at each length, medians of the last turns and of get_tuple, the bytes each
saver holds (in memory and in PostgreSQL) and what a backup of one turn writes.

Memory is counted two ways: the saver's own count (``stats().resident_bytes``, what the budget
sees) and the real allocation (tracemalloc) of the thread loaded afresh from the store, against
InMemorySaver's payload bytes (the sum of its serialised values) and its real allocation (a deep copy
of its dicts, traced).
"""

from __future__ import annotations

import copy
import gc
import statistics
import time
from typing import Any

import psycopg
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver

from agent import build_graph, chat_turn
from agent.responder import OfflineResponder
from bench.database import Database, postgres_pool
from bench.memory import traced
from bench.settings import Settings

THREAD = "long"
#: turns measured at each length (the medians)
WINDOW = 15
#: get_tuple samples at each length (interleaved across the savers)
GET_SAMPLES = 31


def _payload(saver: InMemorySaver) -> int:
    total = 0
    for namespaces in saver.storage.values():
        for cps in namespaces.values():
            for (_ct, cdata), (_mt, mdata), _parent in cps.values():
                total += len(cdata) + len(mdata)
    for inner in saver.writes.values():
        for _task, _channel, (_t, data), _path in inner.values():
            total += len(data)
    for _key, (_t, data) in saver.blobs.items():
        total += len(data)
    return total


def _copied(saver: InMemorySaver) -> tuple[Any, ...]:
    """InMemorySaver's dicts with every value copied (bytes objects included: a deep copy shares them)."""

    def fresh(value: Any) -> Any:
        if isinstance(value, bytes):
            return bytes(memoryview(value))
        if isinstance(value, tuple):
            return tuple(fresh(v) for v in value)
        if isinstance(value, dict):
            return {fresh(k): fresh(v) for k, v in value.items()}
        return copy.copy(value)

    return fresh(dict(saver.storage)), fresh(dict(saver.writes)), fresh(dict(saver.blobs))


def _schema_bytes(url: str, schema: str, tables: tuple[str, ...] | None = None) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchall()
    return sum(size for name, size in rows if tables is None or name in tables)


def run_long(db: Database, settings: Settings, log: Any) -> dict[str, Any]:
    from bench.backup import open_hybrid

    lengths = settings.long_turns
    url = db.create("long")
    pool = postgres_pool(url)
    hybrid = open_hybrid(url, "hybrid_saver")
    out: dict[str, Any] = {"lengths": {}}
    try:
        memory = InMemorySaver()
        postgres = PostgresSaver(pool)
        postgres.setup()
        savers = {"memory": memory, "hybrid": hybrid, "postgres": postgres}
        graphs = {name: build_graph(saver, OfflineResponder()) for name, saver in savers.items()}
        config = {"configurable": {"thread_id": THREAD}}
        turn_ms: dict[str, list[float]] = {name: [] for name in savers}
        backup_bytes: list[int] = []
        names = list(savers)
        for turn in range(1, max(lengths) + 1):
            text = f"turn {turn}: tell me about topic {turn}, with an example and a short summary at the end"
            order = names[turn % 3 :] + names[: turn % 3]
            for name in order:
                t0 = time.perf_counter()
                chat_turn(graphs[name], THREAD, text)
                turn_ms[name].append((time.perf_counter() - t0) * 1e3)
            run = hybrid.backup()
            if not run.ok:
                raise RuntimeError(f"backup failed: {run.error}")
            backup_bytes.append(run.bytes)
            if turn not in lengths:
                continue
            get_ms: dict[str, list[float]] = {name: [] for name in savers}
            gc.collect()
            for i in range(GET_SAMPLES):
                for name in names[i % 3 :] + names[: i % 3]:
                    t0 = time.perf_counter()
                    savers[name].get_tuple(config)
                    get_ms[name].append((time.perf_counter() - t0) * 1e3)
            stats = hybrid.stats()
            figures = {
                "turn_ms": {n: statistics.median(v[-WINDOW:]) for n, v in turn_ms.items()},
                "get_tuple_ms": {n: statistics.median(v) for n, v in get_ms.items()},
                "memory_payload_bytes": _payload(memory),
                "hybrid_resident_bytes": stats.resident_bytes,
                "hybrid_store_bytes": _schema_bytes(url, "hybrid_saver"),
                "postgres_store_bytes": _schema_bytes(
                    url, "public", ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
                ),
                "backup_bytes_per_turn": statistics.median(backup_bytes[-WINDOW:]),
            }
            f = figures
            f["long_thread_memory_vs_inmemory"] = f["hybrid_resident_bytes"] / f["memory_payload_bytes"]
            f["long_thread_turn_vs_inmemory"] = f["turn_ms"]["hybrid"] / f["turn_ms"]["memory"]
            f["long_thread_get_tuple_vs_inmemory"] = f["get_tuple_ms"]["hybrid"] / f["get_tuple_ms"]["memory"]
            f["long_thread_store_vs_postgres"] = f["hybrid_store_bytes"] / f["postgres_store_bytes"]
            out["lengths"][str(turn)] = f
            log(
                f"  {turn} turns: memory {f['memory_payload_bytes'] / 1e6:.1f} MB InMemorySaver vs "
                f"{f['hybrid_resident_bytes'] / 1e6:.2f} MB HybridSaver ({f['long_thread_memory_vs_inmemory']:.3f}); "
                f"turn {f['turn_ms']['memory']:.1f} / {f['turn_ms']['hybrid']:.1f} / {f['turn_ms']['postgres']:.1f} ms; "
                f"get_tuple {f['get_tuple_ms']['memory']:.2f} / {f['get_tuple_ms']['hybrid']:.2f} / "
                f"{f['get_tuple_ms']['postgres']:.2f} ms; store {f['hybrid_store_bytes'] / 1e6:.1f} MB vs "
                f"PostgresSaver {f['postgres_store_bytes'] / 1e6:.1f} MB; backup of a turn {f['backup_bytes_per_turn']:,.0f} B"
            )
        # the real allocations at the longest length: InMemorySaver's dicts copied under tracemalloc, and
        # the thread loaded afresh by a new HybridSaver (a saver on an empty store is the baseline)
        mem_real, _copy = traced(lambda: _copied(memory))
        del _copy
        hybrid.close()
        empty_bytes, empty = traced(lambda: open_hybrid(url, "empty_store"))
        empty.close()

        def reload() -> Any:
            saver = open_hybrid(url, "hybrid_saver")
            saver.get_tuple(config)
            return saver

        loaded_bytes, loaded = traced(reload)
        counted = loaded.stats().resident_bytes
        loaded.close()
        longest = out["lengths"][str(max(lengths))]
        real = loaded_bytes - empty_bytes
        longest["inmemory_real_bytes"] = mem_real
        longest["hybrid_real_bytes"] = real
        longest["hybrid_counted_bytes_after_reload"] = counted
        longest["long_thread_real_memory_vs_inmemory"] = real / mem_real
        longest["hybrid_counted_vs_real"] = counted / real if real else None
        first, last = out["lengths"][str(min(lengths))], longest
        out["long_thread_backup_bytes_per_turn"] = {
            str(n): out["lengths"][str(n)]["backup_bytes_per_turn"] for n in lengths
        }
        out["long_thread_backup_growth"] = last["backup_bytes_per_turn"] / first["backup_bytes_per_turn"]
        log(
            f"  real memory at {max(lengths)} turns: InMemorySaver {mem_real / 1e6:.1f} MB, HybridSaver "
            f"{real / 1e6:.2f} MB (it counts {counted / 1e6:.2f} MB); backup bytes per turn grew "
            f"{out['long_thread_backup_growth']:.2f}x from {min(lengths)} to {max(lengths)} turns"
        )
    finally:
        hybrid.close()
        pool.close()
        db.drop(url)
    return out


__all__ = ["run_long"]
