"""Metrics (issue 19): ``persistence.metrics.SaverCollector`` and ``hybrid-saver metrics``, their names
linted by ``promtool check metrics``; the alert rules of examples/observability checked and unit-tested
by ``promtool``; and a real Prometheus (Debian's package, ``make prometheus``) scraping two FastAPI example
members and the store exporter under load, whose HTTP API sees backups, lag and handoffs move as the
test drives them, sees the lag alert fire while the test's PostgreSQL is stopped, and a member lost
after ``kill -9``."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from helpers.app import ROOT, ExampleApp, free_port
from helpers.pg import PrivateServer, stoppable_server
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from persistence import HybridSaver, ThreadBusy
from persistence.cli.metrics import FLEET_METRICS
from persistence.metrics import SAVER_METRICS, SaverCollector

OBSERVABILITY = ROOT / "examples" / "observability"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
INTERVAL = 1.0


server, url, savers = stoppable_server("hs-metrics-")


def _scrape(*savers: HybridSaver) -> str:
    registry = CollectorRegistry()
    registry.register(SaverCollector(*savers))
    return generate_latest(registry).decode()


def _values(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(text: str, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in _values(text).items() if n == name and wanted <= ls)


def _lint(text: str) -> None:
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _put(saver: HybridSaver, thread_id: str, n: int = 1) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    for _ in range(n):
        config = saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})


def test_the_collector_exposes_every_metric_named_after_the_conventions(url: str, savers: list[HybridSaver]) -> None:
    saver = HybridSaver.from_url(url, backup_interval=60, memory_budget=1024 * 1024, handle_signals=False)
    savers.append(saver)
    _put(saver, "t1", 3)
    first = saver.backup()
    _put(saver, "t1")
    saver.backup()
    saver.restore(first.generation, thread_id="t1")
    text = _scrape(saver)
    _lint(text)
    names = {f.name for f in text_string_to_metric_families(text)}
    # every family of the table is there (the text format's parser drops _total; info is a gauge named _info)
    expected = {re.sub(r"_total$", "", s.name) + ("_info" if s.kind == "info" else "") for s in SAVER_METRICS}
    assert expected == names, (expected - names, names - expected)
    for spec in SAVER_METRICS:
        assert spec.name.startswith("hybrid_saver_")
        assert spec.labels[:2] == ("member", "store")
        if spec.kind == "counter":
            assert spec.name.endswith("_total"), spec.name
        assert not re.search(r"_(ms|milliseconds|kb|mb|minutes)(_|$)", spec.name), "base units only"
    member = saver.membership.name
    labels = {"member": member, "store": "hybrid_saver"}
    assert _total(text, "hybrid_saver_backup_runs_total", outcome="written", trigger="manual", **labels) == 2
    assert _total(text, "hybrid_saver_restores_total", **labels) == 1
    assert _total(text, "hybrid_saver_generations_kept", **labels) == 3
    assert _total(text, "hybrid_saver_memory_budget_bytes", **labels) == 1024 * 1024
    assert _total(text, "hybrid_saver_backup_interval_seconds", **labels) == 60
    assert _total(text, "hybrid_saver_health_status", status="ok", **labels) == 1
    assert _total(text, "hybrid_saver_backup_rows_count", **labels) == 2
    assert _total(text, "hybrid_saver_backup_duration_seconds_count", **labels) == 3  # two backups, one restore
    assert _total(text, "hybrid_saver_lease_valid", **labels) == 1
    assert 0 < _total(text, "hybrid_saver_lease_remaining_seconds", **labels) <= 4
    stats = saver.stats()
    assert _total(text, "hybrid_saver_resident_bytes", **labels) == stats.resident_bytes
    assert _total(text, "hybrid_saver_cache_hits_total", **labels) == stats.hits
    window = saver.restore_window()
    assert window is not None
    assert _total(text, "hybrid_saver_restore_window_newest_generation", **labels) == window.newest
    # the same figures the dashboard's Backups page shows: stats(), the runs, the restore window
    assert _total(text, "hybrid_saver_last_backup_timestamp_seconds", **labels) == pytest.approx(
        saver.last_run.finished_at.timestamp()  # type: ignore[union-attr]
    )


def test_counters_follow_loads_handoffs_and_thread_busy(url: str, savers: list[HybridSaver]) -> None:
    first = HybridSaver.from_url(url, backup_interval=None, handle_signals=False, handoff_timeout=1.0)
    savers.append(first)
    second = HybridSaver.from_url(url, backup_interval=None, handle_signals=False, handoff_timeout=1.0)
    savers.append(second)
    _put(first, "moving", 2)
    before = second.telemetry()
    assert before.handoffs == 0 and before.claims == 0
    # the second member asks for the first's thread: handed over (backed up, evicted, given), then loaded
    assert second.get_tuple({"configurable": {"thread_id": "moving", "checkpoint_ns": ""}}) is not None
    after = second.telemetry()
    assert after.claims == 1 and after.handoffs == 1 and after.handoff_seconds.count == 1
    assert after.load_seconds.count == 1 and 0 < after.load_seconds.sum < 1
    text = _scrape(first, second)
    _lint(text)
    assert _total(text, "hybrid_saver_handoffs_total", member=second.membership.name) == 1
    assert _total(text, "hybrid_saver_handoff_seconds_count", member=second.membership.name) == 1
    assert _total(text, "hybrid_saver_thread_loads_total", member=second.membership.name) == 1
    assert _total(text, "hybrid_saver_backup_runs_total", member=first.membership.name, trigger="release") == 1
    # a holder that never answers (no LISTEN): the claim gives up after handoff_timeout with ThreadBusy
    deaf = HybridSaver.from_url(url, backup_interval=None, handle_signals=False, listen=False)
    savers.append(deaf)
    _put(deaf, "held")
    with pytest.raises(ThreadBusy):
        second.get_tuple({"configurable": {"thread_id": "held", "checkpoint_ns": ""}})
    assert second.telemetry().thread_busy == 1
    assert _total(_scrape(second), "hybrid_saver_thread_busy_total") == 1


def test_opentelemetry_instruments_read_the_same_figures(url: str, savers: list[HybridSaver]) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from persistence.otel import instrument

    saver = HybridSaver.from_url(url, backup_interval=30, handle_signals=False)
    savers.append(saver)
    _put(saver, "t1", 2)
    saver.backup()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        instruments = instrument(saver, provider)
        gauges_and_counters = [s for s in SAVER_METRICS if s.kind in ("gauge", "counter")]
        assert len(instruments) == len(gauges_and_counters)
        data = reader.get_metrics_data()
        points = {
            m.name: list(m.data.data_points)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
    finally:
        provider.shutdown()
    member = {"member": saver.membership.name, "store": "hybrid_saver"}
    runs = points["hybrid_saver_backup_runs"]
    written = [p for p in runs if p.attributes.get("outcome") == "written"]
    assert [p.value for p in written] == [1] and {**member, "trigger": "manual"}.items() <= written[
        0
    ].attributes.items()
    assert [p.value for p in points["hybrid_saver_resident_threads"]] == [1]
    assert [p.value for p in points["hybrid_saver_backup_interval_seconds"]] == [30]
    assert dict(points["hybrid_saver_ready"][0].attributes) == member
    assert "hybrid_saver_backup_duration_seconds" not in points  # histograms: the Prometheus collector's


def test_the_store_exporter_prints_the_fleet(url: str, savers: list[HybridSaver]) -> None:
    saver = HybridSaver.from_url(url, backup_interval=0.2, handle_signals=False)
    savers.append(saver)
    _put(saver, "t1", 2)
    saver.backup()
    saver._member.heartbeat()  # the figures the exporter reads are the heartbeat's
    env = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "persistence", "metrics", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    _lint(out.stdout)
    names = {f.name for f in text_string_to_metric_families(out.stdout)}
    expected = {re.sub(r"_total$", "", s.name) for s in FLEET_METRICS}
    # a member without a budget has none; its last failed run is none either
    assert expected - names == {
        "hybrid_saver_fleet_member_memory_budget_bytes",
        "hybrid_saver_fleet_member_last_failed_run_timestamp_seconds",
    }, expected - names
    labels = {"store": "hybrid_saver", "member": saver.membership.name, "member_id": str(saver.instance_id)}
    assert _total(out.stdout, "hybrid_saver_store_up") == 1
    assert _total(out.stdout, "hybrid_saver_fleet_members") == 1
    assert _total(out.stdout, "hybrid_saver_fleet_member_alive", **labels) == 1
    assert _total(out.stdout, "hybrid_saver_fleet_member_resident_threads", **labels) == 1
    assert _total(out.stdout, "hybrid_saver_store_generations_kept") == len(saver.generations())
    # reading only: on a schema without a store it says so and creates nothing
    nosuch = subprocess.run(
        [sys.executable, "-m", "persistence", "metrics", "--once", "--schema", "nosuch"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nosuch.returncode == 1 and "no store in schema 'nosuch'" in nosuch.stderr, nosuch.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'nosuch'").fetchone() is None


def test_the_alert_rules_pass_promtool() -> None:
    check = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    config = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=30
    )
    assert config.returncode == 0, config.stdout + config.stderr
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=60
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def _dashboard_queries() -> list[str]:
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return [e.replace("$store", ".*").replace("$member", ".*").replace("$__rate_interval", "15s") for e in exprs]


def test_the_dashboard_asks_for_metrics_that_exist() -> None:
    known = {s.name for s in (*SAVER_METRICS, *FLEET_METRICS)}
    known |= {f"{s.name}_{suffix}" for s in SAVER_METRICS if s.kind == "histogram" for suffix in ("bucket", "sum")}
    known |= {f"{s.name}_info" for s in SAVER_METRICS if s.kind == "info"}
    for expr in _dashboard_queries():
        for name in re.findall(r"\b(hybrid_saver_\w+)", expr):
            assert name in known, f"{name} in the dashboard is not a metric: {expr}"


# -- a real Prometheus -------------------------------------------------------------------------------


class _Prometheus:
    """Debian's Prometheus on a loopback port, scraping and evaluating every second."""

    def __init__(self, work: Path, members: list[str], exporter: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        # the shipped rules, with every `for:` shortened to a second (the expressions stay as shipped)
        rules = re.sub(r"(?m)^(\s+for: ).*$", r"\g<1>1s", (OBSERVABILITY / "alerts.yml").read_text())
        (work / "alerts.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": "hybrid-saver", "static_configs": [{"targets": members}]},
                {"job_name": "hybrid-saver-store", "static_configs": [{"targets": [exporter]}]},
            ],
        }
        (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = (work / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.work / "prometheus.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("Prometheus was not ready in 30 s")

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def until(self, expr: str, ok: Callable[[float | None], bool], timeout: float, what: str) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            value = self.value(expr)
            if ok(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {expr} = {value} after {timeout:g} s")
            time.sleep(0.25)

    def firing(self, alert: str) -> list[dict[str, Any]]:
        return self.query(f'ALERTS{{alertname="{alert}", alertstate="firing"}}')

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class _Load:
    """Client threads sending turns of their own conversations to the members: at random (threads move
    between members: handoffs), or only to the member that served a conversation last (``sticky``)."""

    def __init__(self, apps: list[ExampleApp], conversations: int = 6, clients: int = 3) -> None:
        self.apps = apps
        self.holder: dict[str, int] = {}
        self.turns = 0
        self.errors = 0
        self.sticky = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        ids = [f"conv-{i}" for i in range(conversations)]
        self._threads = [
            threading.Thread(target=self._run, args=(ids[i::clients], random.Random(i)), daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, ids: list[str], rnd: random.Random) -> None:
        n = 0
        while not self._stop.is_set():
            tid = ids[n % len(ids)]
            n += 1
            held = self.holder.get(tid)
            index = held if self.sticky and held is not None else rnd.randrange(len(self.apps))
            try:
                r = self.apps[index].turn(tid, f"message {n}", timeout=10)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            with self._lock:
                if ok:
                    self.turns += 1
                    self.holder[tid] = index
                else:
                    self.errors += 1
            if not ok:
                time.sleep(0.1)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


@pytest.mark.slow
def test_prometheus_sees_backups_lag_handoffs_and_the_alerts(server: PrivateServer, url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    apps = [ExampleApp(url, tmp_path / f"app{i}.log", BACKUP_INTERVAL=str(INTERVAL)) for i in range(2)]
    exporter_port = free_port()
    exporter_log = (tmp_path / "exporter.log").open("ab")
    exporter: subprocess.Popen | None = None
    prom: _Prometheus | None = None
    load: _Load | None = None
    try:
        for app in apps:
            app.start()
        for app in apps:
            app.wait()
        # after the members: the exporter reads a store, it never creates one
        exporter = subprocess.Popen(
            [sys.executable, "-m", "persistence", "metrics", "--host", "127.0.0.1", "--port", str(exporter_port)],
            cwd=ROOT,
            env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
            stdout=exporter_log,
            stderr=subprocess.STDOUT,
        )
        prom = _Prometheus(tmp_path, [f"127.0.0.1:{a.port}" for a in apps], f"127.0.0.1:{exporter_port}")
        prom.wait()
        prom.until('count(up{job="hybrid-saver"} == 1)', lambda v: v == 2, 15, "both members scraped")
        prom.until("hybrid_saver_fleet_members", lambda v: v == 2, 15, "the exporter sees both members")

        # turns land on either member: backups are written and threads move between the members
        load = _Load(apps)
        load.start()
        written = 'sum(hybrid_saver_backup_runs_total{outcome="written"})'
        handoffs = "sum(hybrid_saver_handoffs_total)"
        w1 = prom.until(written, lambda v: v is not None and v >= 2, 20, "backups written")
        h1 = prom.until(handoffs, lambda v: v is not None and v >= 2, 20, "handoffs")
        prom.until(f"{written} > {w1}", lambda v: v is not None, 15, "more backups as the load goes on")
        prom.until(f"{handoffs} > {h1}", lambda v: v is not None, 15, "more handoffs as the load goes on")
        assert prom.value("max(max_over_time(hybrid_saver_backup_lag_seconds[30s]))") > 0  # type: ignore[operator]
        prom.until("sum(hybrid_saver_handoff_seconds_count)", lambda v: (v or 0) > 0, 10, "handoff latencies")
        assert prom.value("histogram_quantile(0.95, sum by (le) (rate(hybrid_saver_handoff_seconds_bucket[30s])))")
        assert not prom.firing("HybridSaverBackupLagHigh"), "no lag alert while backups keep up"
        # every query of the dashboard is valid PromQL on what is scraped, and the main panels have data
        for expr in _dashboard_queries():
            prom.query(expr)
        for expr in ("sum(hybrid_saver_resident_threads)", "max(hybrid_saver_restore_window_seconds)"):
            assert prom.value(expr) is not None, expr

        # PostgreSQL stops: the members serve what they hold until their leases lapse, the lag grows
        load.sticky = True
        server.stop()
        outage = time.monotonic()
        prom.until("min(hybrid_saver_database_up)", lambda v: v == 0, 10, "the members see the database down")
        prom.until("max(hybrid_saver_store_up)", lambda v: v == 0, 10, "the exporter sees the store down")
        prom.until(
            "max(hybrid_saver_backup_lag_seconds)", lambda v: (v or 0) > 3 * INTERVAL, 15, "lag over three intervals"
        )
        deadline = time.monotonic() + 15
        while not prom.firing("HybridSaverBackupLagHigh"):
            assert time.monotonic() < deadline, "the lag alert did not fire"
            time.sleep(0.25)
        fired_after = time.monotonic() - outage
        # two members and no database: past the lease neither may serve (others could take its threads)
        ready = apps[0].ready()
        deadline = time.monotonic() + 10
        while ready.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            ready = apps[0].ready()
        assert ready.status_code == 503 and ready.json()["status"] == "down", ready.text
        prom.until("max(hybrid_saver_ready)", lambda v: v == 0, 10, "not ready")

        # PostgreSQL is back: the backups catch up, the lag and the alert go away
        server.start()
        prom.until(
            "max(hybrid_saver_backup_lag_seconds)", lambda v: v is not None and v < INTERVAL * 2, 30, "caught up"
        )
        prom.until("min(hybrid_saver_database_up)", lambda v: v == 1, 15, "the database is back")
        deadline = time.monotonic() + 15
        while prom.firing("HybridSaverBackupLagHigh"):
            assert time.monotonic() < deadline, "the lag alert did not resolve"
            time.sleep(0.25)
        for app in apps:
            assert app.ready().status_code == 200
        load.stop()

        # kill -9 of a member: the store exporter counts it lost once its lease ran out
        # (a member counted out during the outage that joined again is not lost: it came back)
        lost_before = prom.value("max(hybrid_saver_fleet_members_lost)") or 0.0
        apps[1].kill()
        prom.until(
            "max(hybrid_saver_fleet_members_lost)", lambda v: (v or 0) > lost_before, 20, "a member counted lost"
        )
        deadline = time.monotonic() + 10
        while not prom.firing("HybridSaverMemberLost"):
            assert time.monotonic() < deadline, "the member-lost alert did not fire"
            time.sleep(0.25)
        prom.until(f'up{{instance="127.0.0.1:{apps[1].port}"}}', lambda v: v == 0, 10, "its target down")
        turns, errors = load.turns, load.errors
    finally:
        if load is not None:
            load.stop()
        if prom is not None:
            prom.stop()
        if exporter is not None:
            exporter.terminate()
            try:
                exporter.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exporter.kill()
        exporter_log.close()
        for app in apps:
            app.stop()
            app.kill()
    assert exporter is not None and exporter.returncode == 0, (tmp_path / "exporter.log").read_text()[-3000:]
    assert "Traceback" not in apps[0].text(), apps[0].text()[-4000:]
    print(
        f"{turns} turns ({errors} refused during the outage), lag alert fired {fired_after:.1f} s after PostgreSQL "
        f"stopped; test {time.monotonic() - started:.1f} s"
    )
