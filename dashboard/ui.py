"""Shared page helpers: the page preamble (login, runtime, offline banner), confirmation dialogs,
toasts that survive a rerun, error messages that say what to do, and small formatters."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import streamlit as st
from psycopg_pool import PoolTimeout

from agent import ResponderError
from agent.messages import message_role, message_text
from dashboard.auth import logout_button, require_login
from dashboard.nav import ensure_routed
from dashboard.runtime import ConfigError, Runtime, get_runtime, reset_runtime
from dashboard.views import DB_ERRORS, attached, fleet_alerts
from persistence import (
    DatabaseUnavailable,
    GenerationNotFound,
    HybridSaverError,
    InvalidValue,
    SaverClosed,
    ThreadNotFound,
)
from persistence.db import ensure_pool_serves, scrub

logger = logging.getLogger(__name__)

_FLASH = "_dashboard_flash"
_CONFIRM = "_dashboard_confirm"


# -- page preamble ---------------------------------------------------------------------------------


def page_setup(title: str, caption: str | None = None, *, own_pause_banner: bool = True) -> Runtime:
    """Gate the page, get the shared runtime, say when PostgreSQL is offline and which members are
    paused or lag behind (this dashboard's own pause too, unless the page says it itself); return the
    runtime.

    Stops the script (after saying what happened and what to do) when the runtime cannot be built.
    """
    ensure_routed()
    require_login()
    # pages set it too: Streamlit runs a page file without the router on a process's first run
    st.set_page_config(page_title=f"{title} · Hybrid saver admin", page_icon=":material/database:", layout="wide")
    logout_button()
    runtime = _runtime_or_stop()
    st.title(title)
    if caption:
        st.caption(caption)
    if _offline_banner(runtime):
        _fleet_banner(runtime, own_pause_banner)
    _show_flash()
    return runtime


def _runtime_or_stop() -> Runtime:
    what: str
    todo: str
    try:
        runtime = get_runtime()
    except ConfigError as exc:
        what, todo = str(exc), "Fix the variable and restart the app."
    except DatabaseUnavailable as exc:
        what, todo = str(exc), "Fix DATABASE_URL (or unset it to use the embedded server), then press Retry."
    except Exception as exc:  # noqa: BLE001 - e.g. the embedded server failed to start; say so, no traceback
        reason = scrub(" ".join(str(exc).split()), os.environ.get("DATABASE_URL") or None)[:300]
        logger.error("the dashboard runtime could not be built: %s: %s", type(exc).__name__, reason)
        what = f"The backup saver could not start ({type(exc).__name__}: {reason})."
        todo = (
            "If DATABASE_URL is unset the app starts an embedded PostgreSQL in .data/pg: check that folder "
            "(its log is .data/pg/log) and that the disk is not full, or set DATABASE_URL to a PostgreSQL "
            "server. Then press Retry."
        )
    else:
        if runtime.saver.closed:
            reset_runtime()
            return _runtime_or_stop()
        return runtime
    st.title("Hybrid saver admin")
    st.error(f"**The dashboard cannot start.** {what}\n\n**What to do:** {todo}", icon=":material/error:")
    if st.button("Retry", type="primary", icon=":material/refresh:"):
        st.rerun()
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def _fleet_banner(runtime: Runtime, own: bool) -> None:
    saver = runtime.saver
    try:
        members = saver.members()
    except DB_ERRORS:
        return
    if not own:
        members = [m for m in members if m.instance_id != saver.instance_id]
    alerts = fleet_alerts(saver, members)
    if alerts:
        st.warning(
            "\n".join(f"- {a}" for a in alerts)
            + "\n\nA crash of a member loses what it has not backed up. Resume it, or press Backup now for "
            "it, on the **Backups** page.",
            icon=":material/pause_circle:",
        )


def _offline_banner(runtime: Runtime) -> bool:
    """Say when the store cannot be used; True when it answers."""
    saver = runtime.saver
    if attached(saver):
        try:
            # no round trip while the pool has a connection; a quick direct check when it has none
            ensure_pool_serves(saver.pool)
        except DatabaseUnavailable as exc:
            st.warning(
                f"**PostgreSQL is not answering.** {exc}\n\n"
                "Chat and the threads in memory keep working and every change is kept. The store's pages "
                "(all threads, backups, restore) work again, and pending changes are backed up, at the first "
                "backup after the database is back: the next scheduled one, or **Backup now**.",
                icon=":material/cloud_off:",
            )
            return False
        last = saver.last_run
        if last is not None and not last.ok:
            st.warning(
                f"**The last backup failed** ({fmt_ago(last.finished_at)}): {last.error}\n\n"
                "Every change stays in memory and is retried at the next scheduled run and at **Backup now**. "
                "If PostgreSQL is down, start it; if the error names a table or permission, check the "
                "database (see the runs on the Backups page).",
                icon=":material/sync_problem:",
            )
            return False
        return True
    reason = getattr(saver, "attach_error", None) or "the database did not answer"
    where = "the embedded server in .data/pg" if runtime.embedded else runtime.database
    st.warning(
        f"**PostgreSQL is unreachable** ({reason})\n\n"
        "Chat and browsing keep working from memory and every change is kept; nothing is backed up until "
        "the database is back. The saver retries at every scheduled backup and at **Backup now**, and "
        "catches up by itself.\n\n"
        f"**What to do:** start PostgreSQL or fix `DATABASE_URL` ({where}), then press **Backup now** on "
        "the Backups page.",
        icon=":material/cloud_off:",
    )
    return False


# -- toasts that survive st.rerun() ------------------------------------------------------------------


def flash(message: str, icon: str | None = None) -> None:
    """Show ``message`` as a toast on the next run of the page (use before ``st.rerun()``)."""
    st.session_state.setdefault(_FLASH, []).append((message, icon))


def _show_flash() -> None:
    for message, icon in st.session_state.pop(_FLASH, []):
        st.toast(message, icon=icon)


# -- confirmation dialogs ------------------------------------------------------------------------------


def ask_confirmation(name: str, **data: Any) -> None:
    """Open the confirmation dialog ``name`` (rendered by :func:`confirmation`) with ``data``."""
    st.session_state[_CONFIRM] = {"name": name, **data}


def _clear_confirmation() -> None:
    st.session_state.pop(_CONFIRM, None)


def confirmation(
    name: str,
    title: str,
    body: Callable[[dict[str, Any]], None],
    confirm_label: str,
    on_confirm: Callable[[dict[str, Any]], bool],
) -> None:
    """Render the dialog ``name`` while it is asked for; ``on_confirm(data)`` runs inside it and
    returns True when done (the page then reruns) or False after showing an error (the dialog
    stays open with it).

    The request lives in session state (not in the button's value), so the dialog stays open
    across reruns until it is confirmed, cancelled or dismissed.
    """
    request = st.session_state.get(_CONFIRM)
    if not request or request.get("name") != name:
        return

    def dialog() -> None:
        body(request)
        left, right = st.columns(2)
        if left.button(confirm_label, type="primary", key=f"confirm-{name}", width="stretch"):
            if on_confirm(request):
                _clear_confirmation()
                st.rerun()
        if right.button("Cancel", key=f"cancel-{name}", width="stretch"):
            _clear_confirmation()
            st.rerun()

    st.dialog(title, on_dismiss=_clear_confirmation)(dialog)()


# -- errors --------------------------------------------------------------------------------------------


def error_text(exc: BaseException, conninfo: str | None = None) -> str:
    """A sentence for an expected error: what happened and what to do (never a traceback)."""
    text = scrub(" ".join(str(exc).split()), conninfo)
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)):
        return (
            f"PostgreSQL cannot be reached ({type(exc).__name__}: {text}). Nothing was changed. "
            "Check that the database is running, then retry."
        )
    if isinstance(exc, SaverClosed):
        return "The backup saver is shut down (the app is stopping or restarting). Reload the page."
    if isinstance(exc, ResponderError):
        return f"The chat model could not answer: {text}"
    if isinstance(exc, psycopg.Error):
        return (
            f"PostgreSQL refused the request ({type(exc).__name__}: {text}). Nothing was changed. Retrying will "
            "not help: this is a problem with the database (its version, permissions or schema), not a passing "
            "one. Check the database log, or report the error above."
        )
    return text


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    GenerationNotFound,
    ThreadNotFound,
    InvalidValue,
    SaverClosed,
    HybridSaverError,
    ResponderError,
    psycopg.Error,
    PoolTimeout,
)


class Outcome:
    """What :func:`reporting` yields: ``failed`` is set when the block raised an expected error."""

    failed: bool = False


@contextmanager
def reporting(action: str, runtime: Runtime | None = None) -> Iterator[Outcome]:
    """Run the block; show an expected error as ``st.error`` ("<action> failed: ...") instead of
    raising it. Streamlit's own control flow (``st.rerun``, ``st.stop``) passes through."""
    outcome = Outcome()
    try:
        yield outcome
    except EXPECTED_ERRORS as exc:
        outcome.failed = True
        conninfo = runtime.saver.conninfo if runtime is not None else None
        logger.warning("%s failed: %s", action, type(exc).__name__)
        st.error(f"**{action} failed.** {error_text(exc, conninfo)}", icon=":material/error:")


# -- rendering -----------------------------------------------------------------------------------------


def render_messages(messages: Sequence[Any]) -> None:
    """Render chat messages with ``st.chat_message`` (user, assistant; others as tool/system)."""
    for message in messages:
        role = message_role(message)
        text = message_text(message)
        if role in ("user", "assistant"):
            st.chat_message(role).markdown(text)
        else:
            st.chat_message(role or "system", avatar=":material/settings:").markdown(f"*{role}*: {text}")


def plural(n: int, word: str) -> str:
    """``"1 thread"``, ``"2 threads"`` (with thousands separators)."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def fmt_bytes(n: float | None) -> str:
    """Sizes in SI units, as ``MEMORY_BUDGET`` reads them and the CLI prints them: 1 MB = 10^6 bytes."""
    try:
        n = float(n)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # None, pandas' NA
        return "—"
    if n != n:
        return "—"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_ago(at: datetime | None) -> str:
    if at is None:
        return "never"
    delta = (datetime.now(UTC) - at).total_seconds()
    if delta < 0:
        return f"in {fmt_seconds(-delta)}"
    return f"{fmt_seconds(delta)} ago"


def date_group(at: datetime | None) -> str:
    """The chat history's group of a date: Today, Yesterday, Previous 7 days, Previous 30 days, Older."""
    if at is None or at != at:
        return "Not backed up yet"
    days = (datetime.now(UTC).date() - at.astimezone(UTC).date()).days
    if days <= 0:
        return "Today"
    if days == 1:
        return "Yesterday"
    if days <= 7:
        return "Previous 7 days"
    if days <= 30:
        return "Previous 30 days"
    return "Older"


def fmt_time(at: datetime | None) -> str:
    """Local time, to the second (accepts datetimes and pandas Timestamps)."""
    if at is None or at != at:  # None or NaT
        return "—"
    return _local(at).strftime("%Y-%m-%d %H:%M:%S")


def fmt_utc(at: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """UTC time as text for a table cell; "—" for None and NaT (a date column shows them as "None")."""
    if at is None or at != at:
        return "—"
    return _local(at).astimezone(UTC).strftime(fmt)


def _local(at: Any) -> datetime:
    to_py = getattr(at, "to_pydatetime", None)
    if callable(to_py):
        at = to_py()
    return at.astimezone()


__all__ = [
    "EXPECTED_ERRORS",
    "Outcome",
    "ask_confirmation",
    "confirmation",
    "error_text",
    "flash",
    "fmt_ago",
    "fmt_bytes",
    "fmt_seconds",
    "fmt_time",
    "fmt_utc",
    "plural",
    "page_setup",
    "render_messages",
    "reporting",
]
