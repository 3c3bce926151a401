"""``python -m persistence``: the operator command line, :mod:`persistence.cli`."""

from persistence.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
