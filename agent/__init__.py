"""Demo LangGraph chat agent used by the checkpoint-saver admin dashboard."""

from agent.graph import build_graph, chat_turn, stream_turn, thread_config, thread_title
from agent.responder import (
    OfflineResponder,
    OpenAIResponder,
    Responder,
    ResponderError,
    describe_responder,
    make_responder,
)

__all__ = [
    "OfflineResponder",
    "OpenAIResponder",
    "Responder",
    "ResponderError",
    "build_graph",
    "chat_turn",
    "describe_responder",
    "make_responder",
    "stream_turn",
    "thread_config",
    "thread_title",
]
