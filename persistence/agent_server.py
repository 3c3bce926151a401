"""A HybridSaver for the LangGraph Agent Server (``langgraph dev``, ``langgraph up``, LangSmith deployments).

Point ``langgraph.json`` at :func:`checkpointer` (through a small file that imports it)::

    "checkpointer": {"path": "./checkpointer.py:checkpointer"}

and the server opens one saver when it starts and closes it (final backup) when it stops.
Configured from the environment:

- ``DATABASE_URL`` (required): the PostgreSQL store, ``postgresql://user:password@host:5432/dbname``.
- ``BACKUP_INTERVAL``: seconds between backups (default 30; ``0``/``off`` for none but the final one).
- ``BACKUP_RETENTION``: generations kept (default 50).
- ``MEMORY_BUDGET``: a size like ``512MB``; unset keeps every thread in memory.

Several server processes on one ``DATABASE_URL`` form a fleet: each is a member and threads move
between them on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping

from persistence.config import ConfigError, saver_settings
from persistence.saver import HybridSaver

logger = logging.getLogger(__name__)


def saver_from_env(env: Mapping[str, str] | None = None) -> HybridSaver:
    """Build a started :class:`HybridSaver` from ``DATABASE_URL``, ``BACKUP_INTERVAL``,
    ``BACKUP_RETENTION`` and ``MEMORY_BUDGET`` (blocking: it connects and loads threads).

    Raises:
        ConfigError: ``DATABASE_URL`` is missing, or a variable has a value that cannot be used.
        DatabaseUnavailable: the database cannot be reached.
    """
    env = os.environ if env is None else env
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        raise ConfigError(
            "DATABASE_URL is not set: the HybridSaver checkpointer needs a PostgreSQL database to back up to. "
            "Set it to a URL like postgresql://user:password@host:5432/dbname (in a LangSmith deployment, "
            "add it as a secret)."
        )
    settings = saver_settings(env)
    # the server owns SIGTERM/SIGINT; the context manager below takes the final backup
    return HybridSaver.from_url(url, handle_signals=False, **settings.kwargs())  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def checkpointer() -> AsyncIterator[HybridSaver]:
    """Yield a HybridSaver configured from the environment; close it (final backup) on exit.

    Opening and closing block on the database, so both run in a worker thread, off the event loop.
    """
    saver = await asyncio.to_thread(saver_from_env)
    try:
        yield saver
    finally:
        await asyncio.to_thread(saver.close)
        logger.info("HybridSaver member %s closed", saver.instance_id)


__all__ = ["checkpointer", "saver_from_env"]
