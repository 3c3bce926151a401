"""Prometheus metrics of HybridSaver: a collector the host registers (``pip install hybrid-saver[metrics]``).

    from prometheus_client import REGISTRY, make_asgi_app
    from persistence.metrics import SaverCollector

    REGISTRY.register(SaverCollector(saver))   # then serve REGISTRY as usual (make_asgi_app, start_http_server)

Everything is read at scrape time from the saver's own figures: ``saver.stats()`` (lag, pending,
residency), ``saver.telemetry()`` (counters and histograms the components keep), ``saver.health()``
(one ``SELECT 1``) and, while the database answers, ``saver.restore_window()`` (one query). Nothing is
added to a read or a write: the counters behind it are plain integers the components already keep.
Every series carries ``member`` (the member's name, stable across restarts: ``host/program#slot``) and
``store`` (the schema). The fleet as the store sees it is ``hybrid-saver metrics --port N`` (see
``persistence/cli/metrics.py``), with its own names (``hybrid_saver_fleet_...``, ``hybrid_saver_store_...``).

Names follow Prometheus' conventions: base units (seconds, bytes), ``_total`` for counters,
``_timestamp_seconds`` for Unix times; the table is :data:`SAVER_METRICS` (and
``examples/observability/README.md``). ``prometheus_client`` is imported only when a collector runs.

A facade-level module like ``saver``: it reads the facade's public API and nothing below it.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persistence.tally import TallySnapshot

if TYPE_CHECKING:
    from persistence.saver import HybridSaver

GAUGE = "gauge"
COUNTER = "counter"
HISTOGRAM = "histogram"
INFO = "info"
#: the labels every series of a saver carries
LABELS = ("member", "store")


@dataclass(frozen=True)
class Spec:
    """One metric family: its name (with ``_total`` for counters; ``_info`` is added to info names),
    type, help text and label names."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = LABELS


def _spec(name: str, kind: str, help: str, *extra: str) -> Spec:
    return Spec(name, kind, help, (*LABELS, *extra))


