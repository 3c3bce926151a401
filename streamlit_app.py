"""Router of the admin dashboard: st.navigation over the pages (hidden until logged in), then run one.

Every page starts with dashboard.ui.page_setup(), which asks for the password when one is set.
"""

import streamlit as st

from dashboard.auth import is_authenticated
from dashboard.nav import mark_routed, pages

st.set_page_config(page_title="Hybrid saver admin", page_icon=":material/database:", layout="wide")
pg = st.navigation(pages(), position="sidebar" if is_authenticated() else "hidden")
mark_routed()
pg.run()
