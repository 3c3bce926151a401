"""``hybrid-saver metrics --port N``: a Prometheus exporter of the fleet as the store sees it.

What it serves comes from PostgreSQL at each scrape, never from a member's memory: the members' rows
(their leases and the figures each one publishes with its heartbeat, every 2 s), the kept generations
(the restore window) and the runs table. One exporter per store is enough, wherever it runs; the
members' own metrics (``persistence.metrics.SaverCollector``, e.g. the FastAPI example's ``/metrics``)
are exact and live, these are as of each member's last heartbeat, and they still say something when a
member is gone. It only reads: no schema is created, no member joins, no thread is claimed.
Needs ``prometheus-client`` (``pip install 'hybrid-saver[metrics]'``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from persistence.db import DB_ERRORS, describe_url, open_pool
from persistence.fleet import Membership
from persistence.metrics import COUNTER, GAUGE, Sample, Spec, families
from persistence.store import Store
from persistence.store.link import DatabaseLink

#: the port when none is given
DEFAULT_PORT = 9650
#: runs of the store read at each scrape for the per-member run figures
RECENT_RUNS = 500
#: seconds a member that ended without leaving counts in ``hybrid_saver_fleet_members_lost``
LOST_WINDOW = 900

_STORE = ("store",)
_MEMBER = ("store", "member", "member_id")

#: what the exporter serves
FLEET_METRICS: tuple[Spec, ...] = (
    Spec("hybrid_saver_store_up", GAUGE, "1 when the exporter could read the store at this scrape.", _STORE),
    Spec("hybrid_saver_store_scrape_seconds", GAUGE, "Seconds the exporter took to read the store.", _STORE),
    Spec("hybrid_saver_store_database_bytes", GAUGE, "Bytes of the store's tables and indexes.", _STORE),
    Spec("hybrid_saver_store_generations_kept", GAUGE, "Generations the store keeps (the restore window).", _STORE),
    Spec("hybrid_saver_store_generations_by_load", GAUGE, "Kept generations written because of load (memory "
         "pressure, handoffs); retention does not count them.", _STORE),
    Spec("hybrid_saver_store_restore_window_oldest_generation", GAUGE, "The oldest kept generation.", _STORE),
    Spec("hybrid_saver_store_restore_window_newest_generation", GAUGE, "The newest generation.", _STORE),
    Spec("hybrid_saver_store_restore_window_oldest_timestamp_seconds", GAUGE, "Unix time of the oldest kept "
         "generation.", _STORE),
    Spec("hybrid_saver_store_restore_window_newest_timestamp_seconds", GAUGE, "Unix time of the newest "
         "generation.", _STORE),
    Spec("hybrid_saver_store_restore_window_seconds", GAUGE, "Seconds between the oldest and the newest kept "
         "generation.", _STORE),
    Spec("hybrid_saver_fleet_members", GAUGE, "Members of the store whose lease runs.", _STORE),
    Spec("hybrid_saver_fleet_members_lost", GAUGE, f"Members that ended without leaving (their lease ran out: "
         f"kill -9, a crash, a machine lost) in the last {LOST_WINDOW // 60} minutes, or whose lease ran out and "
         "that nobody reaped yet.", _STORE),
    Spec("hybrid_saver_fleet_member_alive", GAUGE, "1 while the member's lease runs; 0 for a member whose lease ran "
         "out and that nobody reaped yet.", _MEMBER),
    Spec("hybrid_saver_fleet_member_heartbeat_age_seconds", GAUGE, "Seconds since the member's last heartbeat (its "
         "figures are as of then).", _MEMBER),
    Spec("hybrid_saver_fleet_member_lease_remaining_seconds", GAUGE, "Seconds left on the member's lease, on the "
         "server's clock (negative: it ran out).", _MEMBER),
    Spec("hybrid_saver_fleet_member_backup_lag_seconds", GAUGE, "The member's backup lag at its last heartbeat.",
         _MEMBER),
    Spec("hybrid_saver_fleet_member_pending_changes", GAUGE, "Changes the member had not backed up at its last "
         "heartbeat: what losing it would lose.", _MEMBER),
    Spec("hybrid_saver_fleet_member_resident_threads", GAUGE, "Threads in the member's memory.", _MEMBER),
    Spec("hybrid_saver_fleet_member_resident_checkpoints", GAUGE, "Checkpoints in the member's memory.", _MEMBER),
    Spec("hybrid_saver_fleet_member_resident_bytes", GAUGE, "Bytes of the threads in the member's memory.", _MEMBER),
    Spec("hybrid_saver_fleet_member_memory_budget_bytes", GAUGE, "The member's memory budget (absent: none).",
         _MEMBER),
    Spec("hybrid_saver_fleet_member_cache_hits_total", COUNTER, "Accesses the member served from memory.", _MEMBER),
    Spec("hybrid_saver_fleet_member_thread_loads_total", COUNTER, "Cold threads the member loaded.", _MEMBER),
    Spec("hybrid_saver_fleet_member_thread_evictions_total", COUNTER, "Threads the member evicted.", _MEMBER),
    Spec("hybrid_saver_fleet_member_backup_interval_seconds", GAUGE, "The member's backup interval (absent: only "
         "on demand).", _MEMBER),
    Spec("hybrid_saver_fleet_member_backup_paused", GAUGE, "1 while the member's scheduled backups are paused.",
         _MEMBER),
    Spec("hybrid_saver_fleet_member_last_backup_timestamp_seconds", GAUGE, "Unix time the member's last backup run "
         "finished.", _MEMBER),
    Spec("hybrid_saver_fleet_member_last_backup_ok", GAUGE, "1 when the member's last backup run succeeded.",
         _MEMBER),
    Spec("hybrid_saver_fleet_member_last_written_run_timestamp_seconds", GAUGE, "Unix time of the member's newest "
         f"run in the runs table that wrote a generation (among the store's last {RECENT_RUNS}).", _MEMBER),
    Spec("hybrid_saver_fleet_member_last_failed_run_timestamp_seconds", GAUGE, "Unix time of the member's newest "
         f"failed run in the runs table (among the store's last {RECENT_RUNS}; a run that failed during an outage "
         "is logged once the database is back).", _MEMBER),
)  # fmt: skip


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


class StoreCollector:
    """A ``prometheus_client`` collector reading one store at each scrape. After a database error it checks
    the server directly (at most once a second) and gives the pool a fresh start when it answers, as a
    saver does (``DatabaseLink``), so the first scrape after an outage reads the store again."""

    def __init__(self, store: Store, membership: Membership, link: DatabaseLink) -> None:
        self.store = store
        self.membership = membership
        self.link = link

    def describe(self) -> list[Any]:
        from persistence.metrics import describe

        return describe(FLEET_METRICS)

    def collect(self) -> Iterator[Any]:
        started = time.perf_counter()
        schema = self.store.schema
        samples: list[Sample] = []
        up = 0.0
        if self.link.reachable():
            try:
                samples = self._read(schema)
                up = 1.0
            except DB_ERRORS:
                self.link.mark_failed()
        samples.append(("hybrid_saver_store_up", (schema,), up))
        samples.append(("hybrid_saver_store_scrape_seconds", (schema,), time.perf_counter() - started))
        yield from families(FLEET_METRICS, samples)

    def _read(self, schema: str) -> list[Sample]:
        store, membership = self.store, self.membership
        out: list[Sample] = []

        def add(name: str, labels: tuple[str, ...], value: Any) -> None:
            number = _number(value)
            if number is not None:
                out.append((name, labels, number))

        window = store.upkeep.window()
        if window is not None:
            add("hybrid_saver_store_generations_kept", (schema,), window.kept)
            add("hybrid_saver_store_generations_by_load", (schema,), window.by_load)
            add("hybrid_saver_store_restore_window_oldest_generation", (schema,), window.oldest)
            add("hybrid_saver_store_restore_window_newest_generation", (schema,), window.newest)
            add("hybrid_saver_store_restore_window_oldest_timestamp_seconds", (schema,), window.oldest_at.timestamp())
            add("hybrid_saver_store_restore_window_newest_timestamp_seconds", (schema,), window.newest_at.timestamp())
            add(
                "hybrid_saver_store_restore_window_seconds",
                (schema,),
                (window.newest_at - window.oldest_at).total_seconds(),
            )
        add("hybrid_saver_store_database_bytes", (schema,), store.runs.database_size())
        members = membership.members()
        leases, lost = membership.leases(LOST_WINDOW)
        add("hybrid_saver_fleet_members", (schema,), sum(1 for m in members if m.alive))
        add("hybrid_saver_fleet_members_lost", (schema,), lost + sum(1 for m in members if not m.alive))
        written: dict[int, float] = {}
        failed: dict[int, float] = {}
        for run in store.runs.runs(RECENT_RUNS, empty=False):
            who, at = run.get("instance_id"), _timestamp(run.get("finished_at"))
            if who is None or at is None:
                continue
            if run.get("error") is not None:
                failed[who] = max(failed.get(who, 0.0), at)
            elif run.get("generation") is not None:
                written[who] = max(written.get(who, 0.0), at)
        now = datetime.now(UTC)
        for m in members:
            labels = (schema, m.name or f"{m.host}/{m.pid}", str(m.instance_id))
            f = m.figures
            add("hybrid_saver_fleet_member_alive", labels, m.alive)
            if m.heartbeat_at is not None:
                add("hybrid_saver_fleet_member_heartbeat_age_seconds", labels, (now - m.heartbeat_at).total_seconds())
            add("hybrid_saver_fleet_member_lease_remaining_seconds", labels, leases.get(m.instance_id))
            add("hybrid_saver_fleet_member_backup_lag_seconds", labels, f.get("lag_seconds"))
            add("hybrid_saver_fleet_member_pending_changes", labels, f.get("pending"))
            add("hybrid_saver_fleet_member_resident_threads", labels, f.get("resident_threads"))
            add("hybrid_saver_fleet_member_resident_checkpoints", labels, f.get("checkpoints"))
            add("hybrid_saver_fleet_member_resident_bytes", labels, f.get("resident_bytes"))
            add("hybrid_saver_fleet_member_memory_budget_bytes", labels, f.get("memory_budget"))
            add("hybrid_saver_fleet_member_cache_hits_total", labels, f.get("hits"))
            add("hybrid_saver_fleet_member_thread_loads_total", labels, f.get("loads"))
            add("hybrid_saver_fleet_member_thread_evictions_total", labels, f.get("evictions"))
            add("hybrid_saver_fleet_member_backup_interval_seconds", labels, f.get("interval"))
            add("hybrid_saver_fleet_member_backup_paused", labels, bool(f.get("paused")))
            add("hybrid_saver_fleet_member_last_backup_timestamp_seconds", labels, _timestamp(f.get("last_run_at")))
            if f.get("last_run_ok") is not None:
                add("hybrid_saver_fleet_member_last_backup_ok", labels, bool(f.get("last_run_ok")))
            add("hybrid_saver_fleet_member_last_written_run_timestamp_seconds", labels, written.get(m.instance_id))
            add("hybrid_saver_fleet_member_last_failed_run_timestamp_seconds", labels, failed.get(m.instance_id))
        return out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register the ``metrics`` subcommand (``common`` carries --schema and --timeout)."""
    cmd = sub.add_parser(
        "metrics",
        help="serve the fleet's metrics, read from the store, to Prometheus",
        description=(
            "Serve Prometheus metrics of the store on http://HOST:PORT/metrics: the members (alive, lease, "
            "heartbeat, and the figures each publishes: lag, pending changes, memory, hits, loads, evictions, "
            "interval, last backup), members lost, the restore window and the runs that wrote or failed. Read "
            "from PostgreSQL at each scrape; nothing is written. The members' own live metrics are served by "
            "the app (persistence.metrics.SaverCollector)."
        ),
        epilog="Needs `pip install 'hybrid-saver[metrics]'`. Stops on SIGTERM or Ctrl-C.",
        parents=[common],
    )
    cmd.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    cmd.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s, every interface)")
    cmd.add_argument("--once", action="store_true", help="print the metrics once to stdout and exit")


def run(args: argparse.Namespace, url: str) -> int:
    """Serve (or with ``--once`` print) the store's metrics; 0 on a clean stop, 1 when it cannot start."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest, start_http_server
    except ImportError:
        print(
            "error: `hybrid-saver metrics` needs prometheus-client: pip install 'hybrid-saver[metrics]'",
            file=sys.stderr,
        )
        return 1
    pool = open_pool(url, max_size=2)
    store, membership = Store(pool, args.schema), Membership(pool, url, args.schema)
    # the link replaces the pool after an outage: close the one in use at the end
    link = DatabaseLink(pool, url, [store, membership], owns_pool=True)
    try:
        registry = CollectorRegistry()
        registry.register(StoreCollector(store, membership, link))
        if args.once:
            sys.stdout.write(generate_latest(registry).decode())
            return 0
        try:
            server, _thread = start_http_server(args.port, addr=args.host, registry=registry)
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(
            f"serving the metrics of schema {args.schema!r} in {describe_url(url)} on "
            f"http://{args.host}:{args.port}/metrics; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.shutdown()
        return 0
    finally:
        link.pool.close()


__all__ = ["DEFAULT_PORT", "FLEET_METRICS", "LOST_WINDOW", "StoreCollector", "add_parser", "run"]
