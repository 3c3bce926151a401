"""Restore: the kept generations, a preview of one against the current state, restore all or one
thread after confirmation, and how to undo it."""

import time

import streamlit as st

from dashboard import tables, ui, views
from dashboard.views.generations import PICK_LIMIT, generation_threads

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


#: above this many threads removed, a restore asks for the generation number to be typed
TYPED_CONFIRMATION = 10


def _restore(req: dict) -> bool:
    """Run a confirmed restore with its phases as progress; keep the result for the page."""
    generation, thread_id = int(req["generation"]), req.get("thread_id")
    if req.get("typed") and st.session_state.get("restore_typed", "").strip() != str(generation):
        st.error(f"Type **{generation}** in the box to confirm this restore.", icon=":material/keyboard:")
        return False
    bar = st.progress(0.0, text="Checking the generation…")
    phases: list[str] = []
    done: list[str] = []

    def progress(phase: str, fraction: float, detail: str) -> None:
        phases.append(f"{phase}: {detail}")
        if phase == "done":
            done.append(detail)  # shown once this page's own check below is over too
            return
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"**{phase.capitalize()}** · {detail}")

    started = time.monotonic()
    mismatched: list[str] = []
    with ui.reporting("Restore", runtime) as outcome:
        result = saver.restore(generation, thread_id=thread_id, progress=progress)
        if thread_id is not None:
            # one thread: its checkpoints in the generation (read by the restore before it wrote: retention
            # may drop the generation right after) against now (one indexed read); a restore of every
            # thread commits the generation's own rows, and its totals are the generation's
            now = saver.store.thread_counts(None, thread_id)
            restored = sum(n for n, _ in now.values())
            mismatched = [thread_id] if restored != result.checkpoints else []
    if outcome.failed:
        return False
    bar.progress(1.0, text=f"**Done** · {done[-1] if done else 'restored'}")
    took = time.monotonic() - started
    st.session_state.restore_result = {"result": result, "mismatched": mismatched, "phases": phases, "took": took}
    scope = f"thread {thread_id}" if thread_id else "all threads"
    ui.flash(
        f"Restored generation {generation} ({scope}) in {ui.fmt_seconds(took)}",
        icon=":material/settings_backup_restore:",
    )
    return True


def _restore_body(req: dict) -> None:
    scope = f"thread **{req['thread_id']}**" if req.get("thread_id") else "**every thread**"
    text = (
        f"Replace {scope} with generation **{req['generation']}**"
        + (f" (undo of generation {req['undo_of']})" if req.get("undo_of") else "")
        + f", on every member? {req['summary']}\n\nA pre-restore generation is written first: restore it to "
        "undo this."
    )
    if req.get("danger"):
        st.error(text, icon=":material/warning:")
        if req.get("removed_names"):
            st.markdown("**Removed:** " + req["removed_names"])
        if req.get("added_names"):
            st.markdown("**Added:** " + req["added_names"])
    else:
        st.markdown(text)
    if req.get("typed"):
        st.text_input(f"Type {req['generation']} to confirm", key="restore_typed")


ui.confirmation("restore", "Restore this generation?", _restore_body, "Restore", _restore)

# -- the result of the last restore ----------------------------------------------------------------
done = st.session_state.get("restore_result")
if done is not None:
    result = done["result"]
    scope = f"thread `{result.thread_id}`" if result.thread_id else "all threads"
    took = f" in {ui.fmt_seconds(done['took'])}" if done.get("took") is not None else ""
    st.success(
        f"**Restored generation {result.restored_from}** ({scope}) as generation {result.generation}{took}: "
        f"{ui.plural(result.threads, 'thread')}, {ui.plural(result.checkpoints, 'checkpoint')} now.\n\n"
        f"**To undo**, restore generation **{result.undo_generation}** (the state just before the restore, "
        "with what every member had not backed up).",
        icon=":material/check_circle:",
    )
    if result.members:
        st.caption(
            "Members that backed up and handed over their threads first: "
            + ", ".join(f"member {m}" for m in result.members)
            + ". They load the restored threads on their next access."
        )
    with st.expander("What the restore did"):
        st.markdown("\n".join(f"1. {p}" for p in done.get("phases", [])))
    if done["mismatched"]:
        st.warning(f"The store differs from the generation: {', '.join(done['mismatched'][:20])}")
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
window = None
with ui.reporting("Reading the restore window", runtime):
    window = saver.restore_window()
if window is not None:
    age = f" and every generation younger than {ui.fmt_seconds(saver.retention_age)}" if saver.retention_age else ""
    load = f" ({window.by_load:,} written under memory pressure or handoffs, not counted)" if window.by_load else ""
    st.caption(
        f"Restorable back to **{ui.fmt_time(window.oldest_at)}** ({ui.fmt_ago(window.oldest_at)}, generation "
        f"{window.oldest}): "
        f"{ui.plural(window.kept, 'generation')} kept{load}. Retention keeps the newest "
        f"{saver.retention} generations written by time or by hand{age}."
    )
