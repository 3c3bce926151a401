"""What this member does when another process sends it a command (see ``persistence.fleet.remote``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from persistence.errors import HybridSaverError
from persistence.fleet.member import FleetMember
from persistence.ops import observer
from persistence.ops.backup import BackupWriter
from persistence.ops.restore import Restorer
from persistence.ops.settings import Settings

logger = logging.getLogger(__name__)


class CommandHandler:
    """Runs one command: backup, schedule changes, handoffs, restores, status, and the read-only
    ``read_thread`` and ``pending`` of an observer (see ``observer.py``)."""

    def __init__(
        self,
        writer: BackupWriter,
        restorer: Restorer,
        settings: Settings,
        member: FleetMember,
        figures: Callable[[], dict[str, Any]],
    ) -> None:
        self._writer = writer
        self._restorer = restorer
        self._settings = settings
        self._member = member
        self._figures = figures

    def __call__(self, command: dict[str, Any]) -> dict[str, Any] | None:
        op = command["op"]
        request_id = str(command["request_id"])
        if op == "backup":
            run = self._writer.backup(trigger="remote", request_id=request_id)
            if not run.ok:
                raise HybridSaverError(run.error or "backup failed")
            return {"generation": run.generation, "rows": run.rows, "empty": run.empty}
        if op == "set_interval":
            self._settings.set_interval(float(command["seconds"]))
            return self._figures()
        if op == "pause":
            self._settings.pause()
            return self._figures()
        if op == "resume":
            self._settings.resume()
            return self._figures()
        if op == "release":
            asker = command.get("from")
            thread_ids = [str(t) for t in command.get("thread_ids") or []]
            restore = bool(command.get("restore"))
            if restore:
                self._log_restore(asker, thread_ids)
            return self._member.release_threads(
                thread_ids, restore=restore, to=int(asker) if asker is not None and not restore else None
            )
        if op == "release_all":
            self._log_restore(command.get("from"), None)
            return self._member.release_threads(None, restore=True)
        if op == "restore":
            result = self._restorer.restore(
                int(command["generation"]),
                command.get("thread_id"),
                on_damage=str(command.get("on_damage") or "refuse"),
                request_id=request_id,
            )
            return {
                "generation": result.generation,
                "restored_from": result.restored_from,
                "undo_generation": result.undo_generation,
                "threads": result.threads,
                "checkpoints": result.checkpoints,
                "damaged": len(result.damaged),
            }
        if op == "status":
            return self._figures()
        if op == "read_thread":
            # read-only: the thread's rows as this member serves them, if it holds it (nothing is claimed)
            found = self._member.resident_rows(str(command["thread_id"]))
            if found is None:
                return {"held": False}
            snap, pending = found
            return {"held": True, "pending": pending, "rows": observer.snapshot_to_json(snap)}
        if op == "pending":
            # read-only: every thread with changes not backed up yet, as memory holds it now
            return {"threads": self._member.pending_counts()}
        raise ValueError(f"unknown command {op!r}")

    def _log_restore(self, asker: object, thread_ids: list[str] | None) -> None:
        """One line when a restore run elsewhere rewrites threads this member serves."""
        held = self._member.held(thread_ids)
        if not held:
            return
        who = f"member {asker}" if asker is not None else "another process"
        shown = ", ".join(repr(t) for t in held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        logger.warning(
            "a restore run by %s rewrites %s this member serves (%s): it backs up what it holds, gives them up, "
            "and serves the restored state from their next use",
            who,
            f"{len(held)} thread{'' if len(held) == 1 else 's'}",
            shown,
        )


__all__ = ["CommandHandler"]
