"""Targets, named ratios, the printed tables and ``results.json``."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import ratio


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    op: str  # "<=", ">=" or "" (reported, no target)
    bound: float | None
    value: Callable[[dict[str, Any]], float | None]
    detail: Callable[[dict[str, Any]], str]

    def check(self, results: dict[str, Any]) -> tuple[float | None, str]:
        try:
            value = self.value(results)
        except (KeyError, TypeError, IndexError, ZeroDivisionError):
            value = None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None, "n/a"
        if not self.op or self.bound is None:
            return value, "info"
        ok = {"<=": operator.le, ">=": operator.ge}[self.op](value, self.bound)
        return value, "PASS" if ok else "MISS"


def _op(r: dict, op: str, saver: str, stat: str = "median") -> float:
    return r["ops"][op][saver][stat]


def _largest(r: dict) -> dict:
    return max(r["backup"]["sizes"], key=lambda s: s["threads"])


def _long(r: dict, turns: int | None = None) -> dict:
    lengths = r["long"]["lengths"]
    return lengths[str(turns if turns is not None else max(int(n) for n in lengths))]


def _saver_ms(r: dict, saver: str) -> float:
    return r["ops"]["turn_breakdown"][saver]["saver_ms_per_turn"]


def _turn(r: dict, kind: str) -> float:
    return r["residency"]["turns"][kind]["median"]


def _put_during(r: dict, stat: str) -> tuple[float, float]:
    put = r["puts_during_backup"]["put"]
    return put["hybrid_during_backup"][stat], put["hybrid_idle"][stat]


TARGETS: list[Target] = [
    Target(
        "turn_hybrid_vs_memory",
        "graph turn, HybridSaver / InMemorySaver (median)",
        "<=",
        1.10,
        lambda r: ratio(_op(r, "turn", "hybrid"), _op(r, "turn", "memory")),
        lambda r: f"{_op(r, 'turn', 'hybrid'):.2f} ms vs {_op(r, 'turn', 'memory'):.2f} ms",
    ),
    Target(
        "saver_time_postgres_vs_hybrid",
        "time inside the checkpointer per graph turn, PostgresSaver / HybridSaver",
        ">=",
        10.0,
        lambda r: ratio(_saver_ms(r, "postgres"), _saver_ms(r, "hybrid")),
        lambda r: f"{_saver_ms(r, 'postgres'):.2f} ms vs {_saver_ms(r, 'hybrid'):.2f} ms per turn",
    ),
    Target(
        "turn_postgres_vs_hybrid",
        "graph turn, PostgresSaver / HybridSaver (median; bounded by the graph's own time)",
        "",
        None,
        lambda r: ratio(_op(r, "turn", "postgres"), _op(r, "turn", "hybrid")),
        lambda r: f"{_op(r, 'turn', 'postgres'):.2f} ms vs {_op(r, 'turn', 'hybrid'):.2f} ms",
    ),
    Target(
        "turn_with_metrics_vs_without",
        "graph turn with the saver scraped by a SaverCollector every 50 ms / not scraped (median)",
        "<=",
        1.05,
        lambda r: r["metrics"]["ratio"],
        lambda r: "{:.2f} ms vs {:.2f} ms; a scrape {:.1f} ms, {:,} bytes".format(
            r["metrics"]["with"]["median"],
            r["metrics"]["without"]["median"],
            r["metrics"]["scrape"]["median"],
            r["metrics"]["exposition_bytes"],
        ),
    ),
    Target(
        "cold_start_vs_full_load",
        "from from_url to the first served turn (the slower of a budget of a tenth and none) / to everything loaded",
        "<=",
        0.05,
        lambda r: r["residency"]["cold_start"]["ratio"],
        lambda r: "{:,} checkpoints: {:.2f} s with a budget, {:.2f} s without, vs {:.2f} s".format(
            r["residency"]["cold_start"]["checkpoints"],
            r["residency"]["cold_start"]["budget_first_turn_s"],
            r["residency"]["cold_start"]["no_budget_first_turn_s"],
            r["residency"]["cold_start"]["full_load_s"],
        ),
    ),
    Target(
        "miss_turn_vs_postgres_turn",
        "first turn on a cold thread / the same turn with PostgresSaver (median)",
        "<=",
        1.0,
        lambda r: ratio(_turn(r, "miss_turn"), _turn(r, "postgres_turn")),
        lambda r: f"{_turn(r, 'miss_turn'):.2f} ms vs {_turn(r, 'postgres_turn'):.2f} ms",
    ),
    Target(
        "hit_turn_vs_memory",
        "turn on a resident thread (with a budget) / InMemorySaver (median)",
        "<=",
        1.1,
        lambda r: ratio(_turn(r, "hit_turn"), _turn(r, "memory_turn")),
        lambda r: f"{_turn(r, 'hit_turn'):.2f} ms vs {_turn(r, 'memory_turn'):.2f} ms",
    ),
    Target(
        "resident_bytes_vs_budget",
        "peak resident bytes / budget, random turns over ten times what it holds",
        "<=",
        1.05,
        lambda r: r["residency"]["budget"]["ratio"],
        lambda r: "peak {:,.0f} B of {:,.0f} B (one thread ~{:,.0f} B)".format(
            r["residency"]["budget"]["peak_resident_bytes"],
            r["residency"]["budget"]["budget_bytes"],
            r["residency"]["budget"]["thread_bytes"],
        ),
    ),
    Target(
        "handoff_turn_vs_local_turn",
        "turn on a thread another live member held / turn on a resident thread (median)",
        "<=",
        3.0,
        lambda r: r["fleet"]["handoff"]["ratio"],
        lambda r: "{:.2f} ms vs {:.2f} ms".format(
            r["fleet"]["handoff"]["handoff_turn"]["median"], r["fleet"]["handoff"]["local_turn"]["median"]
        ),
    ),
    Target(
        "fleet_2_members_vs_1_throughput",
        "turns per second, two members / one (sticky routing, four clients per member, the fleets in alternate windows)",
        ">=",
        1.6,
        lambda r: r["fleet"]["throughput"]["ratio"],
        lambda r: "{:.1f} vs {:.1f} turns/s".format(
            r["fleet"]["throughput"]["members_2"]["turns_per_s"], r["fleet"]["throughput"]["members_1"]["turns_per_s"]
        ),
    ),
    Target(
        "fleet_generations_per_s",
        "generations per second the store accepts, four members backing up every 100 ms",
        "",
        None,
        lambda r: r["fleet"]["backups"]["generations_per_s"],
        lambda r: "{} generations in {:.1f} s, {} failed runs".format(
            r["fleet"]["backups"]["generations"], r["fleet"]["backups"]["seconds"], r["fleet"]["backups"]["failed_runs"]
        ),
    ),
    Target(
        "put_hybrid_vs_memory",
        "put, HybridSaver / InMemorySaver (median)",
        "<=",
        1.20,
        lambda r: ratio(_op(r, "put", "hybrid"), _op(r, "put", "memory")),
        lambda r: f"{_op(r, 'put', 'hybrid'):.0f} us vs {_op(r, 'put', 'memory'):.0f} us",
    ),
    Target(
        "get_tuple_hybrid_vs_memory",
        "get_tuple (latest), HybridSaver / InMemorySaver (median)",
        "<=",
        1.05,
        lambda r: ratio(_op(r, "get_tuple", "hybrid"), _op(r, "get_tuple", "memory")),
        lambda r: f"{_op(r, 'get_tuple', 'hybrid'):.1f} us vs {_op(r, 'get_tuple', 'memory'):.1f} us",
    ),
    Target(
        "backup_vs_raw_copy",
        "first backup throughput / raw COPY of the same rows (largest size)",
        ">=",
        0.70,
        lambda r: _largest(r)["backup_vs_raw_copy"],
        lambda r: (
            f"{_largest(r)['checkpoints']:,} checkpoints: {_largest(r)['backup_s']:.2f} s vs "
            f"{_largest(r)['raw_copy_s']:.2f} s"
        ),
    ),
    Target(
        "backup_vs_indexed_copy",
        "first backup throughput / raw COPY into tables with the saver's indexes (largest size)",
        ">=",
        0.80,
        lambda r: _largest(r)["backup_vs_raw_copy_indexed"],
        lambda r: (
            f"{_largest(r)['checkpoints']:,} checkpoints: {_largest(r)['backup_s']:.2f} s vs "
            f"{_largest(r)['raw_copy_indexed_s']:.2f} s"
        ),
    ),
    Target(
        "restore_vs_raw_copy",
        "raw COPY TO of the state / restore with a budget until a restored thread is served (largest size)",
        ">=",
        1.0,
        lambda r: _largest(r)["restore_vs_raw_copy"],
        lambda r: (
            f"{_largest(r)['checkpoints']:,} checkpoints: {_largest(r)['restore_s']:.2f} s vs "
            f"{_largest(r)['raw_copy_to_s']:.2f} s"
        ),
    ),
    Target(
        "restore_all_vs_raw_insert_select",
        "raw INSERT ... SELECT of the generation's rows / restore of every thread with a member holding them "
        "(10,000 threads; 500 quick)",
        ">=",
        0.5,
        lambda r: r["restore_scale"]["ratio"],
        lambda r: "{:,} checkpoints: {:.2f} s ({}) vs {:.2f} s; undo {:.2f} s".format(
            r["restore_scale"]["checkpoints"],
            r["restore_scale"]["restore"]["total_s"],
            ", ".join(f"{p} {s:.2f}" for p, s in r["restore_scale"]["restore"]["phases_s"].items() if s >= 0.005),
            r["restore_scale"]["raw_insert_select_s"],
            r["restore_scale"]["undo"]["total_s"],
        ),
    ),
    Target(
        "incremental_1pct_vs_full",
        "backup after 1% changed / first full backup",
        "<=",
        0.05,
        lambda r: r["backup"]["incremental"]["ratio"],
        lambda r: (
            f"{r['backup']['incremental']['incremental_s'] * 1000:.0f} ms vs "
            f"{r['backup']['incremental']['full_s']:.2f} s"
        ),
    ),
    Target(
        "put_p99_during_backup_vs_idle",
        "put p99 during a large backup / idle",
        "<=",
        2.0,
        lambda r: ratio(*_put_during(r, "p99")),
        lambda r: "{:.0f} us vs {:.0f} us (max {:.0f} us vs {:.0f} us)".format(
            *_put_during(r, "p99"), *_put_during(r, "max")
        ),
    ),
    *[
        Target(
            f"long_thread_memory_vs_inmemory_{n}",
            f"resident bytes of one {n}-turn thread, HybridSaver / InMemorySaver's payload bytes",
            "<=",
            bound,
            lambda r, n=n: _long(r, n)["long_thread_memory_vs_inmemory"],
            lambda r, n=n: (
                f"{_long(r, n)['hybrid_resident_bytes'] / 1e6:.2f} MB vs {_long(r, n)['memory_payload_bytes'] / 1e6:.1f} MB"
            ),
        )
        for n, bound in ((300, 0.05), (1000, 0.02))
    ],
    Target(
        "long_thread_real_memory_vs_inmemory",
        "real memory (tracemalloc) of the longest thread loaded afresh, HybridSaver / InMemorySaver's dicts",
        "",
        None,
        lambda r: _long(r)["long_thread_real_memory_vs_inmemory"],
        lambda r: (
            f"{_long(r)['hybrid_real_bytes'] / 1e6:.2f} MB vs {_long(r)['inmemory_real_bytes'] / 1e6:.1f} MB "
            f"(the budget counts {_long(r)['hybrid_counted_bytes_after_reload'] / 1e6:.2f} MB)"
        ),
    ),
    Target(
        "long_thread_counted_vs_real",
        "what the budget counts of the longest thread loaded afresh / its real memory (tracemalloc)",
        ">=",
        0.8,
        lambda r: _long(r)["hybrid_counted_vs_real"],
        lambda r: (
            f"{_long(r)['hybrid_counted_bytes_after_reload'] / 1e6:.2f} MB counted vs "
            f"{_long(r)['hybrid_real_bytes'] / 1e6:.2f} MB real"
        ),
    ),
    Target(
        "long_thread_turn_vs_inmemory",
        "graph turn on the longest thread, HybridSaver / InMemorySaver (median)",
        "<=",
        1.10,
        lambda r: _long(r)["long_thread_turn_vs_inmemory"],
        lambda r: f"{_long(r)['turn_ms']['hybrid']:.1f} ms vs {_long(r)['turn_ms']['memory']:.1f} ms",
    ),
    Target(
        "long_thread_get_tuple_vs_inmemory",
        "get_tuple on the longest thread, HybridSaver / InMemorySaver (median)",
        "<=",
        1.05,
        lambda r: _long(r)["long_thread_get_tuple_vs_inmemory"],
        lambda r: f"{_long(r)['get_tuple_ms']['hybrid']:.2f} ms vs {_long(r)['get_tuple_ms']['memory']:.2f} ms",
    ),
    Target(
        "long_thread_store_vs_postgres",
        "PostgreSQL bytes of the saver's tables / PostgresSaver's, longest thread",
        "<=",
        0.25,
        lambda r: _long(r)["long_thread_store_vs_postgres"],
        lambda r: f"{_long(r)['hybrid_store_bytes'] / 1e6:.1f} MB vs {_long(r)['postgres_store_bytes'] / 1e6:.1f} MB",
    ),
    Target(
        "long_thread_backup_bytes_per_turn",
        "bytes a backup of one turn writes, longest / shortest thread length (flat: within 2x)",
        "<=",
        2.0,
        lambda r: r["long"]["long_thread_backup_growth"],
        lambda r: ", ".join(
            f"{n} turns: {b:,.0f} B" for n, b in r["long"]["long_thread_backup_bytes_per_turn"].items()
        ),
    ),
    Target(
        "memory_hybrid_vs_memory",
        "memory per checkpoint, HybridSaver (backed up) / InMemorySaver",
        "",
        None,
        lambda r: r["memory"]["hybrid_vs_memory"],
        lambda r: (
            f"{r['memory']['hybrid_bytes_per_checkpoint']:.0f} B vs {r['memory']['memory_bytes_per_checkpoint']:.0f} B"
        ),
    ),
    Target(
        "memory_warm_start_vs_memory",
        "memory per checkpoint after a warm start (state loaded from PostgreSQL) / InMemorySaver",
        "",
        None,
        lambda r: r["memory"]["warm_start_vs_memory"],
        lambda r: (
            f"{r['memory']['warm_start_bytes_per_checkpoint']:.0f} B vs "
            f"{r['memory']['memory_bytes_per_checkpoint']:.0f} B"
        ),
    ),
]


def evaluate(results: dict[str, Any]) -> None:
    """Add ``ratios`` (by name) and ``targets`` (value, target, verdict) to ``results``."""
    ratios: dict[str, float | None] = {}
    verdicts: dict[str, Any] = {}
    for target in TARGETS:
        value, verdict = target.check(results)
        ratios[target.name] = value
        try:
            detail = target.detail(results)
        except (KeyError, TypeError, IndexError, ZeroDivisionError):
            detail = ""
        verdicts[target.name] = {
            "what": target.what,
            "value": value,
            "target": f"{target.op} {target.bound:g}" if target.op and target.bound is not None else None,
            "result": verdict,
            "detail": detail,
        }
    results["ratios"] = ratios
    results["targets"] = verdicts


# -- tables ----------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if numeric[i] else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _is_number(text: str) -> bool:
    cleaned = text.replace(",", "").replace("x", "").replace("%", "").strip()
    if cleaned in ("", "-", "—"):
        return True
    try:
        float(cleaned)
    except ValueError:
        return False
    return True


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 10 else f"{ms:.3f}"


def targets_table(results: dict[str, Any]) -> str:
    rows = []
    for name, t in results["targets"].items():
        rows.append([name, _f(t["value"]), t["target"] or "—", t["result"], t["detail"]])
    return _table(["ratio", "value", "target", "result", "measured"], rows)


def ops_table(results: dict[str, Any]) -> str:
    ops = results["ops"]
    during = results.get("ops_during_backup", {}).get("ops", {})
    rows = []
    for op in ("get_tuple", "list", "put", "put_writes", "turn"):
        unit = "ms" if op == "turn" else "us"
        fmt = "{:.2f}" if op == "turn" else "{:.1f}"
        cells = [f"{op} ({unit})"]
        for saver in ("memory", "hybrid", "postgres"):
            s = ops[op][saver]
            cells.append(f"{_f(s.get('median'), fmt)} / {_f(s.get('p95'), fmt)}")
        d = during.get(op, {})
        for key in ("hybrid_idle", "hybrid_during_backup"):
            s = d.get(key, {})
            cells.append(f"{_f(s.get('median'), fmt)} / {_f(s.get('p99'), fmt)}")
        rows.append(cells)
    return _table(
        [
            "operation",
            "InMemorySaver med / p95",
            "HybridSaver med / p95",
            "PostgresSaver med / p95",
            "Hybrid, large state, idle med / p99",
            "Hybrid, during backup med / p99",
        ],
        rows,
    )


def backup_table(results: dict[str, Any]) -> str:
    rows = []
    for s in results["backup"]["sizes"]:
        rows.append(
            [
                f"{s['threads']:,}",
                f"{s['checkpoints']:,}",
                _f(s["mb"], "{:.1f}"),
                _f(s["backup_s"]),
                _f(s.get("backup_checkpoints_per_s"), "{:,.0f}"),
                _f(s.get("backup_mb_per_s"), "{:.1f}"),
                _f(s["raw_copy_s"]),
                _f(s.get("raw_copy_indexed_s")),
                _f(s["backup_vs_raw_copy"]),
                _f(s.get("backup_vs_raw_copy_cpu")),
                _f(s.get("postgres_s")),
                _f(s.get("backup_vs_postgres"), "{:.1f}x"),
                _ms(s["cut_s"]),
            ]
        )
    return _table(
        [
            "threads",
            "checkpoints",
            "MB",
            "backup s",
            "checkpoints/s",
            "MB/s",
            "raw COPY s",
            "COPY w/ saver indexes s",
            "backup / raw",
            "same, CPU",
            "PostgresSaver s",
            "vs PostgresSaver",
            "cut (lock) ms",
        ],
        rows,
    )


def restore_table(results: dict[str, Any]) -> str:
    rows = []
    for s in results["backup"]["sizes"]:
        rows.append(
            [
                f"{s['threads']:,}",
                f"{s['checkpoints']:,}",
                _f(s.get("warm_start_s")),
                _f(s.get("warm_start_checkpoints_per_s"), "{:,.0f}"),
                _f(s.get("restore_s")),
                _f(s.get("restore_checkpoints_per_s"), "{:,.0f}"),
                _f(s.get("restore_mb_per_s"), "{:.1f}"),
                _f(s.get("raw_copy_to_s")),
                _f(s.get("warm_start_vs_raw_copy")),
                _f(s.get("restore_vs_raw_copy")),
                _f(s.get("restore_vs_raw_copy_cpu")),
            ]
        )
    return _table(
        [
            "threads",
            "checkpoints",
            "warm start s",
            "checkpoints/s",
            "restore s",
            "checkpoints/s",
            "MB/s",
            "raw COPY TO s",
            "warm start / raw",
            "restore / raw",
            "same, CPU",
        ],
        rows,
    )


def restore_scale_table(results: dict[str, Any]) -> str:
    scale = results.get("restore_scale") or {}
    rows = []
    for label in ("restore", "undo"):
        run = scale.get(label)
        if not run:
            continue
        phases = run["phases_s"]
        rows.append(
            [
                label,
                f"{scale['threads']:,}",
                f"{scale['checkpoints']:,}",
                _f(run["total_s"]),
                *(_f(phases.get(p)) for p in ("checking", "handing over", "backing up", "rewriting", "finishing")),
                "yes" if run.get("done_last") else "no",
            ]
        )
    return _table(
        [
            "restore of every thread",
            "threads",
            "checkpoints",
            "total s",
            "checking s",
            "handing over s",
            "backing up s",
            "rewriting s",
            "finishing s",
            "done last",
        ],
        rows,
    )


def other_table(results: dict[str, Any]) -> str:
    rows = []
    inc = results["backup"].get("incremental") or {}
    if inc:
        rows.append(
            [
                "incremental backup, 1% of threads changed",
                f"{inc['incremental_s'] * 1000:.0f} ms for {inc['changed_checkpoints']:,} new checkpoints "
                f"(full: {inc['full_s']:.2f} s for {inc['threads'] * 30:,})",
            ]
        )
    breakdown = results.get("ops", {}).get("turn_breakdown") or {}
    if breakdown:
        parts = []
        for name in ("memory", "hybrid", "postgres"):
            b = breakdown.get(name)
            if b:
                parts.append(f"{name} {b['saver_ms_per_turn']:.2f} of {b['turn_ms']:.2f} ms")
        rows.append(["time inside the checkpointer per graph turn", ", ".join(parts)])
        mem, pg = breakdown.get("memory"), breakdown.get("postgres")
        if mem and pg:
            graph_ms = mem["turn_ms"] - mem["saver_ms_per_turn"]
            rows.append(
                [
                    "PostgresSaver / zero-cost checkpointer, per turn",
                    f"{pg['turn_ms'] / graph_ms:.2f}x (the graph itself takes {graph_ms:.2f} ms of a turn)",
                ]
            )
    cuts = results.get("cuts") or {}
    if cuts:
        c = cuts["cut"]
        rows.append(
            [
                "cut (lock hold) of a small backup",
                f"median {c['median']:.0f} us, p99 {c['p99']:.0f} us, max {c['max']:.0f} us over {cuts['cuts']} cuts "
                f"of ~{cuts['pending_keys_per_cut']} changed keys",
            ]
        )
    during = results.get("puts_during_backup") or {}
    if during:
        rows.append(
            [
                "cut (lock hold) of the large backup",
                f"{_ms(during.get('backup_cut_s'))} ms for {during['checkpoints']:,} checkpoints",
            ]
        )
        lat = during["put_latency_from_schedule"]
        rows.append(
            [
                "put latency from its scheduled time, p99",
                f"idle {lat['idle']['p99']:.0f} us, during backup {lat['during_backup']['p99']:.0f} us "
                "(includes waiting for the GIL to wake up)",
            ]
        )
    for key, label in (("puts_during_backup", "puts"), ("ops_during_backup", "operations")):
        gc_fig = (results.get(key) or {}).get("gc")
        if gc_fig:
            d, i = gc_fig["gen2_during_backup"], gc_fig["gen2_idle"]
            rows.append(
                [
                    f"full garbage collections ({label} test)",
                    f"during the backup {d['count']} (longest {d['max_ms']:.0f} ms); "
                    f"idle {i['count']} (longest {i['max_ms']:.0f} ms)",
                ]
            )
    mem = results.get("memory") or {}
    if mem:
        rows.append(
            [
                "memory per checkpoint",
                f"InMemorySaver {mem['memory_bytes_per_checkpoint']:,.0f} B, HybridSaver "
                f"{mem['hybrid_bytes_per_checkpoint']:,.0f} B backed up / "
                f"{mem['hybrid_pending_bytes_per_checkpoint']:,.0f} B pending, "
                f"{mem.get('warm_start_bytes_per_checkpoint', float('nan')):,.0f} B after a warm start "
                f"({mem['checkpoints']:,} checkpoints)",
            ]
        )
    return _table(["figure", "value"], rows)


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [
        f"Benchmark ({meta['mode']} run, {meta['duration_s']:.0f} s) on {meta['machine']}",
        f"Database: {meta['database']}",
        "",
        "Targets",
        targets_table(results),
        "",
        "Operations (median / p95; the last two columns median / p99)",
        ops_table(results),
        "",
        "First backup of N threads x 30 checkpoints",
        backup_table(results),
        "",
        "Warm start and restore of the same states",
        restore_table(results),
        "",
        "Other figures",
        other_table(results),
    ]
    if results.get("restore_scale"):
        scale = results["restore_scale"]
        parts += [
            "",
            f"Restore of every thread at {scale['threads']:,} threads (a member holding {scale['member_threads']:,}, "
            f"{scale['member_pending_threads']:,} with a turn not backed up; raw INSERT ... SELECT "
            f"{scale['raw_insert_select_s']:.2f} s)",
            restore_scale_table(results),
        ]
    return "\n".join(parts)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


__all__ = ["TARGETS", "evaluate", "render", "write_json"]
