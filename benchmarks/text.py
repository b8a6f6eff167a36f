"""Benchmark: the text pass (pipeline/text.py) against a naive beautifulsoup4 get_text.

The fields are the summaries and contents of the real feeds of ../shared/feeds/real/ when that
folder is present (57 feeds), else generated HTML items (seeded, ``--items`` of them). Measured
in the same run, on the same fields:

(a) naive: ``BeautifulSoup(field, "html.parser").get_text()``, the plain bs4 way (no dropped
    elements, no spaces between blocks, no clean-up: it does less than the pass);
(b) the pass before lxml: beautifulsoup4's html.parser with the pass's own steps (dropped
    elements, block spacing, share links, then ``tidy_text``);
(c) the pass: ``clean_text`` (lxml's HTML parser, then ``tidy_text``);

and, for the choice of parser, the bare HTML→text of bs4 with the lxml builder, lxml.html, and
selectolax (lexbor) when it is installed (it is not a dependency). Prints the seconds of each
(CPU time of this process, best of ``--rounds`` alternated rounds, so that other processes on a
shared machine skew the figures as little as possible) and the ratios a/c and b/c.

    .venv/bin/python benchmarks/text.py [--rounds R] [--items N] [--synthetic]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402
import lxml.html  # noqa: E402
from bs4 import BeautifulSoup  # noqa: E402

from pipeline.text import BLOCK_ELEMENTS, DROPPED_ELEMENTS, SHARE_CLASSES, SHARE_LINKS, clean_text, tidy_text  # noqa: E402

REAL_FEEDS = ROOT.parent / "shared" / "feeds" / "real"
SEED = 20261202
WORDS = ("la CNIL sanctionne un opérateur au titre du RGPD après une plainte de noyb sur le traitement des "
         "données personnelles des abonnés et la Commission européenne précise le calendrier de l’AI Act").split()


def real_fields() -> list[str]:
    fields: list[str] = []
    for path in sorted(REAL_FEEDS.glob("*.xml")):
        parsed = feedparser.parse(path.read_bytes(), sanitize_html=False, resolve_relative_uris=False)
        for entry in parsed.entries:
            if entry.get("summary"):
                fields.append(entry["summary"])
            fields.extend(c.get("value", "") for c in entry.get("content") or [] if c.get("value"))
    return fields


def synthetic_fields(count: int) -> list[str]:
    rng = random.Random(SEED)
    fields = []
    for number in range(count):
        paragraphs = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(20, 80))]
            for index in rng.sample(range(len(words)), 3):
                words[index] = f'<a href="https://example.org/{number}">{words[index]}</a>'
            words[0] = f"<strong>{words[0]}</strong>"
            paragraphs.append("<p>" + " ".join(words).replace(" l’", " l&rsquo;") + ".</p>")
        paragraphs.append('<div class="feedflare"><a href="http://feeds.feedburner.com/~ff/x"><img src="x.gif"></a>'
                          "</div><img src=\"http://example.org/pixel.gif\" width=\"1\" height=\"1\">")
        fields.append("".join(paragraphs) + "<p>Lire la suite</p>")
    return fields


def naive(field: str) -> str:
    return BeautifulSoup(field, "html.parser").get_text()


_SHARE_SELECTOR = ", ".join([f'[class*="{c}"]' for c in SHARE_CLASSES] + [f'a[href*="{link}"]' for link in SHARE_LINKS])


def bs4_pass(field: str) -> str:
    if "<" not in field and "&" not in field:
        return tidy_text(field)
    soup = BeautifulSoup(field, "html.parser")
    for element in soup(DROPPED_ELEMENTS):
        element.decompose()
    for element in soup.select(_SHARE_SELECTOR):
        element.clear()
    for element in soup.find_all(BLOCK_ELEMENTS):
        element.insert_before(" ")
        element.insert_after(" ")
    return tidy_text(soup.get_text())


def bs4_lxml_builder(field: str) -> str:
    return BeautifulSoup(field, "lxml").get_text()


def lxml_html(field: str) -> str:
    try:
        return str(lxml.html.fragment_fromstring(field, create_parent="div").text_content())
    except (ValueError, lxml.etree.ParserError):
        return ""


def measure(function: Callable[[str], str], fields: list[str]) -> float:
    started = time.process_time()
    for field in fields:
        function(field)
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=1500, help="generated items when not on real feeds")
    parser.add_argument("--synthetic", action="store_true", help="generated items even if ../shared is present")
    args = parser.parse_args()

    if REAL_FEEDS.is_dir() and not args.synthetic:
        fields, origin = real_fields(), f"summaries and contents of {REAL_FEEDS}"
    else:
        fields, origin = synthetic_fields(args.items), "generated HTML items"
    candidates: dict[str, Callable[[str], str]] = {
        "(a) naive bs4 html.parser get_text": naive,
        "(b) the pass on bs4 html.parser": bs4_pass,
        "(c) the pass (lxml, clean_text)": clean_text,
        "    bare bs4 with the lxml builder": bs4_lxml_builder,
        "    bare lxml.html text_content": lxml_html,
    }
    try:
        from selectolax.lexbor import LexborHTMLParser

        def selectolax(field: str) -> str:
            body = LexborHTMLParser(field).body
            return body.text(deep=True) if body is not None else ""

        candidates["    bare selectolax (lexbor)"] = selectolax
    except ImportError:
        pass

    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(args.rounds):
        for name, function in candidates.items():
            best[name] = min(best[name], measure(function, fields))
    size = sum(len(f) for f in fields)
    print(f"{len(fields)} fields ({size / 1e6:.1f} M characters), {origin}; CPU seconds, best of {args.rounds}")
    for name, seconds in best.items():
        print(f"{name:40s} {seconds:7.3f} s")
    pass_time = best["(c) the pass (lxml, clean_text)"]
    print(f"ratio a/c (naive bs4 / the pass): {best['(a) naive bs4 html.parser get_text'] / pass_time:.1f}x")
    print(f"ratio b/c (the pass on bs4 / on lxml): {best['(b) the pass on bs4 html.parser'] / pass_time:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
