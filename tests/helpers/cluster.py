"""A primary and streaming standbys made with Debian's PostgreSQL 15 binaries (``pg_basebackup -R``),
each on a socket folder of its own, run as the embedded servers' user (PostgreSQL refuses root)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
RUN_AS = "pgserver"


def _run(*args: str) -> str:
    done = subprocess.run(list(args), user=RUN_AS, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done.stdout


class Node:
    """One server of the cluster: its data folder and socket folder."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.data = root / name
        self.sock = root / f"{name}-sock"
        self.sock.mkdir()
        shutil.chown(self.sock, RUN_AS, RUN_AS)
        self.log = root / f"{name}.log"

    def start(self) -> None:
        _run(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            f"-k {self.sock} -c listen_addresses='' -c max_connections=60",
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        _run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def promote(self) -> None:
        _run(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "promote")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.sock}"


class Cluster:
    """A primary, and standbys taken from it on demand."""

    def __init__(self) -> None:
        if not (BIN / "pg_basebackup").exists():
            raise RuntimeError(f"Debian's PostgreSQL 15 is not installed ({BIN}): `make test` installs it.")
        self.root = Path(tempfile.mkdtemp(prefix="hs-cluster-"))
        shutil.chown(self.root, RUN_AS, RUN_AS)
        self.primary = Node(self.root, "primary")
        _run(str(BIN / "initdb"), "-D", str(self.primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.primary.start()
        self.nodes = [self.primary]

    def standby(self, name: str) -> Node:
        """A standby of the primary as of now (``pg_basebackup -R``: it streams from the primary once started)."""
        node = Node(self.root, name)
        _run(str(BIN / "pg_basebackup"), "-D", str(node.data), "-h", str(self.primary.sock), "-U", "postgres", "-R")
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            try:
                node.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
