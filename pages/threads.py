"""Threads: search, a paginated table, and one thread's timeline, state, diff, writes and actions."""

import json
import time
import zlib

import pandas as pd
import streamlit as st

from dashboard import charts, threads, ui, views

PAGE_SIZES = (25, 50, 100)

runtime = ui.page_setup(
    "Threads", "Every conversation in the store, in memory or not. Search by message text, title or id."
)
saver = runtime.saver
# a thread to select (after a fork or a delete) is set before the picker exists in the next run
if "threads_next" in st.session_state:
    nxt = st.session_state.pop("threads_next")
    if nxt:
        st.query_params["thread"] = nxt
    else:
        st.query_params.pop("thread", None)


def _select_next(thread_id: str | None) -> None:
    st.session_state.threads_next = thread_id or ""


def _backup_text(status: str, waiting: object, members: dict) -> str:
    """The Backup column: what a crash would lose, and where."""
    n = 0 if pd.isna(waiting) else int(waiting)
    if status == "pending here":
        return f"{ui.plural(n, 'checkpoint')} not backed up (here)" if n else "changes not backed up (here)"
    if status.startswith("pending on member "):
        mid = int(status.rsplit(" ", 1)[1])
        return f"{ui.plural(n, 'checkpoint')} not backed up on {views.member_label(members.get(mid), mid)}"
    return status


# -- search and table ----------------------------------------------------------------------------
started = time.perf_counter()
search, sort_col, order_col, size_col = st.columns([4, 2, 2, 1])
query = search.text_input(
    "Search",
    key="threads_query",
    placeholder="thread id (encrypted store: no text is kept)"
    if saver.encrypted
    else "message text, title or thread id",
    help="This store's savers encrypt (LANGGRAPH_AES_KEY): titles and message text are not kept in the store, so "
    "search matches thread ids."
    if saver.encrypted
    else None,
)
sort_label = sort_col.selectbox("Sort by", list(views.THREAD_SORTS), key="threads_sort")
descending = (
    order_col.segmented_control("Order", ["desc", "asc"], default="desc", key="threads_order", required=True) != "asc"
)
page_size = size_col.selectbox("Rows per page", PAGE_SIZES, key="threads_page_size")

