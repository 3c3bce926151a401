"""What the saver reports: a backup run, its figures, the result of a restore."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class BackupRun:
    """The result of one backup run (also recorded in the runs table)."""

    trigger: str
    started_at: datetime
    finished_at: datetime
    #: the generation written, None when there was nothing to write (or the run failed)
    generation: int | None
    rows: int = 0
    bytes: int = 0
    lag_seconds: float = 0.0
    pending: int = 0
    error: str | None = None
    #: threads whose changes were refused because this member no longer owns them (fencing)
    refused: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def empty(self) -> bool:
        """True for a successful run that had nothing to back up."""
        return self.ok and self.generation is None and not self.refused

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class SaverStats:
    """Figures of the live saver. ``threads`` and ``checkpoints`` count what is resident in memory."""

    threads: int
    checkpoints: int
    pending: int
    lag_seconds: float
    last_backup: BackupRun | None = None
    last_success: BackupRun | None = None
    database_ok: bool = True
    resident_threads: int = 0
    resident_bytes: int = 0
    #: bytes of resident threads with changes not yet in PostgreSQL (they cannot be evicted)
    dirty_bytes: int = 0
    memory_budget: int | None = None
    hits: int = 0
    loads: int = 0
    evictions: int = 0
    instance_id: int | None = None


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did, and how to undo it."""

    restored_from: int
    generation: int
    undo_generation: int | None
    thread_id: str | None
    threads: int
    checkpoints: int
    #: rows left out because they could not be decoded (``on_damage="skip"``)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    #: members that handed their threads over before the rewrite (instance ids)
    members: tuple[int, ...] = ()


__all__ = ["BackupRun", "RestoreResult", "SaverStats"]
