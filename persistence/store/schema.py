"""The store's schema: tables, versioned migrations, how keys are encoded and rows checksummed.

Storage model. Every row of a *generational* table carries ``added_gen`` (the generation that wrote
it) and ``deleted_gen`` (the generation that replaced or deleted it, NULL while live). The state at
generation G is every row with ``added_gen <= G`` and ``deleted_gen`` NULL or ``> G``. Keys and
payloads are ``bytea`` so that any Python string (NUL bytes, lone surrogates) round-trips exactly.

The three checkpoint tables hold what ``InMemorySaver`` holds; ``summaries`` holds one row per
thread (counts, size, last update, title and text for search), written with the thread's rows, so a
restore puts back the summaries of the generation too. ``owners``, ``instances``, ``commands`` and
``saver_settings`` are the fleet's: who holds which thread, who is alive, what was asked of whom.
"""

from __future__ import annotations

import zlib
from typing import Any

#: the schema a store lives in unless told otherwise
DEFAULT_SCHEMA = "hybrid_saver"
#: the longest text of a thread kept in its summary for search
CONTENT_LIMIT = 16_000

#: (table, key columns, payload columns, COPY types of key + payload columns)
CHECKPOINT_COLS = ("thread_id", "checkpoint_ns", "checkpoint_id")
CHECKPOINT_PAYLOAD = ("parent_id", "checkpoint_type", "checkpoint", "metadata_type", "metadata")
WRITE_COLS = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx")
WRITE_PAYLOAD = ("channel", "value_type", "value", "task_path")
BLOB_COLS = ("thread_id", "checkpoint_ns", "channel", "version")
BLOB_PAYLOAD = ("value_type", "value")

#: the checkpoint tables, as loaded into memory
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "checkpoints": (
        CHECKPOINT_COLS,
        CHECKPOINT_PAYLOAD,
        ("bytea", "bytea", "bytea", "bytea", "text", "bytea", "text", "bytea"),
    ),
    "writes": (
        WRITE_COLS,
        WRITE_PAYLOAD,
        ("bytea", "bytea", "bytea", "bytea", "int4", "bytea", "text", "bytea", "bytea"),
    ),
    "blobs": (BLOB_COLS, BLOB_PAYLOAD, ("bytea", "bytea", "bytea", "bytea", "text", "bytea")),
}
SUMMARY_COLS = ("thread_id", "checkpoints", "bytes", "updated_at", "newest_checkpoint", "title", "content")
#: every table whose rows are versioned by generation (restore and retention rewrite them all)
GENERATIONAL: tuple[str, ...] = (*TABLES, "summaries")
#: columns copied forward by a restore, per generational table
RESTORE_COLUMNS: dict[str, tuple[str, ...]] = {
    **{t: (*keys, *payload, "crc") for t, (keys, payload, _types) in TABLES.items()},
    "summaries": SUMMARY_COLS,
}

