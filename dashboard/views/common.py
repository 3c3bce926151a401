"""What every view shares: the errors that mean "PostgreSQL cannot answer", one-line previews of
values, and whether the saver can ask its database now."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import PoolTimeout

from persistence.errors import HybridSaverError
from persistence.export import to_jsonable

if TYPE_CHECKING:
    from persistence import HybridSaver

#: errors that mean "PostgreSQL cannot answer right now"
DB_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error, PoolTimeout, HybridSaverError)


def preview(value: Any, limit: int = 120) -> str:
    """A one-line, at most ``limit`` characters, description of a channel value."""
    if isinstance(value, list) and value and all(hasattr(v, "content") for v in value):
        last = value[-1]
        text = last.content if isinstance(last.content, str) else json.dumps(to_jsonable(last.content))
        out = f"{len(value)} messages; last ({getattr(last, 'type', '?')}): {text}"
    elif isinstance(value, str):
        out = value
    else:
        try:
            out = json.dumps(to_jsonable(value), ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            out = repr(value)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def attached(saver: HybridSaver) -> bool:
    """True when the saver holds its backup store (False while it runs offline from memory)."""
    return bool(getattr(saver, "attached", True)) and not saver.closed


def database_answering(saver: HybridSaver) -> bool:
    """False while the saver is offline or its last backup failed (PostgreSQL may be down).

    Views then read what memory holds instead of waiting for a pool connection to time out; the
    next successful backup turns database reads back on.
    """
    last = saver.last_run
    return attached(saver) and (last is None or last.ok)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["DB_ERRORS", "attached", "database_answering", "preview", "to_jsonable"]
