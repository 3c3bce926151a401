"""The Streamlit admin dashboard's shared code: the runtime, the login gate, charts and page helpers.

Pages live in ``pages/`` and the router in ``streamlit_app.py``; the library in ``persistence/``
never imports from here.
"""
