"""An app process of a fleet: a HybridSaver member serving chat turns over HTTP.

Run by the fleet tests and benchmarks::

    python tests/helpers/member.py --url URL [--interval 0.5] [--budget BYTES] [--handoff 2] [--log FILE]

It prints ``ready <port> <instance_id>`` once it serves. Endpoints (JSON):

* ``POST /turn {"thread": ..., "text": ...}`` -> ``{"reply": ..., "seen": user messages after it}``; 409 with ``{"error", "owner"}`` when
  another member holds the thread (ThreadBusy), 503 when PostgreSQL cannot be reached.
* ``GET /texts?thread=ID`` -> the user messages of the thread (loading it here).
* ``POST /backup`` -> the run; ``POST /restore {"generation", "thread"}`` -> the result.
* ``GET /stats`` -> the saver's figures; ``POST /close`` -> a clean close (final backup), then exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--interval", default="0.5", help="backup interval in seconds, or 'none'")
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--handoff", type=float, default=2.0)
    parser.add_argument("--lease", type=float, default=None, help="lease seconds (default: the saver's)")
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        filename=args.log,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    from langchain_core.messages import HumanMessage

    from agent import build_graph, chat_turn, thread_config
    from agent.responder import OfflineResponder
    from persistence import DatabaseUnavailable, HybridSaver, ThreadBusy, ThreadRestored

    interval = None if args.interval == "none" else float(args.interval)
    extra = {} if args.lease is None else {"lease_seconds": args.lease}
    saver = HybridSaver.from_url(
        args.url, backup_interval=interval, memory_budget=args.budget, handoff_timeout=args.handoff, **extra
    )
    graph = build_graph(saver, OfflineResponder())
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client's turns reuse one connection (and one thread here)
        disable_nagle_algorithm = True  # a reply in two writes would otherwise wait for a delayed ACK

        def log_message(self, *_args: object) -> None:
            return

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _guard(self, action) -> None:  # type: ignore[no-untyped-def]
            try:
                self._send(200, action())
            except ThreadBusy as exc:
                self._send(409, {"error": str(exc), "owner": exc.owner})
            except ThreadRestored as exc:
                self._send(409, {"error": str(exc), "restored": True})
            except DatabaseUnavailable as exc:
                self._send(503, {"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the driver gets the error, the member keeps serving
                logging.exception("request failed")
                self._send(500, {"error": f"{type(exc).__name__}: {exc}"})

        def do_POST(self) -> None:  # noqa: N802
            path = urlparse(self.path).path
            body = self._body()
            if path == "/turn":

                def turn() -> dict:
                    reply = chat_turn(graph, body["thread"], body["text"])
                    # how many user messages the state this turn built on holds (stale history: fewer)
                    values = graph.get_state(thread_config(body["thread"])).values
                    seen = sum(isinstance(m, HumanMessage) for m in values.get("messages", []))
                    return {"reply": reply, "seen": seen}

                self._guard(turn)
            elif path == "/backup":
                self._guard(lambda: _run(saver.backup(trigger="manual")))
            elif path == "/restore":
                self._guard(lambda: _result(saver.restore(int(body["generation"]), body.get("thread"))))
            elif path == "/close":
                self._send(200, {"closing": True})
                done.set()
            else:
                self._send(404, {"error": path})

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path == "/texts":
                thread = parse_qs(url.query)["thread"][0]

                def texts() -> dict:
                    values = graph.get_state(thread_config(thread)).values
                    return {"texts": [m.content for m in values.get("messages", []) if isinstance(m, HumanMessage)]}

                self._guard(texts)
            elif url.path == "/stats":
                self._guard(lambda: {**saver.stats().__dict__, "last_backup": None, "last_success": None})
            else:
                self._send(404, {"error": url.path})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {server.server_address[1]} {saver.instance_id} {os.getpid()}", flush=True)
    done.wait()
    server.shutdown()
    saver.close()
    return 0


def _run(run: object) -> dict:
    return {k: getattr(run, k) for k in ("generation", "rows", "error", "empty")}


def _result(result: object) -> dict:
    return {k: getattr(result, k) for k in ("generation", "restored_from", "undo_generation", "threads")}


if __name__ == "__main__":
    sys.exit(main())
