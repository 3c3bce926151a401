"""Tests for the demo chat agent (no network: OpenAI tests use a local server)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent import (
    OfflineResponder,
    OpenAIResponder,
    ResponderError,
    build_graph,
    chat_turn,
    describe_responder,
    make_responder,
    stream_turn,
    thread_config,
    thread_title,
)

GOOD_KEY = "sk-test-good-0123456789"
GATED_KEY = "sk-test-gated-0123456789"
BAD_KEY = "sk-test-SECRET-do-not-leak-42"
TOKENS = ["Hel", "lo", " from", " the", " local", " model", "!"]


@pytest.fixture
def graph() -> Any:
    return build_graph(InMemorySaver(), OfflineResponder())


def converse(graph: Any, thread_id: str, *texts: str) -> list[str]:
    return [chat_turn(graph, thread_id, text) for text in texts]


# --------------------------------------------------------------------------
# Offline responder through the graph
# --------------------------------------------------------------------------


def test_name_recall_across_turns(graph: Any) -> None:
    converse(graph, "a", "my name is Ana", "what is the capital of France?")
    assert "Ana" in chat_turn(graph, "a", "what is my name?")


def test_threads_are_isolated(graph: Any) -> None:
    chat_turn(graph, "thread-a", "My name is Ana.")
    reply_b = chat_turn(graph, "thread-b", "What is my name?")
    assert "Ana" not in reply_b
    assert "don't know your name" in reply_b
    assert "Ana" in chat_turn(graph, "thread-a", "what is my name")


def test_latest_fact_wins(graph: Any) -> None:
    converse(graph, "t", "my name is Ana", "I live in Lisbon", "Actually, my name is Beatriz. I live in Porto now")
    assert chat_turn(graph, "t", "what is my name?") == "Your name is Beatriz."
    assert chat_turn(graph, "t", "where do I live?") == "You live in Porto."


def test_facts_case_and_punctuation_tolerant(graph: Any) -> None:
    converse(
        graph,
        "t",
        "MY NAME IS ana!!!",
        "i live in Lisbon...",
        "my favourite colour is green",
        "I am 32 years old and I'm a teacher",
        "Remember that the dentist is on Friday at 3.30",
    )
    assert chat_turn(graph, "t", "WHAT IS MY NAME") == "Your name is Ana."
    assert chat_turn(graph, "t", "Where do I live???") == "You live in Lisbon."
    assert chat_turn(graph, "t", "what's my favorite color?") == "Your favorite color is green."
    assert chat_turn(graph, "t", "how old am i") == "You are 32 years old."
    assert chat_turn(graph, "t", "what do I do?") == "You are a teacher."
    assert "dentist is on Friday at 3.30" in chat_turn(graph, "t", "What did I ask you to remember?")
    summary = chat_turn(graph, "t", "What do you know about me?")
    for fragment in ("Ana", "Lisbon", "green", "32", "teacher", "dentist"):
        assert fragment in summary


def test_greeting_uses_name_and_unknown_mentions_turn(graph: Any) -> None:
    assert chat_turn(graph, "t", "hi").startswith("Hello!")
    chat_turn(graph, "t", "my name is Ana")
    assert chat_turn(graph, "t", "Hello there").startswith("Hello, Ana!")
    reply = chat_turn(graph, "t", "what's the weather like?")
    assert "This is message 4 in this thread" in reply


def test_responder_gets_full_history_and_title_is_set() -> None:
    seen: list[list[Any]] = []

    class Recording(OfflineResponder):
        def invoke(self, messages: Any) -> str:
            seen.append(list(messages))
            return super().invoke(messages)

    graph = build_graph(InMemorySaver(), Recording())
    converse(graph, "t", "  my   name is Ana  ", "second", "third")
    assert [len(history) for history in seen] == [1, 3, 5]
    state = graph.get_state(thread_config("t")).values
    assert state["title"] == "my name is Ana"
    assert [type(m) for m in state["messages"]] == [HumanMessage, AIMessage] * 3


def test_thread_title_helper() -> None:
    assert thread_title([]) == ""
    assert thread_title([AIMessage("hi"), HumanMessage("first"), HumanMessage("second")]) == "first"
    title = thread_title([{"role": "user", "content": "word " * 100}])
    assert len(title) <= 60
    assert title.startswith("word word")
    assert thread_title([HumanMessage("x" * 10_000_000)]) == "x" * 59 + "…"


def test_stream_turn_yields_chunks_matching_invoke(graph: Any) -> None:
    history = ["my name is Ana", "I live in Lisbon"]
    converse(graph, "streamed", *history)
    converse(graph, "invoked", *history)
    question = "What do you know about me?"
    chunks = list(stream_turn(graph, "streamed", question))
    assert len(chunks) > 1
    assert "".join(chunks) == chat_turn(graph, "invoked", question)
    # The streamed reply is checkpointed too.
    last = graph.get_state(thread_config("streamed")).values["messages"][-1]
    assert isinstance(last, AIMessage) and last.content == "".join(chunks)


def test_offline_stream_concatenates_to_invoke() -> None:
    responder = OfflineResponder()
    messages = [HumanMessage("my name is Ana"), AIMessage("ok"), HumanMessage("hi! what is my name?")]
    chunks = list(responder.stream(messages))
    assert len(chunks) > 1
    assert "".join(chunks) == responder.invoke(messages)


def test_deterministic() -> None:
    script = ["hello", "my name is Ana", "I'm from Porto", "remember that I like tea", "who am I?", "what's up?"]
    first = converse(build_graph(InMemorySaver(), OfflineResponder()), "x", *script)
    second = converse(build_graph(InMemorySaver(), OfflineResponder()), "y", *script)
    assert first == second
    messages = [HumanMessage("my name is Ana"), HumanMessage("what do you know about me")]
    assert len({OfflineResponder().invoke(messages) for _ in range(5)}) == 1


def test_huge_message_is_fast(graph: Any) -> None:
    huge = "my name is Zed. " + "blah " * 2_000_000  # 10 MB
    assert len(huge) >= 10_000_000
    start = time.perf_counter()
    chat_turn(graph, "big", huge)
    reply = chat_turn(graph, "big", "what is my name?")
    elapsed = time.perf_counter() - start
    assert reply == "Your name is Zed."
    assert elapsed < 2.0, f"two turns with a 10 MB message took {elapsed:.2f} s"

    start = time.perf_counter()
    OfflineResponder().invoke([HumanMessage("?" * 10_000_000), HumanMessage("x" * 10_000_000)])
    assert time.perf_counter() - start < 2.0


def test_responder_errors_propagate_from_graph() -> None:
    class Broken(OfflineResponder):
        def stream(self, messages: Any) -> Iterator[str]:
            raise ResponderError("model server is down")

        def invoke(self, messages: Any) -> str:
            raise ResponderError("model server is down")

    graph = build_graph(InMemorySaver(), Broken())
    with pytest.raises(ResponderError, match="down"):
        chat_turn(graph, "t", "hi")
    with pytest.raises(ResponderError, match="down"):
        list(stream_turn(graph, "t", "hi"))


def test_empty_thread_id_rejected(graph: Any) -> None:
    with pytest.raises(ValueError):
        chat_turn(graph, "", "hi")


# --------------------------------------------------------------------------
# Responder selection
# --------------------------------------------------------------------------


def test_make_responder_selection() -> None:
    assert isinstance(make_responder({}), OfflineResponder)
    assert isinstance(make_responder({"OPENAI_API_KEY": ""}), OfflineResponder)
    assert isinstance(make_responder({"OPENAI_API_KEY": "   "}), OfflineResponder)

    default = make_responder({"OPENAI_API_KEY": BAD_KEY})
    assert isinstance(default, OpenAIResponder)
    assert default.model == "gpt-4o-mini"
    assert default.base_url == "https://api.openai.com/v1"
    assert describe_responder(default) == "OpenAI-compatible model gpt-4o-mini at api.openai.com"

    custom = make_responder(
        {"OPENAI_API_KEY": BAD_KEY, "OPENAI_BASE_URL": "http://127.0.0.1:8001/v1/", "OPENAI_MODEL": "llama3"}
    )
    assert isinstance(custom, OpenAIResponder)
    assert custom.endpoint == "http://127.0.0.1:8001/v1/chat/completions"
    assert describe_responder(custom) == "OpenAI-compatible model llama3 at 127.0.0.1:8001"
    assert BAD_KEY not in repr(custom)
    assert describe_responder(OfflineResponder()) == "offline deterministic responder"


def test_bad_base_url_is_a_clear_error() -> None:
    with pytest.raises(ResponderError, match="OPENAI_BASE_URL"):
        make_responder({"OPENAI_API_KEY": BAD_KEY, "OPENAI_BASE_URL": "localhost:8000"})


# --------------------------------------------------------------------------
# OpenAI-compatible responder against a local SSE server
# --------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.server.requests.append(body)
        auth = self.headers.get("Authorization", "")
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
        elif auth not in (f"Bearer {GOOD_KEY}", f"Bearer {GATED_KEY}"):
            key = auth.removeprefix("Bearer ")
            self._json(401, {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}})
        else:
            self._sse(gated=auth == f"Bearer {GATED_KEY}")

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, gated: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for index, token in enumerate(TOKENS):
            self.wfile.write(b": keep-alive comment\n\n")
            self._event({"choices": [{"index": 0, "delta": {"content": token}}]})
            if gated and index == 0:
                # Only continue once the client has seen the first token.
                self.server.released_in_time = self.server.release.wait(timeout=5)
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


class _FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.released_in_time: bool | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture
def fake_openai() -> Iterator[_FakeOpenAI]:
    server = _FakeOpenAI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_openai_streams_sse_tokens(fake_openai: _FakeOpenAI) -> None:
    responder = OpenAIResponder(GOOD_KEY, base_url=fake_openai.base_url, model="tiny-model")
    messages = [HumanMessage("my name is Ana"), AIMessage("Nice!"), HumanMessage("what is my name?")]
    assert list(responder.stream(messages)) == TOKENS
    assert responder.invoke(messages) == "".join(TOKENS)
    request = fake_openai.requests[0]
    assert request["model"] == "tiny-model"
    assert request["stream"] is True
    assert request["messages"] == [
        {"role": "user", "content": "my name is Ana"},
        {"role": "assistant", "content": "Nice!"},
        {"role": "user", "content": "what is my name?"},
    ]


def test_openai_tokens_stream_incrementally_through_graph(fake_openai: _FakeOpenAI) -> None:
    graph = build_graph(InMemorySaver(), OpenAIResponder(GATED_KEY, base_url=fake_openai.base_url))
    chunks = stream_turn(graph, "t", "hi")
    first = next(chunks)  # the server is still holding back the remaining tokens here
    fake_openai.release.set()
    rest = list(chunks)
    assert [first, *rest] == TOKENS
    assert fake_openai.released_in_time is True
    assert graph.get_state(thread_config("t")).values["messages"][-1].content == "".join(TOKENS)


def test_openai_401_is_a_clear_error_without_the_key(fake_openai: _FakeOpenAI) -> None:
    responder = make_responder({"OPENAI_API_KEY": BAD_KEY, "OPENAI_BASE_URL": fake_openai.base_url})
    with pytest.raises(ResponderError) as excinfo:
        responder.invoke([HumanMessage("hi")])
    message = str(excinfo.value)
    assert "401" in message
    assert "OPENAI_API_KEY" in message
    assert BAD_KEY not in message
    assert "SECRET" not in message


def test_openai_404_mentions_base_url(fake_openai: _FakeOpenAI) -> None:
    responder = OpenAIResponder(GOOD_KEY, base_url=fake_openai.base_url.removesuffix("/v1"))
    with pytest.raises(ResponderError, match="404.*OPENAI_BASE_URL"):
        responder.invoke([HumanMessage("hi")])


def test_openai_connection_refused_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    responder = OpenAIResponder(BAD_KEY, base_url=f"http://127.0.0.1:{port}/v1", timeout=5)
    with pytest.raises(ResponderError, match="Could not connect") as excinfo:
        responder.invoke([HumanMessage("hi")])
    assert BAD_KEY not in str(excinfo.value)
