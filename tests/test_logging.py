"""What a backup run logs: nothing at INFO or above from ``persistence.*`` or ``apscheduler.*`` when it
succeeds (its line is at DEBUG), exactly one WARNING line when it fails."""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable
from typing import Annotated, TypedDict

import psycopg
import pytest
from langgraph.graph import START, StateGraph
from psycopg.conninfo import conninfo_to_dict

from persistence import BackupRun, HybridSaver

WATCHED = ("persistence", "apscheduler")


class _State(TypedDict):
    items: Annotated[list[int], operator.add]


def _graph(saver: HybridSaver):
    builder = StateGraph(_State)
    builder.add_node("step", lambda state: {})
    builder.add_edge(START, "step")
    return builder.compile(checkpointer=saver)


def _watched(records: list[logging.LogRecord], level: int = logging.INFO) -> list[logging.LogRecord]:
    return [
        r for r in records if r.levelno >= level and any(r.name == w or r.name.startswith(w + ".") for w in WATCHED)
    ]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class _Runs:
    def __init__(self) -> None:
        self.runs: list[BackupRun] = []
        self.changed = threading.Condition()

    def __call__(self, run: BackupRun) -> None:
        with self.changed:
            self.runs.append(run)
            self.changed.notify_all()

    def scheduled(self) -> list[BackupRun]:
        return [r for r in self.runs if r.trigger == "scheduled"]


def test_fifty_scheduled_backups_log_nothing_at_info(
    open_saver: Callable[..., HybridSaver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    saver = open_saver(backup_interval=0.02)
    runs = _Runs()
    saver.add_listener(runs)
    graph = _graph(saver)
    config = {"configurable": {"thread_id": "logging"}}
    caplog.clear()  # start-up lines (migrations, "member attached") are not the runs' business
    written = 0
    i = 0
    while written < 50:
        i += 1
        graph.invoke({"items": [i]}, config)  # a change pending for the next run
        before = len(runs.scheduled())
        _wait(lambda before=before: len(runs.scheduled()) > before, 10, "a scheduled backup run")
        written = sum(1 for r in runs.scheduled() if r.ok and r.generation is not None)
    assert all(r.ok for r in runs.runs), [r.error for r in runs.runs if not r.ok]
    loud = _watched(caplog.records)
    assert not loud, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]
    # the success lines are there, at DEBUG
    debug = [r for r in caplog.records if r.name == "persistence.ops.backup" and r.levelno == logging.DEBUG]
    assert sum("backup (scheduled): generation" in r.getMessage() for r in debug) >= 50


def test_a_failed_scheduled_run_logs_one_warning_line(
    open_saver: Callable[..., HybridSaver], db_url: str, pg_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    saver = open_saver(backup_interval=0.05)
    runs = _Runs()
    saver.add_listener(runs)
    graph = _graph(saver)
    config = {"configurable": {"thread_id": "failing"}}
    graph.invoke({"items": [1]}, config)
    _wait(lambda: any(r.ok and r.generation is not None for r in runs.scheduled()), 10, "a first backup")
    dbname = conninfo_to_dict(db_url)["dbname"]
    caplog.clear()
    start = len(runs.runs)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        # the database refuses every connection, the saver's included: the next runs fail
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        try:
            graph.invoke({"items": [2]}, config)  # pending: served from memory
            _wait(lambda: sum(not r.ok for r in runs.runs[start:]) >= 3, 20, "three failed runs")
            saver.scheduler.pause()
            time.sleep(0.2)  # a run under way when pausing finishes (and logs) before counting
            failed = [r for r in runs.runs[start:] if not r.ok]
            loud = _watched(caplog.records, logging.WARNING)
            lines = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]
            assert len(loud) == len(failed), lines
            assert all(r.levelno == logging.WARNING and "backup (scheduled) failed" in r.getMessage() for r in loud)
            assert not _watched([r for r in caplog.records if r.levelno == logging.INFO])
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    # back: the pending change is written by the next run
    saver.scheduler.resume()
    _wait(lambda: any(r.ok and r.generation is not None for r in runs.runs[start:]), 20, "a backup after the outage")
