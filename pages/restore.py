"""Restore: the kept generations, a preview of one against the current state, restore all or one
thread after confirmation, and how to undo it."""

import streamlit as st

from dashboard import ui
from persistence import views

runtime = ui.page_setup(
    "Restore",
    "Put back the state of a backup generation, for every thread or one. A restore first takes a "
    "pre-restore generation, so it can itself be undone.",
)
saver = runtime.saver

if not views.attached(saver):
    st.info("Generations live in PostgreSQL: they can be listed and restored once the database is back.")
    st.stop()

gens = None
with ui.reporting("Reading the generations", runtime):
    gens = views.generations_frame(saver)
if gens is None:
    st.stop()


def _restore(req: dict) -> bool:
    """Run a confirmed restore with progress; keep the result for the page."""
    generation, thread_id = int(req["generation"]), req.get("thread_id")
    bar = st.progress(0.0, text="Checking the generation…")
    with ui.reporting("Restore", runtime) as outcome:
        expected = saver.store.thread_counts(generation)
        if thread_id is not None:
            expected = {k: v for k, v in expected.items() if k == thread_id}
        bar.progress(0.2, text="Taking the pre-restore backup and restoring…")
        result = saver.restore(generation, thread_id=thread_id)
        bar.progress(0.8, text="Checking memory against the generation…")
        now = views.memory_thread_counts(saver)
        if thread_id is not None:
            now = {k: v for k, v in now.items() if k == thread_id}
        mismatched = sorted(t for t in set(expected) | set(now) if expected.get(t) != now.get(t))
        bar.progress(1.0, text="Done")
    if outcome.failed:
        return False
    st.session_state.restore_result = {"result": result, "mismatched": mismatched}
    scope = f"thread {thread_id}" if thread_id else "all threads"
    ui.flash(f"Restored generation {generation} ({scope})", icon=":material/settings_backup_restore:")
    return True


def _restore_body(req: dict) -> None:
    scope = f"thread **{req['thread_id']}**" if req.get("thread_id") else "**every thread**"
    st.markdown(
        f"Replace {scope} in memory with generation **{req['generation']}**"
        + (f" (undo of generation {req['undo_of']})" if req.get("undo_of") else "")
        + f"? {req['summary']}\n\nA pre-restore generation is written first: restore it to undo this."
    )


ui.confirmation("restore", "Restore this generation?", _restore_body, "Restore", _restore)

# -- the result of the last restore ----------------------------------------------------------------
done = st.session_state.get("restore_result")
if done is not None:
    result = done["result"]
    scope = f"thread `{result.thread_id}`" if result.thread_id else "all threads"
    st.success(
        f"**Restored generation {result.restored_from}** ({scope}) as generation {result.generation}: "
        f"{ui.plural(result.threads, 'thread')}, {ui.plural(result.checkpoints, 'checkpoint')} in memory now.\n\n"
        f"**To undo**, restore generation **{result.undo_generation}** (the pre-restore backup).",
        icon=":material/check_circle:",
    )
    if done["mismatched"]:
        st.warning(f"Memory differs from the generation for: {', '.join(done['mismatched'][:20])}")
    undo_col, dismiss_col, _ = st.columns([2, 1, 3])
    if result.undo_generation is not None and undo_col.button(
        f"Undo: restore generation {result.undo_generation}…", icon=":material/undo:", key="undo"
    ):
        ui.ask_confirmation(
            "restore",
            generation=result.undo_generation,
            thread_id=result.thread_id,
            undo_of=result.restored_from,
            summary="This puts back the state from just before the restore.",
        )
        st.rerun()
    if dismiss_col.button("Dismiss", key="dismiss_result"):
        st.session_state.pop("restore_result", None)
        st.rerun()

# -- generations -----------------------------------------------------------------------------------
if gens.empty:
    st.info("No generation yet. Press **Backup now** on the Backups page (or wait for the scheduled backup).")
    st.stop()

