"""Thread actions shared by the Chat and Threads pages: new ids, rename, fork, delete, prune.

Titles live in the graph state (the ``title`` channel of ``agent.graph.ChatState``): the graph
sets it from the first user message and a rename writes a new checkpoint with
``graph.update_state``, so a renamed title is backed up and restored like any other state.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import streamlit as st

from agent import thread_config
from agent.graph import RESPOND_NODE
from dashboard import ui, views
from dashboard.runtime import Runtime
from persistence import InvalidValue

TITLE_LIMIT = 120
logger = logging.getLogger(__name__)


def new_thread_id() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


def thread_exists(runtime: Runtime, thread_id: str) -> bool:
    """True when the thread has a checkpoint here or in PostgreSQL (read without loading or claiming it)."""
    return views.thread_exists(runtime.saver, thread_id)


def rename(runtime: Runtime, thread_id: str, title: str) -> str:
    """Store ``title`` as the thread's title (a new checkpoint); returns the cleaned title.

    Raises:
        InvalidValue: the title is empty or the thread has no checkpoint yet.
    """
    title = " ".join(title.split())[:TITLE_LIMIT]
    if not title:
        raise InvalidValue("A title cannot be empty; type at least one character.")
    if not thread_exists(runtime, thread_id):
        raise InvalidValue(f"Thread {thread_id!r} has no messages yet; send one before renaming it.")
    runtime.graph.update_state(thread_config(thread_id), {"title": title}, as_node=RESPOND_NODE)
    return title


def fork(runtime: Runtime, thread_id: str, checkpoint_id: str, new_id: str | None = None, *, source: Any = None) -> str:
    """A new thread holding ``thread_id`` as it was at ``checkpoint_id``: that checkpoint and its
    ancestors (with their pending writes), none of the later ones; then a checkpoint that titles
    it "(fork)". Returns the new thread's id.

    The checkpoints are read from ``source`` (a ``views.ThreadView``: the thread is not taken from
    the member that holds it), else through the saver; only the new thread is written.
    """
    new_id = (new_id or "").strip() or new_thread_id()
    if thread_exists(runtime, new_id):
        raise InvalidValue(f"Thread {new_id!r} already exists; pick another id for the fork.")
    saver = runtime.saver
    reader = source if source is not None else saver
    chain = []
    config: dict[str, Any] | None = {
        "configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}
    }
    while config is not None:
        found = reader.get_tuple(config)  # type: ignore[arg-type]
        if found is None:
            break
        chain.append(found)
        config = found.parent_config  # type: ignore[assignment]
    if not chain:
        raise InvalidValue(f"Checkpoint {checkpoint_id} is not in thread {thread_id!r}; pick one from its history.")
    parent: str | None = None
    for tup in reversed(chain):
        target = {"configurable": {"thread_id": new_id, "checkpoint_ns": ""}}
        if parent is not None:
            target["configurable"]["checkpoint_id"] = parent
        checkpoint = tup.checkpoint
        saver.put(target, checkpoint, tup.metadata, dict(checkpoint.get("channel_versions") or {}))
        parent = checkpoint["id"]
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in tup.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, writes in by_task.items():
            saver.put_writes(
                {"configurable": {"thread_id": new_id, "checkpoint_ns": "", "checkpoint_id": parent}}, writes, task_id
            )
    values = chain[0].checkpoint.get("channel_values") or {}
    title = values.get("title") or thread_id
    runtime.graph.update_state(
        {"configurable": {"thread_id": new_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}},
        {"title": f"{title} (fork)"[:TITLE_LIMIT]},
        as_node=RESPOND_NODE,
    )
    return new_id


def ask_delete(thread_id: str, title: str) -> None:
    ui.ask_confirmation("delete-thread", thread_id=thread_id, title=title)


def ask_prune(thread_id: str, title: str, keep: int, checkpoints: int) -> None:
    ui.ask_confirmation("prune-thread", thread_id=thread_id, title=title, keep=keep, checkpoints=checkpoints)


def dialogs(runtime: Runtime, on_deleted: Any = None) -> None:
    """Render the delete and prune confirmation dialogs when one is asked for."""

    def delete_body(req: dict[str, Any]) -> None:
        name = f"**{req['title'] or req['thread_id']}** (`{req['thread_id']}`)"
        saver = runtime.saver
        try:
            kept = saver.store.ever_stored(req["thread_id"]) if views.database_answering(saver) else None
        except views.DB_ERRORS:
            kept = None
        if kept:
            st.markdown(
                f"Delete thread {name} and all its checkpoints? The next backup records the deletion. "
                "Kept generations still hold the thread, so it can be restored from the **Restore** page "
                f"until retention drops them (the newest {saver.retention} generations are kept)."
            )
            return
        if kept is None:
            st.warning(
                "PostgreSQL is not answering, so it cannot be told whether a backup holds this thread: "
                "treat the delete as **permanent**.",
                icon=":material/warning:",
            )
        else:
            st.error(
                f"Thread {name} was **never backed up**: deleting it is **permanent**, no restore can bring "
                "it back. Back it up first to keep a copy in the backup generations.",
                icon=":material/delete_forever:",
            )
        if kept is False and st.button("Back up first", icon=":material/backup:", key="delete-backup-first"):
            with ui.reporting("Backup", runtime) as outcome:
                run = saver.backup(trigger="manual")
            if not outcome.failed:
                logger.debug("backup before a delete: generation %s", run.generation)
                st.rerun()  # the dialog stays open (its request is in session state) and says so now

    def delete(req: dict[str, Any]) -> bool:
        with ui.reporting("Delete", runtime) as outcome:
            runtime.saver.delete_thread(req["thread_id"])
            ui.flash(f"Deleted thread {req['title'] or req['thread_id']}", icon=":material/delete:")
            if on_deleted is not None:
                on_deleted(req["thread_id"])
        return not outcome.failed

    def prune_body(req: dict[str, Any]) -> None:
        st.markdown(
            f"Keep only the newest **{req['keep']}** of the {req['checkpoints']} checkpoints of "
            f"**{req['title'] or req['thread_id']}**? The current state is kept; older checkpoints (and "
            "their writes) leave memory and are tombstoned at the next backup."
        )

    def prune(req: dict[str, Any]) -> bool:
        with ui.reporting("Prune", runtime) as outcome:
            runtime.saver.prune([req["thread_id"]], strategy="keep_last", keep_last=int(req["keep"]))
            ui.flash(f"Pruned to the newest {req['keep']} checkpoints", icon=":material/content_cut:")
        return not outcome.failed

    ui.confirmation("delete-thread", "Delete thread?", delete_body, "Delete", delete)
    ui.confirmation("prune-thread", "Prune checkpoints?", prune_body, "Prune", prune)


__all__ = ["ask_delete", "ask_prune", "dialogs", "fork", "new_thread_id", "rename", "thread_exists"]
