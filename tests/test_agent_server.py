"""The Agent Server example (examples/agent_server) under a real ``langgraph dev`` with HybridSaver as its
custom checkpointer on the test database: a thread remembers across runs and across a server restart."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph_sdk import get_sync_client

from persistence import HybridSaver
from persistence.agent_server import checkpointer, saver_from_env
from persistence.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "agent_server"
LANGGRAPH = Path(sys.executable).parent / "langgraph"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The example laid out as in the checkout (``../..`` is the project root) in a temporary folder,
    so ``langgraph dev``'s own files (``.langgraph_api/``) land there, not in the checkout."""
    here = tmp_path / "examples" / "agent_server"
    here.mkdir(parents=True)
    for name in ("langgraph.json", "graph.py", "checkpointer.py"):
        shutil.copy(EXAMPLE / name, here / name)
    (tmp_path / "persistence").symlink_to(ROOT / "persistence", target_is_directory=True)
    return here


class _Server:
    def __init__(self, cwd: Path, env: dict[str, str], port: int, log: Path) -> None:
        self.cwd, self.env, self.port, self.log = cwd, env, port, log
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self.out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                str(LANGGRAPH),
                "dev",
                "--no-browser",
                "--no-reload",
                "--port",
                str(self.port),
                "--config",
                "langgraph.json",
            ],
            cwd=self.cwd,
            env=self.env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"langgraph dev exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"langgraph dev did not answer in 60 s:\n{self.text()[-4000:]}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"langgraph dev did not stop on SIGINT in 30 s:\n{self.text()[-4000:]}") from None
        finally:
            self.out.close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def text(self) -> str:
        return ANSI.sub("", self.log.read_text(errors="replace"))


def _say(client, thread_id: str, text: str) -> str:
    result = client.runs.wait(thread_id, "chat", input={"messages": [{"role": "human", "content": text}]})
    return result["messages"][-1]["content"]


@pytest.mark.slow
def test_agent_server_remembers_across_runs_and_restarts(db_url: str, workdir: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BACKUP_INTERVAL": "1",
        "MEMORY_BUDGET": "64MB",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("HYBRID_SAVER_NO_SIGNALS", None)
    server = _Server(workdir, env, _free_port(), tmp_path / "server.log")
    try:
        server.start()
        client = get_sync_client(url=server.url)
        thread = client.threads.create()
        tid = thread["thread_id"]
        assert (
            _say(client, tid, "Hi, my name is Ada Lovelace.") == "Nice to meet you, Ada Lovelace. I will remember that."
        )
        assert _say(client, tid, "Remember that I like tea.") == "Noted: I like tea."
        assert _say(client, tid, "What is my name?") == "Your name is Ada Lovelace."
        before = client.threads.get_state(tid)
        assert [m["type"] for m in before["values"]["messages"]] == ["human", "ai"] * 3
        assert server.stop() == 0

        # the final backup is in PostgreSQL: the operator CLI reads the thread from there
        exported = subprocess.run(
            [sys.executable, "-m", "persistence", "export", tid],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": db_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert exported.returncode == 0, exported.stderr
        assert "Your name is Ada Lovelace." in exported.stdout

        # the dev server's own files keep no checkpoints when a custom checkpointer is set: drop any anyway
        for stale in (workdir / ".langgraph_api").glob(".langgraph_checkpoint*"):
            stale.unlink()
        server.start()
        client = get_sync_client(url=server.url)
        after = client.threads.get_state(tid)
        assert after["values"] == before["values"]
        assert after["checkpoint"] == before["checkpoint"]
        assert _say(client, tid, "What do you remember?") == "I remember: your name is Ada Lovelace; I like tea."
        assert server.stop() == 0
    finally:
        server.kill()

    log = server.text()
    assert "Using custom checkpointer: HybridSaver" in log
    assert log.count("Using custom checkpointer: HybridSaver") == 2, "one saver per server start"
    # closed by the server's lifespan through the context manager, not by the interpreter's exit hook
    assert len(re.findall(r"HybridSaver member \d+ closed", log)) == 2, log[-6000:]
    for bad in ("Custom checkpointer missing", "generic fallback", "BlockingError", "Blocking call", "Traceback"):
        assert bad not in log, f"{bad!r} in the server log:\n{log[-6000:]}"
    assert not re.search(r"final backup failed|backup \(\w+\) failed", log)


def test_checkpointer_needs_database_url() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        saver_from_env({})
    with pytest.raises(ConfigError, match="MEMORY_BUDGET"):
        saver_from_env({"DATABASE_URL": "postgresql://nowhere/x", "MEMORY_BUDGET": "lots"})


async def test_checkpointer_context_manager_opens_and_closes(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("BACKUP_INTERVAL", "off")
    monkeypatch.setenv("MEMORY_BUDGET", "1MB")
    async with checkpointer() as saver:
        assert isinstance(saver, HybridSaver)
        assert saver.memory_budget == 1_000_000 and not saver.scheduler.scheduled
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        await saver.aput(config, empty_checkpoint(), {}, {})
        assert saver.pending_threads() == {"t"}
    assert saver.closed
    assert saver.last_run is not None and saver.last_run.trigger == "close" and saver.last_run.ok
