"""How the command line prints a run, a size and a member: one line each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistence.fleet import Member


def run_line(run: dict[str, Any]) -> str:
    status = "ok" if not run.get("error") else f"FAILED: {run['error']}"
    what = f"gen={run.get('generation')} rows={run.get('rows_written')}" if run.get("generation") else "nothing to do"
    folded = f" (x{run['folded']})" if (run.get("folded") or 1) > 1 else ""
    member = f" member={run['instance_id']}" if run.get("instance_id") else ""
    return (
        f"{run['started_at']:%Y-%m-%d %H:%M:%S} {run['trigger']:<11}{member} {what} "
        f"lag={run.get('lag_seconds', 0):.2f}s {status}{folded}"
    )


def plural(n: int, word: str) -> str:
    """``1 thread``, ``2 threads``, ``1,024 rows``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def ago(when: datetime, now: datetime | None = None) -> str:
    """How long ago ``when`` was, in the largest unit that fits: ``45 s ago``, ``3 h 20 min ago``, ``2 d 4 h ago``."""
    seconds = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes} min ago"
    if days < 1:
        return f"{hours} h {minutes % 60} min ago"
    return f"{days} d {hours % 24} h ago"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def member_line(m: Member) -> str:
    f = m.figures
    budget = f.get("memory_budget")
    memory = f"{plural(int(f.get('resident_threads') or 0), 'thread')}, {fmt_bytes(f.get('resident_bytes'))}"
    memory += f" of {fmt_bytes(budget)} budget" if budget else " (no budget)"
    interval = f.get("interval")
    schedule = "paused" if f.get("paused") else (f"every {interval:g} s" if interval else "manual only")
    state = "alive" if m.alive else ("stopped" if m.stopped_at else "gone (no lock)")
    return (
        f"  {m.instance_id:>5}  {state:<8} {m.host}:{m.pid}{' ' + m.name if m.name else ''}  memory {memory}; "
        f"pending {f.get('pending', 0)}, lag {float(f.get('lag_seconds') or 0):.1f}s; backups {schedule}; "
        f"hits {f.get('hits', 0)}, loads {f.get('loads', 0)}, evictions {f.get('evictions', 0)}"
    )


__all__ = ["ago", "fmt_bytes", "member_line", "plural", "run_line"]
