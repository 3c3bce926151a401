"""``hybrid-saver import-postgres-saver URL``: bring a PostgresSaver store's threads into this store.

(Being written: the command is registered, its work lands with the importer.)
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``import-postgres-saver`` subcommand (``common`` carries --schema and --timeout)."""
    cmd = sub.add_parser(
        "import-postgres-saver",
        help="bring the threads of a PostgresSaver store into this store",
        parents=[common],
    )
    cmd.add_argument("source_url", metavar="URL", help="the PostgresSaver database")


def run(args: argparse.Namespace, url: str) -> int:
    """Run the import; return the exit status."""
    raise NotImplementedError("import-postgres-saver is being written")


__all__ = ["add_parser", "run"]
