"""dashboard.views: the read-only DataFrames behind the dashboard's pages (real PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable

from agent import build_graph, chat_turn, thread_config
from agent.graph import RESPOND_NODE
from dashboard import views
from persistence import HybridSaver


def test_thread_page_lists_every_thread_searched_and_sorted_by_the_server(
    open_saver: Callable[..., HybridSaver],
) -> None:
    saver = open_saver(memory_budget=64 * 1024)
    graph = build_graph(saver)
    chat_turn(graph, "a", "my name is Ana")
    chat_turn(graph, "b", "my name is Bob")
    chat_turn(graph, "b", "remember that I like tea")
    saver.get_tuple(thread_config("ghost"))  # a read of an unknown thread is not a thread
    df, total = views.thread_page(saver)
    assert total == 2 and set(df["thread_id"]) == {"a", "b"}
    stats = saver.stats()
    assert stats.resident_threads == stats.threads == 2  # nor is it counted as resident
    assert set(df["status"]) == {"pending here"}  # figures read from memory while not backed up
    assert df.set_index("thread_id").loc["b", "pending"] == 6
    assert df.set_index("thread_id").loc["a", "title"] == "my name is Ana"

    saver.backup()
    graph.update_state(thread_config("a"), {"title": "Ana's"}, as_node=RESPOND_NODE)
    df = views.thread_page(saver)[0].set_index("thread_id")
    assert df.loc["a", "title"] == "Ana's" and df.loc["a", "status"] == "pending here"
    assert df.loc["b", "status"] == "backed up" and df.loc["b", "where"] == "here"

    # the server sorts and searches all threads (message text included)
    by_size, _ = views.thread_page(saver, sort="checkpoints", descending=True)
    assert by_size["thread_id"].iloc[0] == "b"
    tea, n = views.thread_page(saver, query="TEA")
    assert n == 1 and list(tea["thread_id"]) == ["b"] and "tea" in tea["snippet"].iloc[0]
    page2, n = views.thread_page(saver, page=2, page_size=1, sort="thread_id", descending=False)
    assert n == 2 and list(page2["thread_id"]) == ["b"]

    # a cold thread is listed (held nowhere), and reading it loads nothing
    saver.backup()
    other = open_saver()
    chat_turn(build_graph(other), "c", "my name is Cy")
    other.close()
    df = views.thread_page(saver)[0].set_index("thread_id")
    assert df.loc["c", "where"] == "cold" and df.loc["c", "title"] == "my name is Cy"
    assert views.thread_exists(saver, "c") and "c" not in saver.thread_ids()
    view = views.observe_thread(saver, "c")
    assert view.source == "stored" and view.exists and view.generation is not None and view.owner is None
    assert "c" not in saver.thread_ids() and not saver.membership.owners_of(["c"])
    assert views.checkpoint_state(view, "c")["values"]["messages"][-1].content.endswith("I'll remember that.")
    assert views.thread_titles(saver, ["a", "c", "nope"]) == {"a": "Ana's", "c": "my name is Cy"}


def test_the_console_observes_threads_other_members_hold(open_saver: Callable[..., HybridSaver]) -> None:
    """Reading a thread another member holds leaves it there: as of its last backup (with what the
    member holds that is not backed up, from its heartbeat), or live from that member on request.
    The directory lists what members hold unsaved, and not a read of an unknown id."""
    console = open_saver(memory_budget=1_000_000, warm_start=False)
    app = open_saver()
    graph = build_graph(app)
    chat_turn(graph, "held", "my name is Ana")
    app.backup()
    chat_turn(graph, "held", "what is my name?")  # not backed up: 3 checkpoints pending on the app
    chat_turn(graph, "fresh", "my name is Bob")  # never backed up
    app.get_tuple(thread_config("ghost"))  # a read of an unknown thread claims its id, nothing more
    app._member.heartbeat()
    owners = app.membership.owners_of(["held", "fresh"])
    assert set(owners.values()) == {app.instance_id}

    df, total = views.thread_page(console)
    df = df.set_index("thread_id")
    assert total == 2 and set(df.index) == {"held", "fresh"}
    assert df.loc["held", "status"] == f"pending on member {app.instance_id}" and df.loc["held", "pending"] == 3
    assert df.loc["fresh", "checkpoints"] == 3 and df.loc["held", "where"] == f"member {app.instance_id}"

    stored = views.observe_thread(console, "held")
    assert stored.source == "stored" and stored.pending == 3 and stored.owner.instance_id == app.instance_id
    assert len(views.checkpoint_history(stored, "held")) == 3
    live = views.observe_thread(console, "held", live=True)
    assert live.source == "live" and live.pending == 3 and live.as_of is not None
    history = views.checkpoint_history(live, "held")
    assert len(history) == 6
    state = views.checkpoint_state(live, "held")
    assert state["values"]["messages"][-1].content == "Your name is Ana."
    diff = views.message_diff(live, "held", history["checkpoint_id"].iloc[-1], history["checkpoint_id"].iloc[0])
    assert "added" in set(diff["change"])
    exported = views.export_thread(live, "held")
    assert len(exported["checkpoints"]) == 6
    fresh = views.observe_thread(console, "fresh")
    assert not fresh.exists and fresh.pending == 3
    assert views.observe_thread(console, "fresh", live=True).exists
    # nothing changed hands
    assert app.membership.owners_of(["held", "fresh"]) == owners and not console.thread_ids()

    # the restore preview counts the app's pending checkpoints, asked of it
    fleet = views.fleet_counts(console)
    assert set(fleet.answered) == {app.instance_id} and not fleet.missing
    first = console.generations()[-1].generation
    preview = views.restore_preview(console, first, fleet=fleet).set_index("thread_id")
    assert preview.loc["held", "checkpoints_now"] == 6 and preview.loc["held", "change"] == "changed"
    assert preview.loc["fresh", "change"] == "removed"
    assert app.membership.owners_of(["held", "fresh"]) == owners


def test_history_state_diff_writes_and_export(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    graph = build_graph(saver)
    chat_turn(graph, "t", "my name is Ana")
    chat_turn(graph, "t", "what is my name?")
    history = views.checkpoint_history(saver, "t")
    assert len(history) == len(list(saver.list(thread_config("t"))))
    assert list(history["step"]) == sorted(history["step"], reverse=True)

    newest, oldest = history["checkpoint_id"].iloc[0], history["checkpoint_id"].iloc[-1]
    state = views.checkpoint_state(saver, "t", newest)
    assert state is not None and state["values"]["messages"][-1].content == "Your name is Ana."
    assert views.checkpoint_state(saver, "t", "no-such-checkpoint") is None

    diff = views.diff_checkpoints(saver, "t", history["checkpoint_id"].iloc[1], newest).set_index("channel")
    assert diff.loc["messages", "change"] == "changed" and "1 added: Your name is Ana." in diff.loc["messages", "after"]
    assert diff.loc["title", "change"] == "unchanged"
    assert views.diff_checkpoints(saver, "t", oldest, newest).set_index("channel").loc["title", "change"] == "added"

    messages = views.message_diff(saver, "t", history["checkpoint_id"].iloc[1], newest)
    assert list(messages["change"]) == ["same", "same", "same", "added"]
    assert messages["after"].iloc[-1] == "Your name is Ana." and messages["role"].iloc[-1] == "ai"
    assert views.is_internal_channel("branch:to:respond") and not views.is_internal_channel("messages")

    writes = views.pending_writes(saver, "t")
    assert set(writes["checkpoint_id"]) <= set(history["checkpoint_id"]) and len(writes) > 0

    exported = json.loads(json.dumps(views.export_thread(saver, "t")))
    assert exported["thread_id"] == "t" and len(exported["checkpoints"]) == len(history)
    last = exported["checkpoints"][-1]["values"]["messages"][-1]
    assert last["content"] == "Your name is Ana." and last["type"] == "ai"


def test_runs_generations_and_restore_preview(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    graph = build_graph(saver)
    chat_turn(graph, "keep", "my name is Ana")
    chat_turn(graph, "change", "my name is Bob")
    first = saver.backup().generation
    chat_turn(graph, "change", "what is my name?")
    chat_turn(graph, "new", "hello")
    saver.delete_thread("keep")
    saver.backup()

    saver.backup()  # nothing pending: folded, not a generation
    runs = views.runs_frame(saver)
    assert runs.attrs["source"] == "database" and list(runs["trigger"]) == ["manual", "manual"]
    assert runs["ok"].all() and (runs["duration_s"] >= 0).all() and runs["checkpoints"].iloc[-1] == 6
    assert list(runs["member"]) == [saver.instance_id] * 2
    assert len(views.runs_frame(saver, empty=True)) >= 2

    gens = views.generations_frame(saver)
    assert list(gens["generation"]) == [first + 1, first]

    preview = views.restore_preview(saver, first).set_index("thread_id")
    assert preview.loc["keep", "change"] == "added"  # deleted since: a restore brings it back
    assert preview.loc["new", "change"] == "removed"
    assert preview.loc["change", "change"] == "changed" and preview.loc["change", "delta"] < 0
    summary = views.preview_summary(preview.reset_index())
    assert (summary["added"], summary["removed"], summary["changed"], summary["unchanged"]) == (1, 1, 1, 0)
    one = views.restore_preview(saver, first, thread_id="change")
    assert list(one["thread_id"]) == ["change"]

    figures = views.backup_figures(saver)
    assert figures["generations_kept"] == 2 and figures["database_size"] > 0 and figures["pending"] == 0
    assert figures["last_run_ok"] is True and figures["attached"]
    assert figures["store_threads"] == 2 and figures["memory_budget"] is None

    members = views.members_frame(saver)
    assert list(members["member"]) == [saver.instance_id] and members["this"].all()
    assert members["resident_threads"].iloc[0] == saver.stats().resident_threads >= 2


def test_stats_history_samples_after_every_run(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    history = views.StatsHistory(saver, min_gap=3600)
    saver.add_listener(history.on_run)
    history.sample()
    history.sample()  # throttled
    chat_turn(build_graph(saver), "t", "hi")
    saver.backup()
    frame = history.frame()
    assert list(frame["checkpoints"]) == [0, 3] and list(frame["pending"]) == [0, 0]
    assert frame["resident_bytes"].iloc[-1] > frame["resident_bytes"].iloc[0]


def test_to_jsonable_handles_what_states_hold() -> None:
    from datetime import UTC, datetime

    from langchain_core.messages import HumanMessage

    value = {
        "m": [HumanMessage("hi", id="1")],
        "b": b"\x00\x01",
        "t": (1, 2.5, float("nan")),
        "s": {3, 1},
        "d": datetime(2026, 1, 1, tzinfo=UTC),
        1: object,
    }
    out = views.to_jsonable(value)
    json.dumps(out)
    assert out["m"][0]["content"] == "hi" and out["b"] == {"$bytes": "AAE="} and out["s"] == [1, 3]
    assert out["t"][:2] == [1, 2.5] and out["d"].startswith("2026-01-01") and "1" in out


def test_summaries_read_langgraph_msgpack_as_plain_values_and_say_what_the_serde_would() -> None:
    """A backup summarises every thread it touches; it reads LangGraph's own msgpack without building
    the message objects, and must find the same title and text as the serde does (tool calls, content
    lists, system and tool messages, a title channel)."""
    from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.graph import START, MessagesState, StateGraph

    from persistence.store.summary import describe

    class State(MessagesState):
        title: str

    def reply(state: State) -> dict:
        return {
            "title": "Weather in Porto",
            "messages": [
                SystemMessage("be brief"),
                AIMessage(
                    content=[{"type": "text", "text": "let me look"}],
                    tool_calls=[{"name": "weather", "args": {"city": "Porto"}, "id": "call-1"}],
                ),
                ToolMessage("18 C, sunny", tool_call_id="call-1"),
                AIMessage("It is 18 C and sunny in Porto."),
            ],
        }

    builder = StateGraph(State)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    memory = InMemorySaver()
    graph = builder.compile(checkpointer=memory)
    graph.invoke({"messages": [("user", "what is the weather in Porto?")]}, thread_config("w"))

    class ThroughTheSerde(JsonPlusSerializer):  # another loads_typed: the summary goes through it
        def loads_typed(self, data: tuple[str, bytes]) -> object:
            return super().loads_typed(data)

    plain = describe(JsonPlusSerializer(), "w", memory.storage["w"], memory.blobs)
    assert plain == describe(ThroughTheSerde(), "w", memory.storage["w"], memory.blobs)
    title, text = plain
    assert title == "Weather in Porto" and "weather in Porto?" in (text or "") and "sunny in Porto" in (text or "")
