"""Backups: live figures and charts, the runs table with failures, Backup now, interval, pause."""

from datetime import timedelta

import streamlit as st

from dashboard import charts, ui
from persistence import BackupRun, views
from persistence.scheduler import MAX_INTERVAL

runtime = ui.page_setup("Backups", "The backup job writes what changed since the last run as a new generation.")
saver = runtime.saver
refresh = timedelta(seconds=runtime.settings.refresh_seconds)


def _toast_run(run: BackupRun) -> None:
    if run.ok:
        ui.flash(
            f"Backup written: generation {run.generation}, {run.rows:,} rows, {ui.fmt_bytes(run.bytes)} "
            f"in {ui.fmt_seconds(run.duration)}",
            icon=":material/check_circle:",
        )
    else:
        ui.flash(
            f"Backup failed: {run.error}. The {run.pending:,} changes stay in memory and are retried at the next run.",
            icon=":material/error:",
        )


# -- controls ------------------------------------------------------------------------------------
sched = saver.scheduler
now_col, interval_col, pause_col = st.columns([2, 3, 2], vertical_alignment="bottom")
if now_col.button("Backup now", type="primary", icon=":material/backup:", key="backup_now", width="stretch"):
    with st.spinner("Backing up…"), ui.reporting("Backup", runtime) as outcome:
        run = saver.backup(trigger="manual")
        runtime.history.sample(force=True)
    if not outcome.failed:
        _toast_run(run)
        st.session_state.backups_last_manual = run
        st.rerun()

if sched is None:
    interval_col.info("Scheduled backups are off (BACKUP_INTERVAL=0). Use Backup now, or set BACKUP_INTERVAL.")
else:
    with interval_col.form("interval", border=False):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        seconds = left.number_input(
            "Backup interval (seconds)",
            min_value=1.0,
            max_value=MAX_INTERVAL,
            value=float(sched.interval),
            step=5.0,
            key="interval_seconds",
        )
        if right.form_submit_button("Apply", width="stretch"):
            with ui.reporting("Changing the interval", runtime) as outcome:
                sched.set_interval(float(seconds))
            if not outcome.failed:
                ui.flash(f"Backups now run every {ui.fmt_seconds(float(seconds))}", icon=":material/timer:")
                st.rerun()
    if sched.paused:
        if pause_col.button("Resume", icon=":material/play_arrow:", key="resume", width="stretch"):
            sched.resume()
            ui.flash("Scheduled backups resumed", icon=":material/play_arrow:")
            st.rerun()
    elif pause_col.button("Pause", icon=":material/pause:", key="pause", width="stretch"):
        sched.pause()
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
    st.caption(
        f"In memory: {ui.plural(f['threads'], 'thread')}, {ui.plural(f['checkpoints'], 'checkpoint')} · "
        f"database: {runtime.database}" + (" (embedded)" if runtime.embedded else "")
    )
    if f["database_error"] and f["attached"]:
        st.caption(f"Database figures unavailable ({f['database_error']}); the ones above come from memory.")


figures()


# -- charts and runs -------------------------------------------------------------------------------
@st.fragment(run_every=refresh)
def history() -> None:
    runs = views.runs_frame(saver)
    samples = runtime.history.frame()
    left, mid, right = st.columns(3)
    left.plotly_chart(charts.lag_chart(runs, samples), key="lag_chart")
    mid.plotly_chart(charts.counts_chart(runs, samples), key="counts_chart")
    right.plotly_chart(charts.runs_chart(runs.head(200)), key="runs_chart")

    failures = runs[~runs["ok"]]
    st.subheader("Runs")
    if runs.attrs.get("source") == "memory":
        st.caption("PostgreSQL is offline or the last backup failed: these are the runs this process kept in memory.")
    if not failures.empty:
        latest = failures.iloc[0]
        st.error(
            f"**{len(failures)} failed run(s)** in this list. Latest at {ui.fmt_time(latest['started_at'])}: "
            f"{latest['error']}\n\nChanges of a failed run stay pending and are retried by the next run.",
            icon=":material/error:",
        )
    st.dataframe(
        runs,
        hide_index=True,
        column_order=[
            "started_at",
            "trigger",
            "ok",
            "generation",
            "rows",
            "bytes",
            "duration_s",
            "lag_s",
            "pending",
            "checkpoints",
            "error",
        ],
        column_config={
            "started_at": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm:ss"),
            "ok": st.column_config.CheckboxColumn("OK"),
            "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.3f"),
            "lag_s": st.column_config.NumberColumn("Lag (s)", format="%.1f"),
            "bytes": st.column_config.NumberColumn("Bytes", format="%d"),
            "checkpoints": st.column_config.NumberColumn("Checkpoints backed up"),
            "error": st.column_config.TextColumn("Error", width="large"),
        },
        key="runs_table",
    )


history()
st.caption(f"Connection: `{runtime.database_masked}` · live panels refresh every {ui.fmt_seconds(refresh.seconds)}")
