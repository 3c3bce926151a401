"""Errors raised by the hybrid saver: each message says what happened and what to do."""

from __future__ import annotations


class HybridSaverError(Exception):
    """Base class of every error raised by this package."""


class DatabaseUnavailable(HybridSaverError):
    """PostgreSQL cannot be reached or refuses the connection."""


class StoreLocked(HybridSaverError):
    """Kept for code written against 0.1, where one live saver owned a store; savers now join a
    fleet, and nothing raises this any more."""


class ThreadBusy(HybridSaverError):
    """Another live member holds the thread and did not hand it over in time."""

    def __init__(self, message: str, thread_id: str | None = None, owner: int | None = None) -> None:
        super().__init__(message)
        self.thread_id = thread_id
        #: the instance id of the member that holds the thread
        self.owner = owner


class ThreadRestored(HybridSaverError):
    """A run wrote to a thread that a restore rewrote while the run was in flight: its step is refused
    so the restored state stays as restored (the run started from a state the restore undid)."""

    def __init__(self, message: str, thread_id: str | None = None) -> None:
        super().__init__(message)
        self.thread_id = thread_id


class GenerationNotFound(HybridSaverError, LookupError):
    """The asked generation does not exist or was compacted away."""


class ThreadNotFound(HybridSaverError, LookupError):
    """The asked thread is not in the generation (or not in memory)."""


class StoreNotFound(HybridSaverError, LookupError):
    """There is no store (at this library's version) in the schema, and the command creates none."""


class StoreTooNew(HybridSaverError):
    """The store was migrated by a newer version of the library."""


class SaverClosed(HybridSaverError):
    """The saver was used after ``close()``."""


class InvalidValue(HybridSaverError, ValueError, TypeError):
    """A thread id, key or value cannot be stored; refused before it enters memory."""


class CorruptBackup(HybridSaverError):
    """A row of a generation cannot be read back (damaged or truncated)."""

    def __init__(self, message: str, damaged: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        #: (thread_id, checkpoint_id) pairs that failed to decode
        self.damaged = damaged or []


__all__ = [
    "CorruptBackup",
    "DatabaseUnavailable",
    "GenerationNotFound",
    "HybridSaverError",
    "InvalidValue",
    "SaverClosed",
    "StoreLocked",
    "StoreNotFound",
    "StoreTooNew",
    "ThreadBusy",
    "ThreadNotFound",
]
