"""Views of one thread: its history, states, diffs, pending writes and export.

The console observes: :func:`observe_thread` reads a thread without claiming it, from this process's
memory when it holds it, else from PostgreSQL as of the thread's last backup, or (asked for) live from
the member that holds it over the command channel. The history, state, diff, writes and export
functions take the :class:`ThreadView` it returns (or a saver, for threads it holds itself).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from langgraph.checkpoint.memory import InMemorySaver

from dashboard.views.common import preview
from dashboard.views.threads import member_label
from persistence import export
from persistence.errors import HybridSaverError
from persistence.export import to_jsonable
from persistence.fleet import Member
from persistence.ops.observer import pending_by_thread, snapshot_from_json
from persistence.store import Snapshot

if TYPE_CHECKING:
    from persistence import HybridSaver

#: seconds a live read waits for the owner's answer
LIVE_READ_TIMEOUT = 5.0


class ThreadView(InMemorySaver):
    """One thread as an observer reads it: a plain InMemorySaver over a copy of its rows (so the
    history, state and diff functions read it as they read a saver), and where the copy comes from.

    ``source`` is ``"here"`` (this process holds it), ``"stored"`` (PostgreSQL, as of ``as_of``, the
    time of the backup that wrote it: ``generation``) or ``"live"`` (the owner's memory, answered at
    ``as_of``). ``owner`` is the member that holds it (None: nobody), ``pending`` the checkpoints the
    owner holds that are not backed up (None: not known), ``note`` why a live read fell back.
    """

    def __init__(
        self,
        thread_id: str,
        snap: Snapshot,
        serde: Any,
        *,
        source: str,
        as_of: datetime | None = None,
        generation: int | None = None,
        owner: Member | None = None,
        owner_id: int | None = None,
        pending: int | None = None,
        note: str | None = None,
    ) -> None:
        super().__init__(serde=serde)
        for tid, namespaces in snap.storage.items():
            self.storage[tid].update(namespaces)
        self.writes.update(snap.writes)
        self.blobs = snap.blobs
        self.thread_id = thread_id
        self._snap = snap
        self.source = source
        self.as_of = as_of
        self.generation = generation
        self.owner = owner
        self.owner_id = owner.instance_id if owner is not None else owner_id
        self.pending = pending
        self.note = note

    @property
    def exists(self) -> bool:
        return bool(self._snap.storage.get(self.thread_id))

    def thread_rows(self, thread_id: str) -> Snapshot:
        return self._snap if thread_id == self.thread_id else Snapshot()


def observe_thread(saver: HybridSaver, thread_id: str, *, live: bool = False) -> ThreadView:
    """Read ``thread_id`` without claiming it (its owner stays its owner).

    From this process's memory when it holds the thread; else, with ``live`` and another member
    holding it, from that member's memory (a read-only ``read_thread`` command); else from PostgreSQL,
    the thread's rows as of its last backup, with what its owner has pending (from the owner's
    heartbeat). A live read that gets no answer within :data:`LIVE_READ_TIMEOUT` falls back to
    PostgreSQL and says why in ``note``.
    """
    serde = saver.serde
    with saver.lock:
        if thread_id in saver.cache.entries:
            copy = saver.cache.view([thread_id], serde)
        else:
            copy = None
    if copy is not None:
        snap = Snapshot(
            storage={t: {ns: dict(c) for ns, c in n.items() if c} for t, n in copy.storage.items() if any(n.values())},
            writes={k: v for k, v in copy.writes.items() if v},
            blobs=copy.blobs,
        )
        mine = pending_by_thread(saver.cache)[0].get(thread_id)
        return ThreadView(
            thread_id, snap, serde, source="here", as_of=datetime.now(UTC), owner_id=saver.instance_id, pending=mine
        )
    members = {m.instance_id: m for m in saver.members()}
    owner_id = saver.membership.owners_of([thread_id]).get(thread_id)
    owner = members.get(owner_id) if owner_id is not None else None
    if owner_id is not None and (owner is None or not owner.alive):
        owner, owner_id = None, None  # a dead member's claim: nobody serves the thread now
    note = None
    if live and owner is not None and owner.instance_id != saver.instance_id:
        try:
            answer = saver.ask(owner.instance_id, "read_thread", timeout=LIVE_READ_TIMEOUT, thread_id=thread_id)
        except HybridSaverError as exc:
            note = f"{member_label(owner)} did not answer ({exc})"
        else:
            if answer.ok and answer.result.get("held"):
                return ThreadView(
                    thread_id,
                    snapshot_from_json(answer.result.get("rows") or {}),
                    serde,
                    source="live",
                    as_of=answer.answered_at,
                    owner=owner,
                    pending=int(answer.result.get("pending") or 0),
                )
            note = (
                f"{member_label(owner)} answered: {answer.error}"
                if not answer.ok
                else f"{member_label(owner)} no longer holds it in memory"
            )
    snap = saver.store.load_threads([thread_id])
    backed = saver.store.directory.backed_up(thread_id)
    pending = None
    if owner is not None:
        listed = owner.figures.get("pending_threads") or {}
        if thread_id in listed:
            pending = int(listed[thread_id])
        elif int(owner.figures.get("pending_thread_count") or 0) <= len(listed):
            pending = 0  # the owner lists every pending thread, and not this one
    return ThreadView(
        thread_id,
        snap,
        serde,
        source="stored",
        as_of=backed[1] if backed else None,
        generation=backed[0] if backed else None,
        owner=owner,
        owner_id=owner_id,
        pending=pending,
        note=note,
    )


def checkpoint_history(saver: HybridSaver, thread_id: str, limit: int = 500) -> pd.DataFrame:
    """The thread's checkpoints (root namespace), newest first: id, time, step, source, parent,
    channels updated, pending writes and bytes. At most ``limit`` rows. Loads a cold thread."""
    snap = saver.thread_rows(thread_id)
    entries = snap.storage.get(thread_id, {}).get("", {})
    rows = []
    for cid in sorted(entries, reverse=True)[:limit]:
        (ctype, cdata), (mtype, mdata), parent = entries[cid]
        checkpoint = saver.serde.loads_typed((ctype, cdata))
        metadata = saver.serde.loads_typed((mtype, mdata)) or {}
        rows.append(
            (
                cid,
                checkpoint.get("ts"),
                metadata.get("step"),
                metadata.get("source"),
                parent,
                ", ".join(sorted(checkpoint.get("updated_channels") or [])),
                len(snap.writes.get((thread_id, "", cid), {})),
                len(cdata) + len(mdata),
            )
        )
    df = pd.DataFrame(
        rows, columns=["checkpoint_id", "ts", "step", "source", "parent_id", "updated_channels", "writes", "bytes"]
    )
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601", errors="coerce")
    df["step"] = df["step"].astype("Int64")
    return df


def checkpoint_state(saver: HybridSaver, thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any] | None:
    """The state of one checkpoint (newest when ``checkpoint_id`` is None), or None.

    Returns a dict with ``checkpoint_id``, ``parent_id``, ``ts``, ``values`` (channel values as
    stored, e.g. LangChain messages), ``metadata`` and ``pending_writes`` (task, channel, value).
    """
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    found = saver.get_tuple({"configurable": configurable})
    if found is None:
        return None
    parent = found.parent_config["configurable"].get("checkpoint_id") if found.parent_config else None
    return {
        "checkpoint_id": found.checkpoint["id"],
        "parent_id": parent,
        "ts": found.checkpoint.get("ts"),
        "values": dict(found.checkpoint.get("channel_values") or {}),
        "metadata": dict(found.metadata or {}),
        "pending_writes": list(found.pending_writes or []),
    }


def _message_key(message: Any) -> str:
    mid = getattr(message, "id", None)
    if mid:
        return str(mid)
    return json.dumps(to_jsonable(message), sort_keys=True, default=str)


def _checkpoint_pair(
    saver: HybridSaver, thread_id: str, before_id: str, after_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The states of two checkpoints of a thread (see :func:`checkpoint_state`).

    Raises:
        LookupError: a checkpoint is not in the thread.
    """
    a = checkpoint_state(saver, thread_id, before_id)
    b = checkpoint_state(saver, thread_id, after_id)
    for cid, state in ((before_id, a), (after_id, b)):
        if state is None:
            raise LookupError(f"Checkpoint {cid} is not in thread {thread_id!r}; pick one from its history.")
    assert a is not None and b is not None
    return a, b


