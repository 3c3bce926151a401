"""Memory per checkpoint: HybridSaver against InMemorySaver holding the same checkpoints (tracemalloc)."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from bench.database import Database
from bench.settings import Settings
from bench.workload import Template, fill


def traced(build: Any) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - base, result
    finally:
        tracemalloc.stop()


def run_memory(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Bytes held per checkpoint: InMemorySaver, HybridSaver with everything pending, and after a backup."""
    from bench.backup import open_hybrid

    threads = settings.memory_threads
    memory = InMemorySaver()
    mem_bytes, checkpoints = traced(lambda: fill(memory, templates, threads))
    memory.storage.clear()
    memory.writes.clear()
    memory.blobs.clear()
    url = db.create("memory")
    hybrid = open_hybrid(url, "hybrid_saver")
    try:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        fill(hybrid, templates, threads)
        gc.collect()
        pending_bytes = tracemalloc.get_traced_memory()[0] - base
        run = hybrid.backup()
        if not run.ok:
            raise RuntimeError(f"backup failed: {run.error}")
        gc.collect()
        backed_up_bytes = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        hybrid.close()
        # a warm start loads the same checkpoints back from PostgreSQL; a saver on an empty store
        # is the baseline (pool, threads), so only the loaded state is counted
        empty_bytes, empty = traced(lambda: open_hybrid(url, "empty_store"))
        empty.close()

        def warm_start() -> Any:  # the whole store in memory: the background part of the warm start too
            saver = open_hybrid(url, "hybrid_saver")
            if not saver.wait_warm(600):
                raise RuntimeError("the warm start did not finish in 600 s")
            return saver

        warm_bytes, warm = traced(warm_start)
        warm.close()
        warm_bytes -= empty_bytes
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        hybrid.close()
        db.drop(url)
    out = {
        "threads": threads,
        "checkpoints": checkpoints,
        "memory_bytes_per_checkpoint": mem_bytes / checkpoints,
        "hybrid_bytes_per_checkpoint": backed_up_bytes / checkpoints,
        "hybrid_pending_bytes_per_checkpoint": pending_bytes / checkpoints,
        "hybrid_vs_memory": backed_up_bytes / mem_bytes,
        "hybrid_pending_vs_memory": pending_bytes / mem_bytes,
        "warm_start_bytes_per_checkpoint": warm_bytes / checkpoints,
        "warm_start_vs_memory": warm_bytes / mem_bytes,
    }
    log(
        f"  {checkpoints} checkpoints: InMemorySaver {out['memory_bytes_per_checkpoint']:.0f} B each, "
        f"HybridSaver {out['hybrid_bytes_per_checkpoint']:.0f} B ({out['hybrid_pending_bytes_per_checkpoint']:.0f} B "
        f"before its first backup, {out['warm_start_bytes_per_checkpoint']:.0f} B after a warm start)"
    )
    return out


__all__ = ["run_memory", "traced"]
