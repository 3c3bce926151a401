"""A real PgBouncer (Debian's package, installed by ``make test``) in front of a test server's socket."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
#: PgBouncer refuses to run as root; the embedded servers' own user runs it
RUN_AS = "pgserver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """PgBouncer listening on a loopback port, pooling ``database`` of the server behind ``server_url``."""

    def __init__(self, server_url: str, database: str, *, mode: str, pool_size: int) -> None:
        if not Path(PGBOUNCER).exists():
            raise RuntimeError("PgBouncer is not installed: `make test` installs it (apt-get install -y pgbouncer).")
        parsed = urlparse(server_url)
        socket_dir = parse_qs(parsed.query)["host"][0]
        self.root = Path(tempfile.mkdtemp(prefix="hs-pgbouncer-"))
        self.port = _free_port()
        self.database = database
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{database} = host={socket_dir} dbname={database} user=postgres\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\n"
            f"pool_mode = {mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
            "query_wait_timeout = 120\nserver_reset_query = DISCARD ALL\n"
            f"logfile = {self.root / 'pgbouncer.log'}\npidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        shutil.chown(self.root, RUN_AS, RUN_AS)
        shutil.chown(ini, RUN_AS, RUN_AS)
        self.proc = subprocess.Popen(
            [PGBOUNCER, str(ini)], user=RUN_AS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"pgbouncer exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
                    ) from None
                time.sleep(0.05)
        raise RuntimeError("pgbouncer did not listen within 10 s")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
