"""Command line for operators: ``python -m persistence status|backup|generations|restore|export``.

Works against ``DATABASE_URL`` (or the embedded database). Reading commands read the store and
never take its lock; ``backup`` and ``restore`` ask the live saver when one holds the store, and
otherwise act on the store directly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from persistence.db import describe_url, open_pool, resolve_url, scrub
from persistence.errors import HybridSaverError
from persistence.export import dumps, export_thread
from persistence.remote import send_command
from persistence.saver import HybridSaver
from persistence.store import DEFAULT_SCHEMA, Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m persistence", description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help="store schema (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the live saver")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="store, live saver, newest generation, last runs")
    sub.add_parser("backup", help="take a backup now")
    gens = sub.add_parser("generations", help="list the kept generations")
    gens.add_argument("--limit", type=int, default=50)
    restore = sub.add_parser("restore", help="restore a generation (all threads or one)")
    restore.add_argument("generation", type=int)
    restore.add_argument("--thread", dest="thread_id", help="restore only this thread")
    restore.add_argument("--on-damage", choices=("refuse", "skip"), default="refuse")
    export = sub.add_parser("export", help="print a thread as JSON")
    export.add_argument("thread_id")
    export.add_argument("--generation", type=int, help="from this generation (default: newest)")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    return parser


def _fmt_run(run: dict) -> str:
    status = "ok" if not run.get("error") else f"FAILED: {run['error']}"
    return (
        f"{run['started_at']:%Y-%m-%d %H:%M:%S} {run['trigger']:<11} gen={run.get('generation')} "
        f"rows={run.get('rows_written')} lag={run.get('lag_seconds', 0):.2f}s {status}"
    )


def _status(store: Store, url: str) -> int:
    print(f"store:     schema {store.schema!r} in {describe_url(url)}")
    live = store.is_locked_by_other()
    print(f"live saver: {store.holder() if live else 'none'}")
    gens = store.generations()
    if gens:
        newest = gens[0]
        print(
            f"newest:    generation {newest.generation} at {newest.taken_at:%Y-%m-%d %H:%M:%S %Z}: "
            f"{newest.threads} threads, {newest.checkpoints} checkpoints"
        )
        print(f"kept:      {len(gens)} generations ({gens[-1].generation}..{newest.generation})")
    else:
        print("newest:    no generation yet")
    print(f"size:      {store.database_size() / 1e6:.1f} MB")
    runs = store.runs(limit=5)
    if runs:
        print("last runs:")
        for run in runs:
            print("  " + _fmt_run(run))
    return 0


def _generations(store: Store, limit: int) -> int:
    gens = store.generations(limit)
    if not gens:
        print("no generation yet: take one with `python -m persistence backup`")
        return 0
    print(f"{'generation':>10}  {'taken at':<19}  {'kind':<8} {'trigger':<11} {'threads':>7} {'checkpoints':>11}")
    for g in gens:
        extra = f"  (from {g.restored_from}{', thread ' + repr(g.thread_id) if g.thread_id else ''})"
        print(
            f"{g.generation:>10}  {g.taken_at:%Y-%m-%d %H:%M:%S}  {g.kind:<8} {g.trigger:<11} "
            f"{g.threads:>7} {g.checkpoints:>11}{extra if g.restored_from is not None else ''}"
        )
    return 0


def _direct_saver(url: str, schema: str) -> HybridSaver:
    return HybridSaver.from_url(url, schema=schema, backup_interval=None, listen=False, handle_signals=False)


def _ask_live(store: Store, op: str, timeout: float, **args: object) -> dict | None:
    """Run ``op`` on the live saver and return its run; prints and returns None when it failed."""
    run = send_command(store, op, timeout=timeout, **args)
    if run.get("error"):
        print(f"{op} failed: {run['error']}", file=sys.stderr)
        return None
    return run


def _backup(store: Store, url: str, args: argparse.Namespace) -> int:
    if store.is_locked_by_other():
        run = _ask_live(store, "backup", args.timeout)
        if run is None:
            return 1
        print(f"live saver wrote generation {run['generation']} ({run['rows_written']} rows)")
        return 0
    saver = _direct_saver(url, args.schema)
    try:
        result = saver.backup()
    finally:
        saver.close()
    if not result.ok:
        print(f"backup failed: {result.error}", file=sys.stderr)
        return 1
    print(f"generation {result.generation} ({result.rows} rows; no live saver, store is up to date)")
    return 0


def _restore(store: Store, url: str, args: argparse.Namespace) -> int:
    store.get_generation(args.generation)
    if store.is_locked_by_other():
        run = _ask_live(
            store,
            "restore",
            args.timeout,
            generation=args.generation,
            thread_id=args.thread_id,
            on_damage=args.on_damage,
        )
        if run is None:
            return 1
        print(f"live saver restored generation {args.generation} as generation {run['generation']}")
        return 0
    saver = _direct_saver(url, args.schema)
    try:
        result = saver.restore(args.generation, args.thread_id, on_damage=args.on_damage)
    finally:
        saver.close()
    scope = f"thread {args.thread_id!r}" if args.thread_id else "all threads"
    print(
        f"restored {scope} from generation {result.restored_from} as generation {result.generation} "
        f"({result.checkpoints} checkpoints). Undo: python -m persistence restore {result.undo_generation}"
    )
    if result.damaged:
        print(f"left out {len(result.damaged)} damaged rows: {result.damaged[:10]}")
    return 0


def _export(store: Store, args: argparse.Namespace) -> int:
    if args.generation is not None:
        store.get_generation(args.generation)
    snap = store.load(args.generation, args.thread_id)
    if args.thread_id not in snap.storage:
        where = f"generation {args.generation}" if args.generation is not None else "the newest generation"
        print(f"thread {args.thread_id!r} is not in {where}; see `python -m persistence generations`", file=sys.stderr)
        return 1
    text = dumps(export_thread(args.thread_id, snap.storage, snap.writes, snap.blobs, JsonPlusSerializer()))
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output} ({len(text):,} characters)")
    else:
        print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    url = ""
    try:
        url = resolve_url()
        pool = open_pool(url, max_size=2)
    except HybridSaverError as exc:
        print(f"error: {scrub(str(exc), url)}", file=sys.stderr)
        return 1
    try:
        store = Store(pool, args.schema)
        store.setup()
        if args.command == "status":
            return _status(store, url)
        if args.command == "generations":
            return _generations(store, args.limit)
        if args.command == "backup":
            return _backup(store, url, args)
        if args.command == "restore":
            return _restore(store, url, args)
        return _export(store, args)
    except HybridSaverError as exc:
        print(f"error: {scrub(str(exc), url)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - an operator gets a sentence, not a traceback
        print(f"error: {type(exc).__name__}: {scrub(str(exc), url)}", file=sys.stderr)
        return 1
    finally:
        pool.close()


if __name__ == "__main__":
    sys.exit(main())
