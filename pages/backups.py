"""Backups: this member's figures, the fleet's members, charts, the runs, Backup now (this member
or all), the interval and pause (kept in the store), and the generations with verify."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboard import charts, tables, ui, views
from persistence import BackupRun
from persistence.ops.scheduler import MAX_INTERVAL

runtime = ui.page_setup(
    "Backups",
    "Each member backs up what changed since its last run as a new generation. This dashboard is one member.",
    own_pause_banner=False,  # said below, next to its Resume button
)
saver = runtime.saver
refresh = timedelta(seconds=runtime.settings.refresh_seconds)


def _toast_run(run: BackupRun) -> None:
    if not run.ok:
        ui.flash(
            f"Backup failed: {run.error}. The {run.pending:,} changes stay in memory and are retried at the next run.",
            icon=":material/error:",
        )
    elif run.generation is None:
        ui.flash("Nothing to back up: PostgreSQL already holds every change.", icon=":material/check_circle:")
    else:
        ui.flash(
            f"Backup written: generation {run.generation}, {run.rows:,} rows, {ui.fmt_bytes(run.bytes)} "
            f"in {ui.fmt_seconds(run.duration)}",
            icon=":material/check_circle:",
        )


def _ask_member(member_id: int, op: str, **args: object) -> tuple[str | None, dict]:
    """Send ``op`` to one member (this one directly); return (an error sentence or None, its answer)."""
    try:
        if member_id == saver.instance_id:
            if op == "backup":
                run = saver.backup(trigger="manual")
                return run.error, {"generation": run.generation, "rows": run.rows, "empty": run.empty}
            getattr(saver, op)(*args.values())
            return None, {}
        answer = saver.ask(member_id, op, timeout=30, **args)
        return answer.error, answer.result
    except Exception as exc:  # noqa: BLE001 - one member's failure is reported, the others go on
        return ui.error_text(exc, saver.conninfo), {}


def _wrote(result: dict) -> str:
    """What a member's backup wrote, in words."""
    if result.get("generation") is None:
        return "nothing to back up"
    return f"wrote generation {result['generation']} ({int(result.get('rows') or 0):,} rows)"


def _backup_members(member_ids: list[int]) -> None:
    """Ask members for a backup now and say what each did."""
    results = []
    with st.spinner("Asking the members to back up…"):
        for mid in member_ids:
            error, result = _ask_member(mid, "backup")
            results.append((mid, error, result))
    failed = [f"member {m}: {e}" for m, e, _ in results if e]
    done = [f"member {m} {_wrote(r)}" for m, e, r in results if not e]
    text = ("Backed up: " + "; ".join(done) + ". ") if done else ""
    text += ("Failed on " + "; ".join(failed)) if failed else ""
    ui.flash(text or "No member to back up.", icon=":material/error:" if failed else ":material/check_circle:")


# -- controls ------------------------------------------------------------------------------------
sched = saver.scheduler
if sched is not None and sched.paused:
    st.warning(
        "**Scheduled backups of this dashboard's saver are paused.** Changes wait in memory until you resume "
        "or press Backup now. The pause is kept in the store and survives a restart.",
        icon=":material/pause_circle:",
    )
now_col, all_col, interval_col, pause_col = st.columns([2, 2, 3, 2], vertical_alignment="bottom")
if now_col.button("Backup now", type="primary", icon=":material/backup:", key="backup_now", width="stretch"):
    with st.spinner("Backing up…"), ui.reporting("Backup", runtime) as outcome:
        run = saver.backup(trigger="manual")
        runtime.history.sample(force=True)
    if not outcome.failed:
        _toast_run(run)
        st.session_state.backups_last_manual = run
        st.rerun()
if all_col.button(
    "All members", icon=":material/cloud_sync:", key="backup_all", width="stretch", help="Backup now on every member"
):
    with ui.reporting("Backup of every member", runtime) as outcome:
        _backup_members([m.instance_id for m in saver.members()])
    if not outcome.failed:
        st.rerun()

if sched is None:
    interval_col.info("Scheduled backups are off (BACKUP_INTERVAL=0). Use Backup now, or set BACKUP_INTERVAL.")