#: what a :class:`SaverCollector` exposes for each saver
SAVER_METRICS: tuple[Spec, ...] = (
    _spec("hybrid_saver_member", INFO, "The member: its id in the store, host, pid and version.",
          "member_id", "host", "pid", "version"),
    _spec("hybrid_saver_health_status", GAUGE, "1 for the saver's health status now (ok, degraded or down), 0 for the "
          "others.", "status"),
    _spec("hybrid_saver_ready", GAUGE, "1 when the member serves requests (health is not down)."),
    _spec("hybrid_saver_database_up", GAUGE, "1 when PostgreSQL answered the health check's query."),
    _spec("hybrid_saver_backup_lag_seconds", GAUGE, "Seconds the oldest change not yet in PostgreSQL has waited "
          "(0 with nothing pending): what a crash now would lose."),
    _spec("hybrid_saver_pending_changes", GAUGE, "Changes (checkpoints, writes, blobs) not yet in PostgreSQL."),
    _spec("hybrid_saver_pending_bytes", GAUGE, "Bytes of resident threads with changes not yet in PostgreSQL "
          "(they cannot be evicted)."),
    _spec("hybrid_saver_last_backup_success_timestamp_seconds", GAUGE, "Unix time the last successful backup "
          "run finished (one with nothing to write counts)."),
    _spec("hybrid_saver_last_backup_timestamp_seconds", GAUGE, "Unix time the last backup run finished, failed or not."),
    _spec("hybrid_saver_backup_consecutive_failures", GAUGE, "Failed backup runs in a row (0 after a success)."),
    _spec("hybrid_saver_backup_interval_seconds", GAUGE, "Seconds between scheduled backups (absent: only on "
          "demand and at close)."),
    _spec("hybrid_saver_backup_paused", GAUGE, "1 while scheduled backups are paused by an operator."),
    _spec("hybrid_saver_backup_runs_total", COUNTER, "Backup runs by trigger and outcome (written, empty, "
          "refused, failed); restores are trigger=restore.", "trigger", "outcome"),
    _spec("hybrid_saver_backup_duration_seconds", HISTOGRAM, "Seconds each backup run took (runs with nothing "
          "to write left out)."),
    _spec("hybrid_saver_backup_rows", HISTOGRAM, "Rows each backup that wrote a generation wrote."),
    _spec("hybrid_saver_backup_bytes", HISTOGRAM, "Payload bytes each backup that wrote a generation wrote."),
    _spec("hybrid_saver_fencing_refusals_total", COUNTER, "Threads whose changes the store refused because "
          "another member owns them now (fencing)."),
    _spec("hybrid_saver_restores_total", COUNTER, "Restores this member ran (one thread or every thread)."),
    _spec("hybrid_saver_generations_kept", GAUGE, "Generations the store keeps (the restore window)."),
    _spec("hybrid_saver_restore_window_oldest_generation", GAUGE, "The oldest generation a restore can go back to."),
    _spec("hybrid_saver_restore_window_newest_generation", GAUGE, "The newest generation of the store."),
    _spec("hybrid_saver_restore_window_oldest_timestamp_seconds", GAUGE, "Unix time of the oldest kept generation."),
    _spec("hybrid_saver_restore_window_newest_timestamp_seconds", GAUGE, "Unix time of the newest generation."),
    _spec("hybrid_saver_restore_window_seconds", GAUGE, "Seconds between the oldest and the newest kept generation."),
    _spec("hybrid_saver_resident_threads", GAUGE, "Threads in memory."),
    _spec("hybrid_saver_resident_checkpoints", GAUGE, "Checkpoints of the threads in memory."),
    _spec("hybrid_saver_resident_bytes", GAUGE, "Bytes of the threads in memory, as the budget counts them."),
    _spec("hybrid_saver_memory_budget_bytes", GAUGE, "The memory budget (absent: every thread stays in memory)."),
    _spec("hybrid_saver_cache_hits_total", COUNTER, "Accesses served by a resident thread."),
    _spec("hybrid_saver_thread_loads_total", COUNTER, "Cold threads read back from PostgreSQL."),
    _spec("hybrid_saver_thread_evictions_total", COUNTER, "Threads evicted from memory (clean ones, least "
          "recently used first)."),
    _spec("hybrid_saver_thread_load_seconds", HISTOGRAM, "Seconds each load of a cold thread took (its claim, a "
          "handoff if another member held it, the read)."),
    _spec("hybrid_saver_claims_total", COUNTER, "Threads this member claimed."),
    _spec("hybrid_saver_handoffs_total", COUNTER, "Threads another member held when this one claimed them "
          "(handed over, or taken once its lease ran out)."),
    _spec("hybrid_saver_handoff_seconds", HISTOGRAM, "Seconds each claim that needed a handoff took."),
    _spec("hybrid_saver_thread_busy_total", COUNTER, "Claims that raised ThreadBusy (the holder did not hand the "
          "thread over within handoff_timeout)."),
    _spec("hybrid_saver_lease_valid", GAUGE, "1 while this member's lease is certainly valid."),
    _spec("hybrid_saver_lease_remaining_seconds", GAUGE, "Seconds until this member's lease runs out unless renewed."),
    _spec("hybrid_saver_lease_duration_seconds", GAUGE, "The lease (lease_seconds): a kill -9 costs this much "
          "takeover time."),
    _spec("hybrid_saver_lease_reconnects_total", COUNTER, "Times the lease connection was found closed and opened "
          "again."),
    _spec("hybrid_saver_lease_rejoins_total", COUNTER, "Times the store had counted this member gone and it "
          "joined again."),
)  # fmt: skip

#: a sample: (family name, label values in the family's order, value)
Sample = tuple[str, tuple[str, ...], "float | TallySnapshot | dict[str, str]"]


