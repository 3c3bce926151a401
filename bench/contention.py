"""What a running backup costs the writers: the lock hold time of its cut, and operations during it.

``puts``: a HybridSaver holds a large state; a thread puts a real checkpoint every ``put_pause``
seconds (as LangGraph's background executor does) before, during and after its first backup.
``ops``: the same, with reads, writes and whole graph turns in the main thread while the backup
runs in a background thread (as the scheduler runs it). "Idle" is the same load with no backup.

``cuts``: many small backups (a few threads changed between them, as between two scheduled runs);
each cut -- the part of a backup that holds ``saver.lock`` -- is timed.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
from typing import Any

from bench.backup import CutRecorder, open_hybrid
from bench.database import Database
from bench.ops import OPS, Target
from bench.settings import Settings
from bench.stats import clock, summary
from bench.workload import TURNS_PER_THREAD, OpFactory, Template, fill, pinned_serde


class PutLoop(threading.Thread):
    """Puts a real checkpoint every ``pause`` seconds; records (start, end, scheduled) of each."""

    def __init__(self, saver: Any, template: Template, pause: float) -> None:
        super().__init__(name="bench-puts", daemon=True)
        self.saver = saver
        self.factory = OpFactory(template)
        self.pause = pause
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, float]] = []

    def run(self) -> None:
        latest: dict[int, str | None] = {}
        threads = itertools.cycle(range(100))
        due = clock()
        while not self.stop.is_set():
            due += self.pause
            delay = due - clock()
            if delay > 0:
                time.sleep(delay)
            else:
                due = clock()  # behind schedule: do not pile puts up
            k = next(threads)
            args = self.factory.put_args(f"bg-put-{k}", latest.get(k))
            start = clock()
            saved = self.saver.put(*args)
            end = clock()
            latest[k] = saved["configurable"]["checkpoint_id"]
            self.samples.append((start, end, due))


class GcPauses:
    """Records every garbage collection (start, end, generation) while installed."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float, int]] = []
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = clock()
        else:
            self.events.append((self._start, clock(), info.get("generation", -1)))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self, window: tuple[float, float]) -> dict[str, Any]:
        """Full (generation 2) collections inside the window and outside it."""
        during, idle = _split(self.events, window)
        return {
            "gen2_during_backup": _gc_figures([e for e in during if e[2] == 2]),
            "gen2_idle": _gc_figures([e for e in idle if e[2] == 2]),
        }


def _gc_figures(events: list[tuple[float, float, int]]) -> dict[str, Any]:
    pauses = [e - s for s, e, _g in events]
    return {"count": len(pauses), "max_ms": max(pauses) * 1e3 if pauses else 0.0, "total_ms": sum(pauses) * 1e3}


def _split(samples: list[tuple[float, float, Any]], window: tuple[float, float]) -> tuple[list, list]:
    """Samples entirely inside the backup window, and entirely outside it."""
    b0, b1 = window
    during = [s for s in samples if s[0] >= b0 and s[1] <= b1]
    idle = [s for s in samples if s[1] < b0 or s[0] > b1]
    return during, idle


def _filled(db: Database, label: str, templates: list[Template], threads: int) -> tuple[str, Any, int]:
    url = db.create(label)
    serde = pinned_serde(templates)
    saver = open_hybrid(url, "hybrid_saver", serde)
    checkpoints = fill(saver, templates, threads)
    serde.enabled = False
    return url, saver, checkpoints


