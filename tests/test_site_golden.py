"""Golden files of the archive site, as pelican's test_pelican.py diffs a rendered site against
pelican/tests/output/basic: the archive home, one topic page and the Atom feed of the demo
archive (examples/demo.yaml, the issue of 2025-05-06), built by the real CLI into a temporary
folder and compared byte for byte with tests/golden/site/.

After a deliberate change (archive, templates, render, compose, topics.yaml, the demo feeds):
`UPDATE_GOLDEN=1 make test` rewrites them; read `git diff tests/golden` before committing.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.goldenfiles import check_golden
from tests.helpers import call_cli

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
GOLDEN_SITE = REPO / "tests" / "golden" / "site"
PAGES = ("index.html", "topics/rgpd.html", "feed.xml")

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason="examples/demo.yaml is not there")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    code, _, err = call_cli("run", "--config", DEMO, "--topics", REPO / "topics.yaml", "--date", "2025-05-06",
                            "--db", root / "db.sqlite3", "--output", root / "out")
    assert code == 0, err
    return root / "out"


@pytest.mark.parametrize("page", PAGES)
def test_demo_site_page_matches_its_golden_file(site: Path, page: str) -> None:
    check_golden((site / page).read_text(encoding="utf-8"), GOLDEN_SITE / page)


class _Prose(HTMLParser):
    """The text a reader sees on a page (no style, script or attribute), non-breaking spaces kept."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.hidden += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("style", "script")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def _prose(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    if page.suffix == ".xml":  # the feed: its titles, teasers and contents, as a reader's client shows them
        feed = ElementTree.fromstring(text)
        atom = "{http://www.w3.org/2005/Atom}"
        fragments = [e.text or "" for e in feed.iter() if e.tag in (f"{atom}title", f"{atom}summary", f"{atom}content")]
        text = "<p>" + "</p><p>".join(fragments) + "</p>"
    parser = _Prose()
    parser.feed(text)
    return "".join(parser.parts)


@pytest.mark.parametrize("page", [*PAGES, "topics/meta_ai.html", "topics/ai_act.html", "topics/media_partnership.html"])
def test_french_typography_of_the_site(site: Path, page: str) -> None:
    prose = _prose(site / page)
    assert "'" not in prose and '"' not in prose and "..." not in prose, prose  # ’, « », …
    # A non-breaking space (or a narrow one) before ; ! ? » and a colon that ends a word, and after «.
    assert not re.findall(r".{0,20}(?<![\u00a0\u202f])(?:[;!?»]|:(?=\s))", prose)
    assert not re.findall(r"«(?![\u00a0\u202f]).{0,20}", prose)
