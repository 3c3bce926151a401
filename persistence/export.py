"""A thread as plain JSON: its checkpoints (decoded), metadata, channel values and pending writes."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol


def to_jsonable(value: Any) -> Any:
    """Turn decoded checkpoint values (messages, pydantic models, bytes, sets...) into JSON types."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump())
    if hasattr(value, "_asdict"):
        return to_jsonable(value._asdict())
    return repr(value)


def export_thread(
    thread_id: str,
    storage: Mapping[str, Any],
    writes: Mapping[tuple, Any],
    blobs: Mapping[tuple, Any],
    serde: SerializerProtocol,
) -> dict[str, Any]:
    """Decode one thread from InMemorySaver-shaped dicts into a JSON-ready dict, newest checkpoint first."""
    checkpoints = []
    for ns, cps in storage.get(thread_id, {}).items():
        for cid in sorted(cps, reverse=True):
            (checkpoint_t, metadata_t, parent) = cps[cid]
            checkpoint = serde.loads_typed(checkpoint_t)
            values = {}
            for channel, version in checkpoint.get("channel_versions", {}).items():
                blob = blobs.get((thread_id, ns, channel, version))
                if blob is not None and blob[0] != "empty":
                    values[channel] = serde.loads_typed(blob)
            pending = [
                {"task_id": task, "channel": channel, "value": to_jsonable(serde.loads_typed(value)), "path": path}
                for (task, channel, value, path) in writes.get((thread_id, ns, cid), {}).values()
            ]
            checkpoints.append(
                {
                    "checkpoint_ns": ns,
                    "checkpoint_id": cid,
                    "parent_checkpoint_id": parent,
                    "ts": checkpoint.get("ts"),
                    "metadata": to_jsonable(serde.loads_typed(metadata_t)),
                    "channel_values": to_jsonable(values),
                    "pending_writes": pending,
                }
            )
    return {"thread_id": thread_id, "checkpoints": checkpoints}


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2)


__all__ = ["dumps", "export_thread", "to_jsonable"]
