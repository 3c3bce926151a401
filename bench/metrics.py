"""The cost of metrics on a graph turn: a HybridSaver registered with ``persistence.metrics.SaverCollector``
and scraped while turns run, against the same saver not scraped, side by side in one run.

The counters behind the metrics are always on (plain integers on the slow paths: loads, claims,
handoffs, backup runs; nothing on a hit), so what a host pays for metrics is the scrapes. Conversations
alternate between the two modes; in "with" a thread scrapes every :data:`SCRAPE_EVERY` seconds, far
more often than Prometheus would (every 15 s by default), so the ratio is an upper bound. The scrape
itself is timed too.
"""

from __future__ import annotations

import gc
import statistics
import threading
from typing import Any

from bench.database import Database
from bench.ops import Target, time_op
from bench.settings import Settings
from bench.stats import clock, summary
from bench.workload import TURNS_PER_THREAD, Template, pinned_serde

#: seconds between two scrapes while turns run "with" metrics
SCRAPE_EVERY = 0.05


class _Scraper:
    """A thread that renders the registry every ``every`` seconds while ``active``."""

    def __init__(self, registry: Any, every: float) -> None:
        from prometheus_client import generate_latest

        self._render = lambda: generate_latest(registry)
        self.every = every
        self.active = threading.Event()
        self.stopped = threading.Event()
        self.times: list[float] = []
        self.bytes = 0
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            if not self.active.wait(0.05):
                continue
            start = clock()
            self.bytes = len(self._render())
            self.times.append(clock() - start)
            self.stopped.wait(self.every)

    def close(self) -> None:
        self.stopped.set()
        self._thread.join(timeout=5)


def run_metrics(db: Database, templates: list[Template], settings: Settings, log: Any) -> dict[str, Any]:
    """Graph turns with the saver scraped and without, alternating by conversation."""
    from prometheus_client import CollectorRegistry

    from bench.backup import open_hybrid
    from persistence.metrics import SaverCollector

    url = db.create("metrics")
    saver = open_hybrid(url, "hybrid_saver", pinned_serde(templates))
    scraper: _Scraper | None = None
    try:
        target = Target("hybrid", saver, templates)
        # resident threads, so a scrape has something to count
        target.fill_reads(templates)
        saver.backup()
        registry = CollectorRegistry()
        registry.register(SaverCollector(saver))
        scraper = _Scraper(registry, SCRAPE_EVERY)
        samples: dict[str, list[float]] = {"without": [], "with": []}
        gc.collect()
        for conversation in range(2 * settings.turn_threads):
            mode = "with" if conversation % 2 else "without"
            if mode == "with":
                scraper.active.set()
            else:
                scraper.active.clear()
            for turn in range(TURNS_PER_THREAD):
                samples[mode].append(time_op(target.turn(conversation, turn)))
        scraper.active.clear()
        scrapes = list(scraper.times)
        log(f"  {sum(map(len, samples.values()))} turns, {len(scrapes)} scrapes of {scraper.bytes:,} bytes")
    finally:
        if scraper is not None:
            scraper.close()
        saver.close()
        db.drop(url)
    out: dict[str, Any] = {mode: summary(values, 1e3) for mode, values in samples.items()}
    out["scrape"] = summary(scrapes, 1e3)
    out["scrape_every_s"] = SCRAPE_EVERY
    out["exposition_bytes"] = scraper.bytes if scraper is not None else None
    for mode, values in samples.items():
        out[mode]["mean"] = statistics.fmean(values) * 1e3
    out["ratio"] = out["with"]["median"] / out["without"]["median"]
    out["mean_ratio"] = out["with"]["mean"] / out["without"]["mean"]
    return out


__all__ = ["SCRAPE_EVERY", "run_metrics"]
