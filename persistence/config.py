"""Settings read from the environment, with errors that name the variable, the value and the fix.

Used by every entry point that configures a saver from the environment: the dashboard, the
LangGraph Agent Server checkpointer and the examples. The library itself takes plain arguments,
checked by :func:`check_saver_options`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SaverSettings:
    """What :meth:`HybridSaver.from_url` is given by an entry point configured from the environment."""

    #: seconds between scheduled backups, None when they are off
    backup_interval: float | None
    retention: int
    #: bytes, None for no budget (every thread stays resident)
    memory_budget: int | None

    def kwargs(self) -> dict[str, object]:
        """Keyword arguments for :meth:`HybridSaver.from_url`."""
        out: dict[str, object] = {"backup_interval": self.backup_interval, "retention": self.retention}
        if self.memory_budget is not None:
            out["memory_budget"] = self.memory_budget
        return out


def saver_settings(env: Mapping[str, str] | None = None) -> SaverSettings:
    """Read ``BACKUP_INTERVAL`` (seconds, default 30; ``0``/``off`` turns scheduled backups off),
    ``BACKUP_RETENTION`` (generations kept, default 50, at least 2) and ``MEMORY_BUDGET``
    (a size like ``512MB``; unset: no budget).

    Raises:
        ConfigError: a variable has a value that cannot be used; the message names it.
    """
    env = os.environ if env is None else env
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
    return SaverSettings(backup_interval=interval, retention=retention, memory_budget=budget)


__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_RETENTION",
    "MIN_BUDGET",
    "ConfigError",
    "SaverSettings",
    "check_saver_options",
    "parse_bytes",
    "saver_settings",
]
