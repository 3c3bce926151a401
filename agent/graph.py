"""The demo chat graph: one ``respond`` node over ``MessagesState``.

The responder is wrapped in a tiny LangChain chat model so that
``graph.stream(..., stream_mode="messages")`` delivers its tokens as they are
produced (LangGraph picks up chat-model token callbacks automatically).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph

from agent.messages import message_role, message_text
from agent.responder import Responder, make_responder

logger = logging.getLogger(__name__)

RESPOND_NODE = "respond"
TITLE_MAX_CHARS = 60


class ChatState(MessagesState):
    """``MessagesState`` plus the thread ``title`` (first user message, truncated)."""

    title: str


class ResponderChatModel(BaseChatModel):
    """Adapts a :class:`~agent.responder.Responder` to LangChain's chat-model API."""

    responder: Any

    @property
    def _llm_type(self) -> str:
        return "agent-responder"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.responder.invoke(messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for token in self.responder.stream(messages):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def thread_title(messages: Sequence[Any]) -> str:
    """Return the first user message's text, whitespace-collapsed, at most 60 chars.

    Returns ``""`` when the thread has no user message yet. Longer texts are
    cut to 59 characters plus an ellipsis.
    """
    for message in messages:
        if message_role(message) == "user":
            text = " ".join(message_text(message, TITLE_MAX_CHARS * 4).split())
            if len(text) > TITLE_MAX_CHARS:
                return text[: TITLE_MAX_CHARS - 1].rstrip() + "…"
            return text
    return ""


def thread_config(thread_id: str) -> RunnableConfig:
    """Return the run config addressing ``thread_id`` in the checkpointer."""
    if not thread_id:
        raise ValueError("thread_id must be a non-empty string")
    return {"configurable": {"thread_id": thread_id}}


def build_graph(checkpointer: Any, responder: Responder | None = None) -> Any:
    """Compile the chat graph with ``checkpointer``.

    ``responder`` defaults to :func:`~agent.responder.make_responder` (OpenAI
    when ``OPENAI_API_KEY`` is set, otherwise offline). The single node
    ``respond`` passes the whole message history to the responder, appends its
    reply as an ``AIMessage`` and sets ``title`` on the first turn.
    """
    model = ResponderChatModel(responder=responder if responder is not None else make_responder())

    def respond(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
        messages = state["messages"]
        reply = model.invoke(messages, config)
        update: dict[str, Any] = {"messages": [reply]}
        if not state.get("title"):
            update["title"] = thread_title(messages)
        return update

    builder = StateGraph(ChatState)
    builder.add_node(RESPOND_NODE, respond)
    builder.add_edge(START, RESPOND_NODE)
    builder.add_edge(RESPOND_NODE, END)
    return builder.compile(checkpointer=checkpointer)


def _turn_input(text: str) -> dict[str, list[BaseMessage]]:
    return {"messages": [HumanMessage(content=text)]}


def chat_turn(graph: Any, thread_id: str, text: str) -> str:
    """Run one turn in ``thread_id`` and return the reply text."""
    result = graph.invoke(_turn_input(text), thread_config(thread_id))
    reply = message_text(result["messages"][-1])
    logger.debug("thread %s: %d-char turn, %d-char reply", thread_id, len(text), len(reply))
    return reply


def stream_turn(graph: Any, thread_id: str, text: str) -> Iterator[str]:
    """Run one turn in ``thread_id``, yielding reply text chunks as they arrive.

    Consume the generator fully: the turn is checkpointed when the node
    finishes, so stopping early may leave the reply unsaved.
    """
    streamed = False
    for message, metadata in graph.stream(_turn_input(text), thread_config(thread_id), stream_mode="messages"):
        if metadata.get("langgraph_node") != RESPOND_NODE:
            continue
        if isinstance(message, AIMessageChunk):
            chunk = message_text(message)
            if chunk:
                streamed = True
                yield chunk
        elif isinstance(message, AIMessage) and not streamed:
            # A responder that doesn't stream: the node's output arrives whole.
            chunk = message_text(message)
            if chunk:
                yield chunk


__all__ = [
    "RESPOND_NODE",
    "TITLE_MAX_CHARS",
    "ChatState",
    "ResponderChatModel",
    "build_graph",
    "chat_turn",
    "stream_turn",
    "thread_config",
    "thread_title",
]
