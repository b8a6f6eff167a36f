"""The topics the rules give the real feed items of ../shared/feeds/real (issue 15: at most 1 % false tags).

The 57 real feeds hold 1,043 items, almost all outside the four topics: what the rules tag there is
mostly what they would wrongly put in the digest. The items below were read by hand; a tag on any
other item counts as false. Skipped when ../shared is absent.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.classify import Classifier
from pipeline.config.topics import load_topics
from pipeline.models import FeedSource, FetchResult, FetchStatus
from pipeline.parse import parse_feed

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "feeds" / "real"
NOW = dt.datetime(2025, 5, 6, 4, 0, tzinfo=dt.UTC)

# (title, topic) pairs that are right: a data-protection authority's decision, the rights to
# erasure and dereferencing, the CNIL's sweep of mobile apps, the European Parliament asking EU
# institutions to investigate Facebook's data-protection practice.
RIGHT = {
    ("Datenskandal: Britische Datenschutzbehörde verurteilt Facebook", "rgpd"),
    ("EU-Parlament verabschiedet Resolution zur Datenschutzuntersuchung bei Facebook", "rgpd"),
    ("Droit à l'effacement sur Google : l'arroseur arrosé et les critiques de RSF", "rgpd"),
    ("Droit au déréférencement dans Google : le gouvernement français applaudit", "rgpd"),
    ("Internet Sweep Day : la CNIL se penche sur le cas des applications mobiles", "rgpd"),
    ("Face à Google, la justice européenne reconnaît un droit à l’effacement", "rgpd"),
}
# Tags the rules once gave and must not give again: a newspaper quoted as the source of a story
# about a platform is not a press deal.
WRONG_BEFORE = {
    ("Google Will Stop Reading Your Emails for Gmail Ads", "media_partnership"),
    ("[MàJ] Yahoo! pourrait croquer 75 % de Dailymotion", "media_partnership"),
}


@pytest.fixture(scope="module")
def tags() -> tuple[int, set[tuple[str, str]]]:
    if not REAL.is_dir():
        pytest.skip("../shared/feeds/real is not present on this machine")
    classifier = Classifier.compile(load_topics(REPO / "topics.yaml"))
    count, found = 0, set()
    for path in sorted(REAL.iterdir()):
        feed = FeedSource(id="real", name=path.stem, url=path.as_uri())
        result = parse_feed(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=path.read_bytes()), NOW)
        for item in result.items:
            count += 1
            found.update((item.title, topic) for topic in classifier.classify(item).topics)
    return count, found


def test_false_tags_on_the_real_feeds_stay_under_one_percent(tags: tuple[int, set[tuple[str, str]]]) -> None:
    count, found = tags
    assert count >= 1000
    false = found - RIGHT
    assert len(false) <= count // 100, sorted(false)
    assert not false & WRONG_BEFORE, sorted(false & WRONG_BEFORE)


def test_the_right_tags_on_the_real_feeds_stay(tags: tuple[int, set[tuple[str, str]]]) -> None:
    _, found = tags
    assert found >= RIGHT, sorted(RIGHT - found)
