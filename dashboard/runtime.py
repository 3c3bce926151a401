"""The dashboard's one runtime per process: the saver (pool, scheduler), the demo graph, the views.

Built once by :func:`get_runtime` (a ``st.cache_resource``), shared by every session and page;
pages never build their own. It is closed when the cache entry is released and, as a safety net,
at interpreter exit (the saver also takes its final backup from its own ``atexit`` hook).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from agent import build_graph, describe_responder, make_responder
from dashboard.views import StatsHistory
from persistence import HybridSaver
from persistence.config import ConfigError, saver_settings
from persistence.db import describe_url, mask_url, resolve_url
from persistence.serde import serde_from_env

logger = logging.getLogger(__name__)

#: how often the memory figures behind the charts are sampled
SAMPLE_SECONDS = 2.0
#: the name the dashboard's saver joins the fleet under (its interval and pause are kept per name)
MEMBER_NAME = "dashboard"
#: bytes of threads the dashboard's own saver keeps resident when MEMORY_BUDGET is unset: it holds
#: only the threads it chats with (it reads every other thread without taking it, see views.thread)
DEFAULT_BUDGET = 32 * 10**6


@dataclass(frozen=True)
class Settings:
    """What the runtime is built from; read from the environment by :func:`settings_from_env`."""

    interval: float | None
    retention: int
    #: seconds: generations younger than this are kept whatever their count (``BACKUP_RETENTION_AGE``)
    retention_age: float | None
    memory_budget: int | None
    refresh_seconds: float


def settings_from_env() -> Settings:
    """``BACKUP_INTERVAL`` (seconds, default 30; ``0``/``off`` disables scheduled backups),
    ``BACKUP_RETENTION`` (generations kept, default 50), ``MEMORY_BUDGET`` (e.g. ``512MB``, 10^6
    bytes a MB; unset: :data:`DEFAULT_BUDGET`, the chat's threads) and ``DASHBOARD_REFRESH``
    (seconds between live panel refreshes, default 5).

    Raises:
        ConfigError: a variable is not usable; the message names it and says what is accepted.
    """
    saver = saver_settings()
    raw = os.environ.get("DASHBOARD_REFRESH", "").strip()
    refresh = 5.0
    if raw:
        try:
            refresh = float(raw)
        except ValueError:
            raise ConfigError(f"DASHBOARD_REFRESH={raw!r} is not a number of seconds (default 5).") from None
        if not 0.5 <= refresh <= 3600:
            raise ConfigError(f"DASHBOARD_REFRESH={raw!r} must be between 0.5 and 3600 seconds (default 5).")
    return Settings(
        interval=saver.backup_interval,
        retention=saver.retention,
        retention_age=saver.retention_age,
        memory_budget=saver.memory_budget if saver.memory_budget is not None else DEFAULT_BUDGET,
        refresh_seconds=refresh,
    )


@dataclass(eq=False)
class Runtime:
    """Everything the pages share. Thread-safe: the saver locks, the views lock their caches."""

    saver: HybridSaver
    graph: Any
    responder: str
    history: StatsHistory
    settings: Settings
    database: str  # describe_url(): host, port, database, user; never the password
    database_masked: str  # mask_url(): the connection string with the password as ***
    embedded: bool
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        """Take the final backup and stop the scheduler and pool (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.history.stop()
        try:
            self.saver.close()
        except Exception:  # noqa: BLE001 - shutting down must go on
            logger.exception("closing the dashboard's saver failed")


def build_runtime(settings: Settings | None = None) -> Runtime:
    """Build the runtime: resolve the database, open the saver (offline when PostgreSQL is
    unreachable), start its backup job and compile the demo graph.

    Raises:
        ConfigError: an environment variable is unusable.
        DatabaseUnavailable: the database URL is malformed or the schema cannot be set up.
    """
    settings = settings or settings_from_env()
    embedded = not os.environ.get("DATABASE_URL", "").strip()
    url = resolve_url()
    saver = HybridSaver.from_url(
        url,
        backup_interval=settings.interval,
        retention=settings.retention,
        retention_age=settings.retention_age,
        memory_budget=settings.memory_budget,
        name=MEMBER_NAME,
        allow_offline=True,
        # the console observes: it loads a thread when it chats with it, never the store at start
        warm_start=False,
        # LANGGRAPH_AES_KEY: the dashboard reads (and its demo chat writes) an encrypted store as LangGraph does
        serde=serde_from_env(),
    )
    try:
        history = StatsHistory(saver)
        saver.add_listener(history.on_run)
        history.sample(force=True)
        history.start(every=SAMPLE_SECONDS)
        responder = make_responder()
        runtime = Runtime(
            saver=saver,
            graph=build_graph(saver, responder=responder),
            responder=describe_responder(responder),
            history=history,
            settings=settings,
            database=describe_url(url),
            database_masked=mask_url(url),
            embedded=embedded,
        )
    except BaseException:
        if "history" in locals():
            history.stop()
        saver.close()
        raise
    _live.add(runtime)
    logger.info("dashboard runtime ready on %s (interval %s s)", runtime.database, settings.interval)
    return runtime


_live: weakref.WeakSet[Runtime] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # a safety net: the saver registers its own exit hook too, and close() is idempotent
    for runtime in list(_live):
        runtime.close()


def _release(runtime: Runtime) -> None:
    runtime.close()


@st.cache_resource(
    show_spinner="Starting the dashboard's saver: connecting to PostgreSQL and joining the store's members "
    "(no thread is loaded: each one loads when you chat with it)…",
    on_release=_release,
)
def get_runtime() -> Runtime:
    """The process-wide runtime (built on first use; a failed build is retried on the next call)."""
    return build_runtime()


def reset_runtime() -> None:
    """Close the runtime and forget it; the next :func:`get_runtime` builds a new one."""
    get_runtime.clear()


__all__ = ["ConfigError", "Runtime", "Settings", "build_runtime", "get_runtime", "reset_runtime", "settings_from_env"]
