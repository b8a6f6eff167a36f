"""Feeds parsed on every core (pipeline.pool under Pipeline.fetch_and_store): the same items as a
sequential run, and whatever one feed's parse provokes, an exception or the death of its worker
process, fails that feed alone with a one-line reason. Real feeds (the demo's bundled files and,
when present, the 57 real published feeds of ../shared/feeds/real/) read through file: URLs, a
real SQLite store; nothing here depends on timing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import threading
from pathlib import Path

import pytest

from pipeline.app import Pipeline
from pipeline.config import load_config
from pipeline.config.topics import load_topics
from pipeline.models import FetchResult, Item, ParseResult
from pipeline.parse import parse_feed
from pipeline.pool import Imported
from pipeline.store import StoreTarget
from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
DATE = dt.date(2025, 5, 6)
NOW = dt.datetime(2025, 5, 6, 5, 0, tzinfo=dt.UTC)


def parse_and_tell_pid(result: FetchResult, seen_at: dt.datetime) -> ParseResult:
    """parse_feed, plus a warning naming the process that parsed (module level: it can be pickled)."""
    parsed = parse_feed(result, seen_at)
    return dataclasses.replace(parsed, warnings=(*parsed.warnings, f"parsed by pid {os.getpid()}"))


def parse_or_break(result: FetchResult, seen_at: dt.datetime) -> ParseResult:
    """Kills its own process on the feed `crash`, raises on `broken`, parses the others."""
    if result.feed.id == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if result.feed.id == "broken":
        raise ValueError("a bug in the parser\nsecond line")
    return parse_feed(result, seen_at)


def write_sources(folder: Path, feeds: dict[str, Path]) -> Path:
    config = folder / "sources.yaml"
    config.write_text("feeds:\n" + "".join(f"  - {{id: {fid}, name: Source {fid}, url: '{path.as_uri()}'}}\n"
                                           for fid, path in feeds.items()), encoding="utf-8")
    return config


def make_pipeline(folder: Path, feeds: dict[str, Path], parser: object, workers: int) -> Pipeline:
    folder.mkdir()
    return Pipeline(load_config(write_sources(folder, feeds)), load_topics(REPO / "topics.yaml"),
                    store=StoreTarget(folder / "db.sqlite3"), output_dir=folder / "out",
                    parser=parser, parse_workers=workers)  # type: ignore[arg-type]


def stored_items(app: Pipeline) -> list[Item]:
    return sorted(app.store.all_items(), key=lambda item: item.id)


def feed_files(shared_real: Path | None) -> dict[str, Path]:
    files = sorted((REPO / "examples" / "feeds").glob("*.xml"))
    if shared_real is not None:
        files += sorted(shared_real.glob("*.xml"))
    return {f"feed-{n}": path for n, path in enumerate(files)}


@pytest.fixture
def real_feeds() -> Path | None:
    """The real published feeds of ../shared when present; the demo's feeds are used either way."""
    real = SHARED / "feeds" / "real"
    return real if real.is_dir() else None


def test_the_pooled_run_stores_the_same_items_as_a_sequential_one(tmp_path: Path, real_feeds: Path | None) -> None:
    feeds = feed_files(real_feeds)
    sequential = make_pipeline(tmp_path / "one", feeds, parse_and_tell_pid, workers=1)
    pooled = make_pipeline(tmp_path / "pool", feeds, parse_and_tell_pid, workers=2)
    with sequential, pooled:
        alone = sequential.fetch_and_store(DATE, NOW)
        spread = pooled.fetch_and_store(DATE, NOW)
        assert stored_items(sequential) == stored_items(pooled)
        assert len(stored_items(pooled)) > (1000 if real_feeds else 40)
    strip = [(r.feed_id, r.status, r.error, r.new_items, r.warnings[:-1]) for r in spread]
    assert strip == [(r.feed_id, r.status, r.error, r.new_items, r.warnings[:-1]) for r in alone]
    # The pooled run parsed in other processes, the sequential one in this one.
    assert {r.warnings[-1] for r in alone} == {f"parsed by pid {os.getpid()}"}
    pids = {r.warnings[-1] for r in spread}
    assert f"parsed by pid {os.getpid()}" not in pids and len(pids) >= 1


