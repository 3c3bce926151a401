"""Settings read from the environment, with errors that name the variable, the value and the fix.

Used by every entry point that configures a saver from the environment: the dashboard, the
LangGraph Agent Server checkpointer and the examples. The library itself takes plain arguments,
checked by :func:`check_saver_options`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from langgraph.checkpoint.serde.base import SerializerProtocol

from persistence.errors import HybridSaverError

DEFAULT_INTERVAL = 30.0
DEFAULT_RETENTION = 50
#: the smallest budget accepted: below it every thread would be evicted as soon as it is loaded
MIN_BUDGET = 64 * 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class ConfigError(HybridSaverError, ValueError):
    """An environment variable (or setting) has a value that cannot be used."""


def parse_bytes(text: str | int, *, name: str = "MEMORY_BUDGET") -> int:
    """``"512MB"``, ``"1.5 GiB"``, ``"200000"`` -> bytes (kB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).

    Raises:
        ConfigError: the value is not a size, or smaller than :data:`MIN_BUDGET`.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{name}={text!r} is not a size; use a number of bytes or a value like 512MB.")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise ConfigError(
                f"{name}={text!r} is not a size. Use a number of bytes or a number with a unit: "
                "512MB, 2GB, 1.5GiB (kB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."
            )
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < MIN_BUDGET:
        raise ConfigError(
            f"{name}={text!r} is {value:,} bytes, below the smallest useful budget of {MIN_BUDGET:,} bytes "
            "(64KiB). Give a larger size, or unset it to keep every thread in memory."
        )
    return value