tables.generations_table(gens, key="restore_generations_table")

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
    # PostgreSQL searches and pages the generation's threads: no thread's checkpoints are read to list them
    query = thread_col.text_input(
        "Search the generation's threads", key="restore_thread_query", placeholder="title, message text or id"
    )
    names: dict[str, str] = {}
    matching = 0
    with ui.reporting("Reading the generation's threads", runtime):
        names, matching = generation_threads(saver, int(generation), query)
    picked = st.session_state.get("restore_thread")
    if picked is not None and picked not in names:
        # a pick stays picked while the search changes, as long as the generation holds it
        with ui.reporting("Reading the generation's threads", runtime):
            if saver.store.has_thread(int(generation), picked):
                names[picked] = ""
        if picked not in names:
            st.session_state.pop("restore_thread", None)
    thread_id = thread_col.selectbox(
        "Thread",
        list(names),
        index=None,
        format_func=lambda t: f"{names[t]} · {t}" if names.get(t) else t,
        placeholder="Pick a thread of this generation",
        key="restore_thread",
    )
    shown = min(matching, PICK_LIMIT)
    thread_col.caption(
        f"{ui.plural(matching, 'thread')} of generation {generation} match"
        + (f": the {shown:,} most recently updated are listed, search to narrow" if matching > shown else "")
        if query.strip()
        else f"{ui.plural(matching, 'thread')} in generation {generation}"
        + (f": the {shown:,} most recently updated are listed, search for the others" if matching > shown else "")
    )

preview = None
fleet = None
with ui.reporting("Preview", runtime):
    if scope == "All threads" or thread_id is not None:
        # the members' changes not backed up yet count too: the restore has them back it up first
        fleet = views.fleet_counts(saver)
        preview = views.restore_preview(saver, int(generation), thread_id, fleet)
if preview is None or (scope == "One thread" and thread_id is None):
    st.stop()

summary = views.preview_summary(preview)
cols = st.columns(5)
cols[0].metric("Threads added", f"{summary['added']:,}", help="In the generation, not now: restore brings them back")
cols[1].metric("Threads removed", f"{summary['removed']:,}", help="Now, not in the generation: restore deletes them")
cols[2].metric("Threads changed", f"{summary['changed']:,}", help="Different checkpoints now and in the generation")
cols[3].metric("Unchanged", f"{summary['unchanged']:,}")
delta = summary["checkpoints_then"] - summary["checkpoints_now"]
cols[4].metric(
    "Checkpoints",
    f"{summary['checkpoints_then']:,}",
    delta=f"{delta:+,} vs now" if delta else None,
    delta_color="off",
    delta_arrow="off",
    help="Checkpoints in the generation (for the chosen scope), against memory now",
)
counted = "; ".join(
    f"member {mid}: {ui.plural(n, 'thread')} not backed up (asked at {ui.fmt_utc(at, '%H:%M:%S')} UTC)"
    for mid, (n, at) in sorted(fleet.answered.items())
)
mine = len(saver.pending_threads())
st.caption(
    "Compared with the state now: the store, and what each member holds that is not backed up yet (a restore "
    "has every member back it up first). Counted: "
    + (f"this dashboard: {ui.plural(mine, 'thread')} not backed up" + (f"; {counted}" if counted else ""))
    + "."
)
if fleet.missing:
    st.warning(
        "Not counted (no answer): "
        + "; ".join(f"member {mid} ({why})" for mid, why in sorted(fleet.missing.items()))
        + ". What those members hold that is not backed up is left out of this preview; the restore asks them "
        "again and stops if they do not hand over.",
        icon=":material/help:",
    )
differ = preview[preview["change"] != "unchanged"]
titles: dict[str, str] = views.thread_titles(saver, differ["thread_id"].head(1000)) if not differ.empty else {}
if differ.empty:
    st.caption("The store already matches this generation for the chosen scope.")
else:
    shown = differ.head(1000)
    shown = shown.assign(title=[titles.get(t) or t for t in shown["thread_id"]])
    st.dataframe(
        shown,
        hide_index=True,
        column_order=["title", "thread_id", "change", "checkpoints_now", "checkpoints_then", "delta"],
        column_config={
            "title": st.column_config.TextColumn("Title"),
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
total_now = summary["removed"] + summary["changed"] + summary["unchanged"]
# a restore that removes many threads, or most of them, is dangerous: say so and ask for the number
danger = summary["removed"] >= TYPED_CONFIRMATION or (total_now > 0 and summary["removed"] > total_now / 2)


def _names(change: str) -> str:
    ids = list(differ[differ["change"] == change]["thread_id"])
    if not ids:
        return ""
    named = [f"{titles[t]} (`{t}`)" if titles.get(t) else f"`{t}`" for t in ids[:8]]
    return ", ".join(named) + (f" and {len(ids) - 8:,} more" if len(ids) > 8 else "")


if danger:
    st.error(
        f"This restore **removes {summary['removed']:,} of {total_now:,} threads**"
        + (f" and adds {summary['added']:,}" if summary["added"] else "")
        + ". Check the generation: you will be asked to type its number.",
        icon=":material/warning:",
    )
if st.button(
    f"Restore generation {generation} ({what})…",
    type="primary",
    icon=":material/warning:" if danger else ":material/restore:",
    key="restore",
):
    ui.ask_confirmation(
        "restore",
        generation=int(generation),
        thread_id=thread_id,
        danger=danger,
        typed=danger,
        removed_names=_names("removed"),
        added_names=_names("added"),
        summary=(
            f"It adds {summary['added']:,}, removes {summary['removed']:,} and changes {summary['changed']:,} "
            f"thread(s); {summary['checkpoints_now']:,} checkpoints now → {summary['checkpoints_then']:,}."
        ),
    )
    st.rerun()
