"""What a thread says, in a few columns: the summary a backup writes for each thread it touches.

The summaries let a dashboard list, sort and search every thread of the store (resident or cold)
with SQL, and let a start load the most recently updated threads first. The title and the text come
from LangGraph's usual channels, ``title`` (a str) and ``messages`` (a list of messages); a graph
without them gets counts and times only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from persistence.codec import Key, Typed
from persistence.store.records import CheckpointEntry

logger = logging.getLogger(__name__)

#: characters of message text kept per thread for search
TEXT_LIMIT = 16_000
_ROLES = {"human": "user", "ai": "assistant"}


def newest(namespaces: Mapping[str, Mapping[str, CheckpointEntry]]) -> tuple[str, str] | None:
    """(namespace, checkpoint id) of the thread's newest checkpoint, the root namespace first."""
    root = namespaces.get("")
    if root:
        return "", max(root)
    best: tuple[str, str] | None = None
    for ns, cps in namespaces.items():
        if cps:
            cid = max(cps)
            if best is None or cid > best[1]:
                best = (ns, cid)
    return best


#: LangGraph's decoder of its msgpack extensions into plain values (their arguments), without building
#: the objects: what a summary needs of a message is its type and content
_TO_PLAIN = getattr(jsonplus, "_msgpack_ext_hook_to_json", None)


def _loads(serde: SerializerProtocol, typed: Typed) -> Any:
    """``serde.loads_typed(typed)``, or for LangGraph's own msgpack the same data as plain values
    (dicts of the objects' arguments): four times faster on a chat thread, as a backup summarises every
    thread it touches. Any other serde, or a value the plain decoder cannot read, goes through the serde."""
    if (
        _TO_PLAIN is not None
        and typed[0] == "msgpack"
        and isinstance(serde, JsonPlusSerializer)
        and type(serde).loads_typed is JsonPlusSerializer.loads_typed
    ):
        try:
            return ormsgpack.unpackb(typed[1], ext_hook=_TO_PLAIN, option=ormsgpack.OPT_NON_STR_KEYS)
        except Exception:  # noqa: BLE001 - the serde knows better
            pass
    return serde.loads_typed(typed)


def describe(
    serde: SerializerProtocol,
    thread_id: str,
    namespaces: Mapping[str, Mapping[str, CheckpointEntry]],
    blobs: Mapping[Key, Typed],
) -> tuple[str | None, str | None]:
    """(title, text of the messages) of a thread's newest checkpoint; None where it has none."""
    head = newest(namespaces)
    if head is None:
        return None, None
    ns, cid = head
    try:
        checkpoint = _loads(serde, namespaces[ns][cid][0])
        versions = checkpoint.get("channel_versions", {})
        title = _channel(serde, blobs, (thread_id, ns, "title", versions.get("title")))
        messages = _channel(serde, blobs, (thread_id, ns, "messages", versions.get("messages")))
    except Exception:  # noqa: BLE001 - a summary must never fail a backup
        logger.debug("thread %r: its newest checkpoint cannot be summarised", thread_id)
        return None, None
    return (title if isinstance(title, str) else None), _text(messages)


def _channel(serde: SerializerProtocol, blobs: Mapping[Key, Typed], key: Key) -> Any:
    if key[3] is None:
        return None
    blob = blobs.get(key)
    if blob is None or blob[0] == "empty":
        return None
    return _loads(serde, blob)


def _text(messages: Any) -> str | None:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return None
    lines: list[str] = []
    size = 0
    for message in messages:
        if isinstance(message, Mapping):
            role, content = message.get("role") or message.get("type"), message.get("content")
        else:
            role, content = getattr(message, "type", None), getattr(message, "content", None)
        if isinstance(content, list):
            content = " ".join(
                p if isinstance(p, str) else str(p.get("text", "")) for p in content if isinstance(p, (str, Mapping))
            )
        if not isinstance(content, str) or not content:
            continue
        line = f"{_ROLES.get(str(role), role or 'message')}: {content}"
        lines.append(line[: TEXT_LIMIT - size])
        size += len(lines[-1]) + 1
        if size >= TEXT_LIMIT:
            break
    return "\n".join(lines) if lines else None


__all__ = ["TEXT_LIMIT", "describe", "newest"]
