"""Closing savers at exit and on SIGTERM, so a clean shutdown loses nothing."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Closable(Protocol):
    def close(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_exit_lock = threading.Lock()
_installed = False


def _close_all() -> None:
    for item in list(_live):
        try:
            item.close()
        except Exception:  # noqa: BLE001 - exit must go on
            logger.exception("closing a HybridSaver at exit failed")


def _on_sigterm(signum: int, _frame: Any) -> None:
    # Unwind the main thread first (locks released, transactions rolled back); the atexit
    # handler then closes every live saver, which takes the final backup.
    logger.info("signal %s: exiting, the final backup runs at exit", signum)
    raise SystemExit(128 + signum)


def register(item: Closable, handle_signals: bool) -> None:
    """Close ``item`` at interpreter exit; with ``handle_signals``, turn SIGTERM into a clean exit
    (only from the main thread, only when no other handler is installed)."""
    global _installed
    with _exit_lock:
        _live.add(item)
        if not _installed:
            atexit.register(_close_all)
            _installed = True
    if (
        handle_signals
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
        and os.environ.get("HYBRID_SAVER_NO_SIGNALS") != "1"
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


def unregister(item: Closable) -> None:
    _live.discard(item)


__all__ = ["register", "unregister"]
