"""The FastAPI example (examples/fastapi/app.py) in a uvicorn process of its own, for the tests that probe
its health routes and scrape its /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExampleApp:
    """``uvicorn examples.fastapi.app:app`` on a free loopback port, one worker (one member)."""

    def __init__(self, db_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, "DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1", **env}
        self.env.pop("HYBRID_SAVER_NO_SIGNALS", None)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it; do not wait (see :meth:`wait`)."""
        self.out = self.log.open("ab")
        cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi.app:app", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait(self, timeout: float = 60) -> None:
        """Until the app answers its liveness probe (the saver is open)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"uvicorn did not come up in {timeout:g} s:\n{self.text()[-4000:]}")

    def turn(self, thread_id: str, text: str, timeout: float = 30) -> httpx.Response:
        return httpx.post(f"{self.url}/threads/{thread_id}/messages", json={"text": text}, timeout=timeout)

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.url}/health/ready", timeout=10)

    def stop(self) -> None:
        """SIGTERM (the final backup) and wait; SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        finally:
            self.out.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


__all__ = ["ROOT", "ExampleApp", "free_port"]
