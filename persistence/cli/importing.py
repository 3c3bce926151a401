"""``hybrid-saver import-postgres-saver URL``: bring a PostgresSaver store's threads into this store.

The work is :func:`persistence.ops.importer.import_postgres_saver`; here are the arguments, the saver it
writes through (a member of the store's fleet with a small memory budget), the progress lines on stderr
and the exit status.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from persistence.cli.lines import plural
from persistence.config import ConfigError, parse_bytes
from persistence.db import scrub
from persistence.errors import HybridSaverError
from persistence.ops.importer import (
    CONTINUED,
    DEFAULT_BATCH,
    IMPORTED,
    MISSING,
    REFUSED,
    REPLACED,
    SKIPPED,
    ImportProgress,
    ImportResult,
    import_postgres_saver,
)
from persistence.saver import HybridSaver

#: the memory budget of the saver the import writes through
DEFAULT_BUDGET = "256MB"
#: threads between two progress lines (threads not simply imported get a line of their own)
DEFAULT_EVERY = 100
#: skipped threads named one by one before they are only counted
SKIPPED_NAMED = 20

DESCRIPTION = (
    "Copy every thread of a LangGraph PostgresSaver database (its tables checkpoints, checkpoint_blobs and "
    "checkpoint_writes, found in URL's default search_path or in --source-schema) into this store: the same "
    "checkpoint ids, parents, metadata, channel values and pending writes, so get_state_history() shows the "
    "same history. The source is only read, one read-only transaction per thread, so the app may keep running "
    "on it; stop it first for a final copy. The store is backed up every --batch checkpoints and at the end.\n\n"
    "An import cut short (Ctrl-C, kill -9) keeps what it wrote; run the same command again to continue: threads "
    "already imported (the same checkpoints and writes) are skipped, a thread imported in part is completed, and "
    "new checkpoints the app wrote since are added. A thread this store holds with other content (checkpoints "
    "the source does not have) is refused and left as it is, unless --replace: then its history here is "
    "deleted and replaced by the source's (the generations kept before the import still hold it: "
    "`hybrid-saver restore GENERATION --thread ID` brings it back while they are kept)."
)
EPILOG = (
    "The target store is the one at DATABASE_URL (with --schema); URL is the PostgresSaver's database, e.g. "
    "postgresql://user:password@host:5432/app. Passwords are never printed. Needs "
    "`pip install langgraph-checkpoint-postgres`. Progress goes to stderr; the exit status is 0 when every "
    "thread is in the store, 1 when some were refused or not found, 130 when interrupted."
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register the ``import-postgres-saver`` subcommand (``common`` carries --schema and --timeout)."""
    cmd = sub.add_parser(
        "import-postgres-saver",
        help="bring the threads of a PostgresSaver store into this store",
        description=DESCRIPTION,
        epilog=EPILOG,
        parents=[common],
    )
    cmd.add_argument("source_url", metavar="URL", help="the PostgresSaver database (postgresql://...)")
    cmd.add_argument(
        "--thread", dest="thread_ids", action="append", metavar="ID", help="import only this thread (repeatable)"
    )
    cmd.add_argument(
        "--replace",
        action="store_true",
        help="replace threads this store holds with other content (default: refuse them and leave them as they are)",
    )
    cmd.add_argument("--dry-run", action="store_true", help="only count what would be imported; write nothing")
    cmd.add_argument(
        "--source-schema", metavar="SCHEMA", help="the schema of PostgresSaver's tables (default: URL's search_path)"
    )
    cmd.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        metavar="N",
        help="back the store up every N checkpoints (default: %(default)s)",
    )
    cmd.add_argument(
        "--memory-budget",
        default=DEFAULT_BUDGET,
        metavar="SIZE",
        help="memory the import's saver may keep threads in (default: %(default)s; at least the largest thread)",
    )
    cmd.add_argument(
        "--progress-every",
        type=int,
        default=DEFAULT_EVERY,
        metavar="N",
        help="a progress line every N threads (default: %(default)s)",
    )


