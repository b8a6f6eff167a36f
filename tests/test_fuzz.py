"""Property-based fuzzing of every untrusted entry point (issue 16, the standing defence).

One target per way that text from others comes in: a feed body through parse (generated feeds,
and mutations of the bundled demo feeds and of the real feeds of ../shared/feeds), the items of
such feeds through compose and render, a sources.yaml or topics.yaml through the config loaders,
item HTML through the text pass (`pipeline.text.clean_text`), the command line's dates and
numbers through `pipeline.cli.main`, a search query through the store's search (both backends),
and readers' addresses and names through the recipients file, `subscribers add` and the message
each reader is sent. The properties:

- never an exception other than the project's own (pipeline/errors.py): bad input is a
  reported problem, not a crash;
- never unsafe output: no script, event attribute or non-http(s) link from a fuzzed item in a
  rendered page, no `javascript:` in the text version; no header of a message that a reader's
  name or address made (Bcc: …), a To header with that one address only.

`make test` runs a fixed, derandomized budget per target (the same examples every time, so CI
cannot flake; the whole file stays under ~30 s). `TECH_MATIN_FUZZ_EXAMPLES=5000 make test`
(or the same variable with pytest tests/test_fuzz.py) explores that many fresh random examples
per target and keeps failures in Hypothesis's database (.hypothesis/) to replay them first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pipeline.compose import compose_issue
from pipeline.config import load_config
from pipeline.config.topics import load_topics
from pipeline.errors import PipelineError
from pipeline.models import (
    Classification,
    FeedSource,
    FetchResult,
    FetchStatus,
    NewsletterSettings,
    StoredItem,
    TopicInfo,
)
from pipeline.parse import parse_feed
from pipeline.render import IssueLinks, Renderer
from pipeline.text import clean_text
from tests.helpers import call_cli
from tests.test_hostile import VECTORS, audit_html

REPO = Path(__file__).resolve().parents[1]
DEMO_FEEDS = sorted((REPO / "examples" / "feeds").glob("*.xml"))
SEEN_AT = dt.datetime(2025, 5, 6, 2, 0, tzinfo=dt.UTC)
ISSUE_DATE = dt.date(2025, 5, 6)

_RANDOM_EXAMPLES = int(os.environ.get("TECH_MATIN_FUZZ_EXAMPLES", "0") or 0)
F = TypeVar("F", bound=Callable[..., Any])


def budget(examples: int) -> Callable[[F], F]:
    """`examples` fixed examples in `make test`; TECH_MATIN_FUZZ_EXAMPLES random ones when set."""
    common: dict[str, Any] = {
        "deadline": None,  # the machine is shared: time per example is no property of ours
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                  HealthCheck.function_scoped_fixture],
    }
    if _RANDOM_EXAMPLES:
        return settings(max_examples=_RANDOM_EXAMPLES, **common)
    return settings(max_examples=examples, derandomize=True, database=None, **common)


# ---------------------------------------------------------------- hostile material

# Fragments that broke (or were meant to break) feed readers: markup, entities, encodings,
# characters that XML or UTF-8 forbid, schemes, DTD tricks.
FRAGMENTS = [
    *(vector for title, description, link, _ in VECTORS for vector in (title, description, link)),
    "&#xD800;", "&#55296;", "&#x110000;", "&#0;", "&#x1F600;", "&#9999999999;", "&amp;#x3C;script&amp;#x3E;",
    "<![CDATA[<script>alert(1)</script>]]>", "]]>", "<!--", "-->", "<?xml version='1.0'?>",
    '<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "&x;", "&unknown;", "\x00", "\x1b[31m",
    "\ufeff", "\u202e", "\u2028", "\ud7ff", "\uffff", "é", "ø", "𝕏", "\r\n", " ", "\t",
    "<p>", "</p>", "<br/>", "<div>" * 20, "<a href='", "'>", '"', "'", "<", ">", "&",
    "2025-05-06T06:00:00Z", "Mon, 05 May 2025 10:00:00 +0200", "Tue, 31 Dec 9999 23:59:59 GMT",
    "0000-00-00", "le 27 mai 2025", "avant le 31 février", "RGPD", "CNIL", "Meta AI", "AI Act",
    "http://[::1]:8000/x", "https://ok.example/a?utm_source=x#frag", "//evil.example/x", "javascript:alert(1)",
    "JaVaScRiPt&#58;alert(1)", "data:text/html,<script>alert(1)</script>", "mailto:x@example.org",
]
fragment = st.sampled_from(FRAGMENTS)
hostile_text = st.lists(st.one_of(fragment, st.text(max_size=20)), max_size=6).map("".join)


def _field(value: str, mode: int) -> str:
    """Text into an element: escaped, raw (may break the XML) or in CDATA."""
    if mode == 0:
        return escape(value)
    if mode == 1:
        return value
    return f"<![CDATA[{value}]]>"


@st.composite
def generated_feed(draw: st.DrawFn) -> bytes:
    entries = []
    atom = draw(st.booleans())
    for _ in range(draw(st.integers(0, 4))):
        title, summary, link, guid, date = (draw(hostile_text) for _ in range(5))
        modes = [draw(st.integers(0, 2)) for _ in range(3)]
        if atom:
            entries.append(f"<entry><title>{_field(title, modes[0])}</title><link href=\"{escape(link)}\"/>"
                           f"<id>{escape(guid)}</id><updated>{escape(date)}</updated>"
                           f"<summary type=\"html\">{_field(summary, modes[1])}</summary>"
                           f"<content type=\"html\">{_field(summary, modes[2])}</content></entry>")
        else:
            entries.append(f"<item><title>{_field(title, modes[0])}</title><link>{_field(link, modes[1])}</link>"
                           f"<guid>{escape(guid)}</guid><pubDate>{escape(date)}</pubDate>"
                           f"<description>{_field(summary, modes[2])}</description></item>")
    head = draw(st.sampled_from(['<?xml version="1.0" encoding="utf-8"?>',
                                 '<?xml version="1.0" encoding="iso-8859-1"?>', "", "\ufeff", draw(hostile_text)]))
    if atom:
        document = (f'{head}<feed xmlns="http://www.w3.org/2005/Atom"><title>{escape(draw(hostile_text))}</title>'
                    + "".join(entries) + "</feed>")
    else:
        document = (f'{head}<rss version="2.0"><channel><title>{escape(draw(hostile_text))}</title>'
                    f"<link>{escape(draw(hostile_text))}</link>" + "".join(entries) + "</channel></rss>")
    return document.encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), errors="replace")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real feed with a few edits: cuts, hostile insertions, byte flips, repeats, truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.integers(0, 4))
        if edit == 0:
            del data[at:at + draw(st.integers(1, 200))]
        elif edit == 1:
            data[at:at] = draw(st.one_of(fragment, hostile_text)).encode("utf-8", "surrogatepass")
        elif edit == 2:
            data[at] = draw(st.integers(0, 255))
        elif edit == 3:
            data[at:at] = data[at:at + draw(st.integers(1, 300))] * draw(st.integers(1, 5))
        else:
            del data[at:]
    return bytes(data)


def _fetched(body: bytes, content_type: str | None = "application/rss+xml; charset=utf-8") -> FetchResult:
    feed = FeedSource(id="fuzz", name="Fuzz <b>Feed</b>", url="https://feed.example/rss")
    return FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, final_url=feed.url, body=body,
                       content_type=content_type)


def _parse_without_crash(body: bytes, content_type: str | None = "application/rss+xml; charset=utf-8") -> Any:
    result = parse_feed(_fetched(body, content_type), SEEN_AT)  # any exception fails the property
    for item in result.items:
        for text in (item.title, item.summary, item.content, item.url or "", item.guid or ""):
            text.encode("utf-8")  # storable: no lone surrogate reaches the store
        assert item.url is None or re.match(r"https?://", item.url), item.url
    return result


# ---------------------------------------------------------------- target: a feed body through parse


@budget(120)
@given(body=generated_feed(), content_type=st.sampled_from(
    [None, "application/rss+xml; charset=utf-8", "text/html", "application/xml; charset=iso-8859-1",
     "text/xml; charset=bogus"]))
@example(body=b'<rss version="2.0"><channel><item><title>a &#xD800; b</title></item></channel></rss>',
         content_type=None)
@example(body=b'<rss version="2.0"><channel><link>https://a.example/</link><item><title>t</title><link>//[</link>'
              b"</item></channel></rss>", content_type=None)  # urljoin raised ValueError: Invalid IPv6 URL
def test_fuzz_generated_feeds_through_parse(body: bytes, content_type: str | None) -> None:
    _parse_without_crash(body, content_type)


@budget(120)
@given(body=mutated([path.read_bytes() for path in DEMO_FEEDS]))
def test_fuzz_mutated_demo_feeds_through_parse(body: bytes) -> None:
    _parse_without_crash(body)


def test_fuzz_mutated_real_feeds_through_parse(shared: Path) -> None:
    files = sorted((shared / "feeds").rglob("*.xml"))
    if not files:
        pytest.skip("../shared/feeds holds no feed file")
    # Every 7th file as a seed: a spread of the 352 real and test feeds, read once.
    seeds = [path.read_bytes()[:300_000] for path in files[::7]]

    @budget(60)
    @given(body=mutated(seeds))
    def check(body: bytes) -> None:
        _parse_without_crash(body)

    check()


@pytest.mark.parametrize("reference", ["&#xD800;", "&#55296;", "&#xDFFF;", "&#x110000;", "&#99999999999;",
                                       "&#x" + "f" * 40 + ";"])
def test_a_reference_to_no_character_costs_one_character_not_the_feed(reference: str) -> None:
    # Found by the fuzzer: feedparser's loose parser raised UnicodeEncodeError or ValueError.
    body = (f'<rss version="2.0"><channel><title>x</title><item><title>Avant {reference} après</title>'
            "<link>https://ok.example/a</link></item><item><title>Seconde</title></item></channel></rss>").encode()
    result = _parse_without_crash(body, None)
    assert result.error is None
    assert [item.title for item in result.items] == ["Avant \ufffd après", "Seconde"]


# ---------------------------------------------------------------- target: item HTML through the text pass

TAGS = ["<p>", "</p>", "<b>", "</b>", "<div>", "</div>", "<br>", "<a href='https://ok.example/'>", "</a>",
        "<script>", "</script>", "<style>", "</style>", "<textarea>", "<!--", "-->", "<![CDATA[", "]]>", "<title>",
        "<svg>", "<math>", "<table><tr><td>", "</td></tr></table>", "<img src=x onerror=alert(1)>", "&lt;b&gt;",
        "&amp;eacute;", "&nbsp;", "&#8217;", "&#x202e;", "Lire la suite", "[…]", "The post", "appeared first on"]
item_html = st.lists(st.one_of(fragment, st.sampled_from(TAGS), st.text(max_size=30)), max_size=25).map("".join)


@budget(150)
@given(markup=item_html, limit=st.one_of(st.none(), st.integers(1, 400)))
def test_fuzz_item_html_through_the_text_pass(markup: str, limit: int | None) -> None:
    text = clean_text(markup, limit)  # any exception fails the property
    assert text == text.strip() and "  " not in text, text
    # One line, nothing invisible: no control, format (bidi, zero-width) or line-separator character.
    assert not [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")], text
    assert limit is None or len(text) <= limit + 1  # the cut adds "…"


@budget(80)
@given(before=st.text(st.characters(blacklist_characters="<&", blacklist_categories=("Lu",)), max_size=40),
       after=st.text(st.characters(blacklist_characters="<&", blacklist_categories=("Lu",)), max_size=40),
       element=st.sampled_from(["script", "style", "iframe", "object", "svg", "noscript", "template", "textarea"]),
       secret=st.from_regex(r"\A[A-Z]{12}\Z"))
def test_fuzz_dropped_elements_leave_none_of_their_text(before: str, after: str, element: str, secret: str) -> None:
    text = clean_text(f"{before}<{element} class='x'>{secret} <b>{secret}</b></{element}>{after}")
    assert secret not in text


# ---------------------------------------------------------------- target: fuzzed items through compose and render

TOPIC = TopicInfo(id="rgpd", heading="DONNÉES PERSONNELLES", theme="RGPD")
NEWSLETTER = NewsletterSettings()
LINKS = IssueLinks(web_url="https://techmatin.example.org/2025-05-06/", archive_url="https://techmatin.example.org/")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@budget(40)
@given(bodies=st.lists(st.one_of(generated_feed(), mutated([DEMO_FEEDS[0].read_bytes()])), min_size=1, max_size=3))
def test_fuzz_items_never_reach_a_page_unsafe(renderer: Renderer, bodies: list[bytes]) -> None:
    entries = []
    for body in bodies:
        for item in _parse_without_crash(body).items:
            # Every item counts as on-topic, so that all fuzzed text reaches the page.
            entries.append(StoredItem(item=item, classification=Classification(
                item_id=item.id, topics=("rgpd",), scores={"rgpd": 5.0})))
    issue = compose_issue(ISSUE_DATE, entries, [TOPIC], NEWSLETTER, {"fuzz": 1.0})
    rendered = renderer.render_issue(issue, [TOPIC], LINKS)
    assert audit_html(rendered.html) == []  # no script, style, event attribute, or link but http(s)
    assert "<script" not in rendered.html.lower()
    # Plain text may quote "javascript:alert(1)" as words (an article about XSS); its links may not.
    for url in re.findall(r"^\[\d+\] (.*)$", rendered.text, re.M):
        assert re.fullmatch(r"https?://\S+", url), url


# ---------------------------------------------------------------- target: sources.yaml and topics.yaml

YAML_SNIPPETS = [
    "&a [*a]", "*undefined", "&x x", "!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=",
    "!!timestamp 2025-05-06", "!!set {a, b}", "!!omap [a: 1]", "<<: *a", "? [complex, key]", ".nan", ".inf",
    "-.inf", "1e400", "99999999999999999999999", "0x1F", "0o17", "~", "null", "yes", "no", "on", "2025-13-45",
    "06:00", "25:99", "'", '"', "{", "[", "- ", ": ", "\t", "\x00", "\ufeff", "%YAML 1.1", "---", "...",
    "[" * 100 + "]" * 100, "{a: " * 80 + "x" + "}" * 80, "é", "\u2028", "https://x.example/{token}",
]


@st.composite
def mutated_yaml(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 5))):
        if not lines:
            lines = [""]
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.integers(0, 3))
        line = lines[at]
        if edit == 0:
            del lines[at]
        elif edit == 1:  # replace the value of a `key: value` line
            key = line.split(":", 1)[0] if ":" in line else line
            lines[at] = f"{key}: {draw(st.one_of(st.sampled_from(YAML_SNIPPETS), hostile_text))}"
        elif edit == 2:
            lines.insert(at, " " * draw(st.integers(0, 8)) + draw(st.sampled_from(YAML_SNIPPETS)))
        else:
            lines[at:at] = lines[at:at + draw(st.integers(1, 10))]
    return "\n".join(lines) + "\n"


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), st.dates()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25,
)


def _load_without_crash(loader: Callable[[Path], Any], path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        loaded = loader(path)
    except PipelineError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and len(message.splitlines()) == 1, message
        return
    if loader is load_topics:
        from pipeline.classify import Classifier

        with contextlib.suppress(PipelineError):
            Classifier.compile(loaded)  # what `check` and `try-rules` do next with a candidate


@pytest.fixture(scope="module")
def yaml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-yaml")


@budget(80)
@given(text=st.one_of(mutated_yaml((REPO / "sources.yaml").read_text(encoding="utf-8")),
                      mutated_yaml((REPO / "examples" / "demo.yaml").read_text(encoding="utf-8")),
                      yaml_values.map(lambda value: yaml.safe_dump({"feeds": value, "fetch": value})),
                      yaml_values.map(yaml.safe_dump)))
@example(text="newsletter:\n  name: 2025-13-45\nfeeds: []\n")  # found by the fuzzer: ValueError
@example(text="newsletter:\n  name: \x08\nfeeds: []\n")  # a reader error, raised before the loader existed
def test_fuzz_sources_yaml_through_the_config_loader(yaml_dir: Path, text: str) -> None:
    _load_without_crash(load_config, yaml_dir / "sources.yaml", text)


@budget(60)
@given(text=st.one_of(mutated_yaml((REPO / "topics.yaml").read_text(encoding="utf-8")),
                      yaml_values.map(lambda value: yaml.safe_dump({"topics": [{"id": "t", "heading": "T",
                                                                                 "rules": value}]})),
                      yaml_values.map(yaml.safe_dump)))
@example(text='? "\\N"\n: null\n')  # found by the fuzzer: a key holding U+0085 broke the one-line error
def test_fuzz_topics_yaml_through_the_rules_loader(yaml_dir: Path, text: str) -> None:
    _load_without_crash(load_topics, yaml_dir / "topics.yaml", text)


# ---------------------------------------------------------------- target: the command line's dates and numbers

date_text = st.one_of(
    st.dates().map(dt.date.isoformat),
    st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 12, 31)).map(dt.date.isoformat),
    st.from_regex(r"\A[0-9]{1,5}-[0-9]{1,3}-[0-9]{1,3}\Z"),
    st.sampled_from(["0001-01-01", "9999-12-31", "1969-12-31", "1970-01-01", "9998-12-31", "2205-05-06",
                     "20250506", "2025-W19-2", "", "-", "--date", "today", "２０２５-05-06"]),
    st.text(max_size=12),
)
number_text = st.one_of(
    st.integers(0, 70_000).map(str),  # around every bound: limits, ports, seconds
    st.integers().map(str),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["99999999999999999999", "9" * 5000, "0", "-1", "65536", "1e400", "nan", "inf", "0x10",
                     "1_000", " 7 ", "٣", "", "--limit"]),
    st.text(max_size=8),
)


@pytest.fixture(scope="module")
def cli_site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A config whose one feed is a missing file: a run that gets past its arguments ends fast
    (no feed readable, exit 1), and an empty store to search."""
    root = tmp_path_factory.mktemp("fuzz-cli")
    config = root / "sources.yaml"
    config.write_text(
        "feeds:\n  - {name: Absent, url: absent.xml}\n"
        "delivery:\n  from_address: lettre@techmatin.example.org\n"
        "  unsubscribe_url: https://techmatin.example.org/u?email={email}&token={token}\n", encoding="utf-8")
    (root / "recipients.csv").write_text("email,name,topics\n", encoding="utf-8")
    # One small rule: reading the real topics.yaml at every call would be most of the time spent.
    topics = root / "topics.yaml"
    topics.write_text("topics:\n  - id: rgpd\n    heading: DONNÉES PERSONNELLES\n    theme: RGPD\n"
                      "    rules:\n      - {name: rgpd, any: [RGPD, CNIL]}\n", encoding="utf-8")
    common = ["--config", str(config), "--topics", str(topics), "--db", str(root / "db.sqlite3")]
    assert call_cli("run", *common, "--output", root / "out")[0] == 1  # creates the store
    return {"config": config, "topics": topics, "db": root / "db.sqlite3", "output": root / "out", "root": root}


