"""The dashboard's pages, for the router (``streamlit_app.py``) and for :func:`ensure_routed`."""

from __future__ import annotations

import streamlit as st

_ROUTED = "_dashboard_routed"
_REROUTED = "_dashboard_rerouted"


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
    every page calls the login gate itself. This sets the flag that ``st.navigation`` sets and
    runs the script again: the rerun goes through the router (same URL, so same page), which
    draws the real navigation, and every later run of the process is routed too.
    """
    if st.session_state.pop(_ROUTED, False):
        return
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old mode
        return
    PagesManager.uses_pages_directory = False
    # a fresh session (a deep link as the first request) has no click to lose: run it again through
    # the router; a session with state finishes this run as it is (its next run is routed)
    if not st.session_state.get(_REROUTED) and not len(st.session_state.keys()):
        st.session_state[_REROUTED] = True  # once: a page run on its own must not loop
        st.rerun()