def test_an_exception_or_a_dead_worker_fails_that_feed_alone(tmp_path: Path) -> None:
    demo = REPO / "examples" / "feeds"
    feeds = {"crash": demo / "octet-hebdo.xml", "broken": demo / "regul-info.xml",
             "good": demo / "veilleur-numerique.xml", "also-good": demo / "presse-plateformes.xml"}
    app = make_pipeline(tmp_path / "pool", feeds, parse_or_break, workers=2)
    with app:
        reports = {r.feed_id: r for r in app.fetch_and_store(DATE, NOW)}
        health = {status.feed.id: status.health for status in app.feed_statuses()}
    assert (reports["crash"].status, reports["crash"].error) == (
        "failed", "could not parse: its worker process died (killed by SIGKILL)")
    assert (reports["broken"].status, reports["broken"].error) == (
        "failed", "could not parse: unexpected error: ValueError: a bug in the parser")
    assert reports["good"].status == "new" and reports["good"].new_items > 0
    assert reports["also-good"].status == "new" and reports["also-good"].new_items > 0
    crashed = health["crash"]
    assert crashed is not None and crashed.consecutive_failures == 1


def test_a_parser_that_cannot_go_to_another_process_runs_in_this_one(tmp_path: Path) -> None:
    pids: list[int] = []

    def closure(result: FetchResult, seen_at: dt.datetime) -> ParseResult:
        pids.append(os.getpid())
        return parse_feed(result, seen_at)

    demo = REPO / "examples" / "feeds"
    app = make_pipeline(tmp_path / "closure", {"a": demo / "octet-hebdo.xml", "b": demo / "regul-info.xml"},
                       closure, workers=2)
    with app:
        reports = app.fetch_and_store(DATE, NOW)
    assert [r.status for r in reports] == ["new", "new"] and pids == [os.getpid()] * 2


def test_a_parser_given_by_name_is_imported_by_the_workers(tmp_path: Path) -> None:
    # The default parser goes to the pool by name (pipeline.pool.Imported): the same items as the
    # function itself, parsed in other processes, which started before the first body came.
    demo = REPO / "examples" / "feeds"
    feeds = {"a": demo / "octet-hebdo.xml", "b": demo / "regul-info.xml"}
    named = make_pipeline(tmp_path / "named", feeds, Imported("tests.test_parallel_parse", "parse_and_tell_pid"),
                          workers=2)
    plain = make_pipeline(tmp_path / "plain", feeds, parse_feed, workers=1)
    warmed: list[str] = []
    with named, plain:
        reports = named.fetch_and_store(DATE, NOW, warm_up=lambda: warmed.append(threading.current_thread().name))
        plain.fetch_and_store(DATE, NOW)
        assert stored_items(named) == stored_items(plain)
    assert all(r.status == "new" and r.warnings[-1] != f"parsed by pid {os.getpid()}" for r in reports)
    # The run's warm-up ran once, in a thread of its own, while the feeds were read.
    assert warmed == ["warm-up"]


def test_a_parser_that_cannot_be_imported_fails_each_feed_not_the_run(tmp_path: Path) -> None:
    # The workers import the parser when they start; one that cannot be imported must not make
    # them die and start again for ever: each call says why, the run goes on.
    demo = REPO / "examples" / "feeds"
    app = make_pipeline(tmp_path / "missing", {"a": demo / "octet-hebdo.xml", "b": demo / "regul-info.xml"},
                        Imported("pipeline.no_such_module", "parse_feed"), workers=2)

    def failing_warm_up() -> None:
        raise RuntimeError("a warm-up that fails is left for the build to meet")

    with app:
        reports = app.fetch_and_store(DATE, NOW, warm_up=failing_warm_up)
    assert [(r.status, r.error) for r in reports] == [
        ("failed", "could not parse: unexpected error: ModuleNotFoundError: No module named 'pipeline.no_such_module'")
    ] * 2
