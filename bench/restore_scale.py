"""Restore of every thread at scale: 10,000 threads (500 under ``BENCH_QUICK=1``), as the operator of
issue 17 ran it, against the raw server-side copy of the same rows.

A store of N threads of 30 real checkpoints is backed up (generation A), then a tenth of the threads
get 30 more checkpoints (generation B). An app member process (``tests/helpers/member.py``, no budget,
started alone: it loads every thread, as a worker does) holds them, with a new turn not backed up on
one thread in 16. A saver set up as the
dashboard's (a 32 MB budget, no warm start) then restores A for every thread, phase by phase (from its
progress callback), and then the undo (B again). The physical limit: every row live at A,
``INSERT ... SELECT``-ed server-side into bare tables (no index) in one transaction, the least a
server-side rewrite of the generation costs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from bench import rawcopy
from bench.backup import open_hybrid
from bench.database import Database
from bench.settings import Settings
from bench.stats import clock, ratio
from bench.workload import Template, fill, pinned_serde, user_text
from persistence import HybridSaver
from persistence.store.rows import live_at
from persistence.store.schema import DEFAULT_SCHEMA, TABLES

ROOT = Path(__file__).resolve().parent.parent
MEMBER = ROOT / "tests" / "helpers" / "member.py"
#: the default schema: the member process opens its saver with it
SCHEMA = DEFAULT_SCHEMA
#: threads of the store: the operator's 10,000 in the full run
FULL_THREADS = 10_000
QUICK_THREADS = 500
#: the dashboard's default budget
BUDGET = 32 * 1024 * 1024


def run_restore_scale(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    threads = QUICK_THREADS if settings.quick else FULL_THREADS
    with db.database(f"restore{threads}") as url:
        first = _fill(url, templates, threads, log)
        raw_s = _raw_copy(url, first)
        log(f"  raw INSERT ... SELECT of generation {first}'s rows: {raw_s:.2f} s")
        member = _Member(url)
        try:
            held, pending = member.hold(threads, every=16)
            log(f"  member {member.instance_id} holds {held:,} threads, {pending:,} with a turn not backed up")
            saver = HybridSaver.from_url(
                url,
                backup_interval=None,
                schema=SCHEMA,
                memory_budget=BUDGET,
                warm_start=False,
                handle_signals=False,
            )
            try:
                restore = _timed_restore(saver, first)
                log(
                    f"  restore of every thread: {restore['total_s']:.2f} s ("
                    + ", ".join(f"{p} {s:.2f} s" for p, s in restore["phases_s"].items())
                    + ")"
                )
                undo = _timed_restore(saver, restore["undo_generation"])
                log(f"  undo: {undo['total_s']:.2f} s")
                resident = saver.stats().resident_threads
            finally:
                saver.close()
        finally:
            member.close()
    return {
        "threads": threads,
        "checkpoints": restore["checkpoints"],
        "member_threads": held,
        "member_pending_threads": pending,
        "restore": restore,
        "undo": undo,
        "restorer_resident_threads_after": resident,
        "raw_insert_select_s": raw_s,
        "ratio": ratio(raw_s, restore["total_s"]),
    }


def _fill(url: str, templates: list[Template], threads: int, log: Any) -> int:
    """Generation A (every thread) and B (a tenth of them with 30 more checkpoints); returns A."""
    serde = pinned_serde(templates)
    saver = open_hybrid(url, SCHEMA, serde)
    try:
        started = clock()
        fill(saver, templates, threads)
        first = saver.backup()
        fill(saver, templates, max(1, threads // 10), fresh=".more")
        later = saver.backup()
        if not (first.ok and later.ok) or first.generation is None:
            raise RuntimeError(f"backups of the restore store failed: {first.error or later.error}")
        log(
            f"  {threads:,} threads in generations {first.generation} and {later.generation} ({clock() - started:.0f} s)"
        )
        return first.generation
    finally:
        saver.close()


def _timed_restore(saver: HybridSaver, generation: int) -> dict[str, Any]:
    """Restore ``generation`` for every thread; the time of each phase (from the first report of it to
    the first report of the next) and the fractions reported."""
    marks: list[tuple[float, str, float]] = []
    start = clock()
    result = saver.restore(
        generation, progress=lambda phase, fraction, _detail: marks.append((clock(), phase, fraction))
    )
    total = clock() - start
    phases: dict[str, float] = {}
    firsts = [(t, p) for i, (t, p, _f) in enumerate(marks) if i == 0 or marks[i - 1][1] != p]
    for (t, phase), (t_next, _next) in zip(firsts, [*firsts[1:], (start + total, "")], strict=True):
        phases[phase] = phases.get(phase, 0.0) + t_next - t
    return {
        "total_s": total,
        "generation": result.generation,
        "undo_generation": result.undo_generation,
        "checkpoints": result.checkpoints,
        "members": list(result.members),
        "phases_s": phases,
        "fractions": [round(f, 3) for _t, _p, f in marks],
        "done_last": bool(marks) and marks[-1][1] == "done" and [p for _t, p, _f in marks].count("done") == 1,
    }


def _raw_copy(url: str, generation: int) -> float:
    """``INSERT ... SELECT`` of every row live at ``generation`` into bare tables, server-side, in one
    transaction (the tables are made first, outside the timing)."""
    rawcopy.create_bare(url, "raw_restore")
    rawcopy.checkpoint_server(url)
    where, params = live_at(generation)
    with psycopg.connect(url) as conn:
        start = clock()
        for table, (keys, payload, _types) in TABLES.items():
            cols = sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload)))
            conn.execute(
                sql.SQL("INSERT INTO raw_restore.{t} ({c}, added_gen) SELECT {c}, 1 FROM {s}.{t} WHERE {w}").format(
                    t=sql.Identifier(table), c=cols, s=sql.Identifier(SCHEMA), w=where
                ),
                params,
            )
        conn.commit()
        return clock() - start


class _Member:
    """An app member process holding threads (``tests/helpers/member.py``, no scheduled backup)."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(MEMBER), "--url", url, "--interval", "none", "--handoff", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"the member did not start: {line!r}")
        _ready, port, instance_id, *_pid = line.split()
        self.base = f"http://127.0.0.1:{port}"
        self.instance_id = int(instance_id)

    def hold(self, threads: int, every: int) -> tuple[int, int]:
        """Let the member load what it loads at start (alone and without a budget: every thread, in the
        background), then add a turn, not backed up, to every ``every``-th thread. Returns (threads held,
        threads with a turn pending)."""
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
            held, steady = -1, 0
            while steady < 4:
                now = int(client.get(f"{self.base}/stats").json().get("resident_threads") or 0)
                steady = steady + 1 if now == held else 0
                held = now
                time.sleep(0.5)

            def turn(k: int) -> None:
                body = {"thread": f"t{k}", "text": user_text(k, 1)}
                client.post(f"{self.base}/turn", json=body).raise_for_status()

            turned = range(0, threads, every)
            list(pool.map(turn, turned))
            held = int(client.get(f"{self.base}/stats").json().get("resident_threads") or 0)
        return held, len(turned)

    def close(self) -> None:
        try:
            httpx.post(f"{self.base}/close", json={}, timeout=30)
            self.proc.wait(timeout=120)
        except (httpx.HTTPError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)


__all__ = ["run_restore_scale"]