else:
    with interval_col.form("interval", border=False):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        seconds = left.number_input(
            "Backup interval (seconds, kept across restarts)",
            min_value=1.0,
            max_value=MAX_INTERVAL,
            value=float(sched.interval),
            step=5.0,
            key="interval_seconds",
        )
        if right.form_submit_button("Apply", width="stretch"):
            with ui.reporting("Changing the interval", runtime) as outcome:
                saver.set_interval(float(seconds))
            if not outcome.failed:
                ui.flash(f"Backups now run every {ui.fmt_seconds(float(seconds))}", icon=":material/timer:")
                st.rerun()
    if sched.paused:
        if pause_col.button("Resume", icon=":material/play_arrow:", key="resume", width="stretch"):
            with ui.reporting("Resume", runtime) as outcome:
                saver.resume()
            if not outcome.failed:
                ui.flash("Scheduled backups resumed", icon=":material/play_arrow:")
                st.rerun()
    elif pause_col.button("Pause", icon=":material/pause:", key="pause", width="stretch"):
        with ui.reporting("Pause", runtime) as outcome:
            saver.pause()
        if not outcome.failed:
            ui.flash("Scheduled backups paused; Backup now still works", icon=":material/pause:")
            st.rerun()


# -- live figures ----------------------------------------------------------------------------------
@st.fragment(run_every=refresh)
def figures() -> None:
    runtime.history.sample()
    f = views.backup_figures(saver)
    top = st.columns(3)
    bottom = st.columns(3)
    top[0].metric(
        "Backup lag",
        ui.fmt_seconds(f["lag_seconds"]),
        help="Age of the oldest change not yet in PostgreSQL: what a crash now would lose",
        border=True,
    )
    top[1].metric("Pending changes", f"{f['pending']:,}", help="Changed keys waiting for the next backup", border=True)
    if f["last_run_at"] is None:
        top[2].metric("Last backup", "none yet", border=True)
    else:
        top[2].metric(
            "Last backup",
            ui.fmt_ago(f["last_run_at"]),
            delta="ok" if f["last_run_ok"] else "failed",
            delta_color="normal" if f["last_run_ok"] else "inverse",
            delta_arrow="off",
            help=f["last_run_error"] or None,
            border=True,
        )
    if f["interval"] is None:
        nxt = "off"
    elif f["paused"]:
        nxt = "paused"
    else:
        nxt = ui.fmt_ago(f["next_run"]) if f["next_run"] else "—"
    bottom[0].metric(
        "Next run", nxt, help=f"every {ui.fmt_seconds(f['interval'])}" if f["interval"] else None, border=True
    )
    kept = f["generations_kept"]
    bottom[1].metric(
        "Generations kept",
        "—" if kept is None else f"{kept} / {f['retention']}",
        help=f"newest: {f['latest_generation']}" if f["latest_generation"] else None,
        border=True,
    )
    bottom[2].metric("Database size", ui.fmt_bytes(f["database_size"]), border=True)
    mem = st.columns(4)
    budget = f["memory_budget"]
    mem[0].metric(
        "Memory used",
        ui.fmt_bytes(f["resident_bytes"]),
        delta=f"of {ui.fmt_bytes(budget)} budget" if budget else "no budget: every thread stays",
        delta_color="off",
        delta_arrow="off",
        help="Bytes of the threads resident in this process (MEMORY_BUDGET bounds them)",
        border=True,
    )
    mem[1].metric(
        "Resident threads",
        f"{f['resident_threads']:,}",
        delta=f"of {f['store_threads']:,} in the store" if f["store_threads"] is not None else None,
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    lookups = f["hits"] + f["loads"]
    mem[2].metric(
        "Hit rate",
        f"{f['hits'] / lookups:.1%}" if lookups else "—",
        help=f"{f['hits']:,} hits, {f['loads']:,} loads from PostgreSQL",
        border=True,
    )
    mem[3].metric("Evictions", f"{f['evictions']:,}", help="Clean threads dropped to stay in the budget", border=True)
    st.caption(
        f"This process is member {f['instance_id']} · in memory: {ui.plural(f['threads'], 'thread')}, "
        f"{ui.plural(f['checkpoints'], 'checkpoint')} · database: {runtime.database}"
        + (" (embedded)" if runtime.embedded else "")
    )
    if f["database_error"] and f["attached"]:
        st.caption(f"Database figures unavailable ({f['database_error']}); the ones above come from memory.")


figures()


# -- members -----------------------------------------------------------------------------------------
@st.fragment(run_every=refresh)
def members() -> None:
    st.subheader("Members")
    try:
        df = views.members_frame(saver)
    except views.DB_ERRORS as exc:
        st.caption(f"The members cannot be listed while PostgreSQL is not answering ({ui.error_text(exc)}).")
        return
    st.caption(
        "Every process with a saver on this store. Each owns the threads it holds; figures are as of its last "
        "heartbeat. Pick a row to act on that member."
    )
    shown = df.assign(
        who=df.apply(lambda r: f"{r['member']}{' (this dashboard)' if r['this'] else ''}", axis=1),
        memory=df.apply(
            lambda r: (
                ui.fmt_bytes(r["resident_bytes"])
                + (f" / {ui.fmt_bytes(r['memory_budget'])}" if pd.notna(r["memory_budget"]) else "")
            ),
            axis=1,
        ),
        schedule=df.apply(
            lambda r: (
                ("paused" if r["paused"] else "on demand only")
                if pd.isna(r["interval"])
                else ("paused" if r["paused"] else f"every {ui.fmt_seconds(r['interval'])}")
            ),
            axis=1,
        ),
        last=df.apply(
            lambda r: (
                "none yet"
                if pd.isna(r["last_backup"])
                else ui.fmt_utc(r["last_backup"], "%H:%M:%S") + ("" if r["last_ok"] is not False else " (failed)")
            ),
            axis=1,
        ),
        heartbeat_text=df["heartbeat"].map(lambda t: ui.fmt_utc(t, "%H:%M:%S")),
        started_text=df["started"].map(ui.fmt_utc),
    )
    picked = st.dataframe(
        shown,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        column_order=[
            "who",
            "name",
            "schedule",
            "pending",
            "lag_s",
            "last",
            "resident_threads",
            "memory",
            "heartbeat_text",
            "host",
            "pid",
            "started_text",
        ],
        column_config={
            "who": st.column_config.TextColumn("Member"),
            "name": st.column_config.TextColumn("Name", help="Its interval and pause are kept under it"),
            "host": st.column_config.TextColumn("Host"),
            "pid": st.column_config.NumberColumn("PID", format="%d"),
            "started_text": st.column_config.TextColumn("Started (UTC)"),
            "heartbeat_text": st.column_config.TextColumn("Heartbeat (UTC)"),
            "resident_threads": st.column_config.NumberColumn("Threads held", format="localized"),
            "memory": st.column_config.TextColumn("Memory / budget"),
            "pending": st.column_config.NumberColumn("Pending", format="localized"),
            "lag_s": st.column_config.NumberColumn("Lag (s)", format="%.1f"),
            "last": st.column_config.TextColumn("Last backup (UTC)"),
            "schedule": st.column_config.TextColumn("Schedule"),
        },
        key="members_table",
    )
    rows = picked.selection.rows if picked is not None else []
    if not rows:
        return
    member = df.iloc[rows[0]]
    mid = int(member["member"])
    st.markdown(f"**Member {mid}** ({member['host']}, pid {member['pid']})")
    backup_col, interval_col, pause_col = st.columns([1, 2, 1], vertical_alignment="bottom")
    if backup_col.button("Backup now", key=f"member_backup_{mid}", icon=":material/backup:", width="stretch"):
        error, result = _ask_member(mid, "backup")
        ui.flash(f"Member {mid}: " + (f"backup failed: {error}" if error else _wrote(result)))
        st.rerun()
    seconds = interval_col.number_input(
        "Interval (s)",
        min_value=1.0,
        max_value=MAX_INTERVAL,
        value=float(member["interval"] or 30.0),
        key=f"member_interval_{mid}",
    )
    if interval_col.button("Apply interval", key=f"member_apply_{mid}"):
        error, _result = _ask_member(mid, "set_interval", seconds=float(seconds))
        ui.flash(f"Member {mid}: " + (f"failed: {error}" if error else f"every {ui.fmt_seconds(float(seconds))}"))
        st.rerun()
    op = "resume" if member["paused"] else "pause"
    if pause_col.button(op.capitalize(), key=f"member_{op}_{mid}", width="stretch"):
        error, _result = _ask_member(mid, op)
        kept = f" (kept under its name {member['name']!r}: it survives a restart)" if member["name"] else ""
        ui.flash(f"Member {mid}: " + (f"failed: {error}" if error else f"{op}d{kept}"))
        st.rerun()


members()


# -- charts and runs -------------------------------------------------------------------------------
frozen = st.toggle("Freeze charts", key="freeze_charts", help="Stop refreshing the charts while you look at them")


def history() -> None:
    runs = views.runs_frame(saver)
    samples = runtime.history.frame()
    top = st.columns(2)
    top[0].plotly_chart(charts.lag_chart(runs, samples), key="lag_chart")
    top[1].plotly_chart(charts.memory_chart(samples), key="memory_chart")
    bottom = st.columns(2)
    bottom[0].plotly_chart(charts.counts_chart(runs, samples), key="counts_chart")
    bottom[1].plotly_chart(charts.runs_chart(runs.head(200)), key="runs_chart")

    failures = runs[~runs["ok"]]
    st.subheader("Runs")
    if runs.attrs.get("source") == "memory":
        st.caption("PostgreSQL is offline or the last backup failed: these are the runs this process kept in memory.")
    else:
        st.caption(
            "Runs that wrote a generation or failed, of every member. Runs with nothing to back up are not listed "
            "one by one: a row's “+ quiet runs” counts the empty runs folded into it."
        )
    if not failures.empty:
        latest = failures.iloc[0]
        st.error(
            f"**{len(failures)} failed run(s)** in this list. Latest at {ui.fmt_time(latest['started_at'])}: "
            f"{latest['error']}\n\nChanges of a failed run stay pending and are retried by the next run.",
            icon=":material/error:",
        )
    shown = runs.assign(size=runs["bytes"].map(ui.fmt_bytes))
    st.dataframe(
        shown,
        hide_index=True,
        column_order=[
            "started_at",
            "member",
            "trigger",
            "ok",
            "generation",
            "rows",
            "size",
            "duration_s",
            "lag_s",
            "checkpoints",
            "folded",
            "error",
        ],
        column_config={
            "started_at": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "member": st.column_config.NumberColumn("Member", format="%d"),
            "trigger": st.column_config.TextColumn("Trigger"),
            "ok": st.column_config.CheckboxColumn("OK"),
            "generation": st.column_config.NumberColumn("Generation", format="%d"),
            "rows": st.column_config.NumberColumn("Rows", format="localized"),
            "size": st.column_config.TextColumn("Written"),
            "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.3f"),
            "lag_s": st.column_config.NumberColumn("Lag (s)", format="%.1f"),
            "checkpoints": st.column_config.NumberColumn("Checkpoints backed up", format="localized"),
            "folded": st.column_config.NumberColumn("+ quiet runs", format="localized"),
            "error": st.column_config.TextColumn("Error", width="large"),
        },
        key="runs_table",
    )


