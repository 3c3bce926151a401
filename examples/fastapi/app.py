"""A small chat service on FastAPI with HybridSaver as the LangGraph checkpointer.

    DATABASE_URL=postgresql://user:password@localhost:5432/app \\
        uvicorn examples.fastapi.app:app --workers 3

Each worker process opens its own saver in the lifespan and closes it (final backup) on shutdown;
the workers are members of one fleet on DATABASE_URL, so a conversation can be continued by any of
them. Settings: DATABASE_URL (required), BACKUP_INTERVAL, BACKUP_RETENTION, MEMORY_BUDGET.

    POST /threads/{thread_id}/messages  {"text": "..."}  -> the reply and the whole conversation
    GET  /threads/{thread_id}                            -> the conversation (404 if there is none)

Every answer carries ``X-Worker-Pid`` and ``X-Saver-Member`` headers: which process served it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from pydantic import BaseModel, Field

from persistence import HybridSaver, ThreadBusy
from persistence.agent_server import saver_from_env


def reply(state: MessagesState) -> dict:
    """The bot: echoes the message with its turn number (no model, no API key)."""
    turn = sum(1 for m in state["messages"] if m.type == "human")
    return {"messages": [AIMessage(content=f"turn {turn}: {state['messages'][-1].content}")]}


def build_graph(saver: HybridSaver):
    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # from_url connects and loads threads, close() takes the final backup: both block, so off the loop
    saver = await asyncio.to_thread(saver_from_env)
    app.state.saver = saver
    app.state.graph = build_graph(saver)
    try:
        yield
    finally:
        await asyncio.to_thread(saver.close)


app = FastAPI(title="HybridSaver chat", lifespan=lifespan)


class NewMessage(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


def _messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    return [{"role": "user" if m.type == "human" else "assistant", "content": str(m.content)} for m in messages]


def _config(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id}}


@app.middleware("http")
async def who_served(request: Request, call_next):
    response: Response = await call_next(request)
    response.headers["X-Worker-Pid"] = str(os.getpid())
    saver: HybridSaver | None = getattr(request.app.state, "saver", None)
    if saver is not None and saver.instance_id is not None:
        response.headers["X-Saver-Member"] = str(saver.instance_id)
    return response


@app.exception_handler(ThreadBusy)
async def busy(_request: Request, exc: ThreadBusy) -> JSONResponse:
    # another worker holds the thread and did not hand it over in time: the client may retry
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


@app.post("/threads/{thread_id}/messages")
async def post_message(thread_id: str, body: NewMessage, request: Request) -> dict:
    graph = request.app.state.graph
    state = await graph.ainvoke({"messages": [HumanMessage(content=body.text)]}, _config(thread_id))
    messages = state["messages"]
    return {"thread_id": thread_id, "reply": str(messages[-1].content), "messages": _messages(messages)}


@app.get("/threads/{thread_id}")
async def get_thread(thread_id: str, request: Request) -> dict:
    snapshot = await request.app.state.graph.aget_state(_config(thread_id))
    messages = snapshot.values.get("messages") if snapshot.values else None
    if not messages:
        raise HTTPException(status_code=404, detail=f"no conversation {thread_id!r}")
    return {"thread_id": thread_id, "messages": _messages(messages)}
