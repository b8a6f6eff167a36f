"""The store's interface: every backend implements all of it, and nothing of a backend leaks out."""

from __future__ import annotations

import datetime as dt
import inspect
import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.models import FeedSource, FetchResult, FetchStatus
from pipeline.store import (
    DeliveryStore,
    EditorialStore,
    FeedHealth,
    FeedStore,
    IssueStore,
    ItemStore,
    RunStore,
    SearchStore,
    Store,
    StoreError,
    StoreTarget,
    open_store,
)
from pipeline.store.postgres import PostgresStore
from pipeline.store.sqlite import SqliteStore

BACKENDS = {"sqlite": SqliteStore, "postgresql": PostgresStore}
AREAS = (FeedStore, ItemStore, IssueStore, SearchStore, RunStore, DeliveryStore, EditorialStore, Store)
T0 = dt.datetime(2025, 5, 5, 8, 0, tzinfo=dt.UTC)


def interface_methods() -> dict[str, inspect.Signature]:
    methods: dict[str, inspect.Signature] = {}
    for area in AREAS:
        for name, member in vars(area).items():
            if callable(member) and (not name.startswith("_") or name in ("__enter__", "__exit__")):
                methods[name] = inspect.signature(member)
    return methods


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_implements_every_method_with_the_same_parameters(backend: str) -> None:
    implementation = BACKENDS[backend]
    methods = interface_methods()
    assert {"record_fetch", "save_issue", "search_stories", "begin_delivery", "finish_run"} <= set(methods)
    for name, wanted in methods.items():
        got = inspect.signature(getattr(implementation, name))
        assert list(got.parameters) == list(wanted.parameters), f"{backend}: {name}{got} is not {name}{wanted}"
        for parameter in wanted.parameters.values():
            assert got.parameters[parameter.name].default == parameter.default, f"{backend}: {name}.{parameter.name}"
    assert isinstance(implementation.schema_version, property)


def test_open_store_opens_the_configured_backend(tmp_path: Path) -> None:
    target = StoreTarget(tmp_path / "db.sqlite3")
    assert not target.exists()
    with open_store(target) as store:
        assert isinstance(store, SqliteStore) and store.item_count() == 0
    assert target.exists()
    with pytest.raises(PipelineError, match="unknown store backend 'oracle' \\(known: sqlite, postgresql\\)"):
        open_store(StoreTarget(tmp_path / "other", backend="oracle"))


def test_feed_health_is_a_record(tmp_path: Path) -> None:
    feed = FeedSource(id="f1", name="Feed One", url="https://example.org/rss")
    with open_store(StoreTarget(tmp_path / "db.sqlite3")) as store:
        store.record_fetch(FetchResult(feed=feed, status=FetchStatus.FAILED, url=feed.url, error="HTTP 500"), 0, T0)
        (health,) = store.feed_health()
    assert health == FeedHealth(
        feed_id="f1", config_url=feed.url, url=None, etag=None, last_modified=None, consecutive_failures=1,
        last_status="failed", last_error="HTTP 500", last_attempt=T0, last_success=None, items_seen=0,
        disabled=False)


def test_a_failing_database_raises_store_error_not_sqlite3(tmp_path: Path, cli) -> None:
    path = tmp_path / "db.sqlite3"
    open_store(StoreTarget(path)).close()
    with sqlite3.connect(path) as db:  # a damaged store: a table gone
        db.execute("DROP TABLE items")
    with open_store(StoreTarget(path)) as store, pytest.raises(StoreError, match="no such table: items") as caught:
        store.item_count()
    assert not isinstance(caught.value, sqlite3.Error)
    config = tmp_path / "sources.yaml"
    config.write_text("feeds:\n  - name: Exemple\n    url: https://example.org/rss\n", encoding="utf-8")
    result = cli("feeds", "list", "--config", config, "--db", path)
    assert (result.code, result.err) == (1, "pipeline: error: database: no such table: items\n")
