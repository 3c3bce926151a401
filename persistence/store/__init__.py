"""PostgreSQL: schema and migrations, generations, thread directory and summaries, runs, retention/upkeep.

May import persistence.db, persistence.errors, persistence.records; never memory, fleet, ops, cli or the facade.

By module: ``schema`` (tables, migrations, key encoding, row checksums), ``records`` (Generation,
Changes, Written, Snapshot), ``place`` (the pool and schema a store and its parts share), ``rows``
(COPY in and out, snapshots), ``generations`` (:class:`Store`: setup, writing and reading
generations), and the store's parts ``directory`` (``store.directory``: the thread directory),
``runs`` (``store.runs``: the runs table) and ``upkeep`` (``store.upkeep``: restore, verify,
retention); ``summary`` (the title and text of a thread, for the summaries a backup writes);
``link`` (:class:`~persistence.store.link.DatabaseLink`, the saver's connection state and healing).
"""

from persistence.store.directory import ThreadDirectory
from persistence.store.generations import Store
from persistence.store.records import Changes, Generation, RestoreWindow, Snapshot, Written
from persistence.store.runs import RunLog
from persistence.store.schema import (
    CONTENT_LIMIT,
    DEFAULT_SCHEMA,
    MIGRATIONS,
    TABLES,
    dec,
    dec_version,
    enc,
    enc_version,
)
from persistence.store.upkeep import GenerationUpkeep

__all__ = [
    "RestoreWindow",
    "CONTENT_LIMIT",
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "TABLES",
    "Changes",
    "Generation",
    "GenerationUpkeep",
    "RunLog",
    "Snapshot",
    "Store",
    "ThreadDirectory",
    "Written",
    "dec",
    "dec_version",
    "enc",
    "enc_version",
]
