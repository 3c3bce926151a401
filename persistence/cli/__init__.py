"""Command line for operators: ``hybrid-saver status|members|backup|generations|restore|verify|export|sql|
import-postgres-saver|metrics`` (also ``python -m persistence``).

Works against ``DATABASE_URL`` (or the embedded database). Reading commands read the store, never
block writers and never create or migrate anything. ``backup`` and ``restore`` ask the live members
of the store (the processes serving it) to act; with no live member nothing is pending, and a restore
is run from here.

Lives here: :func:`main` (the ``hybrid-saver`` console script and ``python -m persistence``), ``parser``
(the arguments), ``commands`` (one function per command), ``importing`` (the PostgresSaver importer's
command), ``metrics`` (the Prometheus exporter of the store) and ``lines`` (how a run or a member is
printed). The top layer: may import the whole library (store, fleet, the saver); nothing imports it.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

from persistence.cli import commands, importing, metrics
from persistence.cli.parser import READING, build_parser, options
from persistence.db import open_pool, resolve_url, scrub
from persistence.errors import HybridSaverError
from persistence.fleet import Membership
from persistence.store import Store


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (``argv`` as on the command line, default ``sys.argv[1:]``); return the exit status."""
    args = options(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if hasattr(signal, "SIGPIPE"):
        # `hybrid-saver status | head` ends quietly, as other command-line tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.command == "sql":
        return commands.sql(args.schema)
    url = ""
    try:
        url = resolve_url()
        pool = open_pool(url, max_size=2)
    except HybridSaverError as exc:
        print(f"error: {scrub(str(exc), url)}", file=sys.stderr)
        return 1
    try:
        store = Store(pool, args.schema)
        if args.command in READING:
            store.check_readable()
        else:
            store.setup()
        membership = Membership(pool, url, args.schema)
        if args.command == "status":
            return commands.status(store, membership, url)
        if args.command == "members":
            return commands.members(membership)
        if args.command == "generations":
            return commands.generations(store, args.limit)
        if args.command == "backup":
            return commands.backup(store, membership, args)
        if args.command == "restore":
            return commands.restore(store, membership, url, args)
        if args.command == "verify":
            return commands.verify(store, args.generation, args.thread_id)
        if args.command == "import-postgres-saver":
            return importing.run(args, url)
        if args.command == "metrics":
            return metrics.run(args, url)
        return commands.export(store, args)
    except HybridSaverError as exc:
        print(f"error: {scrub(str(exc), url)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - an operator gets a sentence, not a traceback
        print(f"error: {type(exc).__name__}: {scrub(str(exc), url)}", file=sys.stderr)
        return 1
    finally:
        pool.close()


__all__ = ["main"]
