"""AppTest tests of every dashboard page against a real PostgreSQL database (nothing mocked)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from helpers.pg import PrivateServer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from streamlit.testing.v1 import AppTest

from agent import build_graph, chat_turn, thread_config
from agent.responder import OfflineResponder
from dashboard import views
from dashboard.runtime import Runtime, get_runtime, reset_runtime
from persistence import DatabaseUnavailable, HybridSaver

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
PAGES = ["pages/chat.py", "pages/threads.py", "pages/backups.py", "pages/restore.py"]
TIMEOUT = 30


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, new_database: Callable[[], str]) -> Iterator[Callable[[str], None]]:
    """Point the dashboard's runtime at a database; the runtime is closed (final backup) afterwards,
    before the test's databases are dropped (hence the dependency on ``new_database``)."""

    def use(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)

    monkeypatch.setenv("BACKUP_INTERVAL", "3600")
    monkeypatch.setenv("DASHBOARD_REFRESH", "60")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    reset_runtime()
    yield use
    reset_runtime()


@pytest.fixture
def app(app_env: Callable[[str], None], db_url: str) -> AppTest:
    app_env(db_url)
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def runtime() -> Runtime:
    return get_runtime()


def texts(at: AppTest) -> str:
    """Every text the page shows (markdown, captions, alerts, titles), for 'is it there' checks."""
    parts: list[str] = []
    for kind in ("title", "subheader", "markdown", "caption", "error", "warning", "info", "success", "toast"):
        parts.extend(str(e.value) for e in getattr(at, kind))
    parts.extend(f"{m.label}={m.value}" for m in at.metric)
    return "\n".join(parts)


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first table on the page that has ``column``."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a {column!r} column on the page")


def chat_messages(at: AppTest) -> list[tuple[str, str]]:
    return [(m.name, m.markdown[0].value if len(m.markdown) else "") for m in at.chat_message]


# -- chat ----------------------------------------------------------------------------------------------


def test_chat_remembers_and_lists_the_thread(app: AppTest) -> None:
    at = app.run()
    assert not at.exception
    assert at.title[0].value == "Chat"
    assert len(at.chat_input) == 1
    assert any(b.label == "New chat" for b in at.sidebar.button)

    at.chat_input[0].set_value("my name is Ana").run()
    at.chat_input[0].set_value("what is my name?").run()
    assert not at.exception
    assert chat_messages(at) == [
        ("user", "my name is Ana"),
        ("assistant", "Got it: your name is Ana. I'll remember that."),
        ("user", "what is my name?"),
        ("assistant", "Your name is Ana."),
    ]
    assert at.subheader[0].value == "my name is Ana"  # titled from the first message
    assert "latest changes not backed up yet" in texts(at)
    thread_id = at.session_state["chat_thread"]
    assert [b.label for b in at.sidebar.button if (b.key or "").startswith("open-")] == ["my name is Ana"]
    assert at.sidebar.button(key=f"open-{thread_id}").proto.type == "primary"  # the open thread

    runtime().saver.backup()
    at.run()
    assert "backed up" in texts(at) and "not backed up" not in texts(at)

    at.sidebar.button[0].click().run()  # New chat
    assert at.subheader[0].value == "New chat" and chat_messages(at) == []
    assert at.sidebar.button(key=f"open-{thread_id}").proto.type == "tertiary"
    at.sidebar.button(key=f"open-{thread_id}").click().run()
    assert chat_messages(at)[-1] == ("assistant", "Your name is Ana.")


def test_chat_rename_survives_a_restart_and_delete_asks_first(app: AppTest) -> None:
    at = app.run()
    at.chat_input[0].set_value("my name is Ana").run()
    thread_id = at.session_state["chat_thread"]

    at.text_input(key="rename_title").input("Ana's thread")
    at.button[0].click()  # the form's Save (first button on the page)
    at.run()
    assert not at.exception
    assert at.subheader[0].value == "Ana's thread"
    assert any("Renamed" in t.value for t in at.toast)

    # a restart: the final backup, then a new runtime that loads the newest generation
    reset_runtime()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["chat_thread"] = thread_id
    at.run()
    assert at.subheader[0].value == "Ana's thread"
    assert chat_messages(at)[0] == ("user", "my name is Ana")

    delete = next(b for b in at.button if b.label == "Delete")
    delete.click().run()
    assert "Delete thread" in texts(at) and thread_id in runtime().saver.thread_ids()  # asked, not done
    at.button(key="confirm-delete-thread").click().run()
    assert not at.exception
    assert thread_id not in runtime().saver.thread_ids()
    assert at.session_state["chat_thread"] != thread_id
    assert any("Deleted thread" in t.value for t in at.toast)