def diff_checkpoints(saver: HybridSaver, thread_id: str, before_id: str, after_id: str) -> pd.DataFrame:
    """Channel-by-channel differences between two checkpoints of a thread.

    Columns: ``channel``, ``change`` (added, removed, changed, unchanged), ``before``, ``after``
    (one-line previews). Message lists are compared by message id: ``after`` then lists the
    messages added and ``before`` the ones removed.

    Raises:
        LookupError: a checkpoint is not in the thread.
    """
    a, b = _checkpoint_pair(saver, thread_id, before_id, after_id)
    rows = []
    for channel in sorted(set(a["values"]) | set(b["values"])):
        if channel not in a["values"]:
            rows.append((channel, "added", "", preview(b["values"][channel])))
            continue
        if channel not in b["values"]:
            rows.append((channel, "removed", preview(a["values"][channel]), ""))
            continue
        old, new = a["values"][channel], b["values"][channel]
        if isinstance(old, list) and isinstance(new, list) and all(hasattr(m, "content") for m in [*old, *new]):
            old_keys = {_message_key(m) for m in old}
            new_keys = {_message_key(m) for m in new}
            added = [m for m in new if _message_key(m) not in old_keys]
            removed = [m for m in old if _message_key(m) not in new_keys]
            if not added and not removed and len(old) == len(new):
                rows.append((channel, "unchanged", preview(old), preview(new)))
            else:
                rows.append(
                    (
                        channel,
                        "changed",
                        f"{len(removed)} removed: " + "; ".join(preview(m.content, 60) for m in removed)
                        if removed
                        else f"{len(old)} messages",
                        f"{len(added)} added: " + "; ".join(preview(m.content, 60) for m in added)
                        if added
                        else f"{len(new)} messages",
                    )
                )
            continue
        same = to_jsonable(old) == to_jsonable(new)
        rows.append((channel, "unchanged" if same else "changed", preview(old), preview(new)))
    return pd.DataFrame(rows, columns=["channel", "change", "before", "after"])


