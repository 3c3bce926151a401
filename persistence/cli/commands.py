"""The commands of the operator command line, one function each: they print what they found and
return the exit status. Reading commands read the store and never block writers; ``backup`` and
``restore`` ask the live members of the store to act (with none live, a restore is run here)."""

from __future__ import annotations

import argparse
import shlex
import sys

from persistence.cli.lines import ago, member_line, plural, run_line
from persistence.config import MIN_BUDGET
from persistence.db import describe_url
from persistence.errors import HybridSaverError
from persistence.export import dumps, export_thread
from persistence.fleet import Member, Membership
from persistence.fleet.remote import ask
from persistence.saver import HybridSaver
from persistence.serde import check_can_read, serde_from_env
from persistence.store import DEFAULT_SCHEMA, Store
from persistence.store.schema import ddl


def status(store: Store, membership: Membership, url: str) -> int:
    print(f"store:     schema {store.schema!r} in {describe_url(url)}")
    gens = store.generations()
    if gens:
        newest = gens[0]
        print(
            f"newest:    generation {newest.generation} at {newest.taken_at:%Y-%m-%d %H:%M:%S %Z}: "
            f"{plural(newest.threads, 'thread')}, {plural(newest.checkpoints, 'checkpoint')}"
        )
    window = store.upkeep.window()
    if window is not None:
        load = f", {window.by_load} of them written under load" if window.by_load else ""
        print(
            f"restorable back to {window.oldest_at:%Y-%m-%d %H:%M:%S %Z} ({ago(window.oldest_at)}): "
            f"{plural(window.kept, 'generation')} kept, {window.oldest}..{window.newest}{load}"
        )
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
        print("no generation yet: take one with `hybrid-saver backup`")
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
                f"Member {only} is not a live member of the store; `hybrid-saver members` lists them."
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
                f"({plural(answer.result.get('rows', 0), 'row')})"
            )
    return 1 if failed else 0


def undo_command(generation: int, thread_id: str | None, schema: str) -> str:
    """The exact command line that undoes a restore: back to ``generation`` for the same scope and schema."""
    parts = ["hybrid-saver", "restore", str(generation)]
    if thread_id is not None:
        parts += ["--thread", thread_id]
    else:
        parts.append("--yes")
    if schema != DEFAULT_SCHEMA:
        parts += ["--schema", schema]
    return shlex.join(parts)


def _confirm_all(store: Store, args: argparse.Namespace) -> bool:
    """A restore of every thread goes ahead with --yes, or when the operator types the generation on a terminal."""
    if args.yes:
        return True
    figures = store.directory.store_figures()
    threads = plural(figures.get("threads", 0), "thread")
    if not sys.stdin.isatty():
        print(
            f"error: restoring generation {args.generation} rewrites every thread of the store ({threads} now). "
            "Nothing was changed. Add --yes to do it without a terminal, or --thread THREAD_ID for one thread.",
            file=sys.stderr,
        )
        return False
    print(f"This restores every thread of schema {store.schema!r} ({threads} now) to generation {args.generation}.")
    try:
        typed = input(f"Type {args.generation} to go on: ").strip()
    except EOFError:
        typed = ""
    if typed != str(args.generation):
        print("not restored: nothing was changed", file=sys.stderr)
        return False
    return True


def restore(store: Store, membership: Membership, url: str, args: argparse.Namespace) -> int:
    store.get_generation(args.generation)
    if args.thread_id is None and not _confirm_all(store, args):
        return 1
    live = _live_members(membership)
    scope = f"thread {args.thread_id!r}" if args.thread_id else "every thread"
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
            f"generation {result['generation']}."
        )
        print(f"undo: {undo_command(result['undo_generation'], args.thread_id, store.schema)}")
        return 0
    saver = HybridSaver.from_url(
        url,
        schema=args.schema,
        backup_interval=None,
        listen=False,
        handle_signals=False,
        memory_budget=MIN_BUDGET,
        serde=serde_from_env(),
    )
    try:
        done = saver.restore(args.generation, args.thread_id, on_damage=args.on_damage)
    finally:
        saver.close()
    print(
        f"restored {scope} from generation {done.restored_from} as generation {done.generation} "
        f"({plural(done.checkpoints, 'checkpoint')})."
    )
    assert done.undo_generation is not None  # a restore always has the state before it to go back to
    print(f"undo: {undo_command(done.undo_generation, args.thread_id, store.schema)}")
    if done.damaged:
        print(f"left out {plural(len(done.damaged), 'damaged row')}: {done.damaged[:10]}")
    return 0


def verify(store: Store, generation: int, thread_id: str | None = None) -> int:
    rows, damaged = store.upkeep.verify_generation(generation, thread_id)
    what = f"generation {generation}" + (f", thread {thread_id!r}" if thread_id is not None else "")
    if not damaged:
        print(f"{what}: {plural(rows, 'row')} checked, all intact")
        return 0
    print(f"{what}: {plural(rows, 'row')} checked, {len(damaged)} damaged:")
    for tid, what in damaged[:50]:
        print(f"  thread {tid!r}: {what}")
    return 1


def export(store: Store, args: argparse.Namespace) -> int:
    if args.generation is not None:
        store.get_generation(args.generation)
    snap = store.load(args.generation, args.thread_id)
    if args.thread_id not in snap.storage:
        where = f"generation {args.generation}" if args.generation is not None else "the newest generation"
        print(f"thread {args.thread_id!r} is not in {where}; see `hybrid-saver generations`", file=sys.stderr)
        return 1
    serde = serde_from_env()
    for namespaces in snap.storage.values():
        for checkpoints in namespaces.values():
            for saved in checkpoints.values():
                check_can_read(saved[0][0], serde, f"Thread {args.thread_id!r}")
    text = dumps(export_thread(args.thread_id, snap.storage, snap.writes, snap.blobs, serde))
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output} ({len(text):,} characters)")
    else:
        print(text)
    return 0


def sql(schema: str) -> int:
    print(ddl(schema), end="")
    return 0


__all__ = ["backup", "export", "generations", "members", "restore", "sql", "status", "undo_command", "verify"]
