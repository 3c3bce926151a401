"""Tables shown on more than one page, with the same labels wherever they appear."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import ui

#: what wrote a generation, in words (a restore is described with what it restored)
TRIGGERS = {"pre-restore": "before a restore (its undo)", "restore": "a restore", "close": "at shutdown"}


#: what wrote a backup that was not the schedule, in words
BACKUP_TRIGGERS = {
    "manual": "Backup now",
    "remote": "Backup now (asked by another process)",
    "release": "a member handing its threads over",
    "pressure": "memory pressure",
    "scheduled": "the schedule",
    "recovered": "a recovery file",
}


def _written_by(row: pd.Series, undo_of: dict[int, int]) -> str:
    if pd.notna(row["restored_from"]):
        tid = row["thread_id"]
        scope = f", thread {tid}" if isinstance(tid, str) and tid else ", all threads"
        return f"restore of #{int(row['restored_from'])}{scope}"
    what = TRIGGERS.get(row["trigger"], BACKUP_TRIGGERS.get(row["trigger"], row["trigger"]))
    restore = undo_of.get(int(row["generation"]))
    if restore is not None:
        return f"undo point of the restore in #{restore} ({what})"
    return what


def _undo_points(gens: pd.DataFrame) -> dict[int, int]:
    """generation -> the restore generation it is the undo point of: the newest generation before
    each restore (a restore first has every member back up, then commits the rewrite after it)."""
    ordered = sorted(int(g) for g in gens["generation"])
    restores = {int(g) for g, r in zip(gens["generation"], gens["restored_from"], strict=True) if pd.notna(r)}
    out = {}
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after in restores:
            out[before] = after
    return out


def generations_table(gens: pd.DataFrame, *, key: str, dropped_next: int | None = None) -> None:
    """The kept generations (a ``views.generations_frame``): what wrote each, what it holds and
    what it cost; with ``dropped_next``, which one retention drops next."""
    shown = gens.assign(
        what=gens.apply(_written_by, axis=1, undo_of=_undo_points(gens)) if not gens.empty else "",
        written=gens["bytes_written"].map(ui.fmt_bytes),
        note=gens["generation"].map(lambda g: "dropped next" if g == dropped_next else ""),
    )
    columns = ["generation", "taken_at", "what", "threads", "checkpoints", "rows_written", "written"]
    st.dataframe(
        shown,
        hide_index=True,
        column_order=[*columns, "note"] if dropped_next is not None else columns,
        column_config={
            "generation": st.column_config.NumberColumn("Generation", format="%d"),
            "taken_at": st.column_config.DatetimeColumn("Taken (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "what": st.column_config.TextColumn("Written by"),
            "threads": st.column_config.NumberColumn("Threads", format="localized"),
            "checkpoints": st.column_config.NumberColumn("Checkpoints", format="localized"),
            "rows_written": st.column_config.NumberColumn("Rows written", format="localized"),
            "written": st.column_config.TextColumn("Cost"),
            "note": st.column_config.TextColumn("Retention"),
        },
        key=key,
    )


__all__ = ["TRIGGERS", "generations_table"]