class _Printer:
    """The progress lines, on stderr."""

    def __init__(self, every: int, dry_run: bool) -> None:
        self.every = max(1, every)
        self.dry_run = dry_run
        self.last: ImportProgress | None = None
        self.skipped = 0

    def __call__(self, p: ImportProgress) -> None:
        self.last = p
        t = p.thread
        if t.outcome == SKIPPED:
            self.skipped += 1
        named = t.outcome in (CONTINUED, REPLACED, REFUSED, MISSING) or (
            t.outcome == SKIPPED and self.skipped <= SKIPPED_NAMED
        )
        if named:
            what = t.reason if t.outcome in (REFUSED, MISSING, SKIPPED) else self._wrote(t.outcome, t.thread_id, t)
            _err(f"{t.outcome}: {what}")
            if t.outcome == SKIPPED and self.skipped == SKIPPED_NAMED:
                _err("(further skipped threads are only counted)")
        if named or p.threads_done % self.every == 0 or p.threads_done == p.threads_total:
            _err(
                f"[{p.threads_done:,}/{p.threads_total:,} threads] {p.checkpoints:,} of {p.checkpoints_total:,} "
                f"checkpoints {'to write' if self.dry_run else 'written'}, {plural(p.writes, 'write')}, {p.elapsed:.1f} s"
            )

    def _wrote(self, outcome: str, thread_id: str, t: Any) -> str:
        verb = "would write" if self.dry_run else "wrote"
        return f"thread {thread_id!r}: {verb} {plural(t.checkpoints, 'checkpoint')}, {plural(t.writes, 'write')}"


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _summary(result: ImportResult) -> str:
    counts = ", ".join(
        f"{result.count(o):,} {o}"
        for o in (IMPORTED, CONTINUED, REPLACED, SKIPPED, REFUSED, MISSING)
        if result.count(o)
    )
    rate = result.checkpoints / result.elapsed if result.elapsed > 0 else 0.0
    verb = "would import" if result.dry_run else "imported"
    line = (
        f"{verb} {plural(result.threads_total, 'thread')} in {result.elapsed:.1f} s "
        f"({counts or 'nothing to do'}): {plural(result.checkpoints, 'checkpoint')}, "
        f"{plural(result.writes, 'write')} ({rate:,.0f} checkpoints/s)"
    )
    if result.orphan_writes:
        line += f"; left out {plural(result.orphan_writes, 'write')} of checkpoints the source does not have"
    if not result.dry_run and result.generation_before is not None and result.checkpoints:
        line += f"; the store was at generation {result.generation_before} before"
    return line


class _Interrupts:
    """Ctrl-C and SIGTERM stop the import, but never in the middle of a write to the saver: a signal that
    arrives during one is held until the write is done (a write cut in half would leave memory
    half-updated for the final backup). What was imported is then backed up before the exit."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        try:
            previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending:
            self.pending = False
            raise KeyboardInterrupt


class _Guarded:
    """The saver as the import sees it, each write run whole (see :class:`_Interrupts`)."""

    def __init__(self, saver: HybridSaver, interrupts: _Interrupts) -> None:
        self._saver = saver
        self._interrupts = interrupts
        self.store = saver.store

    def put(self, *args: Any, **kwargs: Any) -> Any:
        with self._interrupts.deferred():
            return self._saver.put(*args, **kwargs)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        with self._interrupts.deferred():
            self._saver.put_writes(*args, **kwargs)

    def delete_thread(self, thread_id: str) -> None:
        with self._interrupts.deferred():
            self._saver.delete_thread(thread_id)

    def backup(self, *args: Any, **kwargs: Any) -> Any:
        with self._interrupts.deferred():
            return self._saver.backup(*args, **kwargs)

    def thread_rows(self, thread_id: str) -> Any:
        return self._saver.thread_rows(thread_id)

    def thread_ids(self) -> list[str]:
        return self._saver.thread_ids()


def run(args: argparse.Namespace, url: str) -> int:
    """Run the import; return the exit status."""
    source = args.source_url

    def clean(text: str) -> str:
        return scrub(scrub(text, source), url)

    try:
        budget = parse_bytes(args.memory_budget, name="--memory-budget")
    except ConfigError as exc:
        _err(f"error: {exc}")
        return 2
    if args.batch < 1 or args.progress_every < 1:
        _err("error: --batch and --progress-every must be at least 1.")
        return 2
    printer = _Printer(args.progress_every, args.dry_run)
    saver: HybridSaver | None = None
    interrupts = _Interrupts()
    with interrupts.installed():
        try:
            saver = HybridSaver.from_url(
                url,
                schema=args.schema,
                backup_interval=None,
                listen=False,
                handle_signals=False,
                memory_budget=budget,
            )
            result = import_postgres_saver(
                source,
                _Guarded(saver, interrupts),
                thread_ids=args.thread_ids,
                replace=args.replace,
                dry_run=args.dry_run,
                source_schema=args.source_schema,
                batch=args.batch,
                progress=printer,
            )
        except KeyboardInterrupt:
            done = printer.last
            where = f"after {done.threads_done:,} of {done.threads_total:,} threads" if done else "before any thread"
            _err(
                f"interrupted {where}: what was imported is kept in the store; run the same command again to "
                "continue (imported threads are skipped)."
            )
            return 130
        except HybridSaverError as exc:
            _err(f"error: {clean(str(exc))}")
            return 1
        except Exception as exc:  # noqa: BLE001 - an operator gets a sentence, not a traceback
            _err(f"error: {type(exc).__name__}: {clean(str(exc))}")
            return 1
        finally:
            if saver is not None:
                saver.close()
    print(_summary(result))
    return 0 if result.ok else 1


__all__ = ["add_parser", "run"]
