"""The password gate: when ``admin_password`` is set in ``.streamlit/secrets.toml`` every page asks
for it; when an ``[auth]`` section is configured instead, ``st.login`` (OIDC) is used.

Every page calls :func:`require_login` first (through ``dashboard.ui.page_setup``); the router
only hides the navigation until then. The gate lives in the pages because Streamlit runs a file
of the ``pages/`` folder directly, without the router, on the first run of a process (a deep
link opened right after start), and because a login form drawn by the page keeps the same widget
ids on that first run and on the routed runs after it (a form drawn by the router would not, and
the first "Log in" click would be lost).
"""

from __future__ import annotations

import hmac
import time

import streamlit as st

_AUTH_KEY = "_dashboard_authenticated"
_FAIL_DELAY = 0.25


def admin_password() -> str | None:
    """The configured ``admin_password`` (None when unset or empty)."""
    if not st.secrets.load_if_toml_exists():
        return None
    value = st.secrets.get("admin_password")
    return str(value) if value else None


def _oidc_configured() -> bool:
    if not st.secrets.load_if_toml_exists():
        return False
    return "auth" in st.secrets


def login_required() -> bool:
    """True when a password or OIDC login protects the dashboard."""
    return admin_password() is not None or _oidc_configured()


def is_authenticated() -> bool:
    """True when this session may see the dashboard."""
    password = admin_password()
    if password is not None:
        return bool(st.session_state.get(_AUTH_KEY))
    if _oidc_configured():
        return bool(getattr(st.user, "is_logged_in", False))
    return True


def check_password(given: str, expected: str) -> bool:
    """Compare in constant time (bytes, so any characters work)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _login_form(password: str) -> None:
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title("Hybrid saver admin")
        st.caption("This dashboard is protected. Enter the admin password set in .streamlit/secrets.toml.")
        with st.form("login", border=True):
            given = st.text_input("Admin password", type="password", key="login_password")
            submitted = st.form_submit_button("Log in", type="primary")
        if submitted:
            if check_password(given or "", password):
                st.session_state[_AUTH_KEY] = True
                st.session_state.pop("login_password", None)
                st.rerun()
            time.sleep(_FAIL_DELAY)  # slows guessing down a little
            st.error("Wrong password. Try again, or change admin_password in .streamlit/secrets.toml.")


def require_login() -> None:
    """Show only the login and stop the script unless this session is authenticated."""
    if is_authenticated():
        return
    password = admin_password()
    if password is not None:
        _login_form(password)
    else:
        st.title("Hybrid saver admin")
        st.caption("This dashboard is protected by the identity provider configured in .streamlit/secrets.toml.")
        st.button("Log in", type="primary", on_click=st.login)
    st.stop()


def logout_button() -> None:
    """A sidebar button that ends the session's login (shown only when a login is configured)."""
    if admin_password() is not None:
        if st.sidebar.button("Log out", icon=":material/logout:"):
            st.session_state.pop(_AUTH_KEY, None)
            st.rerun()
    elif _oidc_configured() and getattr(st.user, "is_logged_in", False):
        st.sidebar.button("Log out", icon=":material/logout:", on_click=st.logout)


__all__ = ["admin_password", "check_password", "is_authenticated", "login_required", "logout_button", "require_login"]
