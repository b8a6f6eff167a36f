"""The demo issue of 2025-05-06, built by the real CLI from the bundled feeds (examples/).

Golden files: tests/golden/2025-05-06.html and .txt hold the expected bytes. After a deliberate
change of compose, render, the templates, topics.yaml or the demo feeds, regenerate them with
`UPDATE_GOLDEN=1 make test` (or `UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_issue_demo.py`)
and review the diff before committing it.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.compose import cluster, group_stories
from pipeline.config.sources import load_config
from pipeline.models import Classification, StoredItem
from pipeline.store import StoreTarget, issue_from_json, open_store
from tests.goldenfiles import check_golden
from tests.helpers import call_cli
from tests.test_compose import assert_short_kicker

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
LABELS = REPO / "tests" / "fixtures" / "demo_labels.json"
GOLDEN = REPO / "tests" / "golden"
CHECK_ISSUE = REPO.parent / "shared" / "tools" / "check_issue.py"
DATE = dt.date(2025, 5, 6)
URL_LINE = re.compile(r"^\[\d+\] https?://\S+$")

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason="examples/demo.yaml is not there")


@dataclass(frozen=True)
class DemoBuild:
    db: Path
    output: Path

    @property
    def html(self) -> str:
        return (self.output / DATE.isoformat() / "index.html").read_text(encoding="utf-8")

    @property
    def text(self) -> str:
        return (self.output / DATE.isoformat() / "digest.txt").read_text(encoding="utf-8")


def build(folder: Path, *extra: str) -> DemoBuild:
    result = DemoBuild(folder / "db.sqlite3", folder / "out")
    code, _, err = call_cli("run", "--config", DEMO, "--topics", REPO / "topics.yaml", "--date", DATE.isoformat(),
                            "--db", result.db, "--output", result.output, *extra)
    assert code == 0, err
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoBuild:
    return build(tmp_path_factory.mktemp("demo"))


class _Text(HTMLParser):
    """Visible text of a page (no <style>, no hidden preheader)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script") or ("class", "preheader") in attrs:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip and tag in ("style", "script", "div"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", "".join(parser.parts).replace("\u00a0", " ")).strip()


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u00a0", " "))


def stored_issue(demo: DemoBuild):  # -> Issue
    config = load_config(DEMO)
    with open_store(StoreTarget(demo.db)) as store:
        stored = store.issue(DATE)
        items = {i.id: i for i in store.all_items()}
    assert stored is not None
    return issue_from_json(stored.issue_json, config.newsletter), items


def labels() -> dict[tuple[str, str], dict]:
    return {(i["feed_id"], i["guid"]): i for i in json.loads(LABELS.read_text(encoding="utf-8"))["items"]}


# ---------------------------------------------------------------- golden files


@pytest.mark.parametrize(("name", "attribute"), [("2025-05-06.html", "html"), ("2025-05-06.txt", "text")])
def test_demo_issue_matches_its_golden_file(demo: DemoBuild, name: str, attribute: str) -> None:
    check_golden(getattr(demo, attribute), GOLDEN / name)


def test_a_second_build_and_a_rebuild_are_byte_identical(demo: DemoBuild, tmp_path: Path) -> None:
    again = build(tmp_path / "again")
    assert (again.html, again.text) == (demo.html, demo.text)
    code, _, err = call_cli("rebuild", "--config", DEMO, "--topics", REPO / "topics.yaml", "--date", DATE.isoformat(),
                            "--db", again.db, "--output", again.output)
    assert code == 0, err
    assert (again.html, again.text) == (demo.html, demo.text)


# ---------------------------------------------------------------- structure


PARTS = ["Par CAMILLE ROUX", "Voir dans votre navigateur", "AU MENU |",
         "nous sommes le mardi 6 mai et vous lisez Tech Matin.", "LE FAIT DU JOUR |", "ORDRE DU JOUR |",
         "RESTEZ BRANCHÉS |", "Merci à notre éditrice"]


