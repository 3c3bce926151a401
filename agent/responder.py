"""Responders: the "brains" behind the demo chat graph.

Two implementations share one tiny interface (:class:`Responder`):

* :class:`OfflineResponder` -- deterministic, no network, no randomness. It
  "remembers" facts the user stated earlier in the thread purely by scanning
  the message history it is handed, so every bit of memory comes from the
  checkpointed thread state.
* :class:`OpenAIResponder` -- streams from any OpenAI-compatible
  ``/chat/completions`` endpoint using httpx and server-sent events.

:func:`make_responder` picks one from environment variables.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from agent.facts import SCAN_LIMIT, compose_reply
from agent.messages import chunk_words, message_role, message_text

logger = logging.getLogger(__name__)

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_SECONDS = 60.0

_ERROR_BODY_LIMIT = 4_096
_ERROR_DETAIL_LIMIT = 300


class ResponderError(RuntimeError):
    """A responder could not produce a reply; the message says what to check."""


@runtime_checkable
class Responder(Protocol):
    """Anything that turns a message history into a reply."""

    def stream(self, messages: Sequence[Any]) -> Iterator[str]:
        """Yield the reply to ``messages`` incrementally, as text chunks."""
        ...

    def invoke(self, messages: Sequence[Any]) -> str:
        """Return the whole reply to ``messages``."""
        ...


class OfflineResponder:
    """Deterministic, network-free responder with thread-scoped memory.

    Everything it "remembers" is re-derived (see :mod:`agent.facts`) from the
    message history passed to :meth:`invoke`/:meth:`stream`; it keeps no state
    between calls, so threads are isolated by construction.
    """

    def __init__(self, scan_limit: int = SCAN_LIMIT) -> None:
        """Create a responder that scans at most ``scan_limit`` chars per message."""
        self.scan_limit = scan_limit

    def __repr__(self) -> str:
        return f"OfflineResponder(scan_limit={self.scan_limit})"

    def invoke(self, messages: Sequence[Any]) -> str:
        """Return the whole reply to the last user message in ``messages``."""
        reply = compose_reply(messages, self.scan_limit)
        logger.debug("offline reply: %d chars for %d messages", len(reply), len(messages))
        return reply

    def stream(self, messages: Sequence[Any]) -> Iterator[str]:
        """Yield the reply from :meth:`invoke` in word-sized chunks."""
        yield from chunk_words(self.invoke(messages))


class OpenAIResponder:
    """Streams replies from an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_OPENAI_BASE_URL,
        model: str = DEFAULT_OPENAI_MODEL,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        system_prompt: str | None = None,
    ) -> None:
        """Configure the endpoint; raises :class:`ResponderError` on a bad base URL."""
        if not api_key:
            raise ResponderError("No API key given. Set OPENAI_API_KEY or use the offline responder.")
        base_url = (base_url or DEFAULT_OPENAI_BASE_URL).strip().rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ResponderError(
                f"OPENAI_BASE_URL {base_url!r} is not a valid http(s) URL. "
                "Use something like https://api.openai.com/v1."
            )
        self._api_key = api_key
        self.base_url = base_url
        self.model = model or DEFAULT_OPENAI_MODEL
        self.timeout = timeout
        self.system_prompt = system_prompt

    def __repr__(self) -> str:
        return f"OpenAIResponder(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def host(self) -> str:
        """Host (and port, if any) of the base URL, without credentials."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host

    @property
    def endpoint(self) -> str:
        """Full URL of the chat completions endpoint."""
        return f"{self.base_url}/chat/completions"

    def invoke(self, messages: Sequence[Any]) -> str:
        """Return the full reply (the concatenated stream)."""
        return "".join(self.stream(messages))

    def stream(self, messages: Sequence[Any]) -> Iterator[str]:
        """Yield reply tokens as the server streams them (SSE ``data:`` lines)."""
        payload = {"model": self.model, "messages": self._payload_messages(messages), "stream": True}
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "text/event-stream"}
        logger.debug("POST %s model=%s messages=%d", self.endpoint, self.model, len(payload["messages"]))
        try:
            with (
                httpx.Client(timeout=self.timeout) as client,
                client.stream("POST", self.endpoint, json=payload, headers=headers) as response,
            ):
                if response.status_code >= 400:
                    raise self._http_error(response)
                if "application/json" in response.headers.get("content-type", ""):
                    yield from self._parse_json_body(response)
                else:
                    yield from self._parse_sse(response)
        except httpx.TimeoutException as exc:
            raise ResponderError(
                f"The model server at {self.host} did not answer within {self.timeout:g} s. "
                "Check that it is running and not overloaded, or try again."
            ) from exc
        except httpx.ConnectError as exc:
            raise ResponderError(
                f"Could not connect to the model server at {self.host}. "
                "Check OPENAI_BASE_URL and your network connection."
            ) from exc
        except httpx.HTTPError as exc:
            detail = self._redact(str(exc))[:_ERROR_DETAIL_LIMIT]
            raise ResponderError(
                f"The request to the model server at {self.host} failed ({type(exc).__name__}: {detail}). "
                "Check OPENAI_BASE_URL and try again."
            ) from exc

    def _payload_messages(self, messages: Sequence[Any]) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        for message in messages:
            role = message_role(message)
            out.append(
                {"role": role if role in ("user", "assistant", "system") else "user", "content": message_text(message)}
            )
        return out

    def _parse_sse(self, response: httpx.Response) -> Iterator[str]:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments, "event:"/"id:" fields
            data = line[5:].strip()
            if not data:
                continue
            if data == "[DONE]":
                return
            yield from self._content_from_event(data)

    def _content_from_event(self, data: str) -> Iterator[str]:
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ResponderError(
                f"The model server at {self.host} sent a malformed stream event. "
                "Check that OPENAI_BASE_URL points to an OpenAI-compatible API."
            ) from exc
        if not isinstance(event, dict):
            return
        if event.get("error"):
            raise ResponderError(
                f"The model server at {self.host} reported an error mid-stream: {self._error_detail(event)}."
            )
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or choice.get("message") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                yield content

    def _parse_json_body(self, response: httpx.Response) -> Iterator[str]:
        """Handle servers that ignore ``stream=True`` and answer with one JSON body."""
        yield from self._content_from_event(response.read().decode("utf-8", "replace"))

    def _http_error(self, response: httpx.Response) -> ResponderError:
        code = response.status_code
        detail = ""
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT:
                break
        text = body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
        try:
            detail = self._error_detail(json.loads(text))
        except (json.JSONDecodeError, AttributeError, TypeError):
            detail = self._redact(" ".join(text.split()))[:_ERROR_DETAIL_LIMIT]
        where = f"The model server at {self.host}"
        if code in (401, 403):
            message = (
                f"{where} rejected the API key (HTTP {code}). Check OPENAI_API_KEY "
                "(and OPENAI_BASE_URL if you use a non-OpenAI server)."
            )
        elif code == 404:
            message = (
                f"{where} returned HTTP 404 for {urlsplit(self.endpoint).path}. Check OPENAI_BASE_URL "
                f"(most servers expect it to end in /v1) and OPENAI_MODEL ({self.model!r})."
            )
        elif code == 429:
            message = (
                f"{where} is rate-limiting us or the quota is exhausted (HTTP 429). Wait and retry, or check your plan."
            )
        elif code >= 500:
            message = f"{where} had an internal error (HTTP {code}). Try again later or check the server's logs."
        else:
            message = (
                f"{where} rejected the request (HTTP {code}). Check OPENAI_MODEL ({self.model!r}) and OPENAI_BASE_URL."
            )
        if detail:
            message += f" Server said: {detail}"
        logger.warning("model server error: HTTP %d from %s", code, self.host)
        return ResponderError(message)

    def _error_detail(self, payload: Any) -> str:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            text = str(error.get("message") or error.get("code") or "")
        elif error:
            text = str(error)
        else:
            text = str(payload.get("message") or payload.get("detail") or "") if isinstance(payload, dict) else ""
        return self._redact(" ".join(text.split()))[:_ERROR_DETAIL_LIMIT]

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def make_responder(env: Mapping[str, str] = os.environ) -> Responder:
    """Return an :class:`OpenAIResponder` if ``OPENAI_API_KEY`` is set, else offline.

    ``OPENAI_BASE_URL`` and ``OPENAI_MODEL`` are optional; blank values fall
    back to the defaults.
    """
    api_key = (env.get("OPENAI_API_KEY") or "").strip()
    if not api_key:
        logger.info("OPENAI_API_KEY not set: using the offline deterministic responder")
        return OfflineResponder()
    responder = OpenAIResponder(
        api_key=api_key,
        base_url=(env.get("OPENAI_BASE_URL") or "").strip() or DEFAULT_OPENAI_BASE_URL,
        model=(env.get("OPENAI_MODEL") or "").strip() or DEFAULT_OPENAI_MODEL,
    )
    logger.info("using %s", describe_responder(responder))
    return responder


def describe_responder(responder: Any) -> str:
    """Return a short human-readable label for ``responder``."""
    if isinstance(responder, OfflineResponder):
        return "offline deterministic responder"
    if isinstance(responder, OpenAIResponder):
        return f"OpenAI-compatible model {responder.model} at {responder.host}"
    return f"custom responder ({type(responder).__name__})"


__all__ = [
    "DEFAULT_OPENAI_BASE_URL",
    "DEFAULT_OPENAI_MODEL",
    "DEFAULT_TIMEOUT_SECONDS",
    "OfflineResponder",
    "OpenAIResponder",
    "Responder",
    "ResponderError",
    "describe_responder",
    "make_responder",
]
