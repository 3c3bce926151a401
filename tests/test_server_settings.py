"""Role and database settings that would break the saver's own sessions (issue: ``statement_timeout =
50ms`` on the role made every big backup fail and ``close()`` drop 40,000 changes).

A role gets ``statement_timeout``, ``idle_session_timeout`` and ``idle_in_transaction_session_timeout``
as a DBA would set them; the saver's sessions override them for themselves, so a big backup, a
long idle pool, the lease connection and the final backup at ``close()`` all go through.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Iterator

import psycopg
import pytest

from persistence import HybridSaver

_names = itertools.count()
CHECKPOINTS = 4000


@pytest.fixture
def strict_role_url(db_url: str) -> Iterator[str]:
    """The test database's URL as a role with tight server-side timeouts."""
    role = f"strict_{os.getpid()}_{next(_names)}"
    dbname = db_url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT ALL ON DATABASE "{dbname}" TO "{role}"')
        conn.execute(f'GRANT ALL ON SCHEMA public TO "{role}"')
        for setting, value in (
            ("statement_timeout", "10ms"),
            ("idle_session_timeout", "500ms"),
            ("idle_in_transaction_session_timeout", "200ms"),
        ):
            conn.execute(f"ALTER ROLE \"{role}\" SET {setting} = '{value}'")
    yield db_url.replace("postgres:@", f"{role}:@", 1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{role}" CASCADE')
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _fill(saver: HybridSaver, prefix: str, n: int) -> None:
    """``n`` checkpoints with a channel value each, in threads of 100: one big change."""
    for i in range(n):
        thread = f"{prefix}-{i // 100}"
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        checkpoint = {
            "v": 4,
            "id": f"1ef{i:013d}",
            "ts": "2026-12-01T00:00:00+00:00",
            # random text: compression must not make the backup too quick for the role's 10 ms timeout to bite
            "channel_values": {"notes": random.randbytes(1000).hex()},
            "channel_versions": {"notes": i + 1},
            "versions_seen": {},
            "pending_sends": [],
        }
        saver.put(config, checkpoint, {"source": "input", "step": i}, {"notes": i + 1})  # type: ignore[arg-type]


def test_role_timeouts_do_not_break_backups_the_lease_or_close(strict_role_url: str) -> None:
    with psycopg.connect(strict_role_url, autocommit=True) as conn:
        # the role's settings are in force for an ordinary session
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "10ms"
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(0.2)")

    saver = HybridSaver.from_url(strict_role_url, backup_interval=None, listen=True)
    try:
        _fill(saver, "big", CHECKPOINTS)
        run = saver.backup()
        assert run.ok, run.error
        assert run.rows >= 2 * CHECKPOINTS and run.duration > 0.05, (run.rows, run.duration)
        # idle past idle_session_timeout: the pool, the lease and the LISTEN connections stay
        lease = saver.membership.lease
        time.sleep(2.0)
        assert lease.valid() and lease.reconnects == 0
        assert saver.backup().ok
        _fill(saver, "final", CHECKPOINTS)
        pending = saver.stats().pending
        assert pending >= CHECKPOINTS
    finally:
        saver.close()
    assert saver.last_run is not None and saver.last_run.trigger == "close" and saver.last_run.ok, saver.last_run

    again = HybridSaver.from_url(strict_role_url, backup_interval=None, listen=False)
    try:
        stats = again.stats()
        assert stats.checkpoints == 2 * CHECKPOINTS, stats
    finally:
        again.close()