# -- threads -------------------------------------------------------------------------------------------


def test_threads_search_inspect_fork_prune(app: AppTest) -> None:
    at = app.run()
    rt = runtime()
    for tid, name in (("alpha", "Ana"), ("beta", "Bob"), ("gamma", "Cy")):
        chat_turn(rt.graph, tid, f"my name is {name}")
        chat_turn(rt.graph, tid, "what is my name?")
    rt.saver.backup()
    chat_turn(rt.graph, "delta", "my name is Dee")  # not backed up yet: listed too
    open_page(at, "pages/threads.py")
    assert len(at.dataframe) == 1
    table = at.dataframe[0].value.set_index("thread_id")
    assert sorted(table.index) == ["alpha", "beta", "delta", "gamma"]
    assert table.loc["delta", "status"] == "pending here" and table.loc["alpha", "status"] == "backed up"
    assert table.loc["delta", "backup"] == "3 checkpoints not backed up (here)"
    assert "4 threads" in texts(at)
    assert at.selectbox(key="threads_page_size").value == 25

    # search reaches the message text, not only titles and ids
    at.text_input(key="threads_query").input("Bob").run()
    assert list(at.dataframe[0].value["thread_id"]) == ["beta"]
    at.text_input(key="threads_query").input("").run()

    # the server sorts: by checkpoints, largest first
    chat_turn(rt.graph, "gamma", "my name is Cyrus")
    rt.saver.backup()
    at.selectbox(key="threads_sort").select("Checkpoints").run()
    assert at.dataframe[0].value["thread_id"].iloc[0] == "gamma"

    at.query_params["thread"] = "alpha"
    at.run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Timeline", "State", "Diff", "Pending writes", "Actions"]
    history = frame_with(at, "updated_channels")
    assert len(history) == len(list(rt.saver.list(thread_config("alpha"))))
    assert at.json[0].value  # raw state of the newest checkpoint
    state_messages = [m.markdown[0].value for m in at.chat_message]
    assert state_messages[-1] == "Your name is Ana."
    diff = frame_with(at, "channel")
    assert set(diff["channel"]) >= {"messages", "title"}
    assert diff.set_index("channel").loc["messages", "change"] == "changed"
    assert len(frame_with(at, "task_id")) > 0
    assert at.get("download_button")

    # fork from the checkpoint after the first reply: the fork's state has two messages
    after_first = next(
        cid
        for cid in history["checkpoint_id"]
        if len(rt.graph.get_state({"configurable": {"thread_id": "alpha", "checkpoint_id": cid}}).values["messages"])
        == 2
    )
    at.selectbox(key="fork_from-here").select(after_first)
    at.text_input(key="fork_id").input("alpha-fork")
    at.button(key="fork").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    fork_state = rt.graph.get_state(thread_config("alpha-fork")).values
    assert len(fork_state["messages"]) == 2 and fork_state["title"] == "my name is Ana (fork)"
    # the fork holds the fork point and its ancestors (plus its title), none of the later checkpoints
    fork_ids = [t.checkpoint["id"] for t in rt.saver.list(thread_config("alpha-fork"))]
    later = set(history["checkpoint_id"][history["checkpoint_id"] > after_first])
    assert not later & set(fork_ids) and after_first in fork_ids
    assert len(fork_ids) == 1 + len(history[history["checkpoint_id"] <= after_first])
    assert at.query_params["thread"] == "alpha-fork"
    assert chat_turn(rt.graph, "alpha-fork", "what is my name?") == "Your name is Ana."

    # prune alpha to its newest 2 checkpoints, after a confirmation
    at.query_params["thread"] = "alpha"
    at.run()
    at.number_input(key="keep_n").set_value(2)
    at.button(key="prune").click().run()
    assert len(list(rt.saver.list(thread_config("alpha")))) > 2  # only asked so far
    at.button(key="confirm-prune-thread").click().run()
    assert not at.exception
    assert len(list(rt.saver.list(thread_config("alpha")))) == 2
    assert rt.graph.get_state(thread_config("alpha")).values["messages"][-1].content == "Your name is Ana."


