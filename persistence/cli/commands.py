"""The commands of the operator command line, one function each: they print what they found and
return the exit status. Reading commands read the store and never block writers; ``backup`` and
``restore`` ask the live members of the store to act (with none live, a restore is run here)."""

from __future__ import annotations

import argparse
import sys

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from persistence.cli.lines import member_line, run_line
from persistence.config import MIN_BUDGET
from persistence.db import describe_url
from persistence.errors import HybridSaverError
from persistence.export import dumps, export_thread
from persistence.fleet import Member, Membership
from persistence.fleet.remote import ask
from persistence.saver import HybridSaver
from persistence.store import Store


def status(store: Store, membership: Membership, url: str) -> int:
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
    print(f"size:      {store.runs.database_size() / 1e6:.1f} MB")
    members(membership)
    runs = store.runs.runs(limit=5)
    if runs:
        print("last runs:")
        for run in runs:
            print("  " + run_line(run))
    return 0


def members(membership: Membership) -> int:
    live = [m for m in membership.members() if m.alive]
    if not live:
        print("members:   none live (nothing is pending: every change is in the store)")
        return 0
    print(f"members:   {len(live)} live")
    for m in live:
        print(member_line(m))
    return 0


def generations(store: Store, limit: int) -> int:
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


def _live_members(membership: Membership, only: int | None = None) -> list[Member]:
    live = [m for m in membership.members() if m.alive]
    if only is not None:
        live = [m for m in live if m.instance_id == only]
        if not live:
            raise HybridSaverError(
                f"Member {only} is not a live member of the store; `python -m persistence members` lists them."
            )
    return live


def backup(store: Store, membership: Membership, args: argparse.Namespace) -> int:
    live = _live_members(membership, args.member)
    if not live:
        print("no live member: nothing is pending, the store is up to date")
        return 0
    failed = 0
    for m in live:
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


def restore(store: Store, membership: Membership, url: str, args: argparse.Namespace) -> int:
    store.get_generation(args.generation)
    live = _live_members(membership)
    scope = f"thread {args.thread_id!r}" if args.thread_id else "all threads"
    if live:
        answer = ask(
            store.pool,
            store.schema,
            live[0].instance_id,
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
            f"live saver (member {live[0].instance_id}) restored {scope} from generation {args.generation} as "
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


def verify(store: Store, generation: int) -> int:
    rows, damaged = store.upkeep.verify_generation(generation)
    if not damaged:
        print(f"generation {generation}: {rows:,} rows checked, all intact")
        return 0
    print(f"generation {generation}: {rows:,} rows checked, {len(damaged)} damaged:")
    for tid, what in damaged[:50]:
        print(f"  thread {tid!r}: {what}")
    return 1


def export(store: Store, args: argparse.Namespace) -> int:
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


__all__ = ["backup", "export", "generations", "members", "restore", "status", "verify"]
