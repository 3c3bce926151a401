"""``hybrid-saver import-postgres-saver``: threads made by a real graph on LangGraph's PostgresSaver come
out of a HybridSaver store exactly as PostgresSaver served them (get_state_history, with subgraphs, the raw
checkpoint tuples and the writes' task ids, indices and paths), after a restart too; an import cut short
(Ctrl-C, kill -9, an exception mid-thread) and run again ends with exactly the source; other content is
refused unless --replace; bad input says what to do."""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import psycopg
import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from persistence import HybridSaver
from persistence.cli import main
from persistence.ops.importer import CONTINUED, IMPORTED, import_postgres_saver

ROOT = Path(__file__).resolve().parents[1]
#: threads of the source: plain ids and ones that need quoting
THREADS = [f"chat-{i:02}" for i in range(16)] + ['it\'s "quoted"', "emoji 🧵", "long-" + "x" * 300]
#: the thread with many turns (several pages of the source, several backups of the target)
BIG = "chat-00"
#: a budget that holds a few threads of the source: the importer's saver evicts as it goes
SMALL_BUDGET = 200_000


class State(TypedDict, total=False):
    messages: Annotated[list, add_messages]
    notes: Annotated[list[str], operator.add]
    approved: str


class ChildState(TypedDict, total=False):
    """The subgraph's own state (sharing ``notes`` would hand the whole list back, doubling it every turn)."""

    messages: Annotated[list, add_messages]
    approved: str


def build_graph(checkpointer: Any) -> Any:
    """plan -> (child subgraph: draft -> ask, which interrupts) + audit (fails on "fail") -> finish."""

    def draft(state: ChildState) -> dict:
        return {"messages": [AIMessage(content=f"draft {len(state['messages'])}")]}

    def ask(state: ChildState) -> dict:
        answer = interrupt({"question": "send it?", "draft": state["messages"][-1].content})
        return {"approved": str(answer)}

    child = StateGraph(ChildState)
    child.add_node("draft", draft)
    child.add_node("ask", ask)
    child.add_edge(START, "draft")
    child.add_edge("draft", "ask")
    child.add_edge("ask", END)

    def plan(state: State) -> dict:
        return {"notes": [f"plan {len(state['messages'])}"]}

    def audit(state: State) -> dict:
        last = state["messages"][-1].content
        if "fail" in str(last):
            raise ValueError(f"audit refused {last!r}")
        return {"notes": [f"audited {len(state['messages'])}"]}

    def finish(state: State) -> dict:
        return {"messages": [AIMessage(content=f"done: {state.get('approved')}")]}

    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("child", child.compile())
    graph.add_node("audit", audit)
    graph.add_node("finish", finish)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "child")
    graph.add_edge("plan", "audit")
    graph.add_edge(["child", "audit"], "finish")
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer)


def converse(graph: Any, thread_id: str, n: int) -> None:
    """Turns that interrupt in the subgraph and are resumed; the last one left interrupted (pending writes
    of the audit next to the interrupt) or failed (an error write), and a fork from an old checkpoint."""
    config = {"configurable": {"thread_id": thread_id}}
    turns = 8 if thread_id == BIG else 2
    for turn in range(turns):
        graph.invoke({"messages": [("user", f"turn {turn} of {thread_id}")]}, config)
        graph.invoke(Command(resume=f"yes {turn}"), config)
    if n % 3 == 0:
        with pytest.raises(ValueError, match="audit refused"):
            graph.invoke({"messages": [("user", "please fail")]}, config)
    elif n % 3 == 1:
        graph.invoke({"messages": [("user", "left waiting")]}, config)  # interrupted, not resumed
    else:
        old = list(graph.get_state_history(config))[-3].config
        forked = graph.update_state(old, {"notes": ["forked"]})
        graph.invoke(None, forked)


def plain(x: Any) -> Any:
    """A comparable form of a snapshot: exceptions by type and text (two loads of one are not ==)."""
    if isinstance(x, BaseException):
        return ("exception", type(x).__name__, str(x))
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return (type(x).__name__, *(plain(v) for v in x))
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return x


