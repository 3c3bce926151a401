"""The physical limit: the same rows the saver writes, COPYed into bare tables and back out.

Bare tables have the saver's columns and types and no index, key or constraint. Rows go in with
binary COPY through psycopg's C-accelerated bytea dumper, in one transaction, the way a
hand-written bulk load would do it; they come out with binary ``COPY ... TO STDOUT``, parsed into
Python values (the least a restore has to do with them).
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.types.string import BytesBinaryDumper

from bench.stats import CpuClock, clock
from persistence.store import MIGRATIONS, TABLES
from persistence.store.schema import row_crc


def create_bare(url: str, schema: str) -> None:
    """Tables with the saver's columns (a row's checksum included) and no indexes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table, (keys, payload, types) in TABLES.items():
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
                for c, t in zip((*keys, *payload), types, strict=True)
            )
            conn.execute(
                sql.SQL("CREATE TABLE {}.{} ({}, crc int8, added_gen int8)").format(
                    sql.Identifier(schema), sql.Identifier(table), cols
                )
            )


def create_indexed(url: str, schema: str) -> None:
    """Tables exactly like the saver's (its migrations, every one: the rows' checksum column came in
    the second), to see what its indexes cost."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for migration in MIGRATIONS:
            conn.execute(sql.SQL(migration).format(s=sql.Identifier(schema)))


def checkpoint_server(url: str) -> None:
    """Flush dirty buffers so a timed write does not pay for the previous one's WAL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def copy_in(
    url: str, schema: str, rows: dict[str, list[tuple]], cpu: CpuClock | None = None, generation: int = 1
) -> tuple[float, float | None]:
    """COPY ``rows`` (per table, in the saver's column order) into ``schema``, each with the checksum
    the saver stores with it (computed before the clock starts: the baseline is the COPY alone).

    Returns (seconds incl. commit, CPU seconds or None). CPU is read before the connection closes:
    an exiting backend's CPU time is invisible until the server reaps it.
    """
    crcs = {table: [row_crc(row[len(keys) :]) for row in rows[table]] for table, (keys, _p, _t) in TABLES.items()}
    with psycopg.connect(url) as conn:
        if cpu:
            cpu.settle()
        cpu0 = cpu.now() if cpu else None
        start = clock()
        with conn.cursor() as cur:
            cur.adapters.register_dumper(None, BytesBinaryDumper)
            for table, (keys, payload, types) in TABLES.items():
                cols = sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload, "crc", "added_gen")))
                stmt = sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(schema), sql.Identifier(table), cols
                )
                with cur.copy(stmt) as copy:
                    copy.set_types([*types, "int8", "int8"])
                    write = copy.write_row
                    for row, crc in zip(rows[table], crcs[table], strict=True):
                        write((*row, crc, generation))
        conn.commit()
        seconds = clock() - start
        return seconds, _spent(cpu, cpu0)


def copy_out(url: str, schema: str, parse: bool = True, cpu: CpuClock | None = None) -> tuple[float, float | None, int]:
    """COPY every row of ``schema`` out; return (seconds, CPU seconds or None, rows or bytes)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        if cpu:
            cpu.settle()
        cpu0 = cpu.now() if cpu else None
        start = clock()
        n = 0
        for table, (keys, payload, types) in TABLES.items():
            stmt = sql.SQL("COPY (SELECT {} FROM {}.{}) TO STDOUT (FORMAT BINARY)").format(
                sql.SQL(", ").join(map(sql.Identifier, (*keys, *payload))),
                sql.Identifier(schema),
                sql.Identifier(table),
            )
            with cur.copy(stmt) as copy:
                if parse:
                    copy.set_types(list(types))
                    for _row in copy.rows():
                        n += 1
                else:
                    for block in copy:
                        n += len(block)
        seconds = clock() - start
        return seconds, _spent(cpu, cpu0), n


def _spent(cpu: CpuClock | None, cpu0: float | None) -> float | None:
    if cpu is None or cpu0 is None:
        return None
    cpu1 = cpu.now()
    return cpu1 - cpu0 if cpu1 is not None else None


def table_bytes(url: str, schema: str) -> int:
    """Bytes on disk of the tables (with TOAST and indexes) in ``schema``."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


__all__ = ["checkpoint_server", "copy_in", "copy_out", "create_bare", "create_indexed", "table_bytes"]
