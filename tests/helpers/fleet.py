"""Member processes of a fleet (``tests/helpers/member.py``) and a driver that sends them chat turns."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
MEMBER = ROOT / "tests" / "helpers" / "member.py"


@dataclass
class MemberProc:
    """One member process and how to talk to it."""

    proc: subprocess.Popen
    port: int
    instance_id: int
    log: Path
    client: httpx.Client = field(repr=False)
    dead: bool = False

    def post(self, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> httpx.Response:
        return self.client.post(f"http://127.0.0.1:{self.port}{path}", json=body or {}, timeout=timeout)

    def get(self, path: str, timeout: float = 60.0, **params: str) -> httpx.Response:
        return self.client.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=timeout)

    def texts(self, thread: str) -> list[str]:
        reply = self.get("/texts", thread=thread)
        assert reply.status_code == 200, reply.text
        return reply.json()["texts"]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def close(self) -> None:
        if self.dead or self.proc.poll() is not None:
            return
        try:
            self.post("/close", timeout=10)
        except httpx.HTTPError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.dead = True

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.dead = True

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@contextmanager
def fleet_of(url: str, folder: Path, **defaults: Any) -> Iterator[Callable[..., list[MemberProc]]]:
    """A starter of member processes with ``defaults`` for their options; stops them all at the end."""
    started: list[MemberProc] = []

    def start(n: int, **options: Any) -> list[MemberProc]:
        members = start_members(url, n, folder, **{**defaults, **options})
        started.extend(members)
        return members

    try:
        yield start
    finally:
        stop_all(started)


def start_members(url: str, n: int, folder: Path, **options: Any) -> list[MemberProc]:
    """Start ``n`` members at once and wait until each serves."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore", HYBRID_SAVER_NO_SIGNALS="1")
    procs = []
    for i in range(n):
        log = folder / f"member{len(list(folder.glob('member*.log')))}_{i}.log"
        cmd = [sys.executable, str(MEMBER), "--url", url, "--log", str(log)]
        for key, value in options.items():
            cmd += [f"--{key}", str(value)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        procs.append((proc, log))
    members = []
    for proc, log in procs:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("ready"):
            proc.kill()
            raise AssertionError(f"a member did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        _, port, instance_id, _pid = line.split()
        members.append(MemberProc(proc, int(port), int(instance_id), log, httpx.Client()))
    return members


@dataclass
class Turn:
    thread: str
    text: str
    member: int
    started: float
    finished: float | None = None
    #: "ok", "busy" (ThreadBusy, retried), "unavailable" (503, retried), "uncertain" (the member died
    #: during the request)
    outcome: str = "ok"
    #: user messages in the thread's state right after the turn, as the member answered
    seen: int | None = None


@dataclass
class Driver:
    """Sends numbered turns for ``threads`` to random live members, never two turns of one thread at
    once; a turn refused with ThreadBusy is retried, a turn whose member died is not (its outcome is
    unknown to the client, as it would be to any app's client)."""

    members: list[MemberProc]
    threads: list[str]
    seed: int = 0
    workers: int = 4
    log: list[Turn] = field(default_factory=list)
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(
        self,
        turns_per_thread: int,
        *,
        pause: threading.Event | None = None,
        stop: threading.Event | None = None,
        on_progress: Any = None,
    ) -> None:
        rng = random.Random(self.seed)
        todo = {t: 0 for t in self.threads}
        free = list(self.threads)
        cond = threading.Condition(self._lock)
        errors: list[BaseException] = []

        def worker(worker_rng: random.Random) -> None:
            while True:
                with cond:
                    while not free and any(n < turns_per_thread for n in todo.values()):
                        cond.wait(0.1)
                    if not free or (stop is not None and stop.is_set()):
                        return
                    thread = free.pop(worker_rng.randrange(len(free)))
                    i = todo[thread]
                if pause is not None:
                    while pause.is_set():
                        time.sleep(0.01)
                try:
                    self._send(thread, f"note {thread} {i}", worker_rng)
                except BaseException as exc:  # noqa: BLE001 - surfaced below
                    errors.append(exc)
                with cond:
                    todo[thread] = i + 1
                    if todo[thread] < turns_per_thread:
                        free.append(thread)
                    cond.notify_all()
                if on_progress is not None:
                    on_progress(sum(todo.values()))

        runners = [threading.Thread(target=worker, args=(random.Random(rng.random()),)) for _ in range(self.workers)]
        for r in runners:
            r.start()
        for r in runners:
            r.join()
        if errors:
            raise errors[0]

    def _send(self, thread: str, text: str, rng: random.Random) -> None:
        deadline = time.monotonic() + 60
        while True:
            live = [m for m in self.members if not m.dead]
            member = rng.choice(live)
            turn = Turn(thread, text, member.instance_id, time.time())
            try:
                reply = member.post("/turn", {"thread": thread, "text": text})
            except httpx.HTTPError:
                turn.outcome = "uncertain"
                with self._lock:
                    self.log.append(turn)
                return
            turn.finished = time.time()
            if reply.status_code in (409, 503) and time.monotonic() < deadline:
                turn.outcome = "busy" if reply.status_code == 409 else "unavailable"
                with self._lock:
                    self.log.append(turn)
                    self.retries += 1
                continue
            assert reply.status_code == 200, f"{member.instance_id}: {reply.status_code} {reply.text[:500]}"
            turn.seen = reply.json().get("seen")
            with self._lock:
                self.log.append(turn)
            return

    def sent(self, thread: str) -> list[Turn]:
        return [t for t in self.log if t.thread == thread and t.outcome in ("ok", "uncertain")]


def stop_all(members: list[MemberProc]) -> None:
    for m in members:
        if not m.dead and m.proc.poll() is None:
            try:
                m.signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
    threads = [threading.Thread(target=m.close) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    for m in members:
        if m.proc.poll() is None:
            m.proc.kill()
        m.client.close()