@pytest.mark.parametrize("version", ["html", "text"])
def test_parts_are_in_order(demo: DemoBuild, version: str) -> None:
    text = visible_text(demo.html) if version == "html" else flat(demo.text)
    position = 0
    for marker in PARTS:
        found = text.upper().find(marker.upper(), position)
        assert found >= 0, f"{marker!r} missing or out of order"
        position = found
    issue, _ = stored_issue(demo)
    headings = [f"{s.heading} |" for s in issue.sections]
    assert len(headings) >= 3
    starts = [text.find(h) for h in headings]
    assert all(s > 0 for s in starts) and starts == sorted(starts)
    assert text.find("LE FAIT DU JOUR |") < starts[0] and starts[-1] < text.find("ORDRE DU JOUR |")


def test_shared_check_issue_tool_accepts_the_issue(demo: DemoBuild) -> None:
    if not CHECK_ISSUE.is_file():
        pytest.skip("../shared/tools/check_issue.py is not present on this machine")
    result = subprocess.run([sys.executable, str(CHECK_ISSUE), str(demo.output), DATE.isoformat(), "--width", "72"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_menu_teases_the_top_three_stories(demo: DemoBuild) -> None:
    issue, _ = stored_issue(demo)
    assert len(issue.menu) == 3
    assert issue.lead is not None and issue.menu[0].story_id == issue.lead.id
    for teaser in issue.menu:
        assert teaser.theme and teaser.text[-1] in ".?!…"
        assert f"— {teaser.theme} : {teaser.text}".replace("'", "’") in flat(demo.text)
        assert " : " not in teaser.text  # one colon per line: `— Thème : phrase.`


def test_four_outlet_story_appears_once_with_its_other_outlets(demo: DemoBuild) -> None:
    issue, items = stored_issue(demo)
    truth = labels()
    meta = [s for s in issue.stories()
            if any(truth[(items[i].feed_id, items[i].guid)]["story"] == "meta-training-eu" for i in s.item_ids)]
    assert len(meta) == 1
    story = meta[0]
    assert story is issue.lead or story.id == issue.lead.id  # four outlets: the story of the day
    outlets = {items[i].source for i in story.item_ids}
    assert len(outlets) == 4
    assert {ref.source for ref in story.also_on} == outlets - {story.source}
    text = flat(demo.text)
    also = "Également sur : " + ", ".join(f"{ref.source} [{n}]" for n, ref in enumerate(story.also_on, start=2))
    assert also in text
    html = visible_text(demo.html)
    assert "Également sur : " + ", ".join(ref.source for ref in story.also_on) in html
    stories_part = demo.text[: demo.text.index("ORDRE DU JOUR |")]
    for item_id in story.item_ids:
        url = items[item_id].url
        assert stories_part.count(f"] {url}\n") == 1  # each outlet cited once among the stories


def test_the_days_decisions_come_first_in_their_sections(demo: DemoBuild) -> None:
    """News value: the Irish DPC's €530 million fine against TikTok (a dated item, rather weakly
    matched by the rules) opens DONNÉES PERSONNELLES, ahead of the CNIL's €80,000 fine."""
    issue, _ = stored_issue(demo)
    section = next(s for s in issue.sections if s.topic == "rgpd")
    titles = [s.title for s in section.stories]
    assert "530 millions contre TikTok" in titles[0], titles
    assert any("la CNIL sanctionne" in title for title in titles[1:]), titles
    text = flat(demo.text)
    part = text[text.index("DONNÉES PERSONNELLES |"):text.index("DU CÔTÉ DE BRUXELLES |")]
    assert part.index("TIKTOK") < part.index("CNIL")
    # A consultation open until 22 May is in its section, not in RESTEZ BRANCHÉS.
    brussels = next(s for s in issue.sections if s.topic == "ai_act")
    assert any("consulte jusqu’au 22 mai" in s.title for s in brussels.stories)


def test_no_two_different_stories_are_merged(demo: DemoBuild) -> None:
    issue, items = stored_issue(demo)
    truth = labels()
    for story in issue.stories():
        members = [items[i] for i in story.item_ids]
        for other in members[1:]:
            first = members[0]
            same_label = truth[(first.feed_id, first.guid)]["story"] is not None and (
                truth[(first.feed_id, first.guid)]["story"] == truth[(other.feed_id, other.guid)]["story"])
            assert same_label or first.url == other.url, f"{first.title!r} merged with {other.title!r}"


def test_agenda_lists_future_deadlines_once(demo: DemoBuild) -> None:
    issue, _ = stored_issue(demo)
    dates = [entry.date for entry in issue.agenda]
    assert dates == sorted(dates) and all(d > DATE for d in dates)
    assert dt.date(2025, 5, 27) in dates  # the objection deadline of the Meta story
    assert dt.date(2025, 5, 22) in dates  # the AI Office consultation
    assert dates.count(dt.date(2025, 5, 27)) == 1  # four outlets, one line
    assert dates.count(dt.date(2025, 8, 2)) == 1  # four AI Act stories, one deadline
    section = flat(demo.text)
    section = section[section.index("ORDRE DU JOUR |"):section.index("RESTEZ BRANCHÉS |")]
    assert "Mardi 27 mai." in section and "Plus loin : 2 août, " in section
    for past in ("2 mai", "29 avril", "14 avril", "11 mars", "2 février"):
        assert f". {past}." not in section and f"— Vendredi {past}" not in section


def test_text_never_exceeds_72_columns_except_urls(demo: DemoBuild) -> None:
    too_wide = [line for line in demo.text.splitlines() if len(line) > 72 and not URL_LINE.match(line)
                and not re.fullmatch(r"https?://\S+", line)]
    assert not too_wide


def test_text_has_numbered_links_at_the_end_of_each_section(demo: DemoBuild) -> None:
    blocks = re.split(r"\n(?=[A-ZÀ-Ý’' ]+ \|\n)", demo.text)
    cited_sections = 0
    for block in blocks:
        citations = set(re.findall(r"\[(\d+)\](?!\s*https?)", block))
        references = re.findall(r"^\[(\d+)\] https?://", block, re.M)
        if citations:
            cited_sections += 1
            assert set(references) == citations
            assert references == [str(n) for n in range(1, len(references) + 1)]
    assert cited_sections >= 5


def test_kicker_is_never_followed_by_the_same_title(demo: DemoBuild) -> None:
    text = flat(demo.text)
    for kicker in re.findall(r"(?<![\w’])([A-ZÀ-Ý0-9][A-ZÀ-Ý0-9’',«» -]{3,}[A-ZÀ-Ý0-9»])\. ", text):
        following = text[text.index(kicker + ". ") + len(kicker) + 2:][: len(kicker)]
        assert following.upper() != kicker, kicker


def test_every_kicker_of_the_demo_is_short(demo: DemoBuild) -> None:
    """Tech Matin's kickers are a few words ("PAS À PAS.", "INFLUENCEUR DANS LE VISEUR."), not a
    whole title: at most KICKER_WORDS words, in capitals, with a full stop, in the stored issue
    and in both versions."""
    issue, _ = stored_issue(demo)
    stories = issue.stories()
    assert len(stories) == 18
    text, html = flat(demo.text), visible_text(demo.html)
    for story in stories:
        assert_short_kicker(story.kicker, story.title)
        if story not in issue.further_reading:  # RESTEZ BRANCHÉS lines show titles, not kickers
            assert f"{story.kicker} " in text and f"{story.kicker} " in html
    # The regional press deal had its whole title as kicker; the Meta lead a seven-word head.
    kickers = {s.kicker for s in stories}
    assert {"GROUPE DE PRESSE RÉGIONALE.", "LE MODE D’EMPLOI PAS À PAS."} <= kickers


def test_an_empty_day_gives_a_short_issue_and_skip_empty_writes_nothing(tmp_path: Path) -> None:
    # The first run stamps the demo's undated items into its own issue; a month later the feeds
    # hold nothing new, so that day's issue is empty.
    build(tmp_path)
    empty = dt.date(2025, 6, 2)
    args = ("--config", DEMO, "--topics", REPO / "topics.yaml", "--date", empty.isoformat(),
            "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out")
    code, _, err = call_cli("run", *args, "--skip-empty")
    assert code == 0, err
    assert not (tmp_path / "out" / empty.isoformat()).exists()
    code, _, err = call_cli("run", *args)
    assert code == 0, err
    text = (tmp_path / "out" / empty.isoformat() / "digest.txt").read_text(encoding="utf-8")
    assert "Rien de neuf ce matin" in text and "Aucun article" in text
    assert "nous sommes le lundi 2 juin" in flat(text)
    assert "ORDRE DU JOUR" not in text
    assert len(text.splitlines()) < 40


def test_clustering_of_all_81_demo_items_matches_the_labels(demo: DemoBuild) -> None:
    """Independent of the rules: every labelled item with its labelled topics, all days at once."""
    truth = labels()
    with open_store(StoreTarget(demo.db)) as store:
        items = list(store.all_items())
    assert len(items) == len(truth)
    entries = []
    for item in items:
        topics = tuple(truth[(item.feed_id, item.guid)]["labels"])
        entries.append(StoredItem(item, Classification(item.id, topics, dict.fromkeys(topics, 3.0))))
    relevant = [e for e in entries if e.classification.topics]
    groups = cluster(relevant, {}, window=entries)
    # The inverted index of rare words finds the same groups as comparing every pair.
    every_pair = group_stories(relevant, {}, window=entries, all_pairs=True).groups
    assert sorted(sorted(e.item.id for e in g) for g in groups) == sorted(sorted(e.item.id for e in g)
                                                                         for g in every_pair)
    group_of = {e.item.id: n for n, group in enumerate(groups) for e in group}
    wrong: list[tuple[str, str, bool]] = []
    for a, b in itertools.combinations(relevant, 2):
        story_a, story_b = (truth[(x.item.feed_id, x.item.guid)]["story"] for x in (a, b))
        same = (story_a is not None and story_a == story_b) or a.item.url == b.item.url
        if same != (group_of[a.item.id] == group_of[b.item.id]):
            wrong.append((a.item.title, b.item.title, same))
    assert wrong == []
    assert len({group_of[e.item.id] for e in relevant
                if truth[(e.item.feed_id, e.item.guid)]["story"] == "meta-training-eu"}) == 1


def test_a_weekly_roundup_in_the_feeds_changes_no_story(demo: DemoBuild, tmp_path: Path) -> None:
    """A roundup item repeating the day's headlines used to tie stories together (18 stories
    became 9, the lead "also on" 7 unrelated outlets): it is now a story of its own, never the lead."""
    issue, items = stored_issue(demo)
    headlines = " ; ".join(items[s.item_ids[0]].title for s in issue.stories()[:12])
    # The lead must not say "Au sommaire" or "today's edition": topics.yaml damps such a
    # roundup's lead (damper roundup_lead) and the item would get no topic, so it could not
    # test the clustering. A roundup the rules do not recognise still gets the headlines' topics.
    feed = tmp_path / "revue.xml"
    feed.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>La Revue</title>'
        "<link>https://revue.example/</link><description>Chaque semaine</description><item>"
        "<title>La revue de la semaine</title><link>https://revue.example/2025/05/05/revue</link>"
        "<guid>revue-2025-05-05</guid><pubDate>Mon, 05 May 2025 20:00:00 +0200</pubDate>"
        f"<description>Cette semaine : {html.escape(headlines)}.</description></item></channel></rss>",
        encoding="utf-8")
    config = tmp_path / "demo.yaml"
    text = DEMO.read_text(encoding="utf-8").replace("url: feeds/", f"url: {DEMO.parent}/feeds/")
    config.write_text(text.replace("feeds:\n", f"feeds:\n  - id: revue\n    name: La Revue\n    url: {feed}\n", 1),
                      encoding="utf-8")
    code, _, err = call_cli("run", "--config", config, "--topics", REPO / "topics.yaml", "--date", DATE.isoformat(),
                            "--db", tmp_path / "db.sqlite3", "--output", tmp_path / "out")
    assert code == 0, err
    with open_store(StoreTarget(tmp_path / "db.sqlite3")) as store:
        stored = store.issue(DATE)
        with_roundup = {i.id: i for i in store.all_items()}
    assert stored is not None
    after = issue_from_json(stored.issue_json, load_config(config).newsletter)
    def groups(stories, known):  # by link, since the ids of one item differ between the two stores
        return sorted(sorted(known[i].url for i in s.item_ids) for s in stories)
    roundup = [s for s in after.stories() if s.source == "La Revue"]
    assert len(roundup) == 1 and roundup[0].item_ids == roundup[0].item_ids[:1]
    assert groups([s for s in after.stories() if s is not roundup[0]], with_roundup) == groups(issue.stories(), items)
    assert after.lead is not None and after.lead.source != "La Revue"
    assert after.lead.also_on == issue.lead.also_on


class _RawText(_Text):
    """Visible text with its non-breaking spaces (the typography test needs them)."""


def _prose(demo: DemoBuild) -> dict[str, str]:
    """The words a reader reads, in the text version and the page, links left out."""
    parser = _RawText()
    parser.feed(demo.html)
    text = "\n".join(line for line in demo.text.splitlines()
                     if not URL_LINE.match(line) and not re.fullmatch(r"https?://\S+", line))
    return {"text": text, "html": "".join(parser.parts)}


@pytest.mark.parametrize("version", ["text", "html"])
def test_french_typography_of_the_issue(demo: DemoBuild, version: str) -> None:
    prose = _prose(demo)[version]
    assert "'" not in prose and '"' not in prose and "..." not in prose  # ’, « », …
    assert not re.search(r"\b(?:[Dd]e|[ÀàAa]) Les?\b", prose)  # du, des, au, aux
    # A non-breaking space (or a narrow one) before ; ! ? » and a colon that ends a word, and
    # after «: none of them ever starts a line.
    assert not re.findall(r".{0,20}(?<![\u00a0\u202f])(?:[;!?»]|:(?=\s))", prose)
    assert not re.findall(r"«(?![\u00a0\u202f]).{0,20}", prose)
    if version == "html":
        assert "Lire l’article du Veilleur Numérique" in prose


def test_no_agenda_line_leans_on_a_word_outside_it(demo: DemoBuild) -> None:
    issue, _ = stored_issue(demo)
    pronouns = {"il", "ils", "elle", "elles", "on", "ceux", "celles", "celui", "celle", "cela", "qui", "dont"}
    for entry in issue.agenda:
        said = entry.context.split(" : ", 1)[-1]
        assert said.split()[0].casefold() not in pronouns, entry.context
        assert not re.search(r"\b[sn]’y\b|\ble faire\b", said), entry.context
    soon = [e.date for e in issue.agenda if not e.later]
    assert soon and all(d <= DATE + dt.timedelta(days=60) for d in soon)
    later = [e for e in issue.agenda if e.later]
    assert later and all(e.date > DATE + dt.timedelta(days=60) for e in later)
    section = flat(demo.text)
    section = section[section.index("ORDRE DU JOUR |"):section.index("RESTEZ BRANCHÉS |")]
    assert "— Plus loin : 2 août, Bureau de l’IA (Bruxelles Tech Watch [4])" in section