st.subheader("Generations")
st.dataframe(
    gens,
    hide_index=True,
    column_config={
        "generation": st.column_config.NumberColumn("Generation"),
        "taken_at": st.column_config.DatetimeColumn("Taken", format="YYYY-MM-DD HH:mm:ss"),
        "trigger": st.column_config.TextColumn("Trigger"),
        "kind": st.column_config.TextColumn("Kind"),
        "threads": st.column_config.NumberColumn("Threads"),
        "checkpoints": st.column_config.NumberColumn("Checkpoints"),
        "rows_written": st.column_config.NumberColumn("Rows written"),
        "bytes_written": st.column_config.NumberColumn("Bytes written", format="%d"),
        "restored_from": st.column_config.NumberColumn("Restored from"),
        "thread_id": st.column_config.TextColumn("Thread"),
    },
    key="generations_table",
)

by_gen = gens.set_index("generation")


def _gen_label(g: int) -> str:
    row = by_gen.loc[g]
    return (
        f"#{g} · {ui.fmt_time(row['taken_at'])} · {row['trigger']} · "
        f"{ui.plural(int(row['threads']), 'thread')} / {ui.plural(int(row['checkpoints']), 'checkpoint')}"
    )


st.subheader("Preview")
pick, scope_col, thread_col = st.columns([3, 2, 3])
generation = pick.selectbox("Generation", list(gens["generation"]), format_func=_gen_label, key="restore_generation")
scope = scope_col.radio("Restore", ["All threads", "One thread"], horizontal=True, key="restore_scope")
thread_id = None
if scope == "One thread":
    in_gen = []
    with ui.reporting("Reading the generation's threads", runtime):
        in_gen = sorted(saver.store.thread_counts(int(generation)))
    thread_id = thread_col.selectbox(
        "Thread",
        in_gen,
        index=None,
        placeholder="Pick a thread of this generation",
        key="restore_thread",
    )

preview = None
with ui.reporting("Preview", runtime):
    preview = views.restore_preview(saver, int(generation), thread_id)
if preview is None or (scope == "One thread" and thread_id is None):
    st.stop()

summary = views.preview_summary(preview)
cols = st.columns(5)
cols[0].metric("Threads added", summary["added"], help="In the generation, not in memory: restore brings them back")
cols[1].metric("Threads removed", summary["removed"], help="In memory, not in the generation: restore deletes them")
cols[2].metric("Threads changed", summary["changed"], help="Different checkpoints in memory and in the generation")
cols[3].metric("Unchanged", summary["unchanged"])
delta = summary["checkpoints_then"] - summary["checkpoints_now"]
cols[4].metric(
    "Checkpoints",
    f"{summary['checkpoints_then']:,}",
    delta=f"{delta:+,} vs now" if delta else None,
    delta_color="off",
    delta_arrow="off",
    help="Checkpoints in the generation (for the chosen scope), against memory now",
)
differ = preview[preview["change"] != "unchanged"]
if differ.empty:
    st.caption("Memory already matches this generation for the chosen scope.")
else:
    titles = runtime.threads.frame().set_index("thread_id")["title"]
    shown = differ.head(1000).assign(title=lambda d: d["thread_id"].map(titles).fillna(""))
    st.dataframe(
        shown,
        hide_index=True,
        column_order=["title", "thread_id", "change", "checkpoints_now", "checkpoints_then", "delta"],
        column_config={
            "title": st.column_config.TextColumn("Title (now)"),
            "thread_id": st.column_config.TextColumn("Thread id"),
            "change": st.column_config.TextColumn("Restore would"),
            "checkpoints_now": st.column_config.NumberColumn("Checkpoints now"),
            "checkpoints_then": st.column_config.NumberColumn("In the generation"),
            "delta": st.column_config.NumberColumn("Delta", format="%+d"),
        },
        key="preview_table",
    )
    if len(differ) > 1000:
        st.caption(f"First 1,000 of {len(differ):,} differing threads.")

what = f"thread {thread_id}" if thread_id else "all threads"
if st.button(f"Restore generation {generation} ({what})…", type="primary", icon=":material/restore:", key="restore"):
    ui.ask_confirmation(
        "restore",
        generation=int(generation),
        thread_id=thread_id,
        summary=(
            f"It adds {summary['added']}, removes {summary['removed']} and changes {summary['changed']} "
            f"thread(s); {summary['checkpoints_now']:,} checkpoints now → {summary['checkpoints_then']:,}."
        ),
    )
    st.rerun()
