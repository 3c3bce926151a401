"""Helpers for reading chat messages (LangChain messages or plain dicts)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}


def message_role(message: Any) -> str:
    """Return ``"user"``, ``"assistant"``, ``"system"`` or the raw lower-cased role/type."""
    if isinstance(message, Mapping):
        raw = str(message.get("role") or message.get("type") or "")
    else:
        raw = str(getattr(message, "type", "") or getattr(message, "role", ""))
    return _ROLE_ALIASES.get(raw.lower(), raw.lower())


def message_text(message: Any, limit: int | None = None) -> str:
    """Return the text content of ``message``, at most ``limit`` characters.

    Handles string content and the list-of-parts form (``{"type": "text",
    "text": ...}``). With ``limit`` set it never copies more than that many
    characters, so it is cheap even for multi-megabyte messages.
    """
    if isinstance(message, Mapping):
        content = message.get("content")
    else:
        content = getattr(message, "content", message)
    if content is None:
        return ""
    if isinstance(content, str):
        return content if limit is None else content[:limit]
    if isinstance(content, Sequence):
        return _parts_text(content, limit)
    text = str(content)
    return text if limit is None else text[:limit]


def _parts_text(parts: Sequence[Any], limit: int | None) -> str:
    pieces: list[str] = []
    size = 0
    for part in parts:
        if isinstance(part, str):
            piece = part
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            piece = part["text"]
        else:
            continue
        if limit is not None:
            piece = piece[: max(limit - size, 0)]
        pieces.append(piece)
        size += len(piece)
        if limit is not None and size >= limit:
            break
    return "".join(pieces)


def chunk_words(text: str) -> Iterator[str]:
    """Split ``text`` into word chunks (word plus trailing space); they join back to ``text``."""
    leading = len(text) - len(text.lstrip())
    if leading:
        yield text[:leading]
    for match in re.finditer(r"\S+\s*", text):
        yield match.group(0)


__all__ = ["chunk_words", "message_role", "message_text"]
