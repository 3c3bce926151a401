"""A child process that chats with the demo graph on a HybridSaver and logs every completed turn.

Run by the crash and clean-stop tests::

    python tests/helpers/chat_writer.py --url URL --log FILE [--interval 0.5] [--prefix P] [--wait-go]

Each line of ``--log`` is a JSON object, written with one ``write`` and fsync'd before the next
turn starts, so that whatever the log holds survives ``kill -9`` of this process:

* ``{"event": "ready", "t": ...}`` once the saver is open (newest generation loaded),
* ``{"event": "turn", "t": ..., "thread": ..., "text": ...}`` after each turn returned,
* ``{"event": "backup", "t": ..., "generation": ..., "error": ...}`` after each backup run,
* ``{"event": "closed", "t": ...}`` after a clean ``close()`` (``--turns`` reached).

With ``--wait-go`` it imports everything, prints ``imported`` and waits for a line on stdin
before opening the saver, so a test can start the next child while the previous one runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--interval", default="0.5", help="backup interval in seconds, or 'none'")
    parser.add_argument("--prefix", default="w", help="thread ids and texts of this run start with it")
    parser.add_argument("--shared", default="shared", help="a thread every run continues (every 5th turn)")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds to sleep between turns")
    parser.add_argument("--turns", type=int, default=0, help="stop (and close) after this many turns; 0: never")
    parser.add_argument("--backup-each-turn", action="store_true")
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--budget", type=int, default=None, help="memory budget in bytes")
    parser.add_argument("--lease", type=float, default=None, help="lease seconds (default: the saver's)")
    args = parser.parse_args()

    from agent import build_graph, chat_turn
    from agent.responder import OfflineResponder
    from persistence import HybridSaver

    if args.wait_go:
        print("imported", flush=True)
        if not sys.stdin.readline():
            return 0
    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(event: str, **fields: object) -> None:
        os.write(fd, (json.dumps({"event": event, "t": time.time(), **fields}) + "\n").encode())
        os.fsync(fd)

    interval = None if args.interval == "none" else float(args.interval)
    extra = {} if args.lease is None else {"lease_seconds": args.lease}
    saver = HybridSaver.from_url(args.url, backup_interval=interval, memory_budget=args.budget, **extra)
    saver.add_listener(lambda run: log("backup", generation=run.generation, rows=run.rows, error=run.error))
    graph = build_graph(saver, OfflineResponder())
    log("ready", pid=os.getpid(), loaded=saver.loaded_generation)
    for i in itertools.count():
        if args.turns and i >= args.turns:
            break
        thread = args.shared if i % 5 == 4 else f"{args.prefix}-{'ab'[i % 2]}"
        text = f"my name is {args.prefix}x{i}"
        chat_turn(graph, thread, text)
        log("turn", thread=thread, text=text)
        if args.backup_each_turn:
            saver.backup()
        if args.pace:
            time.sleep(args.pace)
    saver.close()
    log("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
