"""Read-only views of a live :class:`~persistence.HybridSaver` for the dashboard and tools.

Every function takes a saver and returns a pandas DataFrame or plain dicts; none of them changes
the saver. Memory is copied (values are immutable serialised tuples) and decoded outside the
saver's lock. Nothing here imports streamlit: the pages in ``pages/`` render what these return.
By subject: ``views.threads`` (the thread directory), ``views.thread`` (one thread's history, states
and diffs), ``views.backups`` (figures, runs, members), ``views.stats`` (samples of memory over time),
``views.generations`` (kept generations, restore previews), ``views.common``.

May import pandas and the library (``persistence``); never streamlit or the rest of ``dashboard``.
The library never imports from here (pandas is not in its base install).
"""

from dashboard.views.backups import (
    MEMBER_COLUMNS,
    RUN_COLUMNS,
    backup_figures,
    fleet_alerts,
    members_frame,
    runs_frame,
)
from dashboard.views.common import (
    DB_ERRORS,
    attached,
    database_answering,
    preview,
    to_jsonable,
)
from dashboard.views.generations import (
    GENERATION_COLUMNS,
    PREVIEW_COLUMNS,
    FleetCounts,
    current_thread_counts,
    fleet_counts,
    generations_frame,
    preview_summary,
    restore_preview,
)
from dashboard.views.stats import StatsHistory
from dashboard.views.thread import (
    LIVE_READ_TIMEOUT,
    MESSAGE_DIFF_COLUMNS,
    ThreadView,
    checkpoint_history,
    checkpoint_state,
    diff_checkpoints,
    export_thread,
    is_internal_channel,
    message_diff,
    observe_thread,
    pending_writes,
)
from dashboard.views.threads import (
    THREAD_COLUMNS,
    THREAD_SORTS,
    FleetPending,
    fleet_pending,
    member_label,
    resident_threads_frame,
    thread_exists,
    thread_page,
    thread_titles,
)

__all__ = [
    "DB_ERRORS",
    "FleetCounts",
    "FleetPending",
    "LIVE_READ_TIMEOUT",
    "ThreadView",
    "fleet_alerts",
    "fleet_counts",
    "fleet_pending",
    "member_label",
    "observe_thread",
    "GENERATION_COLUMNS",
    "MEMBER_COLUMNS",
    "MESSAGE_DIFF_COLUMNS",
    "PREVIEW_COLUMNS",
    "RUN_COLUMNS",
    "StatsHistory",
    "THREAD_COLUMNS",
    "THREAD_SORTS",
    "attached",
    "backup_figures",
    "checkpoint_history",
    "checkpoint_state",
    "current_thread_counts",
    "database_answering",
    "diff_checkpoints",
    "export_thread",
    "generations_frame",
    "is_internal_channel",
    "members_frame",
    "message_diff",
    "pending_writes",
    "preview",
    "preview_summary",
    "resident_threads_frame",
    "restore_preview",
    "runs_frame",
    "thread_exists",
    "thread_page",
    "thread_titles",
    "to_jsonable",
]
