"""A HybridSaver for the LangGraph Agent Server (``langgraph dev``, ``langgraph up``, LangSmith deployments).

Point ``langgraph.json`` at :func:`checkpointer` (through a small file that imports it)::

    "checkpointer": {"path": "./checkpointer.py:checkpointer"}

and the server opens one saver when it starts and closes it (final backup) when it stops.
Configured from the environment by :meth:`HybridSaver.from_env <persistence.HybridSaver.from_env>`:

- ``DATABASE_URL`` (required): the PostgreSQL store, ``postgresql://user:password@host:5432/dbname``.
- ``BACKUP_INTERVAL``: seconds between backups (default 30; ``0``/``off`` for none but the final one).
- ``BACKUP_RETENTION``: generations kept (default 50); ``BACKUP_RETENTION_AGE``: a duration (``7d``)
  generations younger than which are kept whatever their count.
- ``MEMORY_BUDGET``: a size like ``512MB``; unset keeps every thread in memory.
- ``HYBRID_SAVER_NAME``, ``HYBRID_SAVER_SCHEMA``, ``HYBRID_SAVER_POOL_SIZE``, ``LANGGRAPH_AES_KEY``.

The server enters a custom checkpointer's context manager once per OS thread that asks for a
checkpointer (``threading.local`` in ``langgraph_api/_checkpointer/_adapter.py``): every entry in a
process gets the same saver (one member of the fleet, one copy of the threads in memory), which is
closed when the last entry exits. Several server processes on one ``DATABASE_URL`` form a fleet: each
is a member and threads move between them on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from persistence.saver import HybridSaver

logger = logging.getLogger(__name__)


def saver_from_env(env: Mapping[str, str] | None = None) -> HybridSaver:
    """Build a started :class:`HybridSaver` with :meth:`HybridSaver.from_env`, leaving SIGTERM to the
    server (blocking: it connects and loads threads).

    Raises:
        ConfigError: ``DATABASE_URL`` is missing, or a variable has a value that cannot be used.
        DatabaseUnavailable: the database cannot be reached.
    """
    # the server owns SIGTERM/SIGINT; the context manager below takes the final backup
    return HybridSaver.from_env(env, handle_signals=False)


@dataclass(eq=False)
class _Shared:
    saver: HybridSaver
    #: entries of :func:`checkpointer` holding it
    users: int = 0


#: held while the shared saver is opened, counted or closed: an entry waits for an open or a close under way
_lock = threading.Lock()
_current: _Shared | None = None


def _acquire() -> _Shared:
    """The process's saver, opened by the first entry (a failed open is not kept: the next entry tries again)."""
    global _current
    with _lock:
        if _current is None or _current.saver.closed:
            _current = _Shared(saver_from_env())
        _current.users += 1
        return _current


def _release(shared: _Shared) -> bool:
    """Drop one entry; the last one closes the saver (final backup). True when it closed it."""
    global _current
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return False
        if _current is shared:
            _current = None
        shared.saver.close()
        return True


def current_saver() -> HybridSaver | None:
    """The saver :func:`checkpointer` opened in this process, while an entry holds it (None before the
    server entered it, and after the last entry closed it): for the server's other routes, e.g. health
    probes and metrics (``examples/agent_server/health.py``)."""
    shared = _current
    return shared.saver if shared is not None and not shared.saver.closed else None


def _release_unclaimed(done: asyncio.Future[_Shared]) -> None:
    if not done.cancelled() and done.exception() is None:
        threading.Thread(target=_release, args=(done.result(),), name="hybrid-saver-release").start()


@contextlib.asynccontextmanager
async def checkpointer() -> AsyncIterator[HybridSaver]:
    """Yield the process's HybridSaver, configured from the environment; the last entry to exit closes it
    (final backup).

    Each entry (the Agent Server makes one per OS thread, each with its own event loop) gets the same
    saver. Opening and closing block on the database, so both run in a worker thread, off the event loop.

    Raises:
        ConfigError: ``DATABASE_URL`` is missing, or a variable has a value that cannot be used.
        DatabaseUnavailable: the database cannot be reached.
    """
    acquiring = asyncio.ensure_future(asyncio.to_thread(_acquire))
    try:
        shared = await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        # cancelled while the saver opens: give the entry back once it has it, or the count never drops
        acquiring.add_done_callback(_release_unclaimed)
        raise
    try:
        yield shared.saver
    finally:
        if await asyncio.to_thread(_release, shared):
            logger.info("HybridSaver member %s closed", shared.saver.instance_id)


__all__ = ["checkpointer", "current_saver", "saver_from_env"]
