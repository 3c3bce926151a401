"""What a clean stop could not back up, kept in a local file and written back by the next start.

``close()`` retries the final backup for ``close_timeout`` seconds. If PostgreSQL still refuses, the
pending threads (their rows as served, and the change log that says what to write and delete) go to
a file in the recovery folder (``HYBRID_SAVER_RECOVERY_DIR``, default ``.hybrid-saver/recovery`` in the
working directory), written atomically and readable by the owner only. The next saver that attaches
to the same store (matched by the store's id, not by URL) puts them back in memory as threads made
offline: it claims them, adds what the store holds under them, and its next backup writes them; the
file is removed once none of its threads is pending. A thread that another member wrote after the
stop is not merged: the kept turns go to a fork, ``<thread>~recovered-<time>``, and a warning names it.
Only ``kill -9`` (or a lost disk) loses what the last interval held.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from persistence.codec import Blobs, Key, Typed
from persistence.db import pid_alive
from persistence.memory import MemoryCache
from persistence.memory.changes import ChangeLog, knows_all_of, mark
from persistence.ops.backup import BackupWriter
from persistence.packed import Packed
from persistence.records import BackupRun
from persistence.store import Snapshot, Store
from persistence.store.records import CheckpointEntry, WriteEntry, WriteIdx, WriteKey

logger = logging.getLogger(__name__)

SUFFIX = ".recovery"


def recovery_dir(folder: str | Path | None = None) -> Path:
    """The folder for kept changes: ``folder``, ``HYBRID_SAVER_RECOVERY_DIR``, or ``.hybrid-saver/recovery``."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get("HYBRID_SAVER_RECOVERY_DIR")
    return Path(env) if env else Path.cwd() / ".hybrid-saver" / "recovery"


