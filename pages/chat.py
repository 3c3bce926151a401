"""Chat: talk to the demo graph; the sidebar lists threads, newest first (new, rename, delete)."""

from datetime import timedelta

import streamlit as st

from agent import stream_turn, thread_config
from dashboard import threads, ui, views

SIDEBAR_THREADS = 30

runtime = ui.page_setup("Chat")
saver = runtime.saver
if "chat_thread" not in st.session_state:
    st.session_state.chat_thread = threads.new_thread_id()


def _open(thread_id: str) -> None:
    st.session_state.chat_thread = thread_id


def _after_delete(thread_id: str) -> None:
    if st.session_state.get("chat_thread") == thread_id:
        st.session_state.chat_thread = threads.new_thread_id()


# -- sidebar: history ----------------------------------------------------------------------------
with st.sidebar:
    st.button(
        "New chat",
        icon=":material/add:",
        type="primary",
        width="stretch",
        on_click=_open,
        args=(threads.new_thread_id(),),
    )
    query = st.text_input(
        "Find a chat",
        key="chat_search",
        placeholder="thread id (encrypted store)" if saver.encrypted else "words, title or id",
        label_visibility="collapsed",
    )
    limit = st.session_state.get("chat_limit", SIDEBAR_THREADS)
    try:
        shown, total = views.thread_page(saver, query, "updated_at", True, page=1, page_size=limit)
    except views.DB_ERRORS:
        shown = views.resident_threads_frame(saver, query)
        total = len(shown)
    st.caption(ui.plural(total, "thread") + (f", {len(shown)} shown" if total > len(shown) else ""))
    with st.container(key="chat_history"):
        group = None
        for row in shown.itertuples():
            label = ui.date_group(row.updated)
            if label != group:
                group = label
                st.caption(label)
            st.button(
                (row.title or row.thread_id)[:48],
                key=f"open-{row.thread_id}",
                type="primary" if row.thread_id == st.session_state.chat_thread else "tertiary",
                width="stretch",
                help=row.thread_id,
                on_click=_open,
                args=(row.thread_id,),
            )
    if total > len(shown) and st.button("Load more", key="chat_more", icon=":material/expand_more:"):
        st.session_state.chat_limit = limit + SIDEBAR_THREADS
        st.rerun()
    # left-align the history like a list (Streamlit centres button labels)
    st.html(
        "<style>.st-key-chat_history button, .st-key-chat_history button div "
        "{ justify-content: flex-start !important; text-align: left !important; }</style>"
    )
    st.caption(f"Model: {runtime.responder}")


@st.fragment(run_every=timedelta(seconds=2))
def _status(thread_id: str) -> None:
    """The thread's backup status, refreshed on its own (the rest of the page stays as it is)."""
    count = len(saver.thread_rows(thread_id).storage.get(thread_id, {}).get("", {}))
    backed = thread_id not in saver.pending_threads() and views.attached(saver)
    status = ":green[backed up]" if backed else ":orange[latest changes not backed up yet]"
    st.caption(f"`{thread_id}` · {ui.plural(count, 'checkpoint')} · {status}")


# -- the thread ----------------------------------------------------------------------------------
thread_id = st.session_state.chat_thread
state = None
with ui.reporting("Reading the thread", runtime) as read:
    # a new chat is not read (a read would claim its id in the store); offline, a thread not in memory
    # cannot be told from a new one, and the read says so
    exists = threads.thread_exists(runtime, thread_id)
    if exists or not views.database_answering(saver):
        state = runtime.graph.get_state(thread_config(thread_id))
        exists = exists or bool(state is not None and state.values)
if read.failed:
    # e.g. PostgreSQL is unreachable and this thread is not in memory: nothing to show or write to
    st.stop()
values = state.values if state is not None else {}
messages = values.get("messages", [])
title = values.get("title") or ""

head, actions = st.columns([4, 2], vertical_alignment="center")
with head:
    st.subheader(title or ("New chat" if not exists else thread_id))
    if exists:
        _status(thread_id)
    else:
        st.caption(f"`{thread_id}` · not saved yet: send a message to start")
if exists:
    with actions:
        rename_col, delete_col = st.columns(2)
        with rename_col.popover("Rename", icon=":material/edit:", width="stretch"):
            with st.form("rename", border=False):
                new_title = st.text_input("Title", value=title, max_chars=threads.TITLE_LIMIT, key="rename_title")
                if st.form_submit_button("Save", type="primary"):
                    with ui.reporting("Rename", runtime) as outcome:
                        saved = threads.rename(runtime, thread_id, new_title)
                    if not outcome.failed:
                        ui.flash(f"Renamed to “{saved}”", icon=":material/edit:")
                        st.rerun()
        if delete_col.button("Delete", icon=":material/delete:", width="stretch"):
            threads.ask_delete(thread_id, title)

threads.dialogs(runtime, on_deleted=_after_delete)

ui.render_messages(messages)
if state is not None and (state.metadata or {}).get("source") == "input":
    st.warning(
        "The last message was saved but never answered: its turn was cut short (a restart, a crash or a "
        "restore). Send it again; the next message replaces it.",
        icon=":material/hourglass_disabled:",
    )
if not messages:
    st.info(
        "Tell the assistant something about yourself (“my name is Ana”), ask it back later (“what is my "
        "name?”), then restart the app: the thread comes back from PostgreSQL.",
        icon=":material/lightbulb:",
    )

prompt = st.chat_input("Your message")
if prompt:
    st.chat_message("user").markdown(prompt)
    with st.chat_message("assistant"):
        with ui.reporting("Reply", runtime) as outcome:
            st.write_stream(stream_turn(runtime.graph, thread_id, prompt))
    if not outcome.failed:
        st.rerun()
