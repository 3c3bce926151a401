"""Backup and restore throughput, side by side with raw COPY and PostgresSaver, and how they grow.

For each size: a HybridSaver is filled with N threads of 30 real checkpoints, its first backup is
timed, and the very rows that backup wrote are COPYed into bare tables (the physical limit),
alternately, ``repeats`` times. The store is then loaded back (warm start) and restored, against
``COPY TO`` of the same rows. PostgresSaver writes the same checkpoints through ``put``/``put_writes``.
At the largest size, 1% of the threads get 30 new checkpoints and the incremental backup is timed.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver

from bench import rawcopy
from bench.database import Database, postgres_pool
from bench.settings import Settings
from bench.stats import CpuClock, clock, ratio, timed
from bench.workload import Template, fill, pinned_serde
from persistence import HybridSaver

logger = logging.getLogger(__name__)

MB = 1e6


class CutRecorder:
    """Wraps the change log's ``take`` (the cut, called with ``saver.lock`` held): times each cut
    and keeps the rows the saver builds from it outside the lock (``to_changes``)."""

    def __init__(self, saver: HybridSaver, keep_rows: bool = False) -> None:
        self.log = saver.cache.changes
        self.keep_rows = keep_rows
        self.seconds: list[float] = []
        self.rows: dict[str, list[tuple]] | None = None
        self._inner = self.log.take
        self.log.take = self._take  # type: ignore[method-assign]

    def _take(self) -> Any:
        start = clock()
        cut = self._inner()
        self.seconds.append(clock() - start)
        if self.keep_rows:
            inner_changes = cut.to_changes

            def to_changes(*args: Any, **kwargs: Any) -> Any:
                changes = inner_changes(*args, **kwargs)
                self.rows = changes.rows
                return changes

            cut.to_changes = to_changes  # type: ignore[method-assign]
        return cut

    def remove(self) -> None:
        self.log.__dict__.pop("take", None)


def open_hybrid(url: str, schema: str, serde: Any = None) -> HybridSaver:
    return HybridSaver.from_url(url, backup_interval=None, schema=schema, serde=serde, handle_signals=False)


def _one_backup(
    url: str, schema: str, templates: list[Template], threads: int, rep: int, cpu: CpuClock
) -> tuple[dict, HybridSaver, Any]:
    serde = pinned_serde(templates)
    saver = open_hybrid(url, schema, serde)
    checkpoints = fill(saver, templates, threads)
    serde.enabled = False
    recorder = CutRecorder(saver, keep_rows=True)
    rawcopy.checkpoint_server(url)
    seconds, cpu_s, run = cpu.measure(saver.backup)
    if not run.ok:
        raise RuntimeError(f"backup of {threads} threads failed: {run.error}")
    rows = recorder.rows or {}
    recorder.remove()
    raw_schema = f"raw_{schema}"
    rawcopy.create_bare(url, raw_schema)
    rawcopy.checkpoint_server(url)
    raw_seconds, raw_cpu_s = rawcopy.copy_in(url, raw_schema, rows, cpu)
    figures = {
        "rep": rep,
        "checkpoints": checkpoints,
        "rows": run.rows,
        "bytes": run.bytes,
        "backup_s": seconds,
        "backup_cpu_s": cpu_s,
        "cut_s": recorder.seconds[0],
        "raw_copy_s": raw_seconds,
        "raw_copy_cpu_s": raw_cpu_s,
        "generation": run.generation,
    }
    return figures, saver, rows


def run_backups(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Every backup/restore figure, per size, plus the incremental test at the largest size."""
    sizes_out = []
    incremental: dict[str, Any] = {}
    largest = max(settings.sizes)
    cpu = CpuClock(db.server_cpu)
    for threads in settings.sizes:
        url = db.create(f"size{threads}")
        try:
            reps = 1 if threads == largest else settings.repeats
            runs = []
            saver = None
            rows: dict[str, list[tuple]] = {}
            for rep in range(reps):
                if saver is not None:
                    saver.close()
                figures, saver, rows = _one_backup(url, f"hs{rep}", templates, threads, rep, cpu)
                runs.append(figures)
                log(
                    f"  {threads:>6} threads rep {rep + 1}/{reps}: backup {figures['backup_s']:.2f} s, "
                    f"raw COPY {figures['raw_copy_s']:.2f} s"
                )
            assert saver is not None
            entry = _size_entry(threads, runs)
            # what the saver's own indexes cost: the same rows into tables built by its migration
            rawcopy.create_indexed(url, "indexed")
            rawcopy.checkpoint_server(url)
            entry["raw_copy_indexed_s"], entry["raw_copy_indexed_cpu_s"] = rawcopy.copy_in(url, "indexed", rows, cpu)
            entry["store_mb"] = rawcopy.table_bytes(url, f"hs{reps - 1}") / MB
            entry["raw_mb"] = rawcopy.table_bytes(url, f"raw_hs{reps - 1}") / MB
            last_schema = f"hs{reps - 1}"
            saver.close()
            del rows, saver
            restored, warm = _warm_start(url, last_schema, entry["checkpoints"], templates, log, cpu)
            entry.update(restored)
            first_generation = warm.loaded_generation
            try:
                if threads == largest:
                    incremental = _incremental(warm, templates, threads, entry["backup_s"], log)
            finally:
                warm.close()
            entry.update(_restore(url, last_schema, first_generation, templates, log, cpu))
            if threads <= settings.postgres_max_threads:
                entry.update(_postgres(db, templates, threads, log))
            _throughputs(entry)
            sizes_out.append(entry)
        finally:
            db.drop(url)
    return {"sizes": sizes_out, "incremental": incremental}


