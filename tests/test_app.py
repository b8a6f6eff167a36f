"""The application object with an injected fetcher and parser: the flow of a run without any
HTTP server (as lemon24/reader's tests inject a fake parser). The store, the rules, compose,
the templates and the output folder are all real."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from pipeline.app import Pipeline
from pipeline.config import load_config
from pipeline.config.topics import load_topics
from pipeline.errors import RunFailed
from pipeline.models import (
    FeedSource,
    FeedState,
    FetchResult,
    FetchSettings,
    FetchStatus,
    Item,
    ParseResult,
)
from pipeline.parse import parse_feed
from pipeline.store import StoreTarget
from tests.localfeed import RSS

REPO = Path(__file__).resolve().parents[1]
DATE = dt.date(2025, 5, 6)
NOW = dt.datetime(2025, 5, 6, 5, 0, tzinfo=dt.UTC)  # after the 06:00 Paris cut-off of the issue


class FakeFetcher:
    """Answers each feed from a table instead of the network, and remembers what it was asked."""

    def __init__(self, answers: Mapping[str, FetchResult | FetchStatus]) -> None:
        self.answers = answers
        self.states_seen: list[dict[str, FeedState]] = []

    def __call__(self, feeds: Sequence[FeedSource], settings: FetchSettings, states: Mapping[str, FeedState],
                 on_result: object = None) -> list[FetchResult]:
        self.states_seen.append(dict(states))
        results = []
        for feed in feeds:
            answer = self.answers[feed.id]
            results.append(answer if isinstance(answer, FetchResult) else FetchResult(
                feed=feed, status=answer, url=feed.url, body=b"<rss/>" if answer is FetchStatus.NEW else None,
                error="HTTP 503" if answer is FetchStatus.FAILED else None))
        return results


class FakeParser:
    """Items per feed given as they are (or an exception to raise), whatever the body."""

    def __init__(self, items: Mapping[str, Sequence[Item] | Exception]) -> None:
        self.items = items

    def __call__(self, result: FetchResult, seen_at: dt.datetime) -> ParseResult:
        found = self.items[result.feed.id]
        if isinstance(found, Exception):
            raise found
        return ParseResult(feed=result.feed, items=tuple(
            Item(**{**vars(item), "first_seen": seen_at}) for item in found))


def write_sources(folder: Path, *feed_ids: str) -> Path:
    config = folder / "sources.yaml"
    config.write_text("feeds:\n" + "".join(f"  - {{id: {fid}, name: Source {fid}, url: 'https://{fid}.example/rss'}}\n"
                                           for fid in feed_ids), encoding="utf-8")
    return config


def make_pipeline(folder: Path, fetcher: FakeFetcher, parser: object = parse_feed, *feed_ids: str) -> Pipeline:
    config = load_config(write_sources(folder, *(feed_ids or ("exemple",))))
    return Pipeline(config, load_topics(REPO / "topics.yaml"), store=StoreTarget(folder / "db.sqlite3"),
                    output_dir=folder / "out", fetcher=fetcher, parser=parser)  # type: ignore[arg-type]


def item(feed_id: str, n: int, title: str, summary: str) -> Item:
    return Item(id=f"{feed_id}-{n}", feed_id=feed_id, source=f"Source {feed_id}", title=title,
                url=f"https://{feed_id}.example/{n}", summary=summary,
                published=dt.datetime(2025, 5, 5, 10 + n, 0, tzinfo=dt.UTC))


def test_a_run_stores_what_the_fetcher_brought_and_the_next_run_sends_its_validators(tmp_path: Path) -> None:
    feed_result = FetchResult(
        feed=FeedSource(id="exemple", name="Source exemple", url="https://exemple.example/rss"),
        status=FetchStatus.NEW, url="https://exemple.example/rss", body=RSS.encode(), etag='"v1"',
        content_type="application/rss+xml")
    fetcher = FakeFetcher({"exemple": feed_result})
    with make_pipeline(tmp_path, fetcher) as app:
        first = app.run(DATE, now=NOW)
        assert (first.feeds_read, first.new_items, first.build and first.build.stories) == (1, 1, 1)
        assert (tmp_path / "out" / "2025-05-06" / "index.html").is_file()
        assert fetcher.states_seen[0]["exemple"].etag is None
        fetcher.answers = {"exemple": FetchStatus.UNCHANGED}
        second = app.run(DATE, now=NOW + dt.timedelta(hours=1))
    # What the store kept of the first answer went back to the fetcher, as a conditional GET needs.
    assert fetcher.states_seen[1]["exemple"].etag == '"v1"'
    assert [(f.status, f.new_items) for f in second.feeds] == [("unchanged", 0)]
    assert second.build is not None and second.build.stories == 1 and second.build.changed_files == ()


def test_items_from_the_parser_are_classified_composed_and_published(tmp_path: Path) -> None:
    parser = FakeParser({"cnil": [
        item("cnil", 1, "La CNIL inflige une amende au titre du RGPD",
             "La CNIL sanctionne un courtier en données personnelles pour manquement au RGPD."),
        item("cnil", 2, "Le club de football change d'entraîneur", "Un nouvel entraîneur pour la saison."),
    ]})
    with make_pipeline(tmp_path, FakeFetcher({"cnil": FetchStatus.NEW}), parser, "cnil") as app:
        report = app.run(DATE, now=NOW)
        assert report.new_items == 2 and report.build is not None and report.build.stories == 1
        [hit] = app.search("courtier")
    assert hit.title == "La CNIL inflige une amende au titre du RGPD" and hit.topic == "rgpd"
    text = (tmp_path / "out" / "2025-05-06" / "digest.txt").read_text(encoding="utf-8")
    # A nine-word title opens the story's text, after a short kicker of its subject.
    assert "CNIL. La CNIL inflige une amende au titre du RGPD." in " ".join(text.split()) and "entraîneur" not in text


def test_a_parser_that_raises_fails_that_feed_alone(tmp_path: Path) -> None:
    parser = FakeParser({"broken": ZeroDivisionError("a bug in the parser"),
                         "good": [item("good", 1, "RGPD : la CNIL sanctionne un courtier en données",
                                       "La CNIL inflige une amende au titre du RGPD.")]})
    fetcher = FakeFetcher({"broken": FetchStatus.NEW, "good": FetchStatus.NEW})
    with make_pipeline(tmp_path, fetcher, parser, "broken", "good") as app:
        report = app.run(DATE, now=NOW)
        health = {status.feed.id: status.health for status in app.feed_statuses()}
    broken, good = report.feeds
    assert (broken.status, broken.error) == ("failed", "could not parse: unexpected error: ZeroDivisionError: "
                                                       "a bug in the parser")
    assert (good.status, good.new_items) == ("new", 1)
    assert report.build is not None and report.build.stories == 1
    assert health["broken"] is not None and health["broken"].consecutive_failures == 1
    assert health["good"] is not None and health["good"].items_seen == 1


def test_no_readable_feed_fails_the_run_with_its_report_and_records_it(tmp_path: Path) -> None:
    with make_pipeline(tmp_path, FakeFetcher({"exemple": FetchStatus.FAILED})) as app:
        with pytest.raises(RunFailed, match=r"no feed could be read \(1 failed, 0 skipped\); no issue built") as failed:
            app.run(DATE, now=NOW)
        assert app.failed_runs(DATE) and not app.issue_built(DATE)
    report = failed.value.report
    assert report is not None and [f.error for f in report.feeds] == ["HTTP 503"]  # type: ignore[attr-defined]
    assert not (tmp_path / "out" / "2025-05-06").exists()


def test_some_feeds_can_be_fetched_alone(tmp_path: Path) -> None:
    parser = FakeParser({"a": [item("a", 1, "RGPD : la CNIL sanctionne un courtier", "La CNIL inflige une amende.")],
                         "b": [item("b", 1, "L'AI Act entre en application", "Le règlement européen sur l'IA.")]})
    fetcher = FakeFetcher({"a": FetchStatus.NEW, "b": FetchStatus.NEW})
    with make_pipeline(tmp_path, fetcher, parser, "a", "b") as app:
        reports = app.fetch_and_store(DATE, NOW, feeds=[app.config.feeds[1]])
        assert [(r.feed_id, r.new_items) for r in reports] == [("b", 1)]
        assert [status.health is not None for status in app.feed_statuses()] == [False, True]


def test_a_runs_while_waiting_is_called_once_and_before_a_fetcher_of_the_callers(tmp_path: Path) -> None:
    """The default fetcher calls it while the answers are awaited (tests/test_fetch.py); one passed
    in cannot say when its requests are out, so it is called before."""
    events: list[str] = []

    class Recording(FakeFetcher):
        def __call__(self, feeds: Sequence[FeedSource], settings: FetchSettings, states: Mapping[str, FeedState],
                     on_result: object = None) -> list[FetchResult]:
            events.append("fetch")
            return super().__call__(feeds, settings, states, on_result)

    with make_pipeline(tmp_path, Recording({"exemple": FetchStatus.UNCHANGED})) as app:
        report = app.run(DATE, now=NOW, while_waiting=lambda: events.append("while waiting"))
    assert events == ["while waiting", "fetch"]
    assert report.feeds_read == 1