def member_label(saver: HybridSaver) -> str:
    """The ``member`` label: the member's name (``host/program#slot``, kept across restarts), else host/pid."""
    return saver.membership.name or f"{socket.gethostname()}/{os.getpid()}"


def _ts(moment: Any) -> float | None:
    return moment.timestamp() if moment is not None else None


def saver_samples(saver: HybridSaver) -> list[Sample]:
    """Every sample of one saver now."""
    from persistence import __version__

    base = (member_label(saver), saver.store.schema)
    out: list[Sample] = []

    def add(name: str, value: Any, *extra: str) -> None:
        if value is not None:
            out.append((name, (*base, *extra), value if isinstance(value, (TallySnapshot, dict)) else float(value)))

    health = saver.health()
    stats = saver.stats()
    tel = saver.telemetry()
    member_id = "" if saver.instance_id is None else str(saver.instance_id)
    add("hybrid_saver_member", {}, member_id, socket.gethostname(), str(os.getpid()), __version__)
    for status in ("ok", "degraded", "down"):
        add("hybrid_saver_health_status", health.status == status, status)
    add("hybrid_saver_ready", health.ready)
    add("hybrid_saver_database_up", health.database_reachable)
    add("hybrid_saver_backup_lag_seconds", stats.lag_seconds)
    add("hybrid_saver_pending_changes", stats.pending)
    add("hybrid_saver_pending_bytes", stats.dirty_bytes)
    add("hybrid_saver_last_backup_success_timestamp_seconds", _ts(tel.last_success_at))
    add("hybrid_saver_last_backup_timestamp_seconds", _ts(tel.last_run_at))
    add("hybrid_saver_backup_consecutive_failures", tel.failing_runs)
    add("hybrid_saver_backup_interval_seconds", health.backup_interval)
    add("hybrid_saver_backup_paused", health.backups_paused)
    restores = 0
    for (trigger, outcome), n in sorted(tel.runs.items()):
        add("hybrid_saver_backup_runs_total", n, trigger, outcome)
        if trigger == "restore" and outcome != "failed":
            restores += n
    add("hybrid_saver_backup_duration_seconds", tel.backup_duration)
    add("hybrid_saver_backup_rows", tel.backup_rows)
    add("hybrid_saver_backup_bytes", tel.backup_bytes)
    add("hybrid_saver_fencing_refusals_total", tel.fencing_refusals)
    add("hybrid_saver_restores_total", restores)
    window = None
    if health.database_reachable and health.attached:
        try:
            window = saver.restore_window()
        except Exception:  # noqa: BLE001 - a scrape reports what it can; database_up says why
            window = None
    if window is not None:
        add("hybrid_saver_generations_kept", window.kept)
        add("hybrid_saver_restore_window_oldest_generation", window.oldest)
        add("hybrid_saver_restore_window_newest_generation", window.newest)
        add("hybrid_saver_restore_window_oldest_timestamp_seconds", _ts(window.oldest_at))
        add("hybrid_saver_restore_window_newest_timestamp_seconds", _ts(window.newest_at))
        add("hybrid_saver_restore_window_seconds", (window.newest_at - window.oldest_at).total_seconds())
    add("hybrid_saver_resident_threads", stats.resident_threads)
    add("hybrid_saver_resident_checkpoints", stats.checkpoints)
    add("hybrid_saver_resident_bytes", stats.resident_bytes)
    add("hybrid_saver_memory_budget_bytes", stats.memory_budget)
    add("hybrid_saver_cache_hits_total", stats.hits)
    add("hybrid_saver_thread_loads_total", stats.loads)
    add("hybrid_saver_thread_evictions_total", stats.evictions)
    add("hybrid_saver_thread_load_seconds", tel.load_seconds)
    add("hybrid_saver_claims_total", tel.claims)
    add("hybrid_saver_handoffs_total", tel.handoffs)
    add("hybrid_saver_handoff_seconds", tel.handoff_seconds)
    add("hybrid_saver_thread_busy_total", tel.thread_busy)
    add("hybrid_saver_lease_valid", health.lease_valid)
    add("hybrid_saver_lease_remaining_seconds", health.lease_remaining_seconds)
    add("hybrid_saver_lease_duration_seconds", saver.membership.lease.seconds)
    add("hybrid_saver_lease_reconnects_total", tel.lease_reconnects)
    add("hybrid_saver_lease_rejoins_total", tel.lease_rejoins)
    return out