def _size_entry(threads: int, runs: list[dict]) -> dict[str, Any]:
    first = runs[0]
    return {
        "threads": threads,
        "checkpoints": first["checkpoints"],
        "rows": first["rows"],
        "mb": first["bytes"] / MB,
        "repeats": len(runs),
        "backup_s": statistics.median(r["backup_s"] for r in runs),
        "cut_s": statistics.median(r["cut_s"] for r in runs),
        "raw_copy_s": statistics.median(r["raw_copy_s"] for r in runs),
        "backup_cpu_s": _median_or_none(r["backup_cpu_s"] for r in runs),
        "raw_copy_cpu_s": _median_or_none(r["raw_copy_cpu_s"] for r in runs),
        "backup_vs_raw_copy_each": [r["raw_copy_s"] / r["backup_s"] for r in runs],
    }


def _median_or_none(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _incremental(saver: HybridSaver, templates: list[Template], threads: int, full_s: float, log: Any) -> dict:
    changed = max(1, threads // 100)
    times = []
    rows = []
    serde = saver.serde
    for k in range(3):
        if hasattr(serde, "enabled"):
            serde.enabled = True
        fill(saver, templates, changed, fresh=f".inc{k}")
        if hasattr(serde, "enabled"):
            serde.enabled = False
        rawcopy.checkpoint_server(saver.conninfo)
        seconds, run = timed(saver.backup)
        if not run.ok:
            raise RuntimeError(f"incremental backup failed: {run.error}")
        times.append(seconds)
        rows.append(run.rows)
    median = statistics.median(times)
    log(f"  incremental: {changed} of {threads} threads changed: {median * 1000:.0f} ms vs full {full_s:.2f} s")
    return {
        "threads": threads,
        "changed_threads": changed,
        "changed_checkpoints": changed * templates[0].checkpoints,
        "rows": statistics.median(rows),
        "incremental_s": median,
        "incremental_each_s": times,
        "full_s": full_s,
        "ratio": median / full_s,
    }


def _warm_start(
    url: str, schema: str, checkpoints: int, templates: list[Template], log: Any, cpu: CpuClock
) -> tuple[dict[str, Any], HybridSaver]:
    """Warm start without a budget (load the newest generation), against COPY TO of the same rows.

    Returns the figures and the warm-started saver (open, holding the state).
    """
    raw_before, raw_cpu_before, nrows = rawcopy.copy_out(url, f"raw_{schema}", cpu=cpu)

    def open_warm() -> HybridSaver:
        # the warm start runs in the background: timed until every thread is in memory
        opened = open_hybrid(url, schema, pinned_serde(templates))
        if not opened.wait_warm(600):
            opened.close()
            raise RuntimeError(f"the warm start of {checkpoints} checkpoints did not finish in 600 s")
        return opened

    warm_s, warm_cpu_s, saver = cpu.measure(open_warm)
    try:
        saver.serde.enabled = False
        loaded = saver.stats().checkpoints
        if loaded != checkpoints:
            raise RuntimeError(f"warm start loaded {loaded} checkpoints, expected {checkpoints}")
    except BaseException:
        saver.close()
        raise
    raw_after, raw_cpu_after, _n = rawcopy.copy_out(url, f"raw_{schema}", cpu=cpu)
    raw_bytes_s, _cpu, nbytes = rawcopy.copy_out(url, f"raw_{schema}", parse=False)
    raw_s = (raw_before + raw_after) / 2
    out = {
        "warm_start_s": warm_s,
        "warm_start_cpu_s": warm_cpu_s,
        "resident_bytes": saver.stats().resident_bytes,
        "raw_copy_to_s": raw_s,
        "raw_copy_to_cpu_s": _mean(raw_cpu_before, raw_cpu_after),
        "raw_copy_to_each_s": [raw_before, raw_after],
        "raw_copy_to_unparsed_s": raw_bytes_s,
        "raw_copy_to_rows": nrows,
        "raw_copy_to_stream_mb": nbytes / MB,
    }
    log(f"  warm start {warm_s:.2f} s, raw COPY TO {raw_s:.2f} s")
    return out, saver


def _restore(
    url: str, schema: str, generation: int | None, templates: list[Template], log: Any, cpu: CpuClock
) -> dict[str, Any]:
    """Restore the first generation (undoing what came after it) on a saver with a budget of a tenth
    of the state: the time until ``restore`` returned and a restored thread is served."""
    assert generation is not None
    sizer = open_hybrid(url, schema, pinned_serde(templates))
    budget = max(1, sizer.stats().resident_bytes // 10)
    sizer.close()
    saver = HybridSaver.from_url(
        url,
        backup_interval=None,
        schema=schema,
        serde=pinned_serde(templates),
        memory_budget=budget,
        handle_signals=False,
    )
    try:
        saver.wait_warm(120)
        saver.serde.enabled = False

        def restore_and_serve() -> Any:
            result = saver.restore(generation)
            saver.get_tuple({"configurable": {"thread_id": "t0", "checkpoint_ns": ""}})
            return result

        restore_s, restore_cpu_s, result = cpu.measure(restore_and_serve)
    finally:
        saver.close()
    log(f"  restore of generation {generation} with a budget of {budget / MB:.1f} MB: {restore_s:.2f} s")
    return {
        "restore_s": restore_s,
        "restore_cpu_s": restore_cpu_s,
        "restore_budget_bytes": budget,
        "restore_checkpoints": result.checkpoints,
    }


def _mean(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _postgres(db: Database, templates: list[Template], threads: int, log: Any) -> dict[str, Any]:
    url = db.create(f"pg{threads}")
    try:
        pool = postgres_pool(url, size=2)
        try:
            saver = PostgresSaver(pool, serde=pinned_serde(templates))
            saver.setup()
            rawcopy.checkpoint_server(url)
            start = clock()
            fill(saver, templates, threads)
            seconds = clock() - start
        finally:
            pool.close()
        mb = rawcopy.table_bytes(url, "public") / MB
    finally:
        db.drop(url)
    log(f"  PostgresSaver put the same checkpoints in {seconds:.2f} s")
    return {"postgres_s": seconds, "postgres_store_mb": mb}


def _throughputs(entry: dict[str, Any]) -> None:
    cps, mb = entry["checkpoints"], entry["mb"]
    for key in ("backup", "raw_copy", "raw_copy_indexed", "postgres", "warm_start", "restore", "raw_copy_to"):
        seconds = entry.get(f"{key}_s")
        if seconds:
            entry[f"{key}_checkpoints_per_s"] = cps / seconds
            entry[f"{key}_mb_per_s"] = mb / seconds
    entry["backup_vs_raw_copy"] = ratio(entry["raw_copy_s"], entry["backup_s"])
    entry["backup_vs_raw_copy_indexed"] = ratio(entry.get("raw_copy_indexed_s"), entry["backup_s"])
    entry["restore_vs_raw_copy"] = ratio(entry.get("raw_copy_to_s"), entry.get("restore_s"))
    entry["warm_start_vs_raw_copy"] = ratio(entry.get("raw_copy_to_s"), entry.get("warm_start_s"))
    entry["backup_vs_postgres"] = ratio(entry.get("postgres_s"), entry["backup_s"])
    # the same ratios in CPU seconds (client + server): what the work costs, whatever else runs
    entry["backup_vs_raw_copy_cpu"] = ratio(entry.get("raw_copy_cpu_s"), entry.get("backup_cpu_s"))
    entry["restore_vs_raw_copy_cpu"] = ratio(entry.get("raw_copy_to_cpu_s"), entry.get("restore_cpu_s"))
    entry["warm_start_vs_raw_copy_cpu"] = ratio(entry.get("raw_copy_to_cpu_s"), entry.get("warm_start_cpu_s"))


__all__ = ["CutRecorder", "open_hybrid", "run_backups"]