_DURATION = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)?\s*$"
)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str | float | None, *, name: str = "retention_age") -> float | None:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``, ``3600`` -> seconds; None (or ``""``) -> None.

    Raises:
        ConfigError: the value is not a duration, or not greater than 0.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not a duration; use seconds or a value like 7d, 12h, 30m.")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).lower())
        if not match:
            raise ConfigError(
                f"{name}={value!r} is not a duration. Use seconds or a number with a unit: 90s, 30m, 12h, 7d, 2w."
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s")[0]]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name}={value!r} must be a duration greater than 0 (or None for no minimum age).")
    return seconds


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise ConfigError(
            f"{name}={raw!r} is not {kind}; set it to {kind} (default {default:g}) or unset it."
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0 (default {default:g}).")
    return value


def check_saver_options(retention: object, memory_budget: object, handoff_timeout: object, name: object) -> None:
    """Refuse options of :class:`~persistence.HybridSaver` that cannot work, naming the value and the fix.

    Raises:
        ValueError: one of them is out of range or of the wrong type.
    """
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 2:
        raise ValueError(f"retention={retention!r}: keep at least 2 generations so a restore can always be undone.")
    if memory_budget is not None and (
        isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1
    ):
        raise ValueError(
            f"memory_budget={memory_budget!r}: give a number of bytes (an int, e.g. 512 * 1024**2), "
            "or None to keep every thread in memory."
        )
    if isinstance(handoff_timeout, bool) or not isinstance(handoff_timeout, (int, float)) or handoff_timeout <= 0:
        raise ValueError(f"handoff_timeout={handoff_timeout!r}: give a number of seconds greater than 0.")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name={name!r}: give a non-empty str (it keys the operator's settings), or None.")


class SaverOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`HybridSaver.from_url <persistence.HybridSaver.from_url>`, all
    optional: what ``from_env``, ``afrom_url`` and ``afrom_env`` take as ``**options`` (typed, so a
    misspelt keyword is a type checker's error as well as a ``TypeError``)."""

    backup_interval: float | None
    retention: int
    retention_age: float | str | None
    schema: str
    pool_size: int
    allow_offline: bool
    serde: SerializerProtocol | None
    handle_signals: bool
    listen: bool
    max_value_bytes: int
    memory_budget: int | None
    name: str | None
    handoff_timeout: float
    lease_seconds: float
    close_timeout: float
    recovery_dir: str | Path | None
    summarize: bool
    warm_start: bool


#: the variables :func:`saver_settings` reads, by the keyword argument of ``from_url`` each one sets
ENV_VARIABLES: dict[str, str] = {
    "backup_interval": "BACKUP_INTERVAL",
    "retention": "BACKUP_RETENTION",
    "retention_age": "BACKUP_RETENTION_AGE",
    "memory_budget": "MEMORY_BUDGET",
    "name": "HYBRID_SAVER_NAME",
    "schema": "HYBRID_SAVER_SCHEMA",
    "pool_size": "HYBRID_SAVER_POOL_SIZE",
}


@dataclass(frozen=True)
class SaverSettings:
    """What :meth:`HybridSaver.from_url` is given by an entry point configured from the environment."""

    #: seconds between scheduled backups, None when they are off
    backup_interval: float | None
    retention: int
    #: bytes, None for no budget (every thread stays resident)
    memory_budget: int | None
    #: seconds: generations younger than this are kept whatever their count; None: the count alone
    retention_age: float | None = None
    #: the member's name (its interval and pause are kept under it), None for none
    name: str | None = None
    #: the store's schema, None for the default
    schema: str | None = None
    #: pool connections, None for the default
    pool_size: int | None = None

    def kwargs(self) -> SaverOptions:
        """Keyword arguments for :meth:`HybridSaver.from_url` (the unset ones left out, so its defaults hold)."""
        out: SaverOptions = {"backup_interval": self.backup_interval, "retention": self.retention}
        if self.memory_budget is not None:
            out["memory_budget"] = self.memory_budget
        if self.retention_age is not None:
            out["retention_age"] = self.retention_age
        if self.name is not None:
            out["name"] = self.name
        if self.schema is not None:
            out["schema"] = self.schema
        if self.pool_size is not None:
            out["pool_size"] = self.pool_size
        return out


def database_url(env: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL``, required (no embedded fallback: that is the dashboard's and the CLI's, in
    :func:`persistence.db.resolve_url`).

    Raises:
        ConfigError: it is unset or blank.
    """
    env = os.environ if env is None else env
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        raise ConfigError(
            "DATABASE_URL is not set: the HybridSaver needs a PostgreSQL database to back up to. Set it to a URL "
            "like postgresql://user:password@host:5432/dbname (in a LangSmith deployment, add it as a secret), "
            "or pass the URL to HybridSaver.from_url."
        )
    return url


def _text(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def saver_settings(env: Mapping[str, str] | None = None, *, skip: Collection[str] = ()) -> SaverSettings:
    """Read ``BACKUP_INTERVAL`` (seconds, default 30; ``0``/``off`` turns scheduled backups off),
    ``BACKUP_RETENTION`` (generations kept, default 50, at least 2), ``BACKUP_RETENTION_AGE`` (a
    duration like ``7d``, ``12h``, ``30m``, ``90s`` or seconds; unset: the count alone), ``MEMORY_BUDGET``
    (a size like ``512MB``; unset: no budget), ``HYBRID_SAVER_NAME``, ``HYBRID_SAVER_SCHEMA`` and
    ``HYBRID_SAVER_POOL_SIZE`` (unset: the defaults of ``from_url``).

    ``skip`` names keyword arguments (``"memory_budget"``) given explicitly: their variables are not read.

    Raises:
        ConfigError: a variable has a value that cannot be used; the message names it.
    """
    env = os.environ if env is None else env
    if skip:
        unread = {ENV_VARIABLES[option] for option in skip if option in ENV_VARIABLES}
        env = {key: value for key, value in env.items() if key not in unread}
    raw_interval = env.get("BACKUP_INTERVAL", "").strip().lower()
    interval: float | None
    if raw_interval in ("0", "off", "none"):
        interval = None
    else:
        interval = _number(env, "BACKUP_INTERVAL", DEFAULT_INTERVAL)
    retention = int(_number(env, "BACKUP_RETENTION", DEFAULT_RETENTION, integer=True))
    if retention < 2:
        raise ConfigError(f"BACKUP_RETENTION={retention} must be at least 2 so a restore can be undone.")
    raw_budget = env.get("MEMORY_BUDGET", "").strip()
    budget = None if raw_budget.lower() in ("", "none", "off", "0") else parse_bytes(raw_budget)
    age = parse_duration(env.get("BACKUP_RETENTION_AGE", ""), name="BACKUP_RETENTION_AGE")
    pool_size = None
    if _text(env, "HYBRID_SAVER_POOL_SIZE") is not None:
        pool_size = int(_number(env, "HYBRID_SAVER_POOL_SIZE", 4, integer=True))
    return SaverSettings(
        backup_interval=interval,
        retention=retention,
        memory_budget=budget,
        retention_age=age,
        name=_text(env, "HYBRID_SAVER_NAME"),
        schema=_text(env, "HYBRID_SAVER_SCHEMA"),
        pool_size=pool_size,
    )


__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_RETENTION",
    "MIN_BUDGET",
    "ENV_VARIABLES",
    "ConfigError",
    "SaverOptions",
    "SaverSettings",
    "check_saver_options",
    "database_url",
    "parse_bytes",
    "parse_duration",
    "saver_settings",
]
