"""Threads: search, a paginated table, and one thread's timeline, state, diff, writes and actions."""

import json
import time

import streamlit as st

from dashboard import charts, threads, ui
from persistence import views

PAGE_SIZES = (25, 50, 100)

runtime = ui.page_setup("Threads", "Every conversation in memory. Search by id, title or metadata.")
saver = runtime.saver
# a thread to select (after a fork or a delete) is set before the picker exists in the next run
if "threads_next" in st.session_state:
    st.session_state.threads_pick = st.session_state.pop("threads_next")


def _select_next(thread_id: str | None) -> None:
    st.session_state.threads_next = thread_id


# -- search and table ----------------------------------------------------------------------------
started = time.perf_counter()
frame = runtime.threads.frame()
search, status_col, size_col = st.columns([4, 2, 1])
query = search.text_input("Search", key="threads_query", placeholder="id, title or metadata (e.g. source)")
status = status_col.segmented_control(
    "Backup status", ["all", "pending", "backed up"], default="all", key="threads_status", required=True
)
page_size = size_col.selectbox("Rows per page", PAGE_SIZES, key="threads_page_size")
matches = views.filter_threads(frame, query, status or "all")
pages = max(1, -(-len(matches) // page_size))
if st.session_state.get("threads_page", 1) > pages:
    st.session_state.threads_page = 1

table_slot = st.container()
page = st.pagination(pages, key="threads_page")
rows, pages = views.paginate(matches, page, page_size)
rows = rows.copy()
sizes = views.thread_sizes(saver, rows["thread_id"])
rows["size"] = rows["thread_id"].map(sizes)
rows["backup"] = rows["backed_up"].map({True: "backed up", False: "pending"})
elapsed = time.perf_counter() - started
with table_slot:
    st.caption(
        f"{len(matches):,} of {len(frame):,} threads match · page {page} of {pages} · built in {elapsed * 1000:.0f} ms"
    )
    st.dataframe(
        rows,
        hide_index=True,
        column_order=["title", "thread_id", "checkpoints", "updated", "size", "backup", "source", "step"],
        column_config={
            "title": st.column_config.TextColumn("Title", width="medium"),
            "thread_id": st.column_config.TextColumn("Thread id"),
            "checkpoints": st.column_config.NumberColumn("Checkpoints"),
            "updated": st.column_config.DatetimeColumn("Last update", format="YYYY-MM-DD HH:mm:ss"),
            "size": st.column_config.NumberColumn("Size (bytes)", format="%d"),
            "backup": st.column_config.TextColumn("Backup"),
            "source": st.column_config.TextColumn("Last source"),
            "step": st.column_config.NumberColumn("Step"),
        },
        key="threads_table",
    )

# -- one thread ----------------------------------------------------------------------------------
options = list(rows["thread_id"])
selected = st.session_state.get("threads_pick")
if selected and selected not in options:
    if threads.thread_exists(runtime, selected):
        options.insert(0, selected)
    else:
        st.session_state.threads_pick = None
titles = dict(zip(frame["thread_id"], frame["title"], strict=True))
thread_id = st.selectbox(
    "Thread",
    options,
    index=None,
    format_func=lambda t: f"{titles.get(t) or '(untitled)'} · {t}",
    placeholder="Pick a thread of this page to inspect it",
    key="threads_pick",
)
if thread_id is None or not threads.thread_exists(runtime, thread_id):
    st.stop()

title = titles.get(thread_id) or thread_id
history = views.checkpoint_history(saver, thread_id)
st.subheader(title)
st.caption(f"`{thread_id}` · {ui.plural(len(history), 'checkpoint')}")
cids = list(history["checkpoint_id"])


def _label(cid: str) -> str:
    row = history[history["checkpoint_id"] == cid].iloc[0]
    when = row["ts"].strftime("%H:%M:%S") if row["ts"] is not None and row["ts"] == row["ts"] else "?"
    return f"step {row['step']} · {row['source']} · {when} · {cid[-12:]}"


timeline, state_tab, diff_tab, writes_tab, actions_tab = st.tabs(
    ["Timeline", "State", "Diff", "Pending writes", "Actions"]
)
with timeline:
    st.plotly_chart(charts.timeline_chart(history), key="timeline_chart")
    st.dataframe(history, hide_index=True, key="history_table")

with state_tab:
    cid = st.selectbox("Checkpoint", cids, format_func=_label, key="state_checkpoint")
    state = views.checkpoint_state(saver, thread_id, cid)
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
        before = left.selectbox("Before", cids, index=1, format_func=_label, key="diff_before")
        after = right.selectbox("After", cids, index=0, format_func=_label, key="diff_after")
        with ui.reporting("Diff", runtime):
            diff = views.diff_checkpoints(saver, thread_id, before, after)
            changed = diff[diff["change"] != "unchanged"]
            st.caption(f"{len(changed)} of {len(diff)} channels differ")
            st.dataframe(diff, hide_index=True, key="diff_table")

with writes_tab:
    writes = views.pending_writes(saver, thread_id)
    st.caption(
        "Writes saved against a checkpoint by the tasks of the next step (LangGraph replays them instead "
        f"of re-running a finished task). {len(writes)} in this thread."
    )
    st.dataframe(writes, hide_index=True, key="writes_table")

with actions_tab:
    fork_col, prune_col = st.columns(2)
    with fork_col:
        st.markdown("**Fork from a checkpoint**")
        fork_from = st.selectbox("Fork point", cids, format_func=_label, key="fork_from")
        fork_id = st.text_input("New thread id", key="fork_id", placeholder="leave empty for a new id")
        if st.button("Fork", icon=":material/call_split:", key="fork"):
            with ui.reporting("Fork", runtime) as outcome:
                new_id = threads.fork(runtime, thread_id, fork_from, fork_id)
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
        data=lambda: json.dumps(views.export_thread(saver, thread_id), ensure_ascii=False, indent=1),
        file_name=f"thread-{thread_id}.json"[:120],
        mime="application/json",
        icon=":material/download:",
        key="export",
    )
    if delete_col.button("Delete thread…", icon=":material/delete:", key="delete"):
        threads.ask_delete(thread_id, title)

threads.dialogs(runtime, on_deleted=lambda _t: _select_next(None))
