"""The fleet: handoff cost, throughput with more members, and how many generations the store takes.

* handoff: a turn on a thread another live member held (it backs the thread up, evicts it and
  releases it; this member claims and loads it) against a turn on a resident thread; two members in
  this process, so the same machine and moment serve both;
* throughput: chat turns per second served by one member process, then by two, with sticky routing
  (a thread always goes to the same member), from client threads in this process;
* backups: four member processes backing up every 100 ms while they serve turns; generations the
  store accepted per second (they are numbered in commit order across the fleet).
"""

from __future__ import annotations

import http.client
import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from agent import OfflineResponder, build_graph, chat_turn
from bench.database import Database
from bench.settings import Settings
from bench.stats import clock, summary
from bench.workload import user_text
from persistence import HybridSaver

ROOT = Path(__file__).resolve().parent.parent
MEMBER = ROOT / "tests" / "helpers" / "member.py"


def run_fleet(db: Database, settings: Settings, log: Any) -> dict[str, Any]:
    return {
        "handoff": _handoff(db, settings, log),
        "throughput": _throughput(db, settings, log),
        "backups": _backups(db, settings, log),
    }


def _handoff(db: Database, settings: Settings, log: Any) -> dict[str, Any]:
    with db.database("handoff") as url:
        a = HybridSaver.from_url(url, backup_interval=None, handle_signals=False)
        b = HybridSaver.from_url(url, backup_interval=None, handle_signals=False)
        try:
            graphs = [build_graph(a, OfflineResponder()), build_graph(b, OfflineResponder())]
            holder: dict[str, int] = {}
            local: list[float] = []
            moved: list[float] = []
            for k in range(settings.handoff_samples):
                tid = f"h{k % 10}"
                if tid not in holder:
                    chat_turn(graphs[0], tid, user_text(k, 0))
                    holder[tid] = 0
                other = 1 - holder[tid]
                start = clock()
                chat_turn(graphs[other], tid, user_text(k, 1))  # the other member held it: a handoff
                moved.append(clock() - start)
                start = clock()
                chat_turn(graphs[other], tid, user_text(k, 2))  # resident here now
                local.append(clock() - start)
                holder[tid] = other
        finally:
            a.close()
            b.close()
    out = {"handoff_turn": summary(moved[2:], 1e3), "local_turn": summary(local[2:], 1e3)}
    out["ratio"] = out["handoff_turn"]["median"] / out["local_turn"]["median"]
    log(
        f"  handoff turn {out['handoff_turn']['median']:.2f} ms vs resident {out['local_turn']['median']:.2f} ms "
        f"(x{out['ratio']:.2f})"
    )
    return out


