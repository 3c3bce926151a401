"""The Streamlit admin dashboard's shared code: the runtime, the login gate, charts and page helpers,
and ``dashboard.views`` (the read-only DataFrames the pages render, built with pandas).

Pages live in ``pages/`` and the router in ``streamlit_app.py``; the library in ``persistence/``
never imports from here.
"""
