"""Hybrid LangGraph checkpointer: served from memory, backed up to PostgreSQL in generations."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from persistence.config import ConfigError, SaverOptions
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
from persistence.ops.health import Health
from persistence.ops.restore import VerifyResult
from persistence.records import BackupRun, RestoreResult, SaverStats
from persistence.saver import HybridSaver
from persistence.serde import EncryptedStore
from persistence.store import Generation

#: the version of the checkout when the package is not installed (keep equal to pyproject.toml's)
_SOURCE_VERSION = "0.1.0"
try:
    __version__ = _version("hybrid-saver")
except PackageNotFoundError:  # running from a checkout
    __version__ = _SOURCE_VERSION

__all__ = [
    "BackupRun",
    "ConfigError",
    "CorruptBackup",
    "DatabaseUnavailable",
    "EncryptedStore",
    "Generation",
    "GenerationNotFound",
    "Health",
    "HybridSaver",
    "HybridSaverError",
    "InvalidValue",
    "Member",
    "RestoreResult",
    "SaverClosed",
    "SaverOptions",
    "SaverStats",
    "StoreLocked",
    "ThreadBusy",
    "ThreadNotFound",
    "ThreadRestored",
    "VerifyResult",
    "__version__",
]
