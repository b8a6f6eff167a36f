"""Hostile feeds: nothing unsafe from a feed reaches output/, and XML attacks are defused.

A corpus of XSS vectors (classic, entity- and double-encoded, CDATA, mixed-case and
whitespace-laden schemes, attribute breakouts, bidi tricks) goes through a real `pipeline run`;
then every file of output/ is checked with an HTML parser. Zero findings allowed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from xml.sax.saxutils import escape

import feedparser
import pytest

from pipeline.models import FeedSource, FetchResult, FetchStatus
from pipeline.parse import parse_feed

REPO = Path(__file__).resolve().parents[1]
DATE = "2025-05-06"
PUBLISHED = "Mon, 05 May 2025 10:00:00 +0200"

# (title fragment, description HTML, link, author): each item is also about the RGPD so that it
# reaches the digest rather than being filtered out before rendering.
VECTORS: list[tuple[str, str, str, str]] = [
    ("<script>alert(1)</script>", "<script>alert('s1')</script>", "https://ok.example/1", "a"),
    ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(2)>", "https://ok.example/2", "a"),
    ("<svg onload=alert(1)>", "<svg/onload=alert(3)><circle r=1></svg>", "https://ok.example/3", "a"),
    ("iframe", '<iframe src="javascript:alert(4)"></iframe>', "https://ok.example/4", "a"),
    ("lien javascript", "texte", "javascript:alert(5)", "a"),
    ("lien casse mixte", "texte", "JaVaScRiPt:alert(6)", "a"),
    ("lien avec espaces", "texte", " \tjava\tscript:alert(7)", "a"),
    ("lien data", "texte", "data:text/html;base64,PHNjcmlwdD5hbGVydCg4KTwvc2NyaXB0Pg==", "a"),
    ("lien vbscript", "texte", "vbscript:msgbox(9)", "a"),
    ("lien sans protocole", "texte", "//evil.example/10", "a"),
    ("lien relatif", "texte", "/relative/11", "a"),
    ("double codage", "&lt;script&gt;alert(12)&lt;/script&gt;", "https://ok.example/12", "a"),
    ("entités numériques", "&#60;script&#62;alert(13)&#60;/script&#62;", "https://ok.example/13", "a"),
    ("lien dans le texte", '<a href="javascript:alert(14)">clic</a>', "https://ok.example/14", "a"),
    ("style url", '<div style="background:url(javascript:alert(15))">x</div>', "https://ok.example/15", "a"),
    ("balise style", "<style>body{display:none}</style>texte", "https://ok.example/16", "a"),
    ("object embed", '<object data="x.swf"></object><embed src="y.swf">', "https://ok.example/17", "a"),
    ("formulaire", '<form action="https://evil.example"><input name=p></form>', "https://ok.example/18", "a"),
    ("mxss math", "<math><mtext><table><mglyph><style><img src=x onerror=alert(19)>", "https://ok.example/19", "a"),
    ('"><script>alert(20)</script>', "sortie d'attribut", "https://ok.example/20", "a"),
    ("auteur piégé", "texte", "https://ok.example/21", "' onmouseover='alert(21)"),
    ("body onload", "<body onload=alert(22)>texte</body>", "https://ok.example/22", "a"),
    ("meta refresh", '<meta http-equiv="refresh" content="0;url=javascript:alert(23)">', "https://ok.example/23", "a"),
    ("base href", '<base href="javascript:alert(24)//">texte', "https://ok.example/24", "a"),
    ("link stylesheet", '<link rel=stylesheet href="javascript:alert(25)">', "https://ok.example/25", "a"),
    ("bidi \u202eedoc\u202c override", "texte \u202e inversé", "https://ok.example/26", "a"),
    ("zéro\u200b\u200dlargeur", "caché\ufeff", "https://ok.example/27", "a"),
    ("schéma codé", '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(28)">x</a>',
     "&#106;avascript:alert(28)", "a"),
    ("imbriqué", "<scr<script>ipt>alert(29)</script>", "https://ok.example/29", "a"),
    ("tabulation", "<IMG SRC=\"jav&#x09;ascript:alert('30');\">", "https://ok.example/30", "a"),
    ("data html", '<a href="data:text/html,<script>alert(31)</script>">x</a>', "https://ok.example/31", "a"),
    ("guillemet dans l'URL", "texte", 'https://ok.example/32"onmouseover="alert(32)', "a"),
    ("template", "<template><script>alert(33)</script></template>", "https://ok.example/33", "a"),
    ("noscript", "<noscript><p title=\"</noscript><img src=x onerror=alert(34)>\">", "https://ok.example/34", "a"),
    ("lien bidi", "texte", "https://ok.example/35/\u202elapyap\u200b\u2028x\u2029y", "a"),
    ("lien IPv6", "texte", "http://[::1]:8000/36", "a"),
]

SUBJECTS = ["un hébergeur", "une banque", "un assureur", "une mutuelle", "un opérateur", "un réseau social",
            "une enseigne", "un hôpital", "une mairie", "un éditeur", "un transporteur", "une école"]


def hostile_rss(cdata_item: bool = True) -> bytes:
    items = []
    for number, (title, description, link, author) in enumerate(VECTORS, start=1):
        subject = SUBJECTS[number % len(SUBJECTS)]
        full_title = f"La CNIL sanctionne {subject} n°{number} au titre du RGPD {title}"
        body = f"<p>Amende RGPD de la CNIL numéro {number} contre {subject}.</p>{description}"
        items.append(
            f"<item><title>{escape(full_title)}</title><link>{escape(link)}</link>"
            f"<guid isPermaLink=\"false\">hostile-{number}</guid><author>{escape(author)}</author>"
            f"<category>{escape(title)}</category><pubDate>{PUBLISHED}</pubDate>"
            f"<description>{escape(body)}</description></item>"
        )
    if cdata_item:
        items.append(
            "<item><title>La CNIL sanctionne un courtier au titre du RGPD (CDATA)</title>"
            "<link>https://ok.example/cdata</link><guid>hostile-cdata</guid>"
            f"<pubDate>{PUBLISHED}</pubDate><description><![CDATA[<p>Amende RGPD.</p>"
            "<script>alert('cdata')</script><img src=x onerror=alert('cdata')>]]></description></item>"
        )
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Hostile</title>'
            "<link>https://ok.example/</link>" + "".join(items) + "</channel></rss>").encode()


class _Audit(HTMLParser):
    """Collects every unsafe thing a page holds."""

    def __init__(self, allow_script: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.allow_script = allow_script
        self.findings: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and (not self.allow_script or any(name == "src" for name, _ in attrs)):
            self.findings.append("<script>")
        attributes = dict(attrs)
        if tag in ("iframe", "object", "embed", "svg", "math", "img", "base"):
            self.findings.append(f"<{tag}>")
        # The site's own search form and Content-Security-Policy are allowed on the search page.
        if tag == "form" and not (self.allow_script and attributes.get("action") == "search.html"):
            self.findings.append("<form>")
        if tag == "meta" and "http-equiv" in attributes and \
                (attributes["http-equiv"] or "").lower() != "content-security-policy":
            self.findings.append("<meta http-equiv>")
        for name, value in attrs:
            if name.startswith("on"):
                self.findings.append(f"{tag}[{name}]")
            value = value or ""
            if name in ("href", "src", "action", "formaction"):
                scheme = re.match(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*):", value)
                if value.startswith("//") or (scheme and scheme.group(1).lower() not in ("http", "https", "mailto")
                                               and value != "data:,"):
                    self.findings.append(f"{tag}[{name}]={value[:40]}")
            if name == "style" and re.search(r"url\(|expression|javascript", value, re.I):
                self.findings.append(f"{tag}[style]={value[:40]}")
            if re.search("[\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]", value):
                self.findings.append(f"{tag}[{name}] holds an invisible character")

    def handle_data(self, data: str) -> None:
        for bad in ("\u202e", "\u202d", "\u200b", "\ufeff", "\u2066"):
            if bad in data:
                self.findings.append(f"invisible U+{ord(bad):04X}")


def audit_html(text: str, allow_script: bool = False) -> list[str]:
    audit = _Audit(allow_script)
    audit.feed(text)
    return audit.findings


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "hostile.xml").write_bytes(hostile_rss())
    (root / "sources.yaml").write_text(
        "newsletter:\n  max_stories_per_section: 50\n  max_further_reading: 50\n"
        "  base_url: https://techmatin.example.org/\n"
        "feeds:\n  - name: Hostile <b>Outlet</b> \"><script>\n    id: hostile\n    url: hostile.xml\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(root / "sources.yaml"),
         "--topics", str(REPO / "topics.yaml"), "--date", DATE, "--db", str(root / "db.sqlite3"),
         "--output", str(root / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return root / "out"


def test_hostile_items_reach_the_digest(hostile_site: Path) -> None:
    text = (hostile_site / DATE / "digest.txt").read_text(encoding="utf-8")
    shown = len(set(re.findall(r"numéro (\d+) contre", " ".join(text.split()))))
    assert len(VECTORS) >= 30 and shown >= 30, f"only {shown} hostile items reached the digest"


def test_no_page_carries_anything_unsafe(hostile_site: Path) -> None:
    pages = sorted(hostile_site.rglob("*.html"))
    assert pages
    findings = {}
    for page in pages:
        # The search page is the only one allowed its own inline script (no src, no feed data in it).
        found = audit_html(page.read_text(encoding="utf-8"), allow_script=page.name == "search.html")
        if found:
            findings[str(page.relative_to(hostile_site))] = found
    assert not findings


def test_text_digest_links_are_http_only(hostile_site: Path) -> None:
    text = (hostile_site / DATE / "digest.txt").read_text(encoding="utf-8")
    references = re.findall(r"^\[\d+\] (\S+)", text, re.M)
    assert references and all(url.startswith(("https://", "http://")) for url in references)
    assert "javascript" not in text.lower().replace("javascript:alert", "") or "javascript:" not in text
    assert "\u202e" not in text and "\u200b" not in text and "\u2028" not in text and "\u2029" not in text
    # invisible characters in a link are percent-encoded; relative and protocol-relative links are
    # resolved against the feed's own address (here its <link>); an IPv6 host keeps its brackets
    assert "https://ok.example/35/%E2%80%AElapyap%E2%80%8B%E2%80%A8x%E2%80%A9y" in references
    assert "http://[::1]:8000/36" in references
    assert "https://evil.example/10" in references and "https://ok.example/relative/11" in references


def test_atom_feed_and_search_index_are_safe(hostile_site: Path) -> None:
    feed_path = hostile_site / "feed.xml"
    if feed_path.is_file():
        parsed = feedparser.parse(feed_path.read_bytes(), sanitize_html=False)
        for entry in parsed.entries:
            for link in entry.get("links", []):
                assert link["href"].startswith(("https://", "http://")), link
            for value in [entry.get("summary", "")] + [c.value for c in entry.get("content", [])]:
                assert not audit_html(value), audit_html(value)
    for index in hostile_site.rglob("*.json"):
        data = json.loads(index.read_text(encoding="utf-8"))
        urls = re.findall(r'"(?:url|href|link)":\s*"([^"]*)"', json.dumps(data))
        assert all(u.startswith(("https://", "http://")) or not re.match(r"^[a-zA-Z][\w+.-]*:", u) for u in urls)
        assert "javascript:" not in json.dumps(data).lower()


def test_xml_entity_expansion_is_refused_fast() -> None:
    laughs = "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    body = (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol0 "lol">{laughs}]>'
            '<rss version="2.0"><channel><title>t</title><item><title>&lol9;</title>'
            "<description>d</description></item></channel></rss>").encode()
    feed = FeedSource(id="bomb", name="Bomb", url="https://bomb.example/")
    started = time.monotonic()
    result = parse_feed(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=body),
                        dt.datetime.now(dt.UTC))
    assert time.monotonic() - started < 5
    assert result.items == () and result.error and "entity expansion" in result.error


def test_external_entities_are_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42", encoding="utf-8")
    body = (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
            '<rss version="2.0"><channel><title>t</title><item><title>CNIL &xxe; RGPD</title>'
            "<description>d &xxe;</description></item></channel></rss>").encode()
    feed = FeedSource(id="xxe", name="XXE", url="https://xxe.example/")
    result = parse_feed(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=body),
                        dt.datetime.now(dt.UTC))
    assert all("TOPSECRET" not in f"{i.title} {i.summary}" for i in result.items)
    assert any("XXE" in w for w in result.warnings)


def test_deep_nesting_is_handled_without_blow_up() -> None:
    nested = html.escape("<div>" * 100_000 + "CNIL" + "</div>" * 100_000)
    body = (f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><title>Profond</title>'
            f"<description>{nested}</description></item></channel></rss>").encode()
    feed = FeedSource(id="deep", name="Deep", url="https://deep.example/")
    started = time.monotonic()
    result = parse_feed(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=body),
                        dt.datetime.now(dt.UTC))
    assert time.monotonic() - started < 30  # generous: linear work, not a hang
    assert len(result.items) == 1 and "CNIL" in result.items[0].summary


def test_limits_cut_and_report() -> None:
    many = "".join(f"<item><title>Article {n}</title><guid>g{n}</guid><description>{'x' * 10}</description></item>"
                   for n in range(600))
    long_title = "Titre " * 200
    body = (f'<rss version="2.0"><channel><title>t</title><item><title>{long_title}</title><guid>long</guid>'
            f"<description>{'mot ' * 5000}</description></item>{many}</channel></rss>").encode()
    feed = FeedSource(id="big", name="Big", url="https://big.example/")
    result = parse_feed(FetchResult(feed=feed, status=FetchStatus.NEW, url=feed.url, body=body),
                        dt.datetime.now(dt.UTC))
    assert len(result.items) == 500
    assert any("kept the first 500" in w for w in result.warnings)
    assert len(result.items[0].title) <= 301 and len(result.items[0].summary) <= 5001


def test_run_wide_item_limit_cuts_and_reports(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.app.MAX_ITEMS_PER_RUN", 20)
    result = cli("run", "--config", REPO / "examples" / "demo.yaml", "--date", DATE,
                 "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out")
    assert result.code == 0, result.err
    assert "run limit of 20 items reached" in result.err
    from pipeline.store import StoreTarget, open_store

    with open_store(StoreTarget(tmp_path / "db.sqlite3")) as store:
        assert store.item_count() == 20