def is_internal_channel(name: str) -> bool:
    """True for LangGraph's own channels (``__start__``, ``branch:to:respond``), not the graph's state."""
    return name.startswith("__") or name.startswith("branch:")


MESSAGE_DIFF_COLUMNS = ["change", "role", "before", "after"]


def message_diff(saver: HybridSaver, thread_id: str, before_id: str, after_id: str) -> pd.DataFrame:
    """The ``messages`` of two checkpoints compared message by message (by id, in order):
    ``change`` is ``added``, ``removed``, ``changed`` (same id, other content) or ``same``.

    Raises:
        LookupError: a checkpoint is not in the thread.
    """
    a, b = _checkpoint_pair(saver, thread_id, before_id, after_id)
    old = [m for m in a["values"].get("messages") or [] if hasattr(m, "content")]
    new = [m for m in b["values"].get("messages") or [] if hasattr(m, "content")]
    old_by_key = {_message_key(m): m for m in old}
    new_keys = {_message_key(m) for m in new}
    rows = []
    for m in new:
        key = _message_key(m)
        role = getattr(m, "type", "message")
        was = old_by_key.get(key)
        if was is None:
            rows.append(("added", role, "", preview(m.content, 400)))
        elif to_jsonable(was.content) != to_jsonable(m.content):
            rows.append(("changed", role, preview(was.content, 400), preview(m.content, 400)))
        else:
            rows.append(("same", role, preview(m.content, 400), preview(m.content, 400)))
    for m in old:
        if _message_key(m) not in new_keys:
            rows.append(("removed", getattr(m, "type", "message"), preview(m.content, 400), ""))
    return pd.DataFrame(rows, columns=MESSAGE_DIFF_COLUMNS)


def pending_writes(saver: HybridSaver, thread_id: str, checkpoint_id: str | None = None) -> pd.DataFrame:
    """Writes stored against the thread's checkpoints (one checkpoint, or all of the thread)."""
    snap = saver.thread_rows(thread_id)
    rows = []
    for (_tid, ns, cid), inner in snap.writes.items():
        if checkpoint_id is not None and cid != checkpoint_id:
            continue
        for (task_id, idx), (_task, channel, typed, path) in inner.items():
            try:
                value = preview(saver.serde.loads_typed(typed))
            except Exception:  # noqa: BLE001 - show the row even when its value cannot be decoded
                value = f"<{typed[0]}: {len(typed[1])} bytes>"
            rows.append((cid, ns, task_id, idx, channel, value, path))
    df = pd.DataFrame(
        rows, columns=["checkpoint_id", "checkpoint_ns", "task_id", "idx", "channel", "value", "task_path"]
    )
    return df.sort_values(["checkpoint_id", "task_id", "idx"], ascending=[False, True, True]).reset_index(drop=True)


def export_thread(saver: HybridSaver, thread_id: str) -> dict[str, Any]:
    """Every checkpoint of a thread (all namespaces), oldest first, as JSON-able dicts."""
    snap = saver.thread_rows(thread_id)
    return export.export_thread(thread_id, snap.storage, snap.writes, snap.blobs, saver.serde)


__all__ = [
    "LIVE_READ_TIMEOUT",
    "MESSAGE_DIFF_COLUMNS",
    "ThreadView",
    "checkpoint_history",
    "checkpoint_state",
    "diff_checkpoints",
    "export_thread",
    "is_internal_channel",
    "message_diff",
    "observe_thread",
    "pending_writes",
]
