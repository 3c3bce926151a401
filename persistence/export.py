"""A thread as plain JSON: its checkpoints (decoded), metadata, channel values and pending writes."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections import deque
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from langgraph.checkpoint.base import writes_sort_key
from langgraph.checkpoint.serde.base import SerializerProtocol


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Return ``value`` as plain JSON types (messages and models as dicts, bytes as base64)."""
    if _depth > 40:
        return repr(value)[:200]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v, _depth + 1) for v in items]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return to_jsonable(dump(), _depth + 1)
        except Exception:  # noqa: BLE001 - a broken model still has a repr
            return repr(value)[:2000]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), _depth + 1)
    return repr(value)[:2000]


def export_thread(
    thread_id: str,
    storage: Mapping[str, Any],
    writes: Mapping[tuple[Any, ...], Any],
    blobs: Mapping[tuple[Any, ...], Any],
    serde: SerializerProtocol,
) -> dict[str, Any]:
    """Decode one thread from InMemorySaver-shaped dicts into a JSON-ready dict, oldest checkpoint first."""
    checkpoints = []
    for ns, cps in storage.get(thread_id, {}).items():
        for cid in sorted(cps):
            (checkpoint_t, metadata_t, parent) = cps[cid]
            checkpoint = serde.loads_typed(checkpoint_t)
            values = {}
            for channel, version in checkpoint.get("channel_versions", {}).items():
                blob = blobs.get((thread_id, ns, channel, version))
                if blob is not None and blob[0] != "empty":
                    values[channel] = serde.loads_typed(blob)
            stored = writes.get((thread_id, ns, cid), {})
            pending = [
                {"task_id": task, "channel": channel, "value": to_jsonable(serde.loads_typed(value)), "path": path}
                for (task, channel, value, path) in (
                    stored[k] for k in sorted(stored, key=lambda k: writes_sort_key(stored[k][3], *k))
                )
            ]
            checkpoints.append(
                {
                    "checkpoint_ns": ns,
                    "checkpoint_id": cid,
                    "parent_id": parent,
                    "ts": checkpoint.get("ts"),
                    "metadata": to_jsonable(serde.loads_typed(metadata_t)),
                    "values": to_jsonable(values),
                    "pending_writes": pending,
                }
            )
    checkpoints.sort(key=lambda c: (c["checkpoint_ns"] != "", c["checkpoint_id"]))
    return {"thread_id": thread_id, "exported_at": datetime.now(UTC).isoformat(), "checkpoints": checkpoints}


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2)


__all__ = ["dumps", "export_thread", "to_jsonable"]