def history(graph: Any, saver: Any, thread_id: str) -> list:
    """Everything LangGraph shows of a thread: its history, each step's state with subgraphs, and per
    namespace its history and raw checkpoint tuples (namespace by namespace: across namespaces
    PostgresSaver lists by id, InMemorySaver, so HybridSaver, by namespace)."""
    config = {"configurable": {"thread_id": thread_id}}
    out: list = []
    for snap in graph.get_state_history(config):
        out.append(plain(snap))
        out.append(plain(graph.get_state(snap.config, subgraphs=True)))
    for ns in sorted({t.config["configurable"]["checkpoint_ns"] for t in saver.list(config)}):
        in_ns = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
        if ns:
            out.append([plain(s) for s in graph.get_state_history(in_ns)])
        out.append([plain(t) for t in saver.list(in_ns)])
    return out


@dataclass
class Source:
    url: str
    histories: dict[str, list]
    #: thread -> {(ns, checkpoint id, task id, idx, task path, channel)}
    write_keys: dict[str, set]
    #: thread -> (checkpoints, newest checkpoint id)
    counts: dict[str, tuple[int, str]]

    @property
    def checkpoints(self) -> int:
        return sum(n for n, _ in self.counts.values())


def source_write_keys(url: str) -> dict[str, set]:
    keys: dict[str, set] = {}
    with psycopg.connect(url) as conn:
        for row in conn.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel FROM checkpoint_writes"
        ):
            keys.setdefault(row[0], set()).add(tuple(row[1:]))
    return keys


@pytest.fixture(scope="module")
def source(pg_server: str) -> Iterator[Source]:
    """A PostgresSaver database with the conversations of :data:`THREADS`, made once for the module."""
    name = "import_pg_source"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = pg_server.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with PostgresSaver.from_conn_string(url) as pg:
        pg.setup()
        graph = build_graph(pg)
        for n, thread_id in enumerate(THREADS):
            converse(graph, thread_id, n)
        # writes put in one call with a special channel first: the regular one gets index 1, not 0
        head = pg.get_tuple({"configurable": {"thread_id": "chat-01"}})
        pg.put_writes(head.config, [("__error__", ValueError("mixed")), ("notes", ["x"])], "mixed-task", "~mixed")
        histories = {t: history(graph, pg, t) for t in THREADS}
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT thread_id, count(*), max(checkpoint_id) FROM checkpoints GROUP BY 1").fetchall()
    assert {r[0] for r in rows} == set(THREADS)
    yield Source(url, histories, source_write_keys(url), {r[0]: (int(r[1]), r[2]) for r in rows})
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def target_write_keys(saver: HybridSaver, thread_id: str) -> set:
    rows = saver.thread_rows(thread_id)
    return {
        (ns, cid, task_id, idx, value[3], value[1])
        for (tid, ns, cid), inner in rows.writes.items()
        if tid == thread_id
        for (task_id, idx), value in inner.items()
    }


def assert_same(source: Source, target_url: str, threads: list[str] | None = None, **kwargs: Any) -> None:
    """A HybridSaver opened on ``target_url`` serves every thread exactly as PostgresSaver did."""
    with HybridSaver.from_url(target_url, backup_interval=None, listen=False, **kwargs) as saver:
        graph = build_graph(saver)
        for thread_id in threads or THREADS:
            assert history(graph, saver, thread_id) == source.histories[thread_id], thread_id
            assert target_write_keys(saver, thread_id) == source.write_keys[thread_id], thread_id
        counts = saver.store.thread_counts()
        # counts exact: nothing duplicated, nothing lost, nothing else
        assert {t: counts.get(t) for t in threads or THREADS} == {t: source.counts[t] for t in threads or THREADS}
        if threads is None:
            assert set(counts) == set(THREADS)