MIGRATIONS: list[str] = [
    # v1: the generation model
    """
    CREATE TABLE {s}.generations (
        generation    bigint PRIMARY KEY,
        taken_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
        trigger       text NOT NULL,
        kind          text NOT NULL DEFAULT 'backup',
        threads       integer NOT NULL DEFAULT 0,
        checkpoints   bigint NOT NULL DEFAULT 0,
        rows_written  bigint NOT NULL DEFAULT 0,
        bytes_written bigint NOT NULL DEFAULT 0,
        restored_from bigint,
        thread_id     bytea
    );
    CREATE TABLE {s}.runs (
        id            bigserial PRIMARY KEY,
        trigger       text NOT NULL,
        started_at    timestamptz NOT NULL,
        finished_at   timestamptz NOT NULL,
        generation    bigint,
        rows_written  bigint NOT NULL DEFAULT 0,
        bytes_written bigint NOT NULL DEFAULT 0,
        lag_seconds   double precision NOT NULL DEFAULT 0,
        pending       bigint NOT NULL DEFAULT 0,
        threads       integer,
        checkpoints   bigint,
        error         text,
        request_id    text
    );
    CREATE INDEX runs_started_idx ON {s}.runs (started_at);
    CREATE TABLE {s}.checkpoints (
        thread_id bytea NOT NULL, checkpoint_ns bytea NOT NULL, checkpoint_id bytea NOT NULL,
        parent_id bytea, checkpoint_type text, checkpoint bytea, metadata_type text, metadata bytea,
        added_gen bigint NOT NULL, deleted_gen bigint
    );
    CREATE UNIQUE INDEX checkpoints_live ON {s}.checkpoints (thread_id, checkpoint_ns, checkpoint_id)
        WHERE deleted_gen IS NULL;
    CREATE INDEX checkpoints_dead ON {s}.checkpoints (deleted_gen) WHERE deleted_gen IS NOT NULL;
    CREATE TABLE {s}.writes (
        thread_id bytea NOT NULL, checkpoint_ns bytea NOT NULL, checkpoint_id bytea NOT NULL,
        task_id bytea NOT NULL, idx integer NOT NULL,
        channel bytea, value_type text, value bytea, task_path bytea,
        added_gen bigint NOT NULL, deleted_gen bigint
    );
    CREATE UNIQUE INDEX writes_live ON {s}.writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
        WHERE deleted_gen IS NULL;
    CREATE INDEX writes_dead ON {s}.writes (deleted_gen) WHERE deleted_gen IS NOT NULL;
    CREATE TABLE {s}.blobs (
        thread_id bytea NOT NULL, checkpoint_ns bytea NOT NULL, channel bytea NOT NULL,
        version bytea NOT NULL, value_type text, value bytea,
        added_gen bigint NOT NULL, deleted_gen bigint
    );
    CREATE UNIQUE INDEX blobs_live ON {s}.blobs (thread_id, checkpoint_ns, channel, version)
        WHERE deleted_gen IS NULL;
    CREATE INDEX blobs_dead ON {s}.blobs (deleted_gen) WHERE deleted_gen IS NOT NULL;
    CREATE TABLE {s}.instances (
        id          bigserial PRIMARY KEY,
        host        text NOT NULL,
        pid         integer NOT NULL,
        started_at  timestamptz NOT NULL DEFAULT now(),
        stopped_at  timestamptz
    );
    """,
    # v2: a CRC-32 of each row's payload, so a restore can detect damage without decoding every value
    """
    ALTER TABLE {s}.checkpoints ADD COLUMN crc bigint;
    ALTER TABLE {s}.writes ADD COLUMN crc bigint;
    ALTER TABLE {s}.blobs ADD COLUMN crc bigint;
    """,
    # v3: residency and the fleet. Generation numbers come from one counter row, taken inside the
    # backup's transaction, so they follow commit order across members. Members own threads.
    """
    CREATE TABLE {s}.counter (
        one        boolean PRIMARY KEY DEFAULT true CHECK (one),
        generation bigint NOT NULL
    );
    INSERT INTO {s}.counter (generation) SELECT coalesce(max(generation), 0) FROM {s}.generations;
    UPDATE {s}.instances SET stopped_at = now() WHERE stopped_at IS NULL;
    ALTER TABLE {s}.instances
        ADD COLUMN name text,
        ADD COLUMN heartbeat_at timestamptz,
        ADD COLUMN figures jsonb NOT NULL DEFAULT '{{}}';
    CREATE TABLE {s}.owners (
        thread_id bytea PRIMARY KEY,
        owner     bigint NOT NULL,
        token     bigint NOT NULL DEFAULT 1,
        since     timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX owners_owner ON {s}.owners (owner);
    CREATE SEQUENCE {s}.owner_tokens;
    CREATE TABLE {s}.summaries (
        thread_id         bytea NOT NULL,
        checkpoints       integer NOT NULL,
        bytes             bigint NOT NULL,
        updated_at        timestamptz,
        newest_checkpoint bytea,
        title             text,
        content           text,
        added_gen         bigint NOT NULL,
        deleted_gen       bigint
    );
    CREATE UNIQUE INDEX summaries_live ON {s}.summaries (thread_id) WHERE deleted_gen IS NULL;
    CREATE INDEX summaries_dead ON {s}.summaries (deleted_gen) WHERE deleted_gen IS NOT NULL;
    CREATE INDEX summaries_updated ON {s}.summaries (updated_at DESC) WHERE deleted_gen IS NULL;
    INSERT INTO {s}.summaries (thread_id, checkpoints, bytes, newest_checkpoint, added_gen)
        SELECT thread_id, count(*), sum(coalesce(length(checkpoint), 0) + coalesce(length(metadata), 0)),
               (array_agg(checkpoint_id ORDER BY checkpoint_id DESC))[1], (SELECT generation FROM {s}.counter)
        FROM {s}.checkpoints WHERE deleted_gen IS NULL GROUP BY thread_id;
    ALTER TABLE {s}.runs
        ADD COLUMN instance_id bigint,
        ADD COLUMN folded integer NOT NULL DEFAULT 1,
        ADD COLUMN notes text;
    CREATE TABLE {s}.commands (
        id          bigserial PRIMARY KEY,
        request_id  text NOT NULL UNIQUE,
        sender      bigint,
        target      bigint,
        op          text NOT NULL,
        args        jsonb NOT NULL DEFAULT '{{}}',
        sent_at     timestamptz NOT NULL DEFAULT now(),
        answered_at timestamptz,
        answered_by bigint,
        result      jsonb,
        error       text
    );
    CREATE INDEX commands_sent_idx ON {s}.commands (sent_at);
    CREATE TABLE {s}.saver_settings (
        name            text PRIMARY KEY,
        backup_interval double precision,
        paused          boolean NOT NULL DEFAULT false,
        updated_at      timestamptz NOT NULL DEFAULT now()
    );
    """,
    # v5: liveness by lease (server time); members of older versions keep counting by their lock;
    # the store's identity, so what a member kept locally is given back to the same store only
    """
    ALTER TABLE {s}.instances ADD COLUMN lease_until timestamptz;
    CREATE TABLE {s}.identity (store_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), created_at timestamptz
        NOT NULL DEFAULT now());
    INSERT INTO {s}.identity DEFAULT VALUES;
    """,
]