table_slot = st.container()
# the pager is a new widget (page 1) whenever the search, the sort or the page size changes; its page
# is read before the query so the rows fetched are the rows of the page shown
pager_key = f"threads_page_{zlib.crc32(repr((query.strip(), sort_label, descending, page_size)).encode()):08x}"
page = int(st.session_state.get(pager_key) or 1)
rows, total = None, 0
from_memory = False
members = []
try:
    members = saver.members() if views.database_answering(saver) else []
    fleet = views.fleet_pending(saver, members)
    sort = views.THREAD_SORTS[sort_label]
    rows, total = views.thread_page(saver, query, sort, descending, page=page, page_size=page_size, fleet=fleet)
    last = max(1, -(-total // page_size))
    if page > last:  # fewer threads than when the page was picked: show the last one
        page = last
        rows, total = views.thread_page(saver, query, sort, descending, page=page, page_size=page_size, fleet=fleet)
except views.DB_ERRORS:
    rows = views.resident_threads_frame(saver, query)
    total, from_memory = len(rows), True
pages = max(1, -(-total // page_size))
page = min(page, pages)
st.pagination(pages, default=page, key=pager_key)
names = {m.instance_id: m for m in members}
rows = rows.assign(
    shown_title=[t or tid for t, tid in zip(rows["title"], rows["thread_id"], strict=True)],
    size=rows["bytes"].map(ui.fmt_bytes),
    shown_checkpoints=rows["checkpoints"].map(lambda n: "—" if pd.isna(n) else f"{int(n):,}"),
    shown_updated=rows["updated"].map(ui.fmt_utc),
    backup=[
        _backup_text(status, waiting, names) for status, waiting in zip(rows["status"], rows["pending"], strict=True)
    ],
    held=[
        "in memory here"
        if where == "here"
        else ("in PostgreSQL only" if where == "cold" else views.member_label(names.get(owner), owner))
        for where, owner in zip(rows["where"], rows["owner"], strict=True)
    ],
)
elapsed = time.perf_counter() - started
with table_slot:
    if from_memory:
        st.caption(
            f"PostgreSQL is not answering: the {total:,} threads in this process's memory are shown; "
            "cold threads come back with the database."
        )
    else:
        st.caption(
            f"{ui.plural(total, 'thread')}{' match' if query.strip() else ''} · page {page} of {pages} · "
            f"sorted by {sort_label.lower()} over all threads by PostgreSQL · {elapsed * 1000:,.0f} ms"
        )
    picked = st.dataframe(
        rows,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        column_order=["shown_title", "thread_id", "shown_checkpoints", "shown_updated", "size", "backup", "held"]
        + (["snippet"] if query.strip() else []),
        column_config={
            "shown_title": st.column_config.TextColumn("Title", width="medium", help="The thread id when untitled"),
            "thread_id": st.column_config.TextColumn("Thread id"),
            "shown_checkpoints": st.column_config.TextColumn("Checkpoints"),
            "shown_updated": st.column_config.TextColumn("Last update (UTC)"),
            "size": st.column_config.TextColumn("Size"),
            "backup": st.column_config.TextColumn("Backup", width="large"),
            "held": st.column_config.TextColumn("Held by"),
            "snippet": st.column_config.TextColumn("Match", width="large"),
        },
        key="threads_table",
    )
    others = [m for m in members if m.instance_id != saver.instance_id and m.alive]
    beats = ", ".join(
        f"{views.member_label(m)} at {ui.fmt_utc(m.heartbeat_at, '%H:%M:%S')}" for m in others if m.heartbeat_at
    )
    st.caption(
        "Click a row to open the thread (read without taking it from the member that holds it). Figures are as "
        "of each thread's last backup; what is pending here is read from memory"
        + (f"; what other members hold unsaved, as of their heartbeats ({beats})." if beats else ".")
    )
selected_rows = picked.selection.rows if picked is not None else []
if selected_rows:
    chosen = rows.iloc[selected_rows[0]]["thread_id"]
    if chosen != st.query_params.get("thread"):
        st.query_params["thread"] = chosen

# -- one thread ----------------------------------------------------------------------------------
if st.session_state.get("threads_pick"):
    st.query_params["thread"] = st.session_state.pop("threads_pick")
thread_id = st.query_params.get("thread")
if not thread_id:
    st.info("Pick a thread in the table to see its history, state and diffs.", icon=":material/touch_app:")
    st.stop()
live = st.session_state.get("threads_live") == thread_id
view = None
with ui.reporting("Opening the thread", runtime), st.spinner("Reading the thread…"):
    view = views.observe_thread(saver, thread_id, live=live)
if view is None:
    st.stop()
owner_label = views.member_label(view.owner, view.owner_id)
if not view.exists:
    if view.owner is not None and view.owner_id != saver.instance_id:
        st.warning(
            f"Thread `{thread_id}` was never backed up: {owner_label} holds it"
            + (f" ({ui.plural(view.pending, 'checkpoint')} not backed up)" if view.pending else "")
            + ". Read it live from that member, or back it up on the Backups page.",
            icon=":material/cloud_off:",
        )
        if st.button(f"Read live from {owner_label}", icon=":material/sensors:", key="threads_read_live"):
            st.session_state.threads_live = thread_id
            st.rerun()
        if view.note:
            st.caption(f"Live read failed: {view.note}.")
    else:
        st.warning(f"Thread `{thread_id}` has no checkpoint (deleted, or never saved).")
    st.stop()
titles = views.thread_titles(saver, [thread_id])
state_now = views.checkpoint_state(view, thread_id) or {"values": {}}
title = state_now["values"].get("title") or titles.get(thread_id) or thread_id
history = views.checkpoint_history(view, thread_id)
head, open_col = st.columns([5, 1], vertical_alignment="bottom")
head.subheader(title)
if view.source == "here":
    source = "in this dashboard's memory" + (
        f" ({ui.plural(view.pending, 'checkpoint')} not backed up yet)" if view.pending else ""
    )
elif view.source == "live":
    source = f"live from {owner_label}'s memory, read at {ui.fmt_utc(view.as_of, '%H:%M:%S')} UTC" + (
        f" ({ui.plural(view.pending, 'checkpoint')} not backed up there)" if view.pending else " (all backed up)"
    )
else:
    backed = (
        f"as of its last backup, generation {view.generation} at {ui.fmt_utc(view.as_of)} UTC "
        f"({ui.fmt_ago(view.as_of)})"
        if view.as_of is not None
        else "as PostgreSQL holds it"
    )
    held = "nobody holds it now" if view.owner is None else f"held by {owner_label}"
    if view.pending:
        held += (
            f", which has **{ui.plural(view.pending, 'newer checkpoint')} not backed up** (as of its heartbeat at "
            f"{ui.fmt_utc(view.owner.heartbeat_at if view.owner else None, '%H:%M:%S')} UTC)"
        )
    elif view.pending == 0:
        held += ", nothing pending there"
    source = f"from PostgreSQL {backed} · {held}"
head.caption(
    f"`{thread_id}` · {ui.plural(len(history), 'checkpoint')} · {source} · this page's URL links to the thread"
)
if view.note:
    st.caption(f"Live read failed, shown from PostgreSQL: {view.note}.")
if view.owner is not None and view.owner_id != saver.instance_id:
    live_col, _rest = st.columns([2, 5])
    if view.source == "live":
        if live_col.button("Show the last backup", icon=":material/database:", key="threads_read_stored"):
            st.session_state.pop("threads_live", None)
            st.rerun()
    elif live_col.button(
        f"Read live from {owner_label}",
        icon=":material/sensors:",
        key="threads_read_live",
        help="Asks the member for its copy (a read-only command): the thread stays with it",
    ):
        st.session_state.threads_live = thread_id
        st.rerun()
if open_col.button("Open in Chat", icon=":material/chat:", key="open_in_chat", width="stretch"):
    st.session_state.chat_thread = thread_id
    st.switch_page("pages/chat.py")
internals = st.toggle("Show LangGraph internals", key="threads_internals", help="Steps, sources, task ids")
cids = list(history["checkpoint_id"])
number = {cid: len(cids) - i for i, cid in enumerate(cids)}  # 1 = the oldest checkpoint


SOURCES = {"input": "user input", "loop": "graph step", "update": "edited", "fork": "forked"}


def _label(cid: str) -> str:
    row = history[history["checkpoint_id"] == cid].iloc[0]
    when = row["ts"].strftime("%H:%M:%S UTC") if row["ts"] is not None and row["ts"] == row["ts"] else "?"
    what = SOURCES.get(str(row["source"]), str(row["source"] or "checkpoint"))
    if internals:
        return f"step {row['step']} · {row['source']} · {when} · {cid[-12:]}"
    return f"#{number[cid]} {what} · {when}"


timeline, state_tab, diff_tab, writes_tab, actions_tab = st.tabs(
    ["Timeline", "State", "Diff", "Pending writes", "Actions"]
)
with timeline:
    st.plotly_chart(charts.timeline_chart(history), key="timeline_chart")
    shown = (
        history
        if internals
        else history.assign(
            source=history["source"].map(lambda v: SOURCES.get(v, v)),
            updated_channels=history["updated_channels"].map(
                lambda text: ", ".join(c for c in text.split(", ") if c and not views.is_internal_channel(c))
            ),
        )
    )
    st.dataframe(
        shown.assign(ts=shown["ts"].map(ui.fmt_utc)),
        hide_index=True,
        column_order=None if internals else ["ts", "source", "updated_channels", "bytes"],
        column_config={
            "ts": st.column_config.TextColumn("Time (UTC)"),
            "source": st.column_config.TextColumn("What"),
            "updated_channels": st.column_config.TextColumn("Changed"),
            "bytes": st.column_config.NumberColumn("Bytes", format="localized"),
        },
        key="history_table",
    )

with state_tab:
    cid = st.selectbox("Checkpoint", cids, format_func=_label, key=f"state_checkpoint-{view.source}")
    state = views.checkpoint_state(view, thread_id, cid)
    if state is None:
        st.warning("This checkpoint is gone (pruned or restored away). Pick another one.")
    else:
        messages_col, raw_col = st.columns(2)
        with messages_col:
            st.markdown("**Messages**")
            ui.render_messages(state["values"].get("messages", []))
        with raw_col:
            st.markdown("**Raw state**")
            st.json(views.to_jsonable(state), expanded=2)

with diff_tab:
    if len(cids) < 2:
        st.info("A diff needs two checkpoints; this thread has one.")
    else:
        left, right = st.columns(2)
        before = left.selectbox("Before", cids, index=1, format_func=_label, key=f"diff_before-{view.source}")
        after = right.selectbox("After", cids, index=0, format_func=_label, key=f"diff_after-{view.source}")
        with ui.reporting("Diff", runtime):
            messages = views.message_diff(view, thread_id, before, after)
            counts = messages["change"].value_counts()
            st.caption(
                f"Messages: {int(counts.get('added', 0))} added, {int(counts.get('removed', 0))} removed, "
                f"{int(counts.get('changed', 0))} changed, {int(counts.get('same', 0))} the same"
            )
            colours = {"added": "green", "removed": "red", "changed": "orange"}
            signs = {"added": "+", "removed": "−", "changed": "~"}
            for row in messages.itertuples():
                if row.change == "same":
                    continue
                colour = colours[row.change]
                text = row.after if row.change != "removed" else row.before
                was = f" (was: {row.before})" if row.change == "changed" else ""
                st.markdown(f":{colour}[**{signs[row.change]} {row.role}**] :{colour}[{text}]{was}")
            diff = views.diff_checkpoints(view, thread_id, before, after)
            if not internals:
                diff = diff[~diff["channel"].map(views.is_internal_channel)]
            changed = diff[diff["change"] != "unchanged"]
            st.caption(f"Channels: {len(changed)} of {len(diff)} differ")
            st.dataframe(
                diff,
                hide_index=True,
                column_config={
                    "channel": st.column_config.TextColumn("Channel"),
                    "change": st.column_config.TextColumn("Change"),
                    "before": st.column_config.TextColumn("Before", width="large"),
                    "after": st.column_config.TextColumn("After", width="large"),
                },
                key="diff_table",
            )

with writes_tab:
    writes = views.pending_writes(view, thread_id)
    st.caption(
        "Writes saved against a checkpoint by the tasks of the next step (LangGraph replays them instead "
        f"of re-running a finished task). {len(writes)} in this thread."
    )
    if not internals:
        writes = writes[~writes["channel"].map(views.is_internal_channel)]
    st.dataframe(
        writes,
        hide_index=True,
        column_order=None if internals else ["checkpoint_id", "channel", "value"],
        column_config={"checkpoint_id": "Checkpoint", "channel": "Channel", "value": "Value"},
        key="writes_table",
    )

with actions_tab:
    if view.owner is not None and view.owner_id != saver.instance_id:
        st.caption(
            f"Fork and export read the copy shown above. Prune, delete and Open in Chat change the thread: they "
            f"take it over from {owner_label} (which backs it up and hands it to this dashboard first)."
        )
    fork_col, prune_col = st.columns(2)
    with fork_col:
        st.markdown("**Fork from a checkpoint**")
        fork_from = st.selectbox("Fork point", cids, format_func=_label, key=f"fork_from-{view.source}")
        fork_id = st.text_input("New thread id", key="fork_id", placeholder="leave empty for a new id")
        if st.button("Fork", icon=":material/call_split:", key="fork"):
            with ui.reporting("Fork", runtime) as outcome:
                new_id = threads.fork(runtime, thread_id, fork_from, fork_id, source=view)
            if not outcome.failed:
                ui.flash(f"Forked into {new_id}", icon=":material/call_split:")
                _select_next(new_id)
                st.rerun()
    with prune_col:
        st.markdown("**Prune**")
        keep = st.number_input("Keep the newest", min_value=1, max_value=max(1, len(cids)), value=1, key="keep_n")
        if st.button("Prune…", icon=":material/content_cut:", key="prune", disabled=len(cids) <= 1):
            threads.ask_prune(thread_id, title, int(keep), len(cids))
    st.divider()
    export_col, delete_col = st.columns(2)
    export_col.download_button(
        "Export to JSON",
        data=lambda: json.dumps(views.export_thread(view, thread_id), ensure_ascii=False, indent=1),
        file_name=f"thread-{thread_id}.json"[:120],
        mime="application/json",
        icon=":material/download:",
        key="export",
    )
    if delete_col.button("Delete thread…", icon=":material/delete:", key="delete"):
        threads.ask_delete(thread_id, title)

threads.dialogs(runtime, on_deleted=lambda _t: _select_next(None))