def cli(target_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "persistence", "import-postgres-saver", *args],
        env=_env(target_url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env(target_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": target_url, "PYTHONPATH": str(ROOT)}


def _outcomes(stderr: str, outcome: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{outcome}: ")]


def test_the_cli_imports_every_thread_exactly(source: Source, new_database: Callable[[], str]) -> None:
    target = new_database()
    done = cli(target, source.url, "--progress-every", "5")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    total = len(THREADS)
    assert progress[-1].startswith(f"[{total}/{total} threads] {source.checkpoints} of {source.checkpoints}")
    assert len(progress) == total // 5 + (total % 5 > 0)
    assert f"imported {total} threads in" in done.stdout and f"{source.checkpoints} checkpoints" in done.stdout
    assert f"({total} imported)" in done.stdout, done.stdout
    assert_same(source, target)
    # a restart with a budget that holds a few threads: served from the store, thread by thread
    assert_same(source, target, memory_budget=SMALL_BUDGET)

    with HybridSaver.from_url(target, backup_interval=None, listen=False) as saver:
        generations = len(saver.generations())
    again = cli(target, source.url)
    assert again.returncode == 0, again.stderr
    assert f"({total} skipped)" in again.stdout and "0 checkpoints" in again.stdout
    assert len(_outcomes(again.stderr, "skipped")) == total
    assert "is already imported" in again.stderr
    with HybridSaver.from_url(target, backup_interval=None, listen=False) as saver:
        assert len(saver.generations()) == generations, "an import with nothing to do wrote a generation"


def test_an_import_interrupted_and_killed_then_run_again_ends_exact(
    source: Source, new_database: Callable[[], str]
) -> None:
    target = new_database()
    args = [sys.executable, "-m", "persistence", "import-postgres-saver", source.url, "--progress-every", "1"]
    args += ["--batch", "7"]  # backups inside threads: a kill can leave a thread in part

    def run_until(done_at_least: int, sig: signal.Signals) -> tuple[int, str]:
        proc = subprocess.Popen(args, env=_env(target), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        seen = []
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("[") and int(line[1:].split("/")[0]) >= done_at_least:
                proc.send_signal(sig)
                break
        out, err = proc.communicate(timeout=60)
        return proc.returncode, "".join(seen) + err

    code, err = run_until(3, signal.SIGINT)  # Ctrl-C: the final backup keeps what was imported
    assert code == 130, err
    assert "interrupted after" in err and "run the same command again to continue" in err
    assert "Traceback" not in err
    code, err = run_until(8, signal.SIGKILL)
    assert code == -9, err
    assert len(_outcomes(err, "skipped")) >= 3, "the threads the interrupted run imported were not skipped"

    done = cli(target, source.url)
    assert done.returncode == 0, done.stderr
    skipped = len(_outcomes(done.stderr, "skipped"))
    assert 3 <= skipped < len(THREADS), done.stderr
    assert f"{len(THREADS)} threads" in done.stdout
    assert_same(source, target)


class _Interrupting:
    """The target, stopped as Ctrl-C stops it: a KeyboardInterrupt at the ``after``-th call of ``method``."""

    def __init__(self, saver: HybridSaver, method: str, after: int) -> None:
        self._saver, self._method, self._left = saver, method, after

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._saver, name)
        if name != self._method:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._left -= 1
            if self._left < 0:
                raise KeyboardInterrupt
            return attr(*args, **kwargs)

        return call


@pytest.mark.parametrize(("method", "after"), [("put", 23), ("put_writes", 40)])
def test_an_import_cut_inside_a_thread_is_continued(
    source: Source, new_database: Callable[[], str], method: str, after: int
) -> None:
    target = new_database()
    open_kw = {"backup_interval": None, "listen": False, "memory_budget": SMALL_BUDGET}
    saver = HybridSaver.from_url(target, **open_kw)
    try:
        with pytest.raises(KeyboardInterrupt):
            import_postgres_saver(source.url, _Interrupting(saver, method, after), thread_ids=[BIG], batch=5, page=4)
    finally:
        saver.close()  # the final backup keeps what was written, a part of the thread
    with HybridSaver.from_url(target, **open_kw) as saver:
        count, _newest = saver.store.thread_counts()[BIG]
        assert 0 < count < source.counts[BIG][0]
        reports = []
        result = import_postgres_saver(source.url, saver, batch=5, page=4, progress=lambda p: reports.append(p.thread))
        assert result.ok and result.count(CONTINUED) == 1 and result.count(IMPORTED) == len(THREADS) - 1
        assert [r.outcome for r in reports if r.thread_id == BIG] == [CONTINUED]
        assert result.checkpoints == source.checkpoints - count
        assert result.backups >= 2
    assert_same(source, target)


def test_other_content_is_refused_unless_replace(source: Source, new_database: Callable[[], str]) -> None:
    target = new_database()
    with HybridSaver.from_url(target, backup_interval=None, listen=False) as saver:
        graph = build_graph(saver)
        graph.invoke({"messages": [("user", "another life")]}, {"configurable": {"thread_id": "chat-03"}})
        theirs = history(graph, saver, "chat-03")
    picked = ["--thread", "chat-03", "--thread", "chat-04", "--thread", "nope"]

    dry = cli(target, source.url, *picked, "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert "would import 3 threads" in dry.stdout and "1 imported, 1 refused, 1 missing" in dry.stdout
    assert "thread 'chat-03' exists in the target with other content" in dry.stderr
    assert "--replace replaces it" in dry.stderr
    assert "missing: thread 'nope' is not in the source" in dry.stderr
    assert f": {source.counts['chat-04'][0]} checkpoints" in dry.stdout, dry.stdout

    refused = cli(target, source.url, *picked)
    assert refused.returncode == 1, refused.stderr
    assert "refused: thread 'chat-03' exists in the target with other content" in refused.stderr
    assert_same(source, target, ["chat-04"])
    with HybridSaver.from_url(target, backup_interval=None, listen=False) as saver:
        assert history(build_graph(saver), saver, "chat-03") == theirs, "a refused thread was changed"
        before = saver.store.latest_generation()

    replaced = cli(target, source.url, "--thread", "chat-03", "--thread", "chat-04", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "replaced: thread 'chat-03'" in replaced.stderr and "1 replaced, 1 skipped" in replaced.stdout
    assert f"the store was at generation {before} before" in replaced.stdout
    assert_same(source, target, ["chat-03", "chat-04"])


def test_bad_input_says_what_to_do(
    source: Source, new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    target = new_database()
    monkeypatch.setenv("DATABASE_URL", target)

    def fails(*args: str) -> str:
        code = main(["import-postgres-saver", *args])
        out = capsys.readouterr()
        assert code == 1, out
        assert "Traceback" not in out.err
        return out.err

    err = fails("postgresql://alice:s3cret-pw@127.0.0.1:1/app")
    assert "Cannot connect to the PostgresSaver source, database 'app' on 127.0.0.1:1 as 'alice'" in err
    assert "s3cret-pw" not in err
    assert "not a valid PostgreSQL connection string" in fails("no such url")
    nodb = source.url.replace("import_pg_source", "no_such_db")
    assert 'database "no_such_db" does not exist' in fails(nodb)

    empty = new_database()
    err = fails(empty)
    assert "has no PostgresSaver tables checkpoints, checkpoint_blobs, checkpoint_writes in its search_path" in err
    assert "--source-schema" in err
    assert "has no schema 'elsewhere'" in fails(source.url, "--source-schema", "elsewhere")
    assert "is the target store itself, not a PostgresSaver database" in fails(
        target, "--source-schema", "hybrid_saver"
    )

    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres", None)  # the package not installed
    assert "pip install langgraph-checkpoint-postgres" in fails(source.url)
    with HybridSaver.from_url(target, backup_interval=None, listen=False) as saver:
        assert saver.store.live_thread_ids() == [], "a refused import wrote something"
