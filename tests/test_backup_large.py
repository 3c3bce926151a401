"""A large backup (LAZY_SUMMARY_ROWS changed keys or more) makes part of its rows and its summaries in the
transaction, while the server takes in the first rows: its tombstones, fencing and checksums work as in a
small one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from langgraph.checkpoint.base import empty_checkpoint

from persistence import HybridSaver
from persistence.memory.changes import ChangeLog
from persistence.store.rows import LAZY_SUMMARY_ROWS
from persistence.store.schema import TABLES, enc

THREADS = 40
TURNS = 50  # a checkpoint, a channel value and a write per turn: 6,000 keys, a large backup


def _fill(saver: HybridSaver, threads: int = THREADS, turns: int = TURNS) -> None:
    for t in range(threads):
        config: dict[str, Any] = {"configurable": {"thread_id": f"t{t}", "checkpoint_ns": ""}}
        for i in range(turns):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": [f"message {i} of thread {t}" * 3]}
            checkpoint["channel_versions"] = {"messages": i + 1}
            config = saver.put(config, checkpoint, {"step": i}, {"messages": i + 1})
            saver.put_writes(config, [("messages", f"write {i}")], task_id=f"task{i}")


def _live(saver: HybridSaver) -> dict[str, int]:
    out = {}
    with psycopg.connect(saver.conninfo) as conn:
        for table in ("checkpoints", "writes", "blobs", "summaries"):
            row = conn.execute(
                f'SELECT count(*) FROM "{saver.store.schema}".{table} WHERE deleted_gen IS NULL'
            ).fetchone()
            out[table] = row[0] if row else 0
    return out


def test_a_large_backup_writes_every_row_with_its_checksum(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    _fill(saver)
    assert len(saver.cache.changes) >= LAZY_SUMMARY_ROWS
    run = saver.backup()
    assert run.ok and run.generation is not None
    assert _live(saver) == {"checkpoints": 2000, "writes": 2000, "blobs": 2000, "summaries": THREADS}
    generation = saver.store.generations(1)[0]
    assert (generation.threads, generation.checkpoints, generation.rows_written) == (THREADS, 2000, 6000)
    result = saver.verify(run.generation)
    assert result.rows == 6000 and not result.damaged
    # what was written reads back as memory holds it
    snap = saver.store.load()
    assert snap.storage == {t: {ns: dict(cps) for ns, cps in nss.items()} for t, nss in saver.cache.storage.items()}
    assert snap.writes == saver.cache.writes


def test_a_large_backup_of_keys_written_before_tombstones_them(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    _fill(saver)
    first = saver.backup()
    assert first.ok
    with saver.cache.lock:
        for t in range(THREADS):
            saver.cache.mark_all_changed(f"t{t}")
    run = saver.backup()  # every key again: the old rows are tombstoned, the new ones go in
    assert run.ok and run.generation == (first.generation or 0) + 1
    assert run.rows == 2 * 6000
    assert _live(saver) == {"checkpoints": 2000, "writes": 2000, "blobs": 2000, "summaries": THREADS}
    generation = saver.store.generations(1)[0]
    assert (generation.threads, generation.checkpoints) == (THREADS, 2000)
    assert not saver.verify(run.generation or 0).damaged


def test_a_large_backup_refuses_the_threads_another_member_took(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    _fill(saver)
    taken = [f"t{t}" for t in range(5)]
    with psycopg.connect(saver.conninfo, autocommit=True) as conn:
        conn.execute(
            f'UPDATE "{saver.store.schema}".owners SET owner = owner + 1000 WHERE thread_id = ANY(%s)',
            ([enc(t) for t in taken],),
        )
    run = saver.backup()
    assert run.ok and sorted(run.refused) == sorted(taken)
    kept = THREADS - len(taken)
    assert _live(saver) == {
        "checkpoints": kept * TURNS,
        "writes": kept * TURNS,
        "blobs": kept * TURNS,
        "summaries": kept,
    }
    with psycopg.connect(saver.conninfo) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{saver.store.schema}".blobs WHERE thread_id = ANY(%s)', ([enc(t) for t in taken],)
        ).fetchone()
    assert row == (0,)


def test_a_large_cut_that_undid_itself_writes_no_generation(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    _fill(saver, threads=1, turns=1)
    assert saver.backup().ok
    before = saver.store.latest_generation()
    cut = ChangeLog()
    for i in range(LAZY_SUMMARY_ROWS):  # keys added and removed again between two backups
        cut.blobs[("t0", "", f"c{i}", i)] = (False, None)
    changes = cut.to_changes(touched={"t0"}, later=tuple(TABLES))
    written = saver.store.write_generation(
        changes, trigger="manual", later=lambda into, refused: {t: cut.fill(into, t, refused) for t in TABLES}
    )
    assert written.generation is None
    assert saver.store.latest_generation() == before
    assert saver.backup().ok  # the counter row was not left locked
