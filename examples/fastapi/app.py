"""A small chat service on FastAPI with HybridSaver as the LangGraph checkpointer.

    DATABASE_URL=postgresql://user:password@localhost:5432/app \\
        uvicorn examples.fastapi.app:app --workers 3

Each worker process opens its own saver in the lifespan and closes it (final backup) on shutdown;
the workers are members of one fleet on DATABASE_URL, so a conversation can be continued by any of
them. Settings: DATABASE_URL (required), BACKUP_INTERVAL, BACKUP_RETENTION, MEMORY_BUDGET.

    POST /threads/{thread_id}/messages  {"text": "..."}  -> the reply and the whole conversation
    GET  /threads/{thread_id}                            -> the conversation (404 if there is none)
    GET  /metrics                                        -> Prometheus metrics of this worker's saver
    GET  /health/live, /health/ready                     -> liveness and readiness probes (saver.health())

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
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, Field

from persistence import DatabaseUnavailable, HybridSaver, ThreadBusy
from persistence.agent_server import saver_from_env
from persistence.metrics import SaverCollector


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
    # read at each scrape of /metrics: the saver's figures, next to prometheus_client's process metrics
    collector = SaverCollector(saver)
    REGISTRY.register(collector)
    try:
        yield
    finally:
        REGISTRY.unregister(collector)
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


@app.exception_handler(DatabaseUnavailable)
async def database_unavailable(_request: Request, exc: DatabaseUnavailable) -> JSONResponse:
    # PostgreSQL is down and the thread is cold, or this worker's lease lapsed (another worker may take
    # its threads): nothing was written, the client may retry once the database is back
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


@app.get("/metrics")
async def metrics() -> Response:
    # a scrape asks PostgreSQL one or two short queries: off the event loop
    return Response(await asyncio.to_thread(generate_latest, REGISTRY), media_type=CONTENT_TYPE_LATEST)


@app.get("/health/live")
async def live(request: Request) -> JSONResponse:
    """Liveness: the process and its event loop answer. PostgreSQL is not asked: restarting a worker does
    not bring the database back, and would throw away the threads it serves from memory meanwhile."""
    saver: HybridSaver = request.app.state.saver
    if saver.closed:
        return JSONResponse({"status": "closed"}, status_code=503)
    return JSONResponse({"status": "alive", "member": saver.instance_id})


@app.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 unless ``saver.health()`` is ``down`` (closed, never reached PostgreSQL, or its lease
    lapsed while others may take its threads). ``degraded`` (PostgreSQL down, backups lagging, memory over
    the budget) stays ready: this worker still serves the threads it holds, which no other worker can."""
    health = await asyncio.to_thread(request.app.state.saver.health)
    return JSONResponse(health.to_dict(), status_code=200 if health.ready else 503)
