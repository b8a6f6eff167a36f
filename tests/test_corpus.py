"""Robustness corpus: every file of ../shared/feeds goes through parse → classify → compose → render.

Zero crashes; each file yields items or a clear per-feed error. Skipped when ../shared is absent.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.classify import Classifier
from pipeline.compose import compose_issue
from pipeline.config.topics import load_topics
from pipeline.models import FeedSource, FetchResult, FetchStatus, NewsletterSettings, StoredItem
from pipeline.parse import parse_feed
from pipeline.render import IssueLinks, Renderer

REPO = Path(__file__).resolve().parents[1]
FEEDS = REPO.parent / "shared" / "feeds"
NOW = dt.datetime(2025, 5, 6, 4, 0, tzinfo=dt.UTC)


class _Unsafe(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed", "form", "svg"):
            self.problems.append(tag)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(name)
            # "data:," is the template's own empty favicon, never feed data
            if name in ("href", "src") and value and value != "data:," and ":" in value.split("/")[0] and \
                    not value.lower().startswith(("http:", "https:")):
                self.problems.append(value)


def test_every_corpus_file_parses_classifies_and_renders() -> None:
    if not FEEDS.is_dir():
        pytest.skip("../shared/feeds is not present on this machine")
    files = sorted(p for p in FEEDS.rglob("*") if p.is_file() and p.suffix in (".xml", ".rdf", ".atom", ".rss"))
    assert len(files) >= 300
    topics = load_topics(REPO / "topics.yaml")
    classifier = Classifier.compile(topics)
    renderer = Renderer()
    links = IssueLinks(web_url="https://example.org/2025-05-06/", archive_url="https://example.org/")
    outcome: Counter[str] = Counter()
    items_total = 0
    for path in files:
        feed = FeedSource(id="corpus", name=path.stem, url=path.as_uri())
        result = parse_feed(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=path.read_bytes()), NOW)
        if result.error:
            assert result.error.startswith(("not a feed", "refused")), (path, result.error)
            assert "\n" not in result.error
            outcome["error"] += 1
            continue
        outcome["items" if result.items else "empty"] += 1
        if path.parent.name == "real":
            # a real feed yields items, or says why not (e.g. entries with no text at all)
            assert result.items or result.warnings, f"{path.name}: a real published feed gave no item"
        items_total += len(result.items)
        entries = [StoredItem(item, classifier.classify(item)) for item in result.items]
        issue = compose_issue(NOW.date(), entries, topics.info(), NewsletterSettings(), {})
        rendered = renderer.render_issue(issue, topics.info(), links)
        checker = _Unsafe()
        checker.feed(rendered.html)
        assert not checker.problems, (path, checker.problems)
    print(f"\ncorpus: {len(files)} files, {outcome['items']} with items ({items_total} items), "
          f"{outcome['empty']} valid but empty, {outcome['error']} reported as not a feed")
    assert outcome["items"] >= 150
