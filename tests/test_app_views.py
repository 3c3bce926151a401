"""persistence.views: the read-only DataFrames behind the dashboard's pages (real PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable

from agent import build_graph, chat_turn, thread_config
from agent.graph import RESPOND_NODE
from persistence import HybridSaver, views


def test_thread_index_titles_counts_status_and_cache(open_saver: Callable[..., HybridSaver]) -> None:
    saver = open_saver()
    graph = build_graph(saver)
    chat_turn(graph, "a", "my name is Ana")
    chat_turn(graph, "b", "my name is Bob")
    saver.get_tuple(thread_config("ghost"))  # a read of an unknown thread is not a thread
    index = views.ThreadIndex(saver)

    df = index.frame()
    assert list(df["thread_id"]) == ["b", "a"]  # newest first
    assert list(df["title"]) == ["my name is Bob", "my name is Ana"]
    assert not df["backed_up"].any() and index.last_decoded == 2

    saver.backup()
    graph.update_state(thread_config("a"), {"title": "Ana's"}, as_node=RESPOND_NODE)
    df = index.frame().set_index("thread_id")
    assert index.last_decoded == 1  # only the thread with a new checkpoint is decoded again
    assert df.loc["a", "title"] == "Ana's" and not df.loc["a", "backed_up"] and df.loc["b", "backed_up"]
    assert df.loc["a", "updated"] > df.loc["b", "updated"]

    full = index.frame()
    assert list(views.filter_threads(full, "ana's")["thread_id"]) == ["a"]
    assert list(views.filter_threads(full, "", "backed up")["thread_id"]) == ["b"]
    assert list(views.filter_threads(full, '"source": "update"')["thread_id"]) == ["a"]  # metadata
    rows, pages = views.paginate(full, page=5, page_size=1)
    assert pages == 2 and list(rows["thread_id"]) == ["b"]  # clamped to the last page
    sizes = views.thread_sizes(saver, ["a", "b"])
    assert sizes["a"] > sizes["b"] > 0


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

    runs = views.runs_frame(saver)
    assert runs.attrs["source"] == "database" and list(runs["trigger"]) == ["manual", "manual"]
    assert runs["ok"].all() and (runs["duration_s"] >= 0).all() and runs["checkpoints"].iloc[-1] == 6

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