class _PlainUnpickler(pickle.Unpickler):
    """Loads only builtin containers and scalars: a kept file can hold no code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("persistence.packed", "Packed"):  # a stored checkpoint: data, no code
            return Packed
        raise pickle.UnpicklingError(f"a recovery file may not name {module}.{name}")


@dataclass
class Kept:
    """The content of one recovery file."""

    store_id: str
    schema: str
    instance_id: int | None
    saved_at: float
    storage: dict[str, dict[str, dict[str, CheckpointEntry]]] = field(default_factory=dict)
    writes: dict[WriteKey, dict[WriteIdx, WriteEntry]] = field(default_factory=dict)
    blobs: dict[Key, Typed] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)

    def threads(self) -> set[str]:
        return set(self.storage) | set(self.changes.get("deleted_threads", ()))


def keep(cache: MemoryCache, folder: Path, *, store_id: str, schema: str, instance_id: int | None) -> Path | None:
    """Write what ``cache`` has pending to a new file in ``folder``; its path (None: nothing pending)."""
    with cache.lock:
        log = cache.changes
        threads = log.threads()
        if not threads:
            return None
        kept = Kept(store_id=store_id, schema=schema, instance_id=instance_id, saved_at=time.time())
        for tid in threads:
            entry = cache.entries.get(tid)
            if tid in cache.storage:
                kept.storage[tid] = {ns: dict(cps) for ns, cps in cache.storage[tid].items()}
            if entry is not None:
                kept.writes.update({k: dict(cache.writes[k]) for k in entry.write_keys if k in cache.writes})
                kept.blobs.update({k: cache.blobs.raw(k) for k in entry.blob_keys if k in cache.blobs})
        kept.changes = {
            "checkpoints": dict(log.checkpoints),
            "writes": dict(log.writes),
            "blobs": dict(log.blobs),
            "deleted_threads": set(log.deleted_threads),
            "since": log.since,
        }
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = folder / f"{schema}-{store_id or 'unknown'}-m{instance_id}-{stamp}{SUFFIX}"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        pickle.dump(kept.__dict__, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return path


def kept_files(folder: Path, *, store_id: str, schema: str) -> list[Path]:
    """The recovery files of this store and schema, oldest first (with those another process took to
    replay and did not finish: it died)."""
    if not folder.is_dir():
        return []
    found = list(folder.glob(f"{schema}-{store_id}-m*{SUFFIX}"))
    for taken in folder.glob(f"{schema}-{store_id}-m*{SUFFIX}.p*"):
        pid = taken.suffix[2:]
        if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            found.append(taken)
    return sorted(found)


def _take(path: Path) -> Path | None:
    """Rename ``path`` to a name of this process (atomic): None when another process took it first."""
    mine = path.with_name(path.name.split(SUFFIX)[0] + f"{SUFFIX}.p{os.getpid()}")
    if path == mine:
        return path
    try:
        os.rename(path, mine)
    except FileNotFoundError:
        return None
    return mine


def load(path: Path) -> Kept:
    with path.open("rb") as f:
        return Kept(**_PlainUnpickler(f).load())


def final_backup(writer: BackupWriter, timeout: float, keep_pending: Any) -> BackupRun:
    """The backup of ``close()``: retried with back-off for ``timeout`` seconds; when it still fails,
    ``keep_pending()`` writes what is pending to a recovery file, and the error says where."""
    run = writer.backup(trigger="close")
    deadline = time.monotonic() + timeout
    delay = 0.2
    tries = 1
    while not run.ok and time.monotonic() + delay < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
        run = writer.backup(trigger="close")
        tries += 1
    if run.ok:
        return run
    try:
        path = keep_pending()
    except OSError as exc:
        logger.error(
            "final backup failed %s time(s) over %.1f s (%s), and the %s pending change(s) could not be kept "
            "in a recovery file either (%s): they are lost. Make HYBRID_SAVER_RECOVERY_DIR writable.",
            tries,
            timeout,
            run.error,
            run.pending,
            exc,
        )
        return run
    if path is not None:
        logger.error(
            "final backup failed %s time(s) over %.1f s (%s); the %s pending change(s) are kept in %s. The next "
            "HybridSaver.from_url on this store writes them back; keep that file until then.",
            tries,
            timeout,
            run.error,
            run.pending,
            path,
        )
    return run


class Recovery:
    """Replays kept files into a cache at attach, and removes them once their changes are in the store."""

    def __init__(self, cache: MemoryCache, store: Store, folder: Path) -> None:
        self._cache = cache
        self._store = store
        self.folder = folder
        #: replayed files and their threads, removed once none of those threads is pending
        self._replayed: dict[Path, set[str]] = {}

    def replay(self, store_id: str) -> int:
        """Put the kept changes of this store back in memory; returns how many threads."""
        count = 0
        for found in kept_files(self.folder, store_id=store_id, schema=self._store.schema):
            path = _take(found)
            if path is None or path in self._replayed:
                continue
            try:
                kept = load(path)
            except (OSError, pickle.UnpicklingError, EOFError, TypeError, ValueError) as exc:
                logger.error("cannot read recovery file %s (%s); it is left in place", path, exc)
                continue
            threads = self._install(kept)
            self._replayed[path] = threads
            count += len(kept.threads())
            logger.warning(
                "writing back %s thread(s) that member %s could not back up when it stopped (kept in %s)",
                len(kept.threads()),
                kept.instance_id,
                path,
            )
        return count

    def _install(self, kept: Kept) -> set[str]:
        cache = self._cache
        threads = sorted(kept.threads())
        stored = self._store.load_threads(threads)
        log = ChangeLog(
            kept.changes.get("checkpoints", {}),
            kept.changes.get("writes", {}),
            kept.changes.get("blobs", {}),
            set(kept.changes.get("deleted_threads", ())),
            kept.changes.get("since"),
        )
        snap = Snapshot(storage=kept.storage, writes=kept.writes, blobs=Blobs(kept.blobs))
        installed: set[str] = set()
        with cache.lock:
            for tid in threads:
                if tid in cache.entries or not knows_all_of(stored, tid, snap.storage.get(tid, {}), log):
                    fork = f"{tid}~recovered-{datetime.fromtimestamp(kept.saved_at, UTC):%Y%m%dT%H%M%S}"
                    log.forget([tid])
                    self._install_fork(tid, fork, snap, log)
                    installed.add(fork)
                    logger.warning(
                        "thread %r was written by another member after the stop that kept it; the kept turns "
                        "are in the new thread %r instead of being merged",
                        tid,
                        fork,
                    )
                    continue
                entry = cache.residency.install(tid, snap, None)
                cache.touch(entry)
                installed.add(tid)
            cache.changes.merge_back(log)
        return installed

    def _install_fork(self, tid: str, fork: str, snap: Snapshot, log: ChangeLog) -> None:
        """``tid``'s kept rows under the id ``fork``, every row new. Under the lock."""
        moved = Snapshot(
            storage={fork: snap.storage.get(tid, {})},
            writes={(fork, *k[1:]): v for k, v in snap.writes.items() if k[0] == tid},
            blobs=Blobs({(fork, *k[1:]): v for k, v in snap.blobs.items() if k[0] == tid}),
        )
        entry = self._cache.residency.install(fork, moved, None)
        for ns, cps in moved.storage[fork].items():
            for cid, value in cps.items():
                mark(log.checkpoints, (fork, ns, cid), False, value)
        for outer, inner in moved.writes.items():
            for key, write in inner.items():
                mark(log.writes, (*outer, *key), False, write)
        for key, blob in moved.blobs.items():
            mark(log.blobs, key, False, blob)
        self._cache.touch(entry)

    def written(self) -> None:
        """After a backup: remove the replayed files none of whose threads is still pending."""
        if not self._replayed:
            return
        pending = self._cache.pending_threads()
        for path, threads in list(self._replayed.items()):
            if threads.isdisjoint(pending):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                del self._replayed[path]
                logger.info("the changes kept in %s are in PostgreSQL now; the file is removed", path)


__all__ = ["SUFFIX", "Kept", "Recovery", "final_backup", "keep", "kept_files", "load", "recovery_dir"]