def ddl(schema: str) -> str:
    """The SQL that creates a store in ``schema`` at the current version, for a DBA to review and apply
    (what a saver's first start runs: the schema, the version table, every migration)."""
    from psycopg import sql

    ident = sql.Identifier(schema).as_string(None)
    parts = [
        f"-- HybridSaver store, schema version {len(MIGRATIONS)}. Apply with: psql -v ON_ERROR_STOP=1 -f FILE",
        "-- The role the savers run as then needs USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on its",
        "-- tables and USAGE on its sequences (or CREATE on the schema, for later migrations).",
        "BEGIN;",
        f"CREATE SCHEMA IF NOT EXISTS {ident};",
        f"CREATE TABLE {ident}.schema_version (v integer PRIMARY KEY);",
    ]
    for version, migration in enumerate(MIGRATIONS, start=1):
        body = "\n".join(line[4:] if line.startswith("    ") else line for line in migration.strip("\n").splitlines())
        parts.append(f"-- migration {version}")
        text = sql.SQL(body).format(s=sql.Identifier(schema)).as_string(None)
        parts.append(text.rstrip().rstrip(";") + ";")
        parts.append(f"INSERT INTO {ident}.schema_version (v) VALUES ({version});")
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


def row_crc(payload: tuple[Any, ...]) -> int:
    """CRC-32 over a row's payload columns, each length-prefixed (None and "" differ)."""
    crc = 0
    for value in payload:
        if value is None:
            crc = zlib.crc32(b"\xff\xff\xff\xff", crc)
            continue
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        crc = zlib.crc32(len(data).to_bytes(4, "little"), crc)
        crc = zlib.crc32(data, crc)
    return crc


def enc(text: str) -> bytes:
    """Encode a key string exactly (lone surrogates included)."""
    return text.encode("utf-8", "surrogatepass")


def dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def enc_version(version: str | int | float) -> bytes:
    """Encode a channel version with its type, so restore puts back the exact key."""
    if isinstance(version, str):
        return b"s" + enc(version)
    if isinstance(version, bool):
        raise TypeError(f"channel version {version!r} is a bool")
    if isinstance(version, int):
        return b"i" + str(version).encode()
    if isinstance(version, float):
        return b"f" + repr(version).encode()
    raise TypeError(f"channel version {version!r} has unsupported type {type(version).__name__}")


def dec_version(data: bytes) -> str | int | float:
    tag, body = data[:1], data[1:]
    if tag == b"s":
        return dec(body)
    if tag == b"i":
        return int(body)
    if tag == b"f":
        return float(body)
    raise ValueError(f"unknown version tag {tag!r}")


def describe_row(table: str, row: tuple[Any, ...]) -> str:
    """A row of a checkpoint table as a person reads it (for damaged-row reports)."""
    if table == "checkpoints":
        return f"checkpoint {dec(row[2])}"
    if table == "writes":
        return f"write {dec(row[3])}/{row[4]} of checkpoint {dec(row[2])}"
    return f"channel value {dec(row[2])}@{dec_version(row[3])}"


__all__ = [
    "CONTENT_LIMIT",
    "DEFAULT_SCHEMA",
    "GENERATIONAL",
    "MIGRATIONS",
    "ddl",
    "RESTORE_COLUMNS",
    "SUMMARY_COLS",
    "TABLES",
    "dec",
    "dec_version",
    "describe_row",
    "enc",
    "enc_version",
    "row_crc",
]
