"""``python -m dashboard [streamlit options]``: ``streamlit run streamlit_app.py``, routed from the
first request on.

With a ``pages/`` folder next to the entry script, a plain ``streamlit run`` starts the process in
Streamlit's old multipage mode: until some run calls ``st.navigation``, the page file of the URL runs
without the router, under a navigation listing the folder's files (a deep link as the server's first
request showed it). This launcher tells Streamlit, before its server starts, that the app routes with
``st.navigation``, so every run goes through ``streamlit_app.py``. ``make run`` uses it; a plain
``streamlit run`` still works (the pages then reroute themselves, see ``dashboard.nav``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"


def main(argv: Sequence[str] | None = None) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    # what st.navigation sets on its first call; the pages manager reads it before any run
    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
