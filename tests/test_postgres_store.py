"""The PostgreSQL backend as a user meets it: `storage.backend` in sources.yaml, the DSN from
$TECH_MATIN_DATABASE_URL, the demo built on PostgreSQL byte for byte as on SQLite, one-line
errors. Runs against the session's real cluster (conftest.pg_cluster)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import psycopg
import pytest

from pipeline.errors import PipelineError
from pipeline.models import Item
from pipeline.store import StoreError, StoreTarget, open_store
from pipeline.store.postgres import PostgresStore
from pipeline.store.postgres.schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
T0 = dt.datetime(2025, 5, 5, 8, 0, tzinfo=dt.UTC)


def demo_config(folder: Path, backend_line: str = "  backend: postgresql\n") -> Path:
    """examples/demo.yaml with its feeds copied beside it, storing in the given backend."""
    shutil.copytree(REPO / "examples" / "feeds", folder / "feeds")
    text = (REPO / "examples" / "demo.yaml").read_text(encoding="utf-8")
    text = re.sub(r"storage:\n(  .*\n)+", "storage:\n" + backend_line + "  db: data/demo.sqlite3\n  output: out\n",
                  text)
    config = folder / "demo.yaml"
    config.write_text(text, encoding="utf-8")
    return config


def test_backend_is_checked_with_its_line(tmp_path: Path, cli) -> None:
    config = demo_config(tmp_path, "  backend: mysql\n")
    result = cli("check", "--config", config, "--topics", REPO / "topics.yaml")
    assert result.code == 2
    assert re.fullmatch(r"pipeline: error: .*demo\.yaml:\d+: storage\.backend: must be one of sqlite, postgresql, "
                        r"got 'mysql' \(the PostgreSQL address goes in \$TECH_MATIN_DATABASE_URL, never here\)\n",
                        result.err), result.err


def test_postgresql_without_its_dsn_is_a_one_line_error(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.delenv("TECH_MATIN_DATABASE_URL", raising=False)
    result = cli("run", "--config", demo_config(tmp_path), "--topics", REPO / "topics.yaml", "--date", "2025-05-06")
    assert (result.code, result.err) == (
        2, "pipeline: error: storage.backend is postgresql but $TECH_MATIN_DATABASE_URL is not set "
           "(e.g. postgresql://tech_matin@db.example.org/tech_matin)\n")


def test_an_unreachable_server_is_a_one_line_error_without_the_password(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.setenv("TECH_MATIN_DATABASE_URL", "postgresql://reader:s3cret@127.0.0.1:1/nowhere")
    result = cli("feeds", "list", "--config", demo_config(tmp_path), "--topics", REPO / "topics.yaml")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith("pipeline: error: cannot connect to the PostgreSQL database: ")
    assert "s3cret" not in result.err


def test_the_demo_on_postgresql_is_byte_identical_to_the_golden_issue(tmp_path: Path, cli, monkeypatch,
                                                                       pg_database: str) -> None:
    monkeypatch.setenv("TECH_MATIN_DATABASE_URL", pg_database)
    config = demo_config(tmp_path)
    args = ("--config", config, "--topics", REPO / "topics.yaml")
    result = cli("run", *args, "--date", "2025-05-06")
    assert result.code == 0, result.err
    for name, golden in (("index.html", "2025-05-06.html"), ("digest.txt", "2025-05-06.txt")):
        assert (tmp_path / "out" / "2025-05-06" / name).read_bytes() == (GOLDEN / golden).read_bytes(), name
    assert not (tmp_path / "data" / "demo.sqlite3").exists()  # everything went to PostgreSQL
    search = cli("archive", "search", "reglement", *args)
    assert search.code == 0 and "2025-05-06" in search.out, search.err
    rebuilt = cli("rebuild", *args, "--date", "2025-05-06")
    assert rebuilt.code == 0, rebuilt.err
    assert (tmp_path / "out" / "2025-05-06" / "index.html").read_bytes() == (GOLDEN / "2025-05-06.html").read_bytes()


def test_a_failing_database_raises_store_error_not_psycopg(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute("DROP TABLE classifications")
        db.execute("DROP TABLE items")
    with PostgresStore(pg_database) as store, pytest.raises(StoreError, match='relation "items" does not exist'):
        store.item_count()


def test_a_newer_schema_is_refused(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute("UPDATE tech_matin_schema SET version = 99")
    with pytest.raises(PipelineError, match=f"schema version 99 is newer than this program knows \\({len(MIGRATIONS)}"):
        PostgresStore(pg_database)


def test_two_connections_storing_the_same_items_count_each_new_item_once(pg_database: str) -> None:
    target = StoreTarget(Path("unused"), backend="postgresql", dsn=pg_database)
    items = [Item(id=f"i{n}", feed_id="f", source="S", title="T", url=None, summary="", first_seen=T0)
             for n in range(50)]
    with open_store(target) as one, open_store(target) as two:
        assert one.upsert_items(items[:30]) + two.upsert_items(items[20:]) == 50
        assert one.item_count() == 50
