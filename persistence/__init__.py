"""Hybrid LangGraph checkpointer: served from memory, backed up to PostgreSQL in generations."""

from persistence.errors import (
    CorruptBackup,
    DatabaseUnavailable,
    GenerationNotFound,
    HybridSaverError,
    InvalidValue,
    SaverClosed,
    StoreLocked,
    ThreadBusy,
    ThreadNotFound,
    ThreadRestored,
)
from persistence.fleet import Member
from persistence.records import BackupRun, RestoreResult, SaverStats
from persistence.restore import VerifyResult
from persistence.saver import HybridSaver
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
    "Member",
    "RestoreResult",
    "SaverClosed",
    "SaverStats",
    "StoreLocked",
    "ThreadBusy",
    "ThreadNotFound",
    "ThreadRestored",
    "VerifyResult",
]
