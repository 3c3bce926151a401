"""Hybrid LangGraph checkpointer: served from memory, backed up to PostgreSQL in generations."""

from persistence.errors import (
    CorruptBackup,
    DatabaseUnavailable,
    GenerationNotFound,
    HybridSaverError,
    InvalidValue,
    SaverClosed,
    StoreLocked,
    ThreadNotFound,
)
from persistence.saver import BackupRun, HybridSaver, RestoreResult, SaverStats
from persistence.store import Generation

__all__ = [
    "BackupRun",
    "CorruptBackup",
    "DatabaseUnavailable",
    "Generation",
    "GenerationNotFound",
    "HybridSaver",
    "HybridSaverError",
    "InvalidValue",
    "RestoreResult",
    "SaverClosed",
    "SaverStats",
    "StoreLocked",
    "ThreadNotFound",
]
