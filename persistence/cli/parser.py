"""The arguments of the operator command line: global options and one subcommand each."""

from __future__ import annotations

import argparse
from pathlib import Path

from persistence.cli import importing, metrics
from persistence.store import DEFAULT_SCHEMA

PROG = "hybrid-saver"
#: the first line of ``--help``
DESCRIPTION = "Operator commands for a HybridSaver store in PostgreSQL."
EPILOG = (
    "The store is the one at DATABASE_URL (postgresql://user:password@host:5432/dbname); with DATABASE_URL "
    "unset, the embedded server of the dashboard install (.data/). Reading commands (status, members, "
    "generations, verify, export, sql, metrics) never change the store. An encrypted store (serde "
    "EncryptedSerializer) is read with the key in LANGGRAPH_AES_KEY. `python -m persistence` is the same command."
)
#: commands that only read: they never create or migrate a schema
READING = ("status", "members", "generations", "verify", "export", "sql", "metrics")


def _common() -> argparse.ArgumentParser:
    """--schema and --timeout, accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--schema", default=argparse.SUPPRESS, help=f"schema of the store in the database (default: {DEFAULT_SCHEMA})"
    )
    common.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait for a member's answer (default: 60)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``hybrid-saver`` (also ``python -m persistence``)."""
    common = _common()
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=description or help[0].upper() + help[1:] + ".", epilog=EPILOG,
            parents=[common],
        )  # fmt: skip

    add("status", "the store, its restore window, the members and their figures, the last runs")
    add("members", "the members (processes serving the store) and their figures")
    backup = add("backup", "ask the live members to back up now")
    who = backup.add_mutually_exclusive_group()
    who.add_argument("--all", action="store_true", help="every live member (the default)")
    who.add_argument("--member", type=int, metavar="ID", help="only this member")
    gens = add("generations", "list the kept generations, newest first")
    gens.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")
    restore = add(
        "restore",
        "restore a generation (all threads or one), across the fleet",
        "Put back the state of GENERATION for every thread, or for one with --thread. Every restore is a new "
        "generation and prints the exact command that undoes it. Restoring every thread asks for confirmation "
        "on a terminal; without a terminal it needs --yes.",
    )
    restore.add_argument("generation", type=int, metavar="GENERATION", help="a kept generation (see `generations`)")
    restore.add_argument("--thread", dest="thread_id", metavar="THREAD_ID", help="restore only this thread")
    restore.add_argument(
        "--on-damage",
        choices=("refuse", "skip"),
        default="refuse",
        help="damaged rows: refuse (default) or leave them out",
    )
    restore.add_argument("--yes", "-y", action="store_true", help="restore every thread without asking")
    verify = add("verify", "check a generation's rows against their checksums")
    verify.add_argument("generation", type=int, metavar="GENERATION")
    verify.add_argument("--thread", dest="thread_id", metavar="THREAD_ID", help="only this thread")
    export = add("export", "print a thread as JSON")
    export.add_argument("thread_id", metavar="THREAD_ID")
    export.add_argument("--generation", type=int, help="from this generation (default: the newest)")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    add(
        "sql",
        "print the DDL of the store's schema (for a DBA to apply)",
        "Print the SQL that creates the store's schema and its tables at the current version, for a DBA to "
        "review and apply (psql -f). A role with USAGE and CREATE on an existing schema can then run the saver.",
    )
    importing.add_parser(sub, common)
    metrics.add_parser(sub, common)
    return parser


def options(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the global options a command line left out with their defaults."""
    if not hasattr(args, "schema"):
        args.schema = DEFAULT_SCHEMA
    if not hasattr(args, "timeout"):
        args.timeout = 60.0
    return args


__all__ = ["DESCRIPTION", "PROG", "READING", "build_parser", "options"]