# -- backups -------------------------------------------------------------------------------------------


def test_backups_backup_now_interval_pause(app: AppTest) -> None:
    at = app.run()
    at.chat_input[0].set_value("my name is Ana").run()
    rt = runtime()
    open_page(at, "pages/backups.py")
    labels = [m.label for m in at.metric]
    assert labels == [
        "Backup lag",
        "Pending changes",
        "Last backup",
        "Next run",
        "Generations kept",
        "Database size",
        "Memory used",
        "Resident threads",
        "Hit rate",
        "Evictions",
    ]
    assert at.metric[1].value != "0"
    assert len(at.get("plotly_chart")) == 4
    assert rt.saver.generations() == []
    members = frame_with(at, "resident_threads")
    assert list(members["member"]) == [rt.saver.instance_id] and bool(members["this"].iloc[0])

    at.button(key="backup_now").click().run()
    assert not at.exception
    gens = rt.saver.generations()
    assert len(gens) == 1 and gens[0].checkpoints == 3
    assert any(f"generation {gens[0].generation}" in t.value for t in at.toast)
    runs = frame_with(at, "duration_s")
    assert list(runs["trigger"])[:1] == ["manual"] and bool(runs["ok"].iloc[0])
    assert at.metric[1].value == "0"  # pending
    assert at.metric[4].value.startswith("1 /")
    assert "***" in texts(at) or "password" not in runtime().database_masked

    # nothing pending: no empty generation, and the page says so
    at.button(key="backup_now").click().run()
    assert len(rt.saver.generations()) == 1
    assert any("Nothing to back up" in t.value for t in at.toast)

    # interval and pause are kept in the store: a restart brings them back
    at.number_input(key="interval_seconds").set_value(120.0)
    next(b for b in at.button if b.label == "Apply").click().run()
    assert rt.saver.scheduler.interval == 120.0
    at.button(key="pause").click().run()
    assert rt.saver.scheduler.paused and at.metric[3].value == "paused"
    assert "Scheduled backups of this dashboard's saver are paused" in texts(at)
    reset_runtime()
    at = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), "pages/backups.py")
    rt = runtime()
    assert rt.saver.scheduler.interval == 120.0 and rt.saver.scheduler.paused
    assert "paused" in texts(at)
    at.button(key="resume").click().run()
    assert not rt.saver.scheduler.paused

    # verify a generation: every row matches its checksum
    at.button(key="verify").click().run()
    assert "rows match their checksums" in texts(at)


def test_backups_page_shows_failed_runs(app: AppTest, db_url: str) -> None:
    at = app.run()
    at.chat_input[0].set_value("my name is Ana").run()
    rt = runtime()
    rt.saver.backup()
    # break the store under the saver: the next run fails, is logged, and the page shows its error
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE hybrid_saver.checkpoints RENAME TO checkpoints_gone")
    try:
        at.chat_input[0].set_value("what is my name?").run()
        open_page(at, "pages/backups.py")
        at.button(key="backup_now").click().run()
        assert not at.exception
        assert any("Backup failed" in t.value for t in at.toast)
        assert "failed run" in texts(at)
        runs = frame_with(at, "duration_s")
        assert not bool(runs["ok"].iloc[0]) and "checkpoints" in runs["error"].iloc[0]
        open_page(at, "pages/chat.py")
        assert "The last backup failed" in texts(at)  # every page says so
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE hybrid_saver.checkpoints_gone RENAME TO checkpoints")
    open_page(at, "pages/backups.py")
    at.button(key="backup_now").click().run()
    assert any("Backup written" in t.value for t in at.toast)
    assert "The last backup failed" not in texts(at)
    assert at.metric[4].value.startswith("2 /")  # generations kept: database figures are back


