"""Parse stage: feed bytes (from fetch) → cleaned, typed Items.

feedparser does the format work (RSS 0.9x/1.0/2.0, Atom, encodings); the HTML it leaves in
titles and descriptions goes through `pipeline.text.clean_text`, once per distinct field value of
a feed (a description repeated as content, a category on every entry is cleaned once). Nothing here
touches the DB.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from pipeline.models import FeedSource, FetchResult, Item, ParseResult
from pipeline.parse.feedxml import parse_bytes
from pipeline.text import clean_text, cut, escape_invisible

# Limits keep one hostile or broken feed from flooding the store or the digest.
MAX_ITEMS_PER_FEED = 500
MAX_TITLE_CHARS = 300
MAX_SUMMARY_CHARS = 5_000
MAX_CONTENT_CHARS = 50_000

# Query parameters that only track readers; dropping them lets the same article from two
# feeds share one canonical URL.
_TRACKING_PARAMS = re.compile(r"^(utm_[a-z]+|xtor|at_[a-z]+|fbclid|gclid|mc_[a-z]+|ns_[a-z]+|cmpid|ref|yclid)$")


def canonical_url(url: str | None, base: str | None = None) -> str | None:
    """Absolute http(s) URL without fragment or tracking parameters, or None if unsafe or unusable.

    A relative link ("/a", "a", "?q") is resolved against ``base`` (the feed's own URL), and a
    protocol-relative one ("//host/a") takes its scheme; without a base both are dropped.
    Invisible characters (bidi overrides, zero-width, line separators…) are percent-encoded
    in the path and query, so none reaches a reader raw; a host holding one is dropped.
    """
    if not url:
        return None
    url = url.strip()
    if not url.isprintable() or " " in url:  # else no character is <= " ": nothing to drop
        url = "".join(ch for ch in url if ch > " ")  # "java\tscript:" tricks lose their whitespace
    url = escape_invisible(url)
    try:
        if base:
            url = urljoin(base, url)
        parts = urlsplit(url)
    except ValueError:  # "//[" and other hosts that are no URL's (found by tests/test_fuzz.py)
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if "%" in host:  # an invisible character in the host, now percent-encoded: no real host has one
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not _TRACKING_PARAMS.match(k.lower())]) if parts.query else ""
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))


def _entry_datetime(entry: Any) -> dt.datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get: FeedParserDict.get would map updated_parsed to published_parsed with a warning
        value = dict.get(entry, key)
        if value:
            try:
                # feedparser normalises to UTC struct_time
                return dt.datetime.fromtimestamp(calendar.timegm(value), tz=dt.UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def _entry_content(entry: Any) -> str:
    contents = entry.get("content") or []
    best = max((c.get("value", "") for c in contents), key=len, default="")
    return best


def item_id(feed_id: str, guid: str | None, url: str | None, title: str, summary: str) -> str:
    """Stable id: the same entry read again, from the same feed, keeps its id."""
    key = guid or url or f"{title}\n{summary}"
    return hashlib.sha256(f"{feed_id}\0{key}".encode()).hexdigest()[:20]


_ENTITY_DECL_RE = re.compile(rb"<!ENTITY\s+%?\s*[\w.:-]+\s+(SYSTEM|PUBLIC|[\"'])", re.IGNORECASE)
_ENTITY_REF_IN_VALUE_RE = re.compile(rb"<!ENTITY\s+%?\s*[\w.:-]+\s+[\"'][^\"']*[&%][\w.:-]+;", re.IGNORECASE)
# The internal subset is found in two searches, not one ".*?" regex that rescans the rest of the
# body from every "<!DOCTYPE" (quadratic: 20,000 "<!DOCTYPE a [" took 29 s). The bounded name and
# external id keep the first search linear too.
_DOCTYPE_SUBSET_RE = re.compile(rb"<!DOCTYPE\s+[^\[>]{0,1024}\[", re.IGNORECASE)
_SUBSET_END_RE = re.compile(rb"\]\s*>")


# A character reference to no Unicode character (a surrogate, or past U+10FFFF) makes
# feedparser's loose parser raise (chr() or UTF-8 encoding of the value): it becomes U+FFFD.
_CHAR_REF_RE = re.compile(rb"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")


def _valid_char_refs(body: bytes) -> bytes:
    def replace(match: re.Match[bytes]) -> bytes:
        digits = match.group(1) or match.group(2)
        if len(digits) <= 8:
            value = int(digits, 16 if match.group(1) else 10)
            if value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF:
                return match.group(0)
        return b"&#xFFFD;"

    return _CHAR_REF_RE.sub(replace, body)


# Two faults of real feeds make feedparser's strict parser give up, and the feed is then read again
# by its loose parser, which costs twice the strict parse (next-inpact: 0.22 s against 0.10 s):
# whitespace before the XML declaration, and a reference to a control character (XML 1.0 allows
# none but tab, line feed and carriage return). Both are repaired before parsing; the items are
# the same (tests/test_parse.py), the feed's health still names the fault.
_CONTROL_REF_RE = re.compile(rb"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F])|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));")


def _control_refs_to_spaces(body: bytes) -> tuple[bytes, int]:
    """Each reference to a control character outside CDATA sections (where it is text) becomes
    one to a space: what the text pass makes of a control character anyway."""
    if not _CONTROL_REF_RE.search(body):
        return body, 0
    parts: list[bytes] = []
    count = pos = 0
    while pos < len(body):
        start = body.find(b"<![CDATA[", pos)
        start = len(body) if start < 0 else start
        fixed, found = _CONTROL_REF_RE.subn(b"&#x20;", body[pos:start])
        parts.append(fixed)
        count += found
        end = body.find(b"]]>", start)
        end = len(body) if end < 0 else end + 3
        parts.append(body[start:end])
        pos = end
    return b"".join(parts), count


def _repair_xml(body: bytes) -> tuple[bytes, tuple[str, ...]]:
    """The body with the faults above repaired and invalid character references replaced, and
    what was repaired."""
    repairs: list[str] = []
    stripped = body.lstrip(b" \t\r\n")
    if stripped is not body and stripped.startswith(b"<?xml"):
        repairs.append("whitespace before the XML declaration, ignored")
        body = stripped
    body, controls = _control_refs_to_spaces(body)
    if controls:
        repairs.append(f"references to control characters, which XML does not allow, read as spaces: {controls}")
    return _valid_char_refs(body), tuple(repairs)


@dataclass(frozen=True)
class XmlScreening:
    body: bytes
    error: str | None = None
    warning: str | None = None


def screen_xml(body: bytes) -> XmlScreening:
    """Defuse DTD tricks before any XML parser sees the body. Entities defined from other
    entities (the "billion laughs" expansion) are refused; external entity declarations
    (XXE) are removed with the rest of the internal DTD subset, and the feed is still read."""
    head = body[:65536]
    if b"<!ENTITY" not in head.upper():
        return XmlScreening(body)
    if _ENTITY_REF_IN_VALUE_RE.search(head):
        return XmlScreening(body, error="refused: the feed defines XML entities from other entities "
                                        "(entity expansion attack)")
    if any(m.group(1).upper() in (b"SYSTEM", b"PUBLIC") for m in _ENTITY_DECL_RE.finditer(head)):
        opening = _DOCTYPE_SUBSET_RE.search(body)
        closing = _SUBSET_END_RE.search(body, opening.end()) if opening else None
        if opening is None or closing is None:
            return XmlScreening(body, error="refused: the feed declares external XML entities outside a "
                                            "well-formed DOCTYPE internal subset")
        cleaned = body[:opening.end() - 1] + b">" + body[closing.end():]
        return XmlScreening(cleaned, warning="removed external XML entity declarations (possible XXE attempt)")
    return XmlScreening(body)


def _not_a_feed_reason(result: FetchResult, parsed: Any) -> str | None:
    body = result.body or b""
    if not body.strip():
        return "not a feed: empty body"
    if parsed.get("version") or parsed.entries:
        return None
    if parsed.feed and not parsed.get("bozo"):
        return None  # a well-formed feed document (e.g. CDF) that simply has no entries
    media_type = (result.content_type or "").split(";")[0].strip().lower()
    head = body[:512].lstrip().lower()
    if media_type in ("text/html", "application/xhtml+xml") or head.startswith((b"<!doctype html", b"<html")):
        return "not a feed: got text/html"
    if parsed.get("bozo") and parsed.get("bozo_exception") is not None:
        reason = str(parsed.bozo_exception).splitlines()[0][:120]
        return f"not a feed: {media_type or 'unknown type'} that is not RSS or Atom ({reason})"
    return f"not a feed: {media_type or 'unknown type'} that is not RSS or Atom"


def parse_feed(result: FetchResult, seen_at: dt.datetime) -> ParseResult:
    """Turn one fetched body into Items. Problems become ParseResult.error, never exceptions."""
    feed: FeedSource = result.feed
    if result.body is None:
        return ParseResult(feed=feed, items=(), error=result.error or "no body to parse")
    # No content-location: feedparser would resolve guids against it, and an id must not change
    # when a feed moves. Relative links are resolved below with the final URL instead.
    headers = {"content-type": result.content_type} if result.content_type else {}
    screened = screen_xml(result.body)
    if screened.error:
        return ParseResult(feed=feed, items=(), error=screened.error)
    body, repairs = _repair_xml(screened.body)
    try:
        parsed = parse_bytes(body, headers)
    except Exception as failure:  # feedparser's loose parser raised on hostile bytes: that feed fails alone
        return ParseResult(feed=feed, items=(), error=f"not a feed: the feed parser failed ({type(failure).__name__})")
    error = _not_a_feed_reason(result, parsed)
    if error:
        return ParseResult(feed=feed, items=(), error=error)

    warnings: list[str] = [screened.warning] if screened.warning else []
    warnings += repairs
    if parsed.get("bozo") and parsed.get("bozo_exception") is not None:
        exc = parsed.bozo_exception
        warnings.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    # Relative links resolve against the feed's own http(s) address (after redirects); a feed read
    # from a file has none, so its <link> (the site) stands in.
    base = next((u for u in (result.final_url, result.url) if u and u.lower().startswith(("http:", "https:"))),
                None) or parsed.feed.get("link")
    feed_language = (parsed.feed.get("language") or feed.language or "fr").split("-")[0].lower()

    entries = parsed.entries
    if len(entries) > MAX_ITEMS_PER_FEED:
        warnings.append(f"{len(entries)} entries, kept the first {MAX_ITEMS_PER_FEED}")
        entries = entries[:MAX_ITEMS_PER_FEED]

    cleaned: dict[str, str] = {}

    def clean(value: str | None, limit: int) -> str:
        """clean_text(value, limit), the text pass run once per distinct value."""
        if not value:
            return ""
        text = cleaned.get(value)
        if text is None:
            text = cleaned[value] = clean_text(value)
        return cut(text, limit)

    items: list[Item] = []
    seen_ids: set[str] = set()
    untitled = 0
    for entry in entries:
        title = clean(entry.get("title"), MAX_TITLE_CHARS)
        summary = clean(entry.get("summary") or entry.get("description"), MAX_SUMMARY_CHARS)
        content = clean(_entry_content(entry), MAX_CONTENT_CHARS)
        if content == summary:
            content = ""
        if not title and not summary:
            untitled += 1
            continue
        if not title:
            title = cut(summary, 90)
        url = canonical_url(entry.get("link"), base)
        guid = (entry.get("id") or "").strip() or None
        identifier = item_id(feed.id, guid, url, title, summary)
        if identifier in seen_ids:
            continue  # the same entry twice in one document
        seen_ids.add(identifier)
        language = (entry.get("language") or feed_language).split("-")[0].lower()
        author = clean(entry.get("author"), 200) or None
        categories = tuple(
            dict.fromkeys(c for c in (clean(t.get("term"), 80) for t in entry.get("tags", [])) if c)
        )
        items.append(Item(
            id=identifier, feed_id=feed.id, source=feed.name, title=title, url=url, summary=summary,
            content=content, guid=guid, language=language, published=_entry_datetime(entry),
            author=author, categories=categories, first_seen=seen_at,
        ))
    if untitled:
        warnings.append(f"skipped {untitled} entries with neither title nor description")
    ttl = str(parsed.feed.get("ttl", "")).strip()
    return ParseResult(feed=feed, items=tuple(items), warnings=tuple(warnings),
                       ttl_minutes=int(ttl) if ttl.isascii() and ttl.isdigit() and 0 < int(ttl) <= 525_600 else None)
