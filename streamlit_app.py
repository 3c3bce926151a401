"""Router of the admin dashboard: the login gate, then st.navigation over the pages."""

import streamlit as st

from dashboard.auth import is_authenticated, require_login

st.set_page_config(page_title="Hybrid saver admin", page_icon=":material/database:", layout="wide")

pages = {
    "Conversations": [
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("pages/threads.py", title="Threads", icon=":material/forum:"),
    ],
    "Operations": [
        st.Page("pages/backups.py", title="Backups", icon=":material/backup:"),
        st.Page("pages/restore.py", title="Restore", icon=":material/settings_backup_restore:"),
    ],
}
pg = st.navigation(pages, position="sidebar" if is_authenticated() else "hidden")
require_login()
pg.run()
