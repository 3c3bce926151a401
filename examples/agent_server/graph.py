"""A tiny chat graph that needs no API key: it echoes, and remembers what you tell it.

"my name is Ada" -> it remembers the name; "remember that I like tea" -> it remembers the fact;
"what is my name?" / "what do you remember?" -> it answers from the thread's messages alone, so
whatever it remembers comes from the checkpointer.
"""

from __future__ import annotations

import re

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.graph import START, MessagesState, StateGraph

_NAME = re.compile(r"\bmy name is\s+([^.,;!?\n]{1,60})", re.IGNORECASE)
_FACT = re.compile(r"\bremember that\s+([^\n]{1,200}?)[.!]?\s*$", re.IGNORECASE)
_ASK_NAME = re.compile(r"\bwhat(?: is|'s) my name\b", re.IGNORECASE)
_ASK_FACTS = re.compile(r"\bwhat do you remember\b", re.IGNORECASE)


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)


def _memory(messages: list[BaseMessage]) -> tuple[str | None, list[str]]:
    name: str | None = None
    facts: list[str] = []
    for message in messages:
        if message.type != "human":
            continue
        text = _text(message)
        if match := _NAME.search(text):
            name = match.group(1).strip()
        if match := _FACT.search(text):
            facts.append(match.group(1).strip())
    return name, facts


def reply(state: MessagesState) -> dict:
    messages = state["messages"]
    text = _text(messages[-1])
    name, facts = _memory(messages)
    turn = sum(1 for m in messages if m.type == "human")
    if _ASK_NAME.search(text):
        answer = f"Your name is {name}." if name else "You have not told me your name yet."
    elif _ASK_FACTS.search(text):
        known = ([f"your name is {name}"] if name else []) + facts
        answer = "I remember: " + "; ".join(known) + "." if known else "Nothing yet."
    elif _NAME.search(text):
        answer = f"Nice to meet you, {name}. I will remember that."
    elif _FACT.search(text):
        answer = f"Noted: {facts[-1]}."
    else:
        answer = f"(turn {turn}) You said: {text}"
    return {"messages": [AIMessage(content=answer)]}


builder = StateGraph(MessagesState)
builder.add_node("reply", reply)
builder.add_edge(START, "reply")
graph = builder.compile()