def test_backup_now_for_every_member(app: AppTest, open_saver: Callable[..., HybridSaver]) -> None:
    other = open_saver(name="app")  # another process's saver on the same store, in this test's process
    at = app.run()
    rt = runtime()
    chat_turn(rt.graph, "here", "my name is Ana")
    chat_turn(build_graph(other), "there", "my name is Bob")
    open_page(at, "pages/backups.py")
    members = frame_with(at, "resident_threads")
    assert sorted(members["member"]) == sorted([rt.saver.instance_id, other.instance_id])
    at.button(key="backup_all").click().run()
    assert not at.exception
    toast = " ".join(t.value for t in at.toast)
    assert f"member {rt.saver.instance_id} wrote generation" in toast
    assert f"member {other.instance_id} wrote generation" in toast  # what each one wrote, not just "backed up"
    assert other.membership.name in set(frame_with(at, "resident_threads")["name"])  # a name, not blank
    assert not rt.saver.pending_threads() and not other.pending_threads()
    assert {"here", "there"} <= set(rt.saver.store.live_thread_ids())


# -- restore -------------------------------------------------------------------------------------------


def test_restore_all_puts_back_the_chosen_state_and_can_be_undone(app: AppTest) -> None:
    at = app.run()
    at.chat_input[0].set_value("my name is Ana").run()
    at.chat_input[0].set_value("what is my name?").run()
    thread_id = at.session_state["chat_thread"]
    rt = runtime()
    first = rt.saver.backup().generation
    at.chat_input[0].set_value("my name is Bob").run()
    chat_turn(rt.graph, "other", "hello")
    rt.saver.backup()

    open_page(at, "pages/restore.py")
    assert len(frame_with(at, "kind")) == 2
    at.selectbox(key="restore_generation").select(first).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Threads removed"] == "1" and metrics["Threads changed"] == "1"
    preview = frame_with(at, "change").set_index("thread_id")
    assert preview.loc["other", "change"] == "removed" and preview.loc[thread_id, "delta"] < 0

    at.button(key="restore").click().run()
    assert "Restore this generation" in texts(at) or at.button(key="confirm-restore")
    assert "other" in rt.saver.store.live_thread_ids()  # nothing happens before the confirmation
    at.button(key="confirm-restore").click().run()
    assert not at.exception
    assert sorted(rt.saver.store.live_thread_ids()) == [thread_id]
    assert "Rewriting" in texts(at) or at.session_state["restore_result"]["phases"]
    result = at.session_state["restore_result"]["result"]
    assert result.restored_from == first and result.undo_generation is not None
    assert f"restore generation **{result.undo_generation}**" in texts(at)
    written = frame_with(at, "what").set_index("generation")["what"]
    assert written[result.generation] == f"restore of #{first}, all threads"  # not "thread nan"
    assert written[result.undo_generation].startswith(f"undo point of the restore in #{result.generation}")

    open_page(at, "pages/chat.py")
    assert chat_messages(at)[-1] == ("assistant", "Your name is Ana.")

    open_page(at, "pages/restore.py")
    at.button(key="undo").click().run()
    at.button(key="confirm-restore").click().run()
    assert not at.exception
    assert sorted(rt.saver.store.live_thread_ids()) == sorted([thread_id, "other"])
    messages = rt.graph.get_state(thread_config(thread_id)).values["messages"]
    assert messages[-1].content == "Got it: your name is Bob. I'll remember that."


def test_restore_one_thread_leaves_the_others(app: AppTest) -> None:
    at = app.run()
    rt = runtime()
    chat_turn(rt.graph, "a", "my name is Ana")
    chat_turn(rt.graph, "b", "my name is Bea")
    first = rt.saver.backup().generation
    chat_turn(rt.graph, "a", "my name is Alice")
    chat_turn(rt.graph, "b", "my name is Betty")

    open_page(at, "pages/restore.py")
    oldest = min(g.generation for g in rt.saver.generations())
    assert "Restorable back to" in texts(at) and f"generation {oldest}):" in texts(at)
    at.selectbox(key="restore_generation").select(first).run()
    at.radio(key="restore_scope").set_value("One thread").run()
    at.selectbox(key="restore_thread").select("a").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Threads changed"] == "1"
    at.button(key="restore").click().run()
    at.button(key="confirm-restore").click().run()
    assert not at.exception
    assert (
        rt.graph.get_state(thread_config("a"))
        .values["messages"][-1]
        .content.endswith("your name is Ana. I'll remember that.")
    )
    assert "Betty" in rt.graph.get_state(thread_config("b")).values["messages"][-1].content