st.fragment(run_every=None if frozen else refresh)(history)()
st.caption(
    f"Connection: `{runtime.database_masked}` · live panels refresh every {ui.fmt_seconds(refresh.seconds)} · "
    "sizes in SI units (1 MB = 10^6 bytes), as MEMORY_BUDGET reads them and the CLI prints them"
)


# -- generations ---------------------------------------------------------------------------------------
st.subheader("Generations")
gens = None
with ui.reporting("Reading the generations", runtime):
    gens = views.generations_frame(saver) if views.database_answering(saver) else None
if gens is None:
    st.caption("Generations are listed when PostgreSQL answers.")
elif gens.empty:
    st.caption("No generation yet: press Backup now.")
else:
    # retention keeps the newest `retention` generations: the oldest kept one goes next when full
    nxt = int(gens["generation"].min()) if len(gens) >= saver.retention else None
    st.caption(
        f"{len(gens):,} of {saver.retention:,} kept (BACKUP_RETENTION). Each generation holds the whole state at "
        "its time but stores only what changed: “Cost” is what it wrote. "
        + (f"Generation {nxt} is the next one retention drops." if nxt else "Retention drops nothing yet.")
    )
    tables.generations_table(gens, key="generations_table", dropped_next=nxt)
    pick_col, verify_col = st.columns([3, 1], vertical_alignment="bottom")
    to_verify = pick_col.selectbox("Verify a generation", list(gens["generation"]), key="verify_generation")
    if verify_col.button("Verify", icon=":material/verified:", key="verify", width="stretch"):
        with (
            st.spinner(f"Checking every row of generation {to_verify} against its checksum…"),
            ui.reporting("Verify", runtime) as outcome,
        ):
            result = saver.verify(int(to_verify))
        if not outcome.failed:
            if result.ok:
                st.success(
                    f"Generation {result.generation}: all {result.rows:,} rows match their checksums.",
                    icon=":material/verified:",
                )
            else:
                st.error(
                    f"Generation {result.generation}: {len(result.damaged):,} of {result.rows:,} rows are damaged: "
                    + "; ".join(f"thread {t!r} {what}" for t, what in result.damaged[:10])
                    + ". A restore of it refuses them unless told to skip them.",
                    icon=":material/report:",
                )
