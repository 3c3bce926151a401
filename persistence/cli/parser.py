"""The arguments of the operator command line: global options and one subcommand each."""

from __future__ import annotations

import argparse
from pathlib import Path

from persistence.store import DEFAULT_SCHEMA

#: the first line of ``--help``
DESCRIPTION = (
    "Command line for operators: ``python -m persistence status|members|backup|generations|restore|verify|export``."
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m persistence`` (also the ``hybrid-saver`` console script)."""
    parser = argparse.ArgumentParser(prog="python -m persistence", description=DESCRIPTION)
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


__all__ = ["DESCRIPTION", "build_parser"]