@budget(100)
@given(data=st.data())
def test_fuzz_cli_dates_and_numbers(cli_site: dict[str, Path], data: st.DataObject) -> None:
    common = ["--config", str(cli_site["config"]), "--topics", str(cli_site["topics"]), "--db", str(cli_site["db"])]
    out = ["--output", str(cli_site["output"])]
    date, other, number = data.draw(date_text), data.draw(date_text), data.draw(number_text)
    argv = data.draw(st.sampled_from([
        ["run", "--date", date, *common, *out],
        ["run", "--date", date, "--force", "--lock-timeout", number, *common, *out],
        ["rebuild", "--date", date, *common, *out],
        ["rebuild", "--all", "--lock-timeout", number, *common, *out],
        ["send", "--date", date, "--dry-run", *common, "--outbox", str(cli_site["root"] / "outbox")],
        ["archive", "show", date, *common, *out],
        ["archive", "search", "rgpd", "--limit", number, *common],
        ["try-rules", str(cli_site["topics"]), "--since", date, "--until", other, *common],
        # A folder that does not exist: serve stops before it listens, whatever the port.
        ["serve", "--port", number, "--config", str(cli_site["config"]), "--output",
         str(cli_site["root"] / "no-such-folder")],
    ]))
    code, _, err = call_cli(*argv)  # any exception fails the property
    event(f"{' '.join(argv[:2])} exit {code}")  # see --hypothesis-show-statistics: every path is reached
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- target: a search query through the store

