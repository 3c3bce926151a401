"""The FastAPI example (examples/fastapi/app.py) under real uvicorn processes on the test database:
a conversation survives a restart, and with ``--workers 3`` (a fleet of three members) conversations
whose turns land on different workers stay whole."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Uvicorn:
    def __init__(self, db_url: str, log: Path, workers: int = 1) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.workers = workers
        self.env = {**os.environ, "DATABASE_URL": db_url, "BACKUP_INTERVAL": "1", "PYTHONUNBUFFERED": "1"}
        self.env.pop("HYBRID_SAVER_NO_SIGNALS", None)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.out = self.log.open("ab")
        cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi.app:app", "--port", str(self.port)]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        pids: set[str] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            try:
                # 404 for a thread that does not exist: the app (and its saver) is up
                r = httpx.get(f"{self.url}/threads/-ping-", headers={"Connection": "close"}, timeout=2)
                if r.status_code == 404:
                    pids.add(r.headers["X-Worker-Pid"])
                    if self.workers == 1 or self.text().count("Application startup complete") >= self.workers:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"uvicorn did not come up in 60 s:\n{self.text()[-4000:]}")

    def stop(self) -> None:
        """SIGTERM and wait: uvicorn shuts the app down (lifespan exit: the saver's final backup) and
        then re-raises the signal, so the exit status is -SIGTERM (or 0)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
            assert code in (0, -signal.SIGTERM), f"uvicorn exited with {code}:\n{self.text()[-4000:]}"
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"uvicorn did not stop on SIGTERM in 30 s:\n{self.text()[-4000:]}") from None
        finally:
            self.out.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _post(url: str, thread_id: str, text: str, busy: list[str] | None = None) -> httpx.Response:
    """One turn on a fresh connection (so the kernel may hand it to any worker); retried on 503
    (another worker did not hand the thread over in time: nothing was written)."""
    for _ in range(20):
        r = httpx.post(
            f"{url}/threads/{thread_id}/messages", json={"text": text}, headers={"Connection": "close"}, timeout=30
        )
        if r.status_code != 503:
            r.raise_for_status()
            return r
        if busy is not None:
            busy.append(thread_id)
        time.sleep(0.2)
    raise AssertionError(f"thread {thread_id} stayed busy: {r.text}")


def _expected(turns: list[str]) -> list[dict[str, str]]:
    out = []
    for n, text in enumerate(turns, 1):
        out += [{"role": "user", "content": text}, {"role": "assistant", "content": f"turn {n}: {text}"}]
    return out


def test_conversation_survives_a_restart(db_url: str, tmp_path: Path) -> None:
    server = _Uvicorn(db_url, tmp_path / "uvicorn.log")
    try:
        server.start()
        first = _post(server.url, "c1", "hello")
        assert first.json()["reply"] == "turn 1: hello"
        _post(server.url, "c1", "how are you?")
        server.stop()
        server.start()
        r = httpx.get(f"{server.url}/threads/c1")
        assert r.status_code == 200
        assert r.json()["messages"] == _expected(["hello", "how are you?"])
        third = _post(server.url, "c1", "still there?")
        assert third.json()["reply"] == "turn 3: still there?"
        assert third.json()["messages"] == _expected(["hello", "how are you?", "still there?"])
        server.stop()
    finally:
        server.kill()
    log = server.text()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("Application shutdown complete") == 2


def test_three_workers_keep_every_conversation_whole(db_url: str, tmp_path: Path) -> None:
    server = _Uvicorn(db_url, tmp_path / "uvicorn.log", workers=3)
    conversations = {f"conv-{i}": [f"message {j} of conversation {i}" for j in range(1, 9)] for i in range(6)}
    served: dict[str, set[str]] = {tid: set() for tid in conversations}
    busy: list[str] = []

    def talk(thread_id: str) -> None:
        for n, text in enumerate(conversations[thread_id], 1):
            r = _post(server.url, thread_id, text, busy)
            assert r.json()["reply"] == f"turn {n}: {text}"
            served[thread_id].add(r.headers["X-Worker-Pid"])

    try:
        server.start()
        with ThreadPoolExecutor(max_workers=len(conversations)) as pool:
            for future in [pool.submit(talk, tid) for tid in conversations]:
                future.result()
        pids = set().union(*served.values())
        assert len(pids) >= 2, f"every request landed on one worker: {served}"
        moved = [tid for tid, p in served.items() if len(p) > 1]
        assert moved, f"no conversation was served by more than one worker: {served}"
        for tid, turns in conversations.items():
            r = httpx.get(f"{server.url}/threads/{tid}", headers={"Connection": "close"})
            assert r.status_code == 200, r.text
            assert r.json()["messages"] == _expected(turns), tid
        server.stop()
    finally:
        server.kill()
    log = server.text()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("Application shutdown complete") == 3, log[-4000:]

    # after a clean stop every turn is in PostgreSQL: a fresh single worker serves them all
    again = _Uvicorn(db_url, tmp_path / "uvicorn2.log")
    try:
        again.start()
        for tid, turns in conversations.items():
            assert httpx.get(f"{again.url}/threads/{tid}").json()["messages"] == _expected(turns), tid
        again.stop()
    finally:
        again.kill()
    print(f"workers {sorted(pids)}; conversations served by several workers: {len(moved)}; 503 retries: {len(busy)}")
