"""Health probes for the Agent Server, and HybridSaver's metrics on its ``/metrics``.

``langgraph.json`` adds this app's routes to the server (``"http": {"app": "./health.py:app"}``):

    GET /health/live   -> 200 while the server process answers (PostgreSQL is not asked)
    GET /health/ready  -> saver.health() as JSON: 200 unless it is "down" (503), and 503 until the
                          server has opened its checkpointer

The server's own ``/ok`` checks its own runtime, not the checkpointer; these two are for the saver. The
server serves ``prometheus_client``'s default registry on ``/metrics``: registering a collector there
adds the saver's ``hybrid_saver_*`` metrics to it.
"""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from persistence.agent_server import current_saver
from persistence.metrics import SaverCollector


def _savers() -> list:
    saver = current_saver()
    return [saver] if saver is not None else []


REGISTRY.register(SaverCollector(source=_savers))


async def live(_request: Request) -> JSONResponse:
    # restarting the server does not bring PostgreSQL back: liveness never asks it
    return JSONResponse({"status": "alive"})


async def ready(_request: Request) -> JSONResponse:
    saver = current_saver()
    if saver is None:
        return JSONResponse({"status": "starting", "ready": False, "reasons": ["No checkpointer open yet."]}, 503)
    health = await asyncio.to_thread(saver.health)
    return JSONResponse(health.to_dict(), status_code=200 if health.ready else 503)


app = Starlette(routes=[Route("/health/live", live), Route("/health/ready", ready)])