def test_restore_page_without_generations_says_what_to_do(app: AppTest) -> None:
    at = open_page(app.run(), "pages/restore.py")
    assert "No generation yet" in texts(at)


# -- security ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_wrong_password_shows_only_the_login(app: AppTest, page: str) -> None:
    app.secrets["admin_password"] = "s3cret-ö"
    at = app.run()
    at = open_page(at, page)
    at.text_input(key="login_password").input("wrong")
    at.button[0].click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Hybrid saver admin"]
    assert [e.value for e in at.error] == [
        "Wrong password. Try again, or change admin_password in .streamlit/secrets.toml."
    ]
    assert [w.label for w in at.text_input] == ["Admin password"]
    assert [b.label for b in at.button] == ["Log in"]
    for kind in ("chat_input", "dataframe", "metric", "selectbox", "tabs", "chat_message", "plotly_chart"):
        assert len(at.get(kind)) == 0, kind
    assert len(at.sidebar.button) == 0

    at.text_input(key="login_password").input("s3cret-ö")
    at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value in ("Chat", "Threads", "Backups", "Restore")
    assert "Admin password" not in [w.label for w in at.text_input]


# -- failures ------------------------------------------------------------------------------------------


def test_offline_database_chat_keeps_working_and_recovers(
    app_env: Callable[[str], None], pg_server: str, db_url: str
) -> None:
    # a database that does not exist yet: the saver starts offline, then attaches once it exists
    name = conninfo_to_dict(db_url)["dbname"] + "_late"
    app_env(make_conninfo(pg_server, dbname=name, password="pw-SECRET-1"))
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        assert not at.exception
        assert "PostgreSQL is unreachable" in texts(at)
        # a saver that started offline cannot tell a new thread from a stored one: the chat says so
        assert any("Reading the thread failed" in e.value and "cannot be reached" in e.value for e in at.error)
        assert not at.chat_input
        for page in PAGES[1:]:
            open_page(at, page)
            assert "PostgreSQL is unreachable" in texts(at)
            assert "pw-SECRET-1" not in texts(at)
        open_page(at, "pages/backups.py")
        assert "password=***" in texts(at)  # the connection string is shown masked
        at.button(key="backup_now").click().run()
        assert any("Backup failed" in t.value for t in at.toast)

        # the database comes back: the scheduled backup attaches by itself, memory is kept
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        saver = runtime().saver
        saver.scheduler.set_interval(0.2)
        deadline = time.monotonic() + 30
        while not views.attached(saver) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert views.attached(saver)
        saver.scheduler.set_interval(3600)
        at.run()
        assert not at.exception
        assert "PostgreSQL is unreachable" not in texts(at)
        open_page(at, "pages/chat.py")
        at.chat_input[0].set_value("my name is Ana").run()
        at.chat_input[0].set_value("what is my name?").run()
        assert chat_messages(at)[-1] == ("assistant", "Your name is Ana.")
        open_page(at, "pages/backups.py")
        at.button(key="backup_now").click().run()
        gens = saver.generations()
        assert gens and gens[0].threads == 1
        open_page(at, "pages/chat.py")
        assert chat_messages(at)[-1] == ("assistant", "Your name is Ana.")
    finally:
        reset_runtime()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_dashboard_starts_next_to_another_saver(app: AppTest, open_saver: Callable[..., HybridSaver]) -> None:
    other = open_saver()
    at = app.run()
    assert not at.exception
    assert "The dashboard cannot start" not in texts(at)
    assert runtime().saver.instance_id != other.instance_id


