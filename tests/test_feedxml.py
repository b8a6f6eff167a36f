"""pipeline.parse.feedxml: feedparser on bytes in memory gives what `feedparser.parse` gives.

Compared on every feed file of ../shared/feeds (when present) and of examples/feeds, and on bodies
made to reach each changed path: text longer than expat's buffer, the cp1252 fix-up, the loose
fallback, encodings, entities.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import feedparser
import pytest

from pipeline.models import FeedSource, FetchResult, FetchStatus
from pipeline.parse import parse_feed
from pipeline.parse.feedxml import parse_bytes

REPO = Path(__file__).resolve().parents[1]
SHARED_FEEDS = REPO.parent / "shared" / "feeds"
HEADERS: tuple[dict[str, str], ...] = ({}, {"content-type": "application/xml"},
                                       {"content-type": "text/xml; charset=iso-8859-1"})


def reference(body: bytes, headers: dict[str, str]) -> Any:
    # A stream, so that feedparser never takes the bytes for a file name.
    return feedparser.parse(io.BytesIO(body), response_headers=headers, sanitize_html=False,
                            resolve_relative_uris=False)


def comparable(parsed: Any) -> dict[str, Any]:
    """Everything parse_bytes returns; the exception (which has no equality) by type and text."""
    found = {key: value for key, value in parsed.items() if key != "bozo_exception"}
    exc = parsed.get("bozo_exception")
    found["bozo_exception"] = None if exc is None else (type(exc).__name__, str(exc))
    return found


def assert_same(body: bytes, headers: dict[str, str] | None = None) -> Any:
    for each in (headers,) if headers is not None else HEADERS:
        mine = parse_bytes(body, each)
        assert comparable(mine) == comparable(reference(body, each)), each
    return mine


def feed_files() -> list[Path]:
    files = sorted((REPO / "examples" / "feeds").glob("*.xml"))
    if SHARED_FEEDS.is_dir():
        files += sorted(p for p in SHARED_FEEDS.rglob("*") if p.is_file())
    return files


def test_same_result_as_feedparser_on_every_feed_file() -> None:
    files = feed_files()
    for number, path in enumerate(files):
        body = path.read_bytes()
        try:
            assert_same(body, HEADERS[number % len(HEADERS)])  # each way of declaring a type, on a third
        except AssertionError as failure:
            raise AssertionError(f"{path}: {failure}") from None
    if not SHARED_FEEDS.is_dir():
        pytest.skip("../shared/feeds is not present: compared on examples/feeds only")


def rss(items: str, head: str = '<?xml version="1.0" encoding="utf-8"?>') -> bytes:
    return (f'{head}\n<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
            f"<title>T</title><link>https://example.org/</link>{items}</channel></rss>").encode()


def test_text_longer_than_the_buffer_is_whole() -> None:
    long = "\n".join(f"ligne {n} &amp; l’élan &lt;b&gt;gras&lt;/b&gt; &#233;" for n in range(20_000))
    parsed = assert_same(rss(f"<item><title>Long</title><description>{long}</description>"
                             f"<content:encoded><![CDATA[<p>{long}</p>]]></content:encoded></item>"))
    assert len(parsed.entries[0].summary) > 1 << 17
    assert not parsed.bozo


def test_cp1252_fixup_still_applies_where_it_changes_the_text() -> None:
    # U+0096 by reference, and a windows-1252 body declared as ISO-8859-1 (its dash, 0x96, is a C1
    # control in Latin-1): both read as an en dash, as feedparser reads them.
    by_reference = assert_same(rss("<item><title>a &#150; b &#x93;c&#x94;</title><description>é</description></item>"))
    assert by_reference.entries[0].title == "a – b “c”"
    latin = rss("<item><title>mi-temps \x96 fin</title><description>caf\xe9</description></item>",
                head='<?xml version="1.0" encoding="iso-8859-1"?>').decode().encode("latin-1")
    declared = assert_same(latin)
    assert declared.entries[0].title == "mi-temps – fin" and declared.entries[0].summary == "café"


def test_loose_fallback_and_odd_documents() -> None:
    for body in (
        rss("<item><title>a & b</title><description>non fermé <b></description></item>"),  # not well-formed
        rss("<item><title>x</title></item>", head="  \n<?xml version='1.0'?>"),  # declaration not first
        b"<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY auteur 'Dupont'>]><rss version='2.0'><channel>"
        b"<item><title>&auteur; &nbsp; &eacute;</title></item></channel></rss>",
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><title type="xhtml"><div xmlns="http://www.w3.org/1999/'
        b'xhtml">A <b>B</b></div></title><content type="html">&lt;p&gt;C&lt;/p&gt;</content></entry></feed>',
        "<rss version='2.0'><channel><item><title>UTF-16</title></item></channel></rss>".encode("utf-16"),
        b"",
        b"not xml at all",
    ):
        assert_same(body)


def test_bytes_naming_a_file_are_read_as_bytes(tmp_path: Path) -> None:
    # feedparser.parse(bytes) reads a file when the bytes name one; a feed's body must never do that.
    secret = tmp_path / "secret.xml"
    secret.write_bytes(rss("<item><title>Secret</title><description>du disque local</description></item>"))
    assert feedparser.parse(str(secret).encode()).entries  # what a body could make it read
    assert not parse_bytes(str(secret).encode(), {}).entries
    feed = FeedSource(id="f", name="F", url="https://example.org/feed.xml")
    result = parse_feed(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=str(secret).encode()),
                        dt.datetime(2025, 5, 6, 4, 0, tzinfo=dt.UTC))
    assert not result.items and result.error is not None and result.error.startswith("not a feed")

