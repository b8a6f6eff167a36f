"""A throwaway PostgreSQL cluster for the test session (and the benchmarks): real server, no mock.

`Cluster.start()` runs the machine's own `initdb` and `pg_ctl` (Debian's postgresql package:
/usr/lib/postgresql/<version>/bin, or $PG_BIN) in a temporary folder, listening on 127.0.0.1
and a Unix socket in that folder only, with durability switched off (a test cluster lives for
one session). initdb refuses to run as root, so as root the server runs as the `postgres` user
(`runuser -u postgres`), in a folder that user owns. `stop()` stops it and removes the folder.

Databases are cheap copies of a template (`create_database`), so each test gets a fresh one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

SERVER_SETTINGS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=200 -c shared_buffers=64MB"
)


def find_pg_bin() -> Path | None:
    """The folder of initdb/pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    explicit = os.environ.get("PG_BIN")
    if explicit:
        return Path(explicit) if (Path(explicit) / "initdb").exists() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


@dataclass
class Cluster:
    bin_dir: Path
    root: Path
    port: int
    user: str | None  # the system user the server runs as (None: the current one)

    @classmethod
    def start(cls, bin_dir: Path) -> Cluster:
        as_root = os.geteuid() == 0
        root = Path(tempfile.mkdtemp(prefix="tech-matin-pg-"))
        user = "postgres" if as_root else None
        if user:
            shutil.chown(root, user)
        cluster = cls(bin_dir=bin_dir, root=root, port=free_port(), user=user)
        try:
            cluster.run_tool("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                         "--locale=C.UTF-8", "--no-sync")
            cluster.run_tool("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "60",
                         "-o", f"-p {cluster.port} -k {root} {SERVER_SETTINGS}", "start")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def run_tool(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True) as db:
            db.execute(sql)  # type: ignore[arg-type]  # statements of the test harness, not user input

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a file copy of `template`, when given); returns its DSN."""
        clause = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        for attempt in range(50):
            try:
                self.execute(f"CREATE DATABASE {name}{clause}")
                break
            except Exception as exc:  # the template is busy for a moment after its last connection closed
                if "being accessed by other users" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if (self.root / "data" / "postmaster.pid").exists():
                self.run_tool("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
