"""The Agent Server example (examples/agent_server) under a real ``langgraph dev`` with HybridSaver as its
custom checkpointer on the test database: a thread remembers across runs and across a server restart.
Also the entry points it is built on: ``HybridSaver.from_env`` (and ``afrom_env``/``afrom_url``, off the
event loop), and ``checkpointer()`` giving one saver per process to entries from several OS threads."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph_sdk import get_sync_client

from persistence import ConfigError, HybridSaver
from persistence.agent_server import checkpointer, saver_from_env

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
    for name in ("langgraph.json", "graph.py", "checkpointer.py", "health.py"):
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
        # the example's health route (examples/agent_server/health.py) and the saver's metrics on the server's /metrics
        ready = httpx.get(f"{server.url}/health/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] in ("ok", "degraded"), ready.text
        assert "hybrid_saver_resident_threads{" in httpx.get(f"{server.url}/metrics", timeout=10).text
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


def test_checkpointer_needs_a_usable_retention_age() -> None:
    with pytest.raises(ConfigError, match="BACKUP_RETENTION_AGE='a week'"):
        saver_from_env({"DATABASE_URL": "postgresql://nowhere/x", "BACKUP_RETENTION_AGE": "a week"})
    with pytest.raises(ConfigError, match="HYBRID_SAVER_POOL_SIZE"):
        HybridSaver.from_env({"DATABASE_URL": "postgresql://nowhere/x", "HYBRID_SAVER_POOL_SIZE": "many"})


def test_from_env_reads_the_environment_and_keywords_win(db_url: str) -> None:
    env = {
        "DATABASE_URL": db_url,
        "BACKUP_INTERVAL": "off",
        "BACKUP_RETENTION": "7",
        "BACKUP_RETENTION_AGE": "12h",
        "MEMORY_BUDGET": "2MB",
        "HYBRID_SAVER_NAME": "worker",
        "HYBRID_SAVER_SCHEMA": "hs_env",
    }
    with HybridSaver.from_env(env) as saver:
        assert not saver.scheduler.scheduled
        assert (saver.retention, saver.retention_age, saver.memory_budget) == (7, 12 * 3600.0, 2_000_000)
        assert (saver.name, saver.store.schema) == ("worker", "hs_env")
    # a keyword wins, and its variable is not even read (an unusable value there is no error)
    with HybridSaver.from_env({**env, "MEMORY_BUDGET": "lots"}, memory_budget=None, retention=3) as saver:
        assert (saver.memory_budget, saver.retention, saver.name) == (None, 3, "worker")


async def test_async_constructors_build_off_the_event_loop(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    built_in: list[int] = []
    real = HybridSaver.from_url.__func__  # type: ignore[attr-defined]

    def spy(cls: type[HybridSaver], *args: object, **kwargs: object) -> HybridSaver:
        built_in.append(threading.get_ident())
        return real(cls, *args, **kwargs)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    monkeypatch.setattr(HybridSaver, "from_url", classmethod(spy))
    ticking = asyncio.create_task(ticker())
    try:
        saver = await HybridSaver.afrom_url(db_url, backup_interval=None, name="async")
        async with saver:
            assert saver.attached and saver.name == "async"
            await saver.aput({"configurable": {"thread_id": "a", "checkpoint_ns": ""}}, empty_checkpoint(), {}, {})
        assert saver.closed and saver.last_run is not None and saver.last_run.trigger == "close"
        async with await HybridSaver.afrom_env({"DATABASE_URL": db_url, "BACKUP_INTERVAL": "off"}) as again:
            assert again.attached and again.loaded_generation == saver.last_run.generation
        assert again.closed
    finally:
        ticking.cancel()
    assert len(built_in) == 2 and loop_thread not in built_in, "built in a worker thread"
    assert ticks > 0, "the event loop ran while the savers were built"


async def test_a_cancelled_async_constructor_closes_the_saver_it_built(db_url: str) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(HybridSaver.afrom_url(db_url, backup_interval=None, name="abandoned"), 0.001)
    # the thread went on to build it; nobody holds it: it is closed (leaves the fleet) as soon as it is built
    with HybridSaver.from_url(db_url, backup_interval=None) as watcher:
        deadline = time.monotonic() + 30
        while not [m for m in watcher.members(include_stopped=True) if m.name == "abandoned" and m.stopped_at]:
            assert time.monotonic() < deadline, f"the abandoned saver was not closed: {watcher.members()}"
            await asyncio.sleep(0.05)
        assert [m.instance_id for m in watcher.members()] == [watcher.instance_id]


def test_checkpointer_gives_one_saver_to_every_thread_of_a_process(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the Agent Server does (one entry per OS thread, each on its own event loop): one member, one saver,
    closed when the last entry exits."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("BACKUP_INTERVAL", "off")
    entered = threading.Barrier(2, timeout=60)
    first_out = threading.Event()
    seen: dict[str, tuple[HybridSaver, bool, int]] = {}
    errors: list[BaseException] = []

    async def serve(who: str) -> None:
        async with checkpointer() as saver:
            entered.wait()
            seen[who] = (saver, saver.closed, len(saver.members()))
            if who == "first":
                return
            first_out.wait(timeout=60)
            # the first entry has exited: the saver still serves this one
            assert not saver.closed
            await saver.aput({"configurable": {"thread_id": who, "checkpoint_ns": ""}}, empty_checkpoint(), {}, {})

    def thread(who: str) -> None:
        try:
            asyncio.run(serve(who))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            if who == "first":
                first_out.set()

    threads = [threading.Thread(target=thread, args=(who,)) for who in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    (one, open_1, members_1), (other, open_2, members_2) = seen["first"], seen["second"]
    assert one is other, "one saver per process"
    assert (open_1, open_2) == (False, False) and members_1 == members_2 == 1
    assert one.closed, "closed after the last entry exited"
    assert one.last_run is not None and one.last_run.trigger == "close" and one.last_run.ok
    assert one.pending_threads() == set()

    # a new entry after the close opens a new saver
    async def again() -> HybridSaver:
        async with checkpointer() as saver:
            assert not saver.closed
            return saver

    assert asyncio.run(again()) is not one


def test_checkpointer_does_not_keep_a_failed_open(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    async def enter() -> bool:
        async with checkpointer() as saver:
            return saver.attached

    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        asyncio.run(enter())
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("BACKUP_INTERVAL", "off")
    assert asyncio.run(enter())
