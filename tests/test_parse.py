"""Parse stage: real feed bytes → clean Items; broken input → a per-feed error, never an exception."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.models import FeedSource, FetchResult, FetchStatus
from pipeline.parse import canonical_url, parse_feed

NOW = dt.datetime(2025, 5, 6, 4, 0, tzinfo=dt.UTC)
FEED = FeedSource(id="test", name="Test", url="https://example.org/feed.xml")

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>T</title><link>https://example.org/</link><language>fr</language>
<item><title>La CNIL &amp; le RGPD&#8239;: une &lt;em&gt;amende&lt;/em&gt;</title>
<link>/articles/cnil?utm_source=rss&amp;id=3#top</link><guid>g-1</guid>
<description>&lt;p&gt;Premier&amp;nbsp;paragraphe.&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;p&gt;Second.&lt;/p&gt;</description>
<pubDate>Mon, 05 May 2025 09:30:00 +0200</pubDate></item>
<item><title>Sans date</title><link>javascript:alert(1)</link><description>Texte.</description></item>
</channel></rss>"""


def fetched(body: bytes, content_type: str | None = "application/rss+xml", url: str = FEED.url) -> FetchResult:
    return FetchResult(feed=FEED, status=FetchStatus.NEW, url=url, final_url=url, body=body,
                       content_type=content_type)


def test_items_are_cleaned_and_typed() -> None:
    result = parse_feed(fetched(RSS.encode()), NOW)
    assert result.error is None
    first, second = result.items
    assert first.title == "La CNIL & le RGPD : une amende"
    assert first.summary == "Premier paragraphe. Second."
    assert "alert" not in first.summary
    assert first.url == "https://example.org/articles/cnil?id=3"
    assert first.published == dt.datetime(2025, 5, 5, 7, 30, tzinfo=dt.UTC)
    assert first.guid == "g-1" and first.language == "fr" and first.first_seen == NOW
    assert second.published is None and second.url is None  # javascript: link dropped


def test_ids_are_stable_across_reads() -> None:
    once = parse_feed(fetched(RSS.encode()), NOW)
    again = parse_feed(fetched(RSS.encode()), NOW + dt.timedelta(days=1))
    assert [i.id for i in once.items] == [i.id for i in again.items]
    assert len({i.id for i in once.items}) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"<!DOCTYPE html><html><body><p>Bonjour</p></body></html>", "text/html; charset=utf-8",
         "not a feed: got text/html"),
        (b"", "application/xml", "not a feed: empty body"),
        (b"   \n", None, "not a feed: empty body"),
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "image/png", "not a feed"),
    ],
)
def test_not_a_feed_is_reported(body: bytes, content_type: str | None, expected: str) -> None:
    result = parse_feed(fetched(body, content_type), NOW)
    assert result.items == ()
    assert result.error is not None and result.error.startswith(expected)


def test_latin1_declared_in_header_only() -> None:
    body = ('<rss version="2.0"><channel><title>x</title><item><title>Régulation à Bruxelles</title>'
            "<description>Été</description></item></channel></rss>").encode("iso-8859-1")
    result = parse_feed(fetched(body, "application/rss+xml; charset=ISO-8859-1"), NOW)
    assert result.items[0].title == "Régulation à Bruxelles"


def test_faults_that_stop_the_strict_parser_are_repaired_and_reported() -> None:
    # Whitespace before the declaration and references to control characters (in text, in an
    # attribute): the strict parser reads the feed (no SAXParseException reported), the control
    # characters read as spaces, as the text pass makes of them; in CDATA a reference is text.
    body = RSS.replace("<title>T</title>", "<title>T&#x1F;</title>").replace(
        "<guid>g-1</guid>", "<guid>g-1</guid><category>A&#1;B</category>").replace(
        "<description>Texte.</description>", "<description><![CDATA[x&#1;y]]></description>")
    result = parse_feed(fetched(b"\r\n  \n" + body.encode()), NOW)
    assert result.warnings == ("whitespace before the XML declaration, ignored",
                               "references to control characters, which XML does not allow, read as spaces: 2")
    first, second = result.items
    assert first.title == "La CNIL & le RGPD : une amende" and first.categories == ("A B",)
    assert second.summary == "x y"
    assert parse_feed(fetched(RSS.encode()), NOW).items[0].id == first.id


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Example.org:443/a?utm_medium=x&b=1#frag", "https://example.org/a?b=1"),
        ("http://example.org", "http://example.org/"),
        ("javascript:alert(1)", None),
        (" JaVa\tScRiPt:alert(1)", None),
        ("data:text/html,<script>", None),
        ("//evil.example/x", None),
        ("/relative", None),
        ("http://[::1]:8000/49", "http://[::1]:8000/49"),
        ("https://[2001:DB8::1]/a", "https://[2001:db8::1]/a"),
        ("https://pay.example/\u202elapyap\u200b/\u2028x\u2029?q=\u202e",
         "https://pay.example/%E2%80%AElapyap%E2%80%8B/%E2%80%A8x%E2%80%A9?q=%E2%80%AE"),
        ("https://pay\u202elapyap.example/", None),
        ("https://fr.example/règlement", "https://fr.example/règlement"),
    ],
)
def test_canonical_url_keeps_only_absolute_http(url: str, expected: str | None) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/relative/11", "https://feed.example/relative/11"),
        ("article?id=2", "https://feed.example/news/article?id=2"),
        ("//evil.example/107", "https://evil.example/107"),
        ("https://other.example/a", "https://other.example/a"),
        ("javascript:alert(1)", None),
    ],
)
def test_relative_links_resolve_against_the_feed_url(url: str, expected: str | None) -> None:
    assert canonical_url(url, "https://feed.example/news/rss.xml") == expected


def test_shared_corpus_french_feed(shared: Path) -> None:
    path = shared / "feeds" / "real" / "picofeed__next_inpact_full.xml"
    result = parse_feed(fetched(path.read_bytes(), None, url=path.as_uri()), NOW)
    assert len(result.items) == 45
    # its reference to a control character is repaired and reported, not fatal
    assert result.warnings == ("references to control characters, which XML does not allow, read as spaces: 1",)
    assert all(i.url and i.url.startswith("http") for i in result.items)
