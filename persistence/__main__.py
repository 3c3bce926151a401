"""Command line for operators: ``python -m persistence status|members|backup|generations|restore|verify|export``.

Works against ``DATABASE_URL`` (or the embedded database). Reading commands read the store and never
block writers. ``backup`` and ``restore`` ask the live members of the store (the processes serving
it) to act; with no live member nothing is pending, and a restore is run from here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from persistence.config import MIN_BUDGET
from persistence.db import describe_url, open_pool, resolve_url, scrub
from persistence.errors import HybridSaverError
from persistence.export import dumps, export_thread
from persistence.fleet import Member, Membership
from persistence.remote import ask
from persistence.saver import HybridSaver
from persistence.store import DEFAULT_SCHEMA, Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m persistence", description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help="store schema (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a member's answer")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="store, newest generation, members and their figures, last runs")
    sub.add_parser("members", help="the members (processes) of the store and their figures")
    backup = sub.add_parser("backup", help="ask the live members to back up now")
    who = backup.add_mutually_exclusive_group()
    who.add_argument("--all", action="store_true", help="every live member (the default)")
    who.add_argument("--member", type=int, metavar="ID", help="only this member")
    gens = sub.add_parser("generations", help="list the kept generations")
    gens.add_argument("--limit", type=int, default=50)
    restore = sub.add_parser("restore", help="restore a generation (all threads or one), across the fleet")
    restore.add_argument("generation", type=int)
    restore.add_argument("--thread", dest="thread_id", help="restore only this thread")
    restore.add_argument("--on-damage", choices=("refuse", "skip"), default="refuse")
    verify = sub.add_parser("verify", help="check a generation's rows against their checksums")
    verify.add_argument("generation", type=int)
    export = sub.add_parser("export", help="print a thread as JSON")
    export.add_argument("thread_id")
    export.add_argument("--generation", type=int, help="from this generation (default: newest)")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    return parser


def _fmt_run(run: dict) -> str:
    status = "ok" if not run.get("error") else f"FAILED: {run['error']}"
    what = f"gen={run.get('generation')} rows={run.get('rows_written')}" if run.get("generation") else "nothing to do"
    folded = f" (x{run['folded']})" if (run.get("folded") or 1) > 1 else ""
    member = f" member={run['instance_id']}" if run.get("instance_id") else ""
    return (
        f"{run['started_at']:%Y-%m-%d %H:%M:%S} {run['trigger']:<11}{member} {what} "
        f"lag={run.get('lag_seconds', 0):.2f}s {status}{folded}"
    )


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _member_line(m: Member) -> str:
    f = m.figures
    budget = f.get("memory_budget")
    memory = f"{f.get('resident_threads', 0)} threads, {_fmt_bytes(f.get('resident_bytes'))}"
    memory += f" of {_fmt_bytes(budget)} budget" if budget else " (no budget)"
    interval = f.get("interval")
    schedule = "paused" if f.get("paused") else (f"every {interval:g} s" if interval else "manual only")
    state = "alive" if m.alive else ("stopped" if m.stopped_at else "gone (no lock)")
    return (
        f"  {m.instance_id:>5}  {state:<8} {m.host}:{m.pid}{' ' + m.name if m.name else ''}  memory {memory}; "
        f"pending {f.get('pending', 0)}, lag {float(f.get('lag_seconds') or 0):.1f}s; backups {schedule}; "
        f"hits {f.get('hits', 0)}, loads {f.get('loads', 0)}, evictions {f.get('evictions', 0)}"
    )


def _status(store: Store, membership: Membership, url: str) -> int:
    print(f"store:     schema {store.schema!r} in {describe_url(url)}")
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
    _members(membership)
    runs = store.runs(limit=5)
    if runs:
        print("last runs:")
        for run in runs:
            print("  " + _fmt_run(run))
    return 0


def _members(membership: Membership) -> int:
    members = [m for m in membership.members() if m.alive]
    if not members:
        print("members:   none live (nothing is pending: every change is in the store)")
        return 0
    print(f"members:   {len(members)} live")
    for m in members:
        print(_member_line(m))
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


def _live(membership: Membership, only: int | None = None) -> list[Member]:
    members = [m for m in membership.members() if m.alive]
    if only is not None:
        members = [m for m in members if m.instance_id == only]
        if not members:
            raise HybridSaverError(
                f"Member {only} is not a live member of the store; `python -m persistence members` lists them."
            )
    return members


def _backup(store: Store, membership: Membership, args: argparse.Namespace) -> int:
    members = _live(membership, args.member)
    if not members:
        print("no live member: nothing is pending, the store is up to date")
        return 0
    failed = 0
    for m in members:
        answer = ask(store.pool, store.schema, m.instance_id, "backup", args.timeout)
        if not answer.ok:
            failed += 1
            print(f"member {m.instance_id}: backup failed: {answer.error}", file=sys.stderr)
        elif answer.result.get("generation") is None:
            print(f"member {m.instance_id}: nothing to back up")
        else:
            print(
                f"member {m.instance_id}: live saver wrote generation {answer.result['generation']} "
                f"({answer.result.get('rows', 0)} rows)"
            )
    return 1 if failed else 0


def _restore(store: Store, membership: Membership, url: str, args: argparse.Namespace) -> int:
    store.get_generation(args.generation)
    members = _live(membership)
    scope = f"thread {args.thread_id!r}" if args.thread_id else "all threads"
    if members:
        answer = ask(
            store.pool,
            store.schema,
            members[0].instance_id,
            "restore",
            args.timeout,
            generation=args.generation,
            thread_id=args.thread_id,
            on_damage=args.on_damage,
        )
        if not answer.ok:
            print(f"restore failed: {answer.error}", file=sys.stderr)
            return 1
        result = answer.result
        print(
            f"live saver (member {members[0].instance_id}) restored {scope} from generation {args.generation} as "
            f"generation {result['generation']}. Undo: python -m persistence restore {result['undo_generation']}"
        )
        return 0
    saver = HybridSaver.from_url(
        url,
        schema=args.schema,
        backup_interval=None,
        listen=False,
        handle_signals=False,
        memory_budget=MIN_BUDGET,
    )
    try:
        done = saver.restore(args.generation, args.thread_id, on_damage=args.on_damage)
    finally:
        saver.close()
    print(
        f"restored {scope} from generation {done.restored_from} as generation {done.generation} "
        f"({done.checkpoints} checkpoints). Undo: python -m persistence restore {done.undo_generation}"
    )
    if done.damaged:
        print(f"left out {len(done.damaged)} damaged rows: {done.damaged[:10]}")
    return 0


def _verify(store: Store, generation: int) -> int:
    rows, damaged = store.verify_generation(generation)
    if not damaged:
        print(f"generation {generation}: {rows:,} rows checked, all intact")
        return 0
    print(f"generation {generation}: {rows:,} rows checked, {len(damaged)} damaged:")
    for tid, what in damaged[:50]:
        print(f"  thread {tid!r}: {what}")
    return 1


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
        membership = Membership(pool, url, args.schema)
        if args.command == "status":
            return _status(store, membership, url)
        if args.command == "members":
            return _members(membership)
        if args.command == "generations":
            return _generations(store, args.limit)
        if args.command == "backup":
            return _backup(store, membership, args)
        if args.command == "restore":
            return _restore(store, membership, url, args)
        if args.command == "verify":
            return _verify(store, args.generation)
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