def _background_backup(saver: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def backup() -> None:
        start = clock()
        run = saver.backup()
        result.update(seconds=clock() - start, run=run, window=(start, clock()))

    worker = threading.Thread(target=backup, name="bench-backup")
    worker.start()
    return worker, result


def run_puts_during_backup(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Puts from a thread, one every ``put_pause`` s: idle, then while the large backup runs, then idle."""
    url, saver, checkpoints = _filled(db, "puts", templates, settings.during_threads)
    try:
        recorder = CutRecorder(saver)
        puts = PutLoop(saver, templates[0], settings.put_pause)
        with GcPauses() as pauses:
            puts.start()
            time.sleep(settings.idle_seconds)
            start = clock()
            run = saver.backup()
            window = (start, clock())
            time.sleep(settings.idle_seconds)
            puts.stop.set()
            puts.join()
        if not run.ok:
            raise RuntimeError(f"backup during puts failed: {run.error}")
        during, idle = _split(puts.samples, window)
        out = {
            "threads": settings.during_threads,
            "checkpoints": checkpoints,
            "backup_s": window[1] - window[0],
            "backup_cut_s": recorder.seconds[0] if recorder.seconds else None,
            "put_pause_s": settings.put_pause,
            "put": {
                "hybrid_idle": summary([e - s for s, e, _d in idle]),
                "hybrid_during_backup": summary([e - s for s, e, _d in during]),
            },
            "put_latency_from_schedule": {
                "idle": summary([e - d for _s, e, d in idle]),
                "during_backup": summary([e - d for _s, e, d in during]),
            },
            "gc": pauses.summary(window),
        }
        put = out["put"]
        log(
            f"  backup of {checkpoints:,} checkpoints: {out['backup_s']:.1f} s, cut {out['backup_cut_s'] * 1000:.0f} ms; "
            f"put p99 idle {put['hybrid_idle']['p99']:.0f} us, during {put['hybrid_during_backup']['p99']:.0f} us"
        )
        return out
    finally:
        saver.close()
        db.drop(url)


def run_ops_during_backup(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Reads, writes and graph turns in the main thread, idle and while the large backup runs."""
    url, saver, checkpoints = _filled(db, "during", templates, settings.during_threads)
    try:
        target = Target("hybrid", saver, templates, prefix="t")  # reads threads t0..t19 of the state
        samples: list[tuple[float, float, str]] = []
        turns = itertools.count()

        def round_() -> None:
            for op in OPS:
                fn = getattr(target, op)()
                start = clock()
                fn()
                samples.append((start, clock(), op))
            k = next(turns)
            fn = target.turn(k // TURNS_PER_THREAD, k % TURNS_PER_THREAD)
            start = clock()
            fn()
            samples.append((start, clock(), "turn"))

        idle_rounds = max(50, settings.op_samples // 4)
        with GcPauses() as pauses:
            for _ in range(idle_rounds):
                round_()
            worker, result = _background_backup(saver)
            rounds = 0
            while worker.is_alive():
                round_()
                rounds += 1
            worker.join()
            for _ in range(idle_rounds):
                round_()
        if not result["run"].ok:
            raise RuntimeError(f"backup during operations failed: {result['run'].error}")
        during, idle = _split(samples, result["window"])
        ops: dict[str, Any] = {}
        for op in (*OPS, "turn"):
            unit = 1e3 if op == "turn" else 1e6
            ops[op] = {
                "hybrid_idle": summary([e - s for s, e, o in idle if o == op], unit),
                "hybrid_during_backup": summary([e - s for s, e, o in during if o == op], unit),
            }
        log(f"  {rounds} rounds of operations and turns during a {result['seconds']:.1f} s backup")
        return {
            "threads": settings.during_threads,
            "checkpoints": checkpoints,
            "backup_s": result["seconds"],
            "rounds_during": rounds,
            "ops": ops,
            "gc": pauses.summary(result["window"]),
        }
    finally:
        saver.close()
        db.drop(url)


def run_cuts(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Lock hold time of the cut over many small backups."""
    url = db.create("cuts")
    serde = pinned_serde(templates)
    saver = open_hybrid(url, "hybrid_saver", serde)
    try:
        recorder = CutRecorder(saver)
        sizes = []
        for k in range(settings.cuts):
            fill(saver, templates, settings.cut_threads, prefix="c", fresh=f".c{k}")
            before = saver.stats().pending
            run = saver.backup()
            if not run.ok:
                raise RuntimeError(f"backup failed: {run.error}")
            sizes.append(before)
        out = {
            "cuts": len(recorder.seconds),
            "pending_keys_per_cut": sorted(sizes)[len(sizes) // 2],
            "changed_threads_per_cut": settings.cut_threads,
            "cut": summary(recorder.seconds),
        }
        log(f"  {out['cuts']} cuts of ~{out['pending_keys_per_cut']} keys: p99 {out['cut']['p99']:.0f} us")
        return out
    finally:
        saver.close()
        db.drop(url)


__all__ = ["PutLoop", "run_cuts", "run_ops_during_backup", "run_puts_during_backup"]