def families(specs: Sequence[Spec], samples: Iterable[Sample]) -> list[Any]:
    """``prometheus_client`` metric families of ``specs`` filled with ``samples`` (families without a
    sample are left out)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
    )
    from prometheus_client.utils import floatToGoString

    by_name: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_name[sample[0]].append(sample)
    out: list[Any] = []
    for spec in specs:
        rows = by_name.get(spec.name)
        if not rows:
            continue
        labels = list(spec.labels)
        if spec.kind == INFO:
            info = InfoMetricFamily(spec.name, spec.help, labels=labels)
            for _n, values, _v in rows:
                info.add_metric(list(values), {})
            out.append(info)
        elif spec.kind == GAUGE:
            gauge = GaugeMetricFamily(spec.name, spec.help, labels=labels)
            for _n, values, value in rows:
                gauge.add_metric(list(values), value)  # type: ignore[arg-type]
            out.append(gauge)
        elif spec.kind == COUNTER:
            counter = CounterMetricFamily(spec.name, spec.help, labels=labels)
            for _n, values, value in rows:
                counter.add_metric(list(values), value)  # type: ignore[arg-type]
            out.append(counter)
        else:
            hist = HistogramMetricFamily(spec.name, spec.help, labels=labels)
            for _n, values, snap in rows:
                assert isinstance(snap, TallySnapshot)
                # prometheus_client leaves floatToGoString unannotated (float -> str)
                buckets = [(floatToGoString(bound), float(n)) for bound, n in snap.buckets]  # type: ignore[no-untyped-call]
                hist.add_metric(list(values), buckets, snap.sum)
            out.append(hist)
    return out


def describe(specs: Sequence[Spec]) -> list[Any]:
    """Families without samples: what a registry checks names against when a collector is registered."""
    from prometheus_client.core import Metric

    kinds = {GAUGE: "gauge", COUNTER: "counter", HISTOGRAM: "histogram", INFO: "info"}
    out = []
    for spec in specs:
        name = spec.name
        if spec.kind == COUNTER and name.endswith("_total"):
            name = name[: -len("_total")]
        elif spec.kind == INFO and name.endswith("_info"):
            name = name[: -len("_info")]
        out.append(Metric(name, spec.help, kinds[spec.kind]))
    return out


class SaverCollector:
    """A ``prometheus_client`` collector of one or more savers of this process (register it once:
    ``REGISTRY.register(SaverCollector(saver))``), or of the savers ``source()`` returns at each scrape
    (a saver opened after the collector was registered, e.g. the Agent Server's). A closed saver reports
    ``hybrid_saver_ready 0`` and its last figures. Each scrape costs one ``SELECT 1`` and, while the
    database answers, one query for the restore window, per saver."""

    def __init__(self, *savers: HybridSaver, source: Callable[[], Iterable[HybridSaver]] | None = None) -> None:
        if not savers and source is None:
            raise ValueError("SaverCollector needs a saver: SaverCollector(saver), or SaverCollector(source=...).")
        self.savers = savers
        self.source = source

    def describe(self) -> list[Any]:
        return describe(SAVER_METRICS)

    def collect(self) -> Iterator[Any]:
        samples: list[Sample] = []
        for saver in (*self.savers, *(self.source() if self.source is not None else ())):
            samples += saver_samples(saver)
        yield from families(SAVER_METRICS, samples)


__all__ = ["COUNTER", "GAUGE", "HISTOGRAM", "INFO", "LABELS", "SAVER_METRICS", "SaverCollector", "Spec", "families"]
