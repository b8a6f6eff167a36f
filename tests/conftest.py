"""Shared fixtures: paths of the repo and of ../shared, and a way to call the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import call_cli

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present on this machine")
    return SHARED


@pytest.fixture
def cli():
    """Call `pipeline` in-process: cli(args...) -> CliResult."""

    def call(*args: str | Path) -> CliResult:
        return CliResult(*call_cli(*args))

    return call


@pytest.fixture
def run_cli():
    """Run `python -m pipeline` in a real process (for exit codes, tracebacks, signals)."""

    def call(*args: str | Path, cwd: Path = REPO, stdin: str | None = None, timeout: float = 120) -> CliResult:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", *[str(a) for a in args]], cwd=cwd, input=stdin,
            capture_output=True, text=True, timeout=timeout, env=env,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return call


# ---------------------------------------------------------------- the store, on each backend

STORE_BACKENDS = ("sqlite", "postgresql")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the whole session (tests/pgcluster.py), stopped at the end.
    Skipped without PostgreSQL's binaries, unless CI is set: then that is a failure."""
    from pgcluster import Cluster, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        if _in_ci():
            pytest.fail("CI is set but PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); set CI=true to make this a failure")
    cluster = Cluster.start(bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster) -> str:
    """A database migrated once (the store's schema and procrastinate's), copied for each test."""
    from pipeline.store.postgres import PostgresStore

    pg_cluster.create_database("tech_matin_template")
    PostgresStore(pg_cluster.dsn("tech_matin_template")).close()
    return "tech_matin_template"


@pytest.fixture
def pg_database(pg_cluster, pg_template: str, request) -> str:
    """The DSN of a fresh database of the session's cluster, already migrated."""
    name = f"t_{os.getpid()}_{next(_DATABASE_NUMBERS)}"
    dsn = pg_cluster.create_database(name, template=pg_template)
    yield dsn
    pg_cluster.drop_database(name)


_DATABASE_NUMBERS = iter(range(1, 1_000_000))


@pytest.fixture(params=STORE_BACKENDS)
def store_target(request, tmp_path: Path):
    """Where a test's store lives, once per backend: a SQLite file in tmp_path, then a fresh
    PostgreSQL database."""
    from pipeline.store import StoreTarget

    if request.param == "sqlite":
        return StoreTarget(tmp_path / "db.sqlite3")
    return StoreTarget(tmp_path / "db.sqlite3", backend="postgresql", dsn=request.getfixturevalue("pg_database"))


@pytest.fixture
def store(store_target):
    """An open store of each backend (see store_target)."""
    from pipeline.store import open_store

    with open_store(store_target) as opened:
        yield opened


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1 for one test (tests/smtpserver.py), stopped after it."""
    from smtpserver import start_server

    server = start_server()
    try:
        yield server
    finally:
        server.stop()