class _Members:
    """Member processes serving turns over HTTP (``tests/helpers/member.py``)."""

    def __init__(self, url: str, n: int, interval: str) -> None:
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        for _ in range(n):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(MEMBER), "--url", url, "--interval", interval, "--handoff", "10"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    cwd=ROOT,
                )
            )
        for proc in self.procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("ready"):
                self.close()
                raise RuntimeError(f"a member did not start: {line!r}")
            self.ports.append(int(line.split()[1]))

    def backup(self) -> None:
        for port in self.ports:
            httpx.post(f"http://127.0.0.1:{port}/backup", json={}, timeout=60).raise_for_status()

    def close(self) -> None:
        for port, proc in zip(self.ports, self.procs, strict=False):
            try:
                httpx.post(f"http://127.0.0.1:{port}/close", json={}, timeout=10)
            except httpx.HTTPError:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _drive(ports: list[int], seconds: float, clients: int, prefix: str) -> tuple[int, int]:
    """Send turns from ``clients`` threads for ``seconds``; thread i of a client always goes to the
    same member (sticky). Returns (turns served, errors)."""
    served = itertools.count()
    errors = itertools.count()
    deadline = time.monotonic() + seconds

    def client(c: int) -> None:
        # the standard library's client on one kept-alive connection per member: the driver's own CPU
        # per turn is small beside the members' (it shares the machine's two cores with them)
        conns = {port: http.client.HTTPConnection("127.0.0.1", port, timeout=60) for port in ports}
        try:
            for k in itertools.count():
                if time.monotonic() > deadline:
                    return
                # 8 turns per thread, then a new one; numbered so that each member always has the same
                # share of the clients (c * 1000 + k // 8 sent every client to the same member at once)
                thread = (k // 8) * clients + c
                conn = conns[ports[thread % len(ports)]]
                body = json.dumps({"thread": f"{prefix}{thread}", "text": user_text(thread, k % 8)})
                conn.request("POST", "/turn", body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                next(served if reply.status == 200 else errors)
        finally:
            for conn in conns.values():
                conn.close()

    runners = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for r in runners:
        r.start()
    for r in runners:
        r.join()
    return next(served), next(errors)


#: seconds of one measuring window of the throughput comparison
THROUGHPUT_WINDOW = 2.0


def _throughput(db: Database, settings: Settings, log: Any) -> dict[str, Any]:
    """One member against two, both fleets up at once and driven in turns, window by window (the
    order alternating), so a noisy stretch of this shared machine hits both alike; the ratio is that
    of all the turns each served."""
    windows = max(1, round(settings.fleet_seconds / THROUGHPUT_WINDOW))
    window = settings.fleet_seconds / windows
    with db.database("throughput1") as url1, db.database("throughput2") as url2:
        fleets = {1: _Members(url1, 1, "1")}
        try:
            fleets[2] = _Members(url2, 2, "1")
            for n, members in fleets.items():
                _drive(members.ports, 1.0, settings.fleet_clients * n, f"warm{n}-")
                members.backup()
            served = {n: [0, 0] for n in fleets}
            pairs: list[float] = []
            for w in range(windows):
                got: dict[int, int] = {}
                for n in (1, 2) if w % 2 == 0 else (2, 1):
                    # the same load per member: each member of either fleet serves fleet_clients clients
                    turns, errors = _drive(fleets[n].ports, window, settings.fleet_clients * n, f"t{w}-")
                    fleets[n].backup()  # its changes go now, not by its schedule during the other's window
                    served[n][0] += turns
                    served[n][1] += errors
                    got[n] = turns
                pairs.append(got[2] / got[1] if got[1] else float("nan"))
        finally:
            for members in fleets.values():
                members.close()
    out: dict[str, Any] = {}
    for n, (turns, errors) in served.items():
        out[f"members_{n}"] = {"turns": turns, "errors": errors, "turns_per_s": turns / (window * windows)}
        log(f"  {n} member(s), sticky routing: {turns / (window * windows):.1f} turns/s ({errors} errors)")
    out["ratio"] = out["members_2"]["turns_per_s"] / out["members_1"]["turns_per_s"]
    out["windows"] = {"seconds": window, "ratios": pairs}
    log(f"  two / one: {out['ratio']:.2f} (windows of {window:.1f} s: {', '.join(f'{r:.2f}' for r in pairs)})")
    return out


def _backups(db: Database, settings: Settings, log: Any) -> dict[str, Any]:
    with db.database("fleetbackups") as url:
        members = _Members(url, 4, "0.1")
        try:
            from psycopg_pool import ConnectionPool

            from persistence.store import Store

            with ConnectionPool(url, min_size=1, max_size=1) as pool:
                store = Store(pool)
                before = store.latest_generation() or 0
                start = clock()
                turns, errors = _drive(members.ports, settings.fleet_seconds, 4, "b")
                seconds = clock() - start
                after = store.latest_generation() or 0
                runs = store.runs.runs(limit=20_000)
        finally:
            members.close()
    recent = [r for r in runs if r["trigger"] == "scheduled"]
    failed = sum(1 for r in recent if r["error"])
    durations = [(r["finished_at"] - r["started_at"]).total_seconds() for r in recent if r["generation"]]
    out = {
        "members": 4,
        "interval_s": 0.1,
        "seconds": seconds,
        "turns": turns,
        "errors": errors,
        "generations": after - before,
        "generations_per_s": (after - before) / seconds,
        "failed_runs": failed,
        "run_ms_median": statistics.median(durations) * 1e3 if durations else None,
    }
    log(
        f"  4 members backing up every 100 ms: {out['generations_per_s']:.1f} generations/s accepted, "
        f"{failed} failed runs, {turns} turns served"
    )
    return out


__all__ = ["run_fleet"]
