"""The dashboard's pages, for the router (``streamlit_app.py``) and for :func:`ensure_routed`."""

from __future__ import annotations

import streamlit as st

_ROUTED = "_dashboard_routed"


def pages() -> dict[str, list[st.Page]]:
    """The navigation: sections of ``st.Page`` objects."""
    return {
        "Conversations": [
            st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
            st.Page("pages/threads.py", title="Threads", icon=":material/forum:"),
        ],
        "Operations": [
            st.Page("pages/backups.py", title="Backups", icon=":material/backup:"),
            st.Page("pages/restore.py", title="Restore", icon=":material/settings_backup_restore:"),
        ],
    }


def mark_routed() -> None:
    """Called by the router right before ``pg.run()``."""
    st.session_state[_ROUTED] = True


def ensure_routed() -> None:
    """Make the next runs of the process go through the router when a page ran without it.

    With a ``pages/`` folder next to the entry script, Streamlit starts a process in its old
    multipage mode: until some run calls ``st.navigation``, the page file of the URL is executed
    directly, without the router, under a navigation listing the folder's files. That is why
    every page calls the login gate itself. Calling ``st.navigation`` from a page would re-point
    the run's widget ids (and drop the click that caused the run), so this sets the flag that
    ``st.navigation`` sets: the current run finishes as it is, every later run is routed.
    """
    if st.session_state.pop(_ROUTED, False):
        return
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old mode
        return
    PagesManager.uses_pages_directory = False