def test_big_restore_asks_for_the_generation_number(app: AppTest) -> None:
    at = app.run()
    rt = runtime()
    chat_turn(rt.graph, "keep", "my name is Ana")
    first = rt.saver.backup().generation
    for i in range(12):
        chat_turn(rt.graph, f"extra-{i}", f"my name is N{i}")
    rt.saver.backup()
    open_page(at, "pages/restore.py")
    at.selectbox(key="restore_generation").select(first).run()
    assert "removes 12 of 13 threads" in texts(at)
    at.button(key="restore").click().run()
    assert "extra-0" in texts(at)  # the threads that go are named
    at.button(key="confirm-restore").click().run()
    assert "Type" in texts(at) and len(rt.saver.store.live_thread_ids()) == 13  # refused without the number
    at.text_input(key="restore_typed").input(str(first))
    at.button(key="confirm-restore").click().run()
    assert not at.exception
    assert rt.saver.store.live_thread_ids() == ["keep"]


def test_delete_of_a_never_backed_up_thread_says_it_is_permanent(app: AppTest) -> None:
    at = app.run()
    at.chat_input[0].set_value("my name is Ana").run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert "never backed up" in texts(at) and "permanent" in texts(at)
    at.button(key="delete-backup-first").click().run()
    assert not at.exception
    assert runtime().saver.generations()
    assert "can be restored" in texts(at)


def test_bad_setting_says_what_to_fix(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_INTERVAL", "soon")
    at = app.run()
    assert not at.exception
    assert "BACKUP_INTERVAL='soon' is not a number" in texts(at)


def test_chat_says_when_the_last_message_was_never_answered(app: AppTest) -> None:
    from langgraph.checkpoint.base import copy_checkpoint, empty_checkpoint

    at = app.run()
    at.chat_input[0].set_value("my name is Ana").run()
    assert "never answered" not in texts(at)
    thread_id = at.session_state["chat_thread"]
    rt = runtime()
    latest = rt.saver.get_tuple(thread_config(thread_id))
    assert latest is not None
    # what a run leaves when it is cut right after saving its input checkpoint
    cut = copy_checkpoint(latest.checkpoint)
    cut["id"] = empty_checkpoint()["id"]
    rt.saver.put(latest.config, cut, {"source": "input", "step": 2}, {})
    at.run()
    assert not at.exception
    assert "saved but never answered" in texts(at)


def test_pages_during_an_outage_answer_at_once_and_say_so(app_env: Callable[[str], None]) -> None:
    """PostgreSQL goes away under a running dashboard (the pool has already dropped its dead
    connections): every page still renders quickly (not after the pool's 5 s timeout per query: the
    Backups page took 20 s), says PostgreSQL is not answering, and never shows a raw PoolTimeout.
    After the restart, the first backup brings the store's pages back."""
    server = PrivateServer("hs-app-outage-")
    try:
        app_env(server.create_database("app_outage"))
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.run()
        saver = runtime().saver
        graph = build_graph(saver, OfflineResponder())
        chat_turn(graph, "before", "my name is Ada")
        assert saver.backup().ok
        server.stop()
        saver.pool.check()  # drops the dead idle connection, as a query that met it does
        for page in PAGES:
            t0 = time.monotonic()
            at.switch_page(page).run()
            took = time.monotonic() - t0
            assert not at.exception, [e.value for e in at.exception]
            shown = texts(at)
            assert took < 3.0, f"{page} took {took:.1f} s to render during the outage"
            assert "PostgreSQL is not answering" in shown, (page, shown[:500])
            assert "PoolTimeout" not in shown, (page, shown[:500])
        chat_turn(graph, "before", "my name is Grace")  # chat keeps working from memory
        # the console holds only the threads it chats with: offline it cannot tell a new id from a stored one
        with pytest.raises(DatabaseUnavailable, match="cannot be reached"):
            chat_turn(graph, "during", "my name is Hedy")

        server.start()
        deadline = time.monotonic() + 30
        while not saver.backup().ok:
            assert time.monotonic() < deadline, "no backup succeeded within 30 s of the restart"
            time.sleep(0.5)
        open_page(at, "pages/backups.py")
        assert "PostgreSQL is not answering" not in texts(at)
        assert views.thread_page(saver, query="Grace")[1] == 1
    finally:
        reset_runtime()
        server.close()