SEARCH_FRAGMENTS = ['"', "*", "'", "(", ")", ":", "^", "-", "+", "&", "|", "!", "<->", ":*", "\\", "{", "}", "NEAR(",
                    "AND", "OR", "NOT", "title:", "text : ", "col:*", "0", "_", "reglement", "RÈGLEMENT", "regle*",
                    "l'IA", "«", "»", "…", "ǅ", "ß", "ﬁ", "a\u0301", "𝕏", "\u00ad", "\u202e", "\x00", "\udcff",
                    "le", "de", " ", "  ", "\t", "\n", "%", "_%", "''", "$$", ";", "--", "/*"]
search_query = st.one_of(
    st.lists(st.one_of(st.sampled_from(SEARCH_FRAGMENTS), st.text(max_size=10)), max_size=40).map("".join),
    st.lists(st.sampled_from(SEARCH_FRAGMENTS), min_size=1, max_size=40).map(" ".join),
    st.text(max_size=60),
    st.integers(0, 3000).map(lambda n: "m* " * n),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def searchable(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A store of each backend holding the stories of tests/test_archive.py's spring issues."""
    from pipeline.store import StoreTarget, open_store
    from tests.test_archive import SPRING, save

    folder = tmp_path_factory.mktemp("fuzz-search")
    target = StoreTarget(folder / "db.sqlite3")
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        name = f"fuzz_search_{os.getpid()}"
        target = StoreTarget(folder / "db.sqlite3", backend="postgresql",
                             dsn=cluster.create_database(name, template=request.getfixturevalue("pg_template")))
    with open_store(target) as store:
        for one in SPRING:
            save(store, one)
        yield store
    if request.param == "postgresql":
        cluster.drop_database(name)


@budget(120)
@given(query=search_query, topic=st.one_of(st.none(), st.sampled_from(["rgpd", "ai_act", "x'; --", ""])),
       limit=st.integers(1, 1000))
@example(query="regle* reglement", topic=None, limit=20)
@example(query="m* " * 2000, topic=None, limit=20)  # issue 16: 80 s before queries were bounded
def test_fuzz_search_queries_through_the_store(searchable: Any, query: str, topic: str | None, limit: int) -> None:
    try:
        hits = searchable.search_stories(query, limit=limit, topic=topic)
    except PipelineError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) < 1200, str(exc)
        event("refused")
        return
    event("answered" if hits else "no hit")
    assert len(hits) <= limit
    assert all(topic is None or topic in hit.topics for hit in hits)


# ---------------------------------------------------------------- target: readers' addresses and names

HEADER_FRAGMENTS = ["\r\n", "\n", "\r", "\r\nBcc: evil@z.org", "\nCc: evil@z.org\n", "\x85", "\u2028", "\u2029",
                    "\x00", "\x0b", "\x0c", "\t", "\x1c", "=?utf-8?q?=0D=0ABcc:_evil@z.org?=",
                    "=?utf-8?b?DQpCY2M6IGV2aWxAei5vcmc=?=", "=?", "?=", "Bcc: evil@z.org", '"', "\\", "<", ">", ",",
                    ";", ":", "@", "(", ")", "[", "]", "\u202e", "\u200b", "\ufeff", "\u00a0", "é", "Dupré", "𝕏",
                    " ", "  ", "Jeanne", "evil@z.org", "<evil@z.org>", ", evil@z.org", "%0d%0a", "\\r\\n"]
header_text = st.lists(st.one_of(st.sampled_from(HEADER_FRAGMENTS), st.text(max_size=12)), max_size=8).map("".join)
valid_address = st.from_regex(r"\A[a-z0-9][a-z0-9._+-]{0,10}@[a-z0-9]{1,10}\.(org|fr|example)\Z")
address_text = st.one_of(valid_address, valid_address.flatmap(lambda a: st.tuples(st.just(a), header_text).map(
    lambda pair: pair[0] + pair[1])), header_text, st.text(max_size=30))
name_text = st.one_of(header_text, st.text(max_size=40), st.sampled_from(["", "Jeanne Morel", "Léa Dupré"]))
topics_text = st.one_of(st.just(""), st.sampled_from(["rgpd", "rgpd ai_act", "cookies", "rgpd;ai_act", "\r\n"]),
                        st.text(max_size=10))
READER_TOPICS = ["rgpd", "ai_act", "meta_ai", "media_partnership"]
HEADER_NAMES = {"Subject", "From", "To", "Reply-To", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                "List-Unsubscribe-Post", "MIME-Version", "Content-Type"}


@st.composite
def recipients_file(draw: st.DrawFn) -> tuple[str, str]:
    """(suffix, text) of a recipients file: CSV written by a spreadsheet (quoted as needed),
    CSV typed by hand (nothing quoted), or YAML."""
    rows = draw(st.lists(st.tuples(address_text, name_text, topics_text), max_size=5))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        import csv

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        writer.writerow(["email", "name", "topics"])
        writer.writerows(rows)
        return ".csv", buffer.getvalue()
    if kind == 1:
        return ".csv", "email,name,topics\n" + "".join(f"{a},{n},{t}\n" for a, n, t in rows)
    entries: list[Any] = [{"email": a, "name": n, "topics": t} if draw(st.booleans()) else a for a, n, t in rows]
    text = yaml.safe_dump(entries, allow_unicode=kind == 3)
    return ".yaml", draw(st.one_of(st.just(text), mutated_yaml(text))) if text.strip() else text


def _mailed_to(reader: Any) -> bytes:
    from pipeline.deliver import build_message
    from pipeline.models import DeliverySettings, Issue, RenderedIssue

    issue = Issue(ISSUE_DATE, NEWSLETTER, (), None, (), (), ())
    rendered = RenderedIssue(ISSUE_DATE, "<html><body><p>Bonjour</p></body></html>", "Bonjour\n")
    settings = DeliverySettings(from_address="lettre@techmatin.example.org", reply_to="redaction@techmatin.example.org",
                                unsubscribe_url="https://techmatin.example.org/u?email={email}&token={token}")
    message = build_message(issue, rendered, settings, reader, "<fuzz@techmatin.example.org>", SEEN_AT, "k" * 32)
    return message.as_bytes()


def _assert_one_reader_one_address(raw: bytes, reader: Any) -> None:
    """The header block as a mail server reads it: only our headers, each on its own folded
    lines, ASCII, and a To of that reader's one address (their name shown as written)."""
    from email.parser import BytesParser
    from email.policy import default

    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    names = []
    for line in head.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line, line
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation
        match = re.match(rb"([A-Za-z-]+): ", line)
        assert match, line
        names.append(match.group(1).decode())
    assert set(names) == HEADER_NAMES and len(names) == len(HEADER_NAMES), names
    parsed = BytesParser(policy=default).parsebytes(raw)
    (to,) = parsed["To"].addresses
    assert to.addr_spec == reader.email
    assert re.sub(r"\s+", "", to.display_name) == re.sub(r"\s+", "", reader.name), (to.display_name, reader.name)


@pytest.fixture(scope="module")
def readers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-readers")


@budget(120)
@given(file=recipients_file())
@example(file=(".csv", 'email,name\nm@example.org,"Mallory\r\nBcc: evil@z.org"\n'))  # issue 16, point 3
@example(file=(".csv", "email,name\nm@example.org,=?utf-8?q?=0D=0ABcc:_evil@z.org?=\n"))
@example(file=(".yaml", '- {email: m@example.org, name: "Mallory\\u2028Bcc: evil@z.org"}\n'))
def test_fuzz_recipients_files_never_break_a_header(readers_dir: Path, file: tuple[str, str]) -> None:
    from pipeline.deliver import load_recipients

    suffix, text = file
    path = readers_dir / f"recipients{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass", newline="")
    try:
        readers = load_recipients(path, READER_TOPICS)
    except PipelineError as exc:
        assert str(exc).startswith(str(path)) and len(str(exc).splitlines()) == 1, str(exc)
        event("refused")
        return
    event(f"{len(readers)} reader(s)")
    for reader in readers:
        _assert_one_reader_one_address(_mailed_to(reader), reader)


@budget(100)
@given(email=address_text, name=name_text, suffix=st.sampled_from([".csv", ".yaml"]))
@example(email="m@example.org", name="Mallory\r\nBcc: evil@z.org", suffix=".csv")  # issue 16, point 3
def test_fuzz_subscribers_add_never_breaks_a_header(readers_dir: Path, email: str, name: str, suffix: str) -> None:
    from pipeline.deliver import add_recipient, load_recipients

    path = readers_dir / f"added{suffix}"
    path.write_text("email,name,topics\njeanne@example.org,Jeanne,\n" if suffix == ".csv"
                    else "- jeanne@example.org\n", encoding="utf-8")
    try:
        added = add_recipient(path, email, name=name, topics=["rgpd"], known_topics=READER_TOPICS)
    except PipelineError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)
        event("refused")
        return
    event("added")
    (_, reloaded) = load_recipients(path, READER_TOPICS)  # what `add` writes, a send reads back the same
    assert (reloaded.email, reloaded.name, reloaded.topics) == (added.email, added.name, added.topics)
    _assert_one_reader_one_address(_mailed_to(reloaded), reloaded)
